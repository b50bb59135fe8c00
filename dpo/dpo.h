// Preference optimization (DPO and its family): a recipe with stage "dpo" → a trained adapter under
// <output_dir>/adapter, on the same loop, optimizer, checkpoints and metrics as SFT.
#pragma once
#include <map>
#include <string>
#include <vector>
#include "config/recipe.h"
#include "dpo/losses.h"
#include "dpo/pair_batch.h"
#include "train/stage.h"

namespace affinage {

StageResult run_dpo(const Recipe& r, bool resume);

PreferenceLossConfig preference_loss_config(const DpoConfig& d);

// One micro-batch's loss and TRL-named metric sums (rewards/chosen, rewards/rejected, rewards/accuracies,
// rewards/margins, logps/chosen, logps/rejected), given the policy's and the reference's log-probs.
StepLoss preference_step_loss(const PairLogps& policy, const at::Tensor& ref_chosen, const at::Tensor& ref_rejected,
                              const PreferenceLossConfig& cfg, int64_t tokens);

// Reference log-probs of every pair, computed once in batches of `batch` pairs: {chosen [N], rejected [N]} (CPU fp32).
// Data-parallel processes each compute a share and all receive every value.
std::pair<at::Tensor, at::Tensor> precompute_reference(ReferencePolicy& ref, const std::vector<PreferencePair>& pairs,
                                                       int64_t batch, c10::Device dev);

}  // namespace affinage
