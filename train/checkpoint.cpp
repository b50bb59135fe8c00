// Training checkpoints, written atomically and resumed exactly (see train/checkpoint.h).
#include "train/checkpoint.h"
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include "base/error.h"
#include "base/files.h"
#include "config/recipe_file.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace affinage {

static std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", (long long)step);
  return buf;
}

void save_run_checkpoint(const std::string& out_dir, const Recipe& r, const RunState& st,
                         const std::vector<NamedParam>& trainable, const AdamW& opt, at::Generator& gen,
                         const std::function<void(const std::string&)>& save_artifacts) {
  fs::path root = fs::path(out_dir) / "checkpoints";
  fs::create_directories(root);
  StagingDir dir((root / step_name(st.step)).string(), Existing::Replace);
  std::vector<std::pair<std::string, at::Tensor>> w;
  for (auto& p : trainable) w.emplace_back(p.name, p.param.detach());
  write_safetensors(dir.file("trainable.safetensors"), w);
  write_safetensors(dir.file("optimizer.safetensors"), opt.state());
  write_safetensors(dir.file("rng.safetensors"), {{"generator", gen.get_state()}});
  if (save_artifacts) save_artifacts(dir.file("adapter"));
  nlohmann::json state = {{"format_version", kCheckpointFormatVersion},
                          {"step", st.step},
                          {"optimizer_steps", opt.steps()},
                          {"elapsed_s", st.elapsed_s},
                          {"rng_device", gen.device().str()},
                          {"recipe", recipe_to_json(r)}};
  write_file_atomic(dir.file("state.json"), state.dump(2));  // last: marks the folder complete
  dir.commit();
}

std::string latest_checkpoint(const std::string& out_dir) {
  fs::path root = fs::path(out_dir) / "checkpoints";
  if (!fs::exists(root)) return "";
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(root)) {
    auto n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0 && fs::exists(e.path() / "state.json")) names.push_back(n);
  }
  if (names.empty()) return "";
  std::sort(names.begin(), names.end());
  return (root / names.back()).string();
}

RunState load_run_checkpoint(const std::string& dir, const std::vector<NamedParam>& trainable, AdamW& opt,
                             at::Generator& gen) {
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_file(dir + "/state.json"));
  } catch (const nlohmann::json::exception& e) {
    fail(dir, "/state.json: not valid JSON (", e.what(),
         "); delete this checkpoint folder to resume from an older one");
  }
  if (state.value("format_version", 0) != kCheckpointFormatVersion)
    fail(dir, ": checkpoint format version ", state.value("format_version", 0), ", this build reads ",
         kCheckpointFormatVersion);
  {
    SafetensorsFile w(dir + "/trainable.safetensors");
    torch::NoGradGuard ng;
    for (auto& p : trainable) {
      if (!w.find(p.name))
        fail(dir, "/trainable.safetensors: no tensor '", p.name, "' (the recipe's trainable parameters changed)");
      auto t = w.load(p.name);
      if (t.sizes() != p.param.sizes()) fail(dir, "/trainable.safetensors: '", p.name, "' has the wrong shape");
      p.param.copy_(t);
    }
  }
  {
    SafetensorsFile o(dir + "/optimizer.safetensors");
    std::map<std::string, at::Tensor> m;
    for (auto& t : o.tensors()) m[t.name] = o.load(t.name);
    opt.load_state(m, state.at("optimizer_steps").get<int64_t>(), dir + "/optimizer.safetensors");
  }
  {
    SafetensorsFile g(dir + "/rng.safetensors");
    if (state.value("rng_device", std::string("cpu")) == gen.device().str()) gen.set_state(g.load("generator"));
  }
  return {state.at("step").get<int64_t>(), state.value("elapsed_s", 0.0)};
}

void prune_checkpoints(const std::string& out_dir, int64_t keep) {
  fs::path root = fs::path(out_dir) / "checkpoints";
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(root)) {
    auto n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i + keep < names.size(); ++i) fs::remove_all(root / names[i]);
}

void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", int64_t(0)) <= step) kept << line << "\n";
  }
  write_file_atomic(path, kept.str());
}

}  // namespace affinage
