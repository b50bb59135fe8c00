// The common frame of a training stage (contract in train/stage.h).
#include "train/stage.h"
#include <iostream>
#include "base/distributed.h"
#include "eval/tasks.h"

namespace affinage {

void run_stage_loop(const Recipe& r, PreparedModel& pm, const StageHooks& hooks, bool resume, StageResult& res) {
  nlohmann::json& tasks = res.tasks;
  auto& model = *pm.model;
  const bool main = world().main();  // data-parallel: rank 0 evaluates and writes, the others wait at the end
  if (!resume && main)
    tasks["before"] = run_eval_tasks(r.eval.tasks, model, *pm.tokenizer, r.train.batch_size, "before training");
  res.summary = train_loop(r, model, pm.trainable, hooks, resume);
  if (main) {
    tasks["after"] = run_eval_tasks(r.eval.tasks, model, *pm.tokenizer, r.train.batch_size, "after training");
    save_adapter_artifacts(pm, r.output_dir + "/adapter");
    std::cerr << "adapter written to " << r.output_dir << "/adapter\n";
  }
  barrier();  // a following stage reads this adapter in every process
}

void for_each_batch(int64_t n, int64_t batch, int64_t max_batches,
                    const std::function<void(const std::vector<int64_t>&)>& fn) {
  int64_t done = 0;
  for (int64_t s = 0; s < n; s += batch, ++done) {
    if (max_batches > 0 && done >= max_batches) break;
    std::vector<int64_t> idx;
    for (int64_t i = s; i < std::min(s + batch, n); ++i) idx.push_back(i);
    fn(idx);
  }
}

}  // namespace affinage
