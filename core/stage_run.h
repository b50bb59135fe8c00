// What every training stage does around the shared loop once its data and hooks are ready: the recipe's
// eval.tasks before training (fresh runs) and after it, the loop itself, and the final PEFT adapter in
// <output_dir>/adapter. Also the eval batching the stages' evaluate hooks share.
#pragma once
#include <functional>
#include <vector>
#include <nlohmann/json.hpp>
#include "core/prepare.h"
#include "core/trainer.h"

namespace affinage {

// Runs the loop; `tasks` receives {"before": {...}, "after": {...}} (eval/tasks.h results).
TrainSummary run_stage_loop(const Recipe& r, PreparedModel& pm, const StageHooks& hooks, bool resume, nlohmann::json& tasks);

// Calls fn(indices) for consecutive batches of `batch` items out of n, at most max_batches of them (0 = all).
void for_each_batch(int64_t n, int64_t batch, int64_t max_batches, const std::function<void(const std::vector<int64_t>&)>& fn);

}  // namespace affinage
