// summary.json: what a finished stage leaves in its output folder, written by the run (app/run.h) and read by
// the report, the model card and a resumed multi-stage run. Its presence marks the stage as finished.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace affinage {

struct RunSummary {
  std::string stage;                                // the stage's recipe name ("sft", "dpo")
  int64_t steps = 0;                                // optimizer steps done in all
  std::map<std::string, double> final_metrics;      // "final": the last logged training line
  std::map<std::string, double> eval;               // "eval": the last held-out evaluation
  std::map<std::string, double> initial_eval;       // "initial_eval": held-out metrics before the first step
  nlohmann::json data = nlohmann::json::object();   // "data": the stage's data statistics
  nlohmann::json tasks = nlohmann::json::object();  // "tasks": eval.tasks {"before": {...}, "after": {...}}

  nlohmann::json to_json() const;
  // Strict: a missing or mistyped key is an error naming `where` and the key.
  static RunSummary from_json(const nlohmann::json& j, const std::string& where);
};

void write_run_summary(const std::string& run_dir, const RunSummary& s);  // <run_dir>/summary.json, atomically
// <run_dir>/summary.json; nullopt when the file does not exist (the stage has not finished).
std::optional<RunSummary> read_run_summary(const std::string& run_dir);

}  // namespace affinage
