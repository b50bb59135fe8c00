// The frame every training stage shares. A stage (sft/, dpo/) is one function `StageResult run_X(recipe,
// resume)` that reads top to bottom: prepare_model, its data, its StageHooks, then run_stage_loop, which runs
// the recipe's eval.tasks before training (fresh runs) and after it, the shared loop, and writes the final PEFT
// adapter in <output_dir>/adapter. The stage table (app/stages.h) names each stage once.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>
#include "train/loop.h"
#include "train/prepare.h"

namespace affinage {

// What a stage gives back to the run (app/run.h writes it into summary.json).
struct StageResult {
  TrainSummary summary;
  nlohmann::json data_stats = nlohmann::json::object();  // the stage's train/eval data statistics
  nlohmann::json tasks = nlohmann::json::object();       // eval.tasks results: {"before": {...}, "after": {...}}
};

// Runs the loop between the recipe's task metrics; fills res.summary and res.tasks.
void run_stage_loop(const Recipe& r, PreparedModel& pm, const StageHooks& hooks, bool resume, StageResult& res);

// Calls fn(indices) for consecutive batches of `batch` items out of n, at most max_batches of them (0 = all).
void for_each_batch(int64_t n, int64_t batch, int64_t max_batches,
                    const std::function<void(const std::vector<int64_t>&)>& fn);

}  // namespace affinage
