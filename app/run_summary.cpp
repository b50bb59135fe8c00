// summary.json both ways (see app/run_summary.h).
#include "app/run_summary.h"
#include <filesystem>
#include "base/error.h"
#include "base/files.h"

namespace affinage {

nlohmann::json RunSummary::to_json() const {
  return {{"stage", stage}, {"steps", steps}, {"final", final_metrics}, {"eval", eval}, {"initial_eval", initial_eval},
          {"data", data},   {"tasks", tasks}};
}

RunSummary RunSummary::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected a JSON object");
  RunSummary s;
  auto metrics = [&](const char* key, std::map<std::string, double>& out) {
    if (!j.contains(key)) return;
    if (!j[key].is_object()) fail(where, ": key '", key, "' must be an object of numbers");
    for (auto& [k, v] : j[key].items())
      if (v.is_number()) out[k] = v.get<double>();
  };
  try {
    s.stage = j.at("stage").get<std::string>();
    s.steps = j.at("steps").get<int64_t>();
  } catch (const nlohmann::json::exception&) {
    fail(where, ": needs a string 'stage' and an integer 'steps'");
  }
  metrics("final", s.final_metrics);
  metrics("eval", s.eval);
  metrics("initial_eval", s.initial_eval);
  if (j.contains("data")) s.data = j["data"];
  if (j.contains("tasks")) s.tasks = j["tasks"];
  return s;
}

void write_run_summary(const std::string& run_dir, const RunSummary& s) {
  write_file_atomic(run_dir + "/summary.json", s.to_json().dump(2) + "\n");
}

std::optional<RunSummary> read_run_summary(const std::string& run_dir) {
  const std::string path = run_dir + "/summary.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(read_file(path), nullptr, false);
  if (j.is_discarded()) fail(path, ": not valid JSON; delete it and resume the run to write it again");
  return RunSummary::from_json(j, path);
}

}  // namespace affinage
