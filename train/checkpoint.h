// Training checkpoints: <out>/checkpoints/step-NNNNNNNN/ holding the trainable weights, the optimizer state,
// the RNG state, the step and the resolved recipe, plus the stage's artifacts (the PEFT adapter). Written
// into a temporary folder and renamed, so a crash never leaves a half-written checkpoint under a real name.
#pragma once
#include <ATen/core/Generator.h>
#include <functional>
#include <string>
#include <vector>
#include "config/recipe.h"
#include "train/optim.h"

namespace affinage {

constexpr int kCheckpointFormatVersion = 1;

struct RunState {
  int64_t step = 0;      // optimizer steps completed; the data position follows from it
  double elapsed_s = 0;  // training time so far
};

void save_run_checkpoint(const std::string& out_dir, const Recipe& r, const RunState& st,
                         const std::vector<NamedParam>& trainable, const AdamW& opt, at::Generator& gen,
                         const std::function<void(const std::string&)>& save_artifacts);
// The newest complete checkpoint folder under <out>/checkpoints, or "" when there is none.
std::string latest_checkpoint(const std::string& out_dir);
// Restores weights, optimizer and RNG; errors name the checkpoint and what does not fit.
RunState load_run_checkpoint(const std::string& dir, const std::vector<NamedParam>& trainable, AdamW& opt,
                             at::Generator& gen);
// Keeps the newest `keep` checkpoints.
void prune_checkpoints(const std::string& out_dir, int64_t keep);
// Drops metrics lines after `step` (a resumed run rewrites them), atomically.
void truncate_metrics(const std::string& path, int64_t step);

}  // namespace affinage
