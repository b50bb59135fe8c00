// The pieces of a preference step: a micro-batch of pairs as one [2P, T] batch (chosen rows 0..P-1, rejected
// rows P..2P-1, right-padded to the longest sequence of the batch), the policy's summed response log-probs
// from one forward, and the reference policy without a second copy of the weights.
#pragma once
#include <ATen/ATen.h>
#include <string>
#include <vector>
#include "datasets/preference_data.h"
#include "model/model.h"
#include "train/optim.h"

namespace affinage {

struct PairBatch {
  at::Tensor input_ids, targets, position_ids,
      doc_ids;  // [2P, T] int64; targets pre-shifted, kIgnoreIndex off-response
  int64_t pairs = 0;
  int64_t real_tokens = 0;  // non-padding tokens of both sequences
};
PairBatch make_pair_batch(const std::vector<PreferencePair>& pairs, const std::vector<int64_t>& idx, c10::Device dev);

struct PairLogps {
  at::Tensor chosen_sum, rejected_sum;  // [P] fp32 summed log-probs of the response tokens (differentiable)
  at::Tensor chosen_len, rejected_len;  // [P] fp32 response token counts
};
PairLogps pair_logps(CausalLMImpl& m, const PairBatch& b);

// The reference policy, run in eval mode without grad. Initial: the trainable tensors (LoRA A/B, fully
// trained modules) swapped for a copy of their values at construction, so the reference is the model as the
// stage began (the base for a fresh adapter, the SFT adapter it continues otherwise); "base": the same with
// every adapter disabled. The copy costs one set of trainable weights, never the base model.
class ReferencePolicy {
 public:
  ReferencePolicy(CausalLMImpl& m, const std::vector<NamedParam>& trainable, Reference mode);
  // Reference log-probs of the batch ([P] chosen, [P] rejected); the policy is restored afterwards, also on error.
  std::pair<at::Tensor, at::Tensor> logps(const PairBatch& b);

 private:
  CausalLMImpl* m_;
  std::vector<at::Tensor> params_, initial_;
  bool disable_adapters_;
};

}  // namespace affinage
