// The one training loop every stage shares: micro-batches in a seeded order, gradient accumulation
// normalized by the units (trained tokens, or pairs) of the whole optimizer step, clipping, AdamW, the LR
// schedule, periodic eval, metrics (JSONL + a progress line), atomic checkpoints with resume.
// Stages supply only their batches and their loss (one loop, no inheritance: docs/design.md).
#pragma once
#include <ATen/ATen.h>
#include <functional>
#include <map>
#include <string>
#include <vector>
#include "config/recipe.h"
#include "model/model.h"
#include "train/optim.h"

namespace affinage {

struct StepLoss {
  at::Tensor sum;                      // differentiable fp32 scalar: loss summed over its units
  double units = 0;                    // trained tokens (SFT) or pairs (DPO) that `sum` covers
  int64_t tokens = 0;                  // tokens processed (for tokens/s)
  std::map<std::string, double> sums;  // further metrics, summed over units (logged as sum / units)
};

struct StageHooks {
  int64_t num_rows = 0;  // training items per epoch (rows for SFT, pairs for DPO)
  // The loss of one micro-batch made of these training items (indices into the stage's training set).
  std::function<StepLoss(CausalLMImpl&, const std::vector<int64_t>& rows)> loss;
  // Held-out metrics, e.g. {"eval_loss": ...}; run without grad, model in eval mode. May be empty.
  std::function<std::map<std::string, double>(CausalLMImpl&)> evaluate;
  // Writes the stage's artifacts (the PEFT adapter) into a folder; called for checkpoints and at the end.
  std::function<void(const std::string& dir)> save_artifacts;
};

struct TrainSummary {
  int64_t steps = 0;                           // optimizer steps done in total (including before a resume)
  std::map<std::string, double> last;          // last logged training metrics
  std::map<std::string, double> eval;          // last eval metrics
  std::map<std::string, double> initial_eval;  // eval metrics before the first step (fresh runs)
  std::vector<double> losses;                  // training loss of each step run in this process
};

// Item order: epoch e is a Fisher-Yates shuffle of 0..n-1 seeded with (seed, e); item k of the run is
// order(k / n)[k % n]. Exposed for tests.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);
int64_t total_steps(const Recipe& r, int64_t num_rows);

// Runs (or, with resume, continues from the newest checkpoint in <output_dir>/checkpoints) the loop.
// `trainable` are the parameters the optimizer updates (names as in the model).
TrainSummary train_loop(const Recipe& r, CausalLMImpl& model, std::vector<NamedParam> trainable,
                        const StageHooks& hooks, bool resume);

}  // namespace affinage
