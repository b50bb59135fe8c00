// Pair batches, response log-probs and the reference policy (contract in dpo/pair_batch.h).
#include "dpo/pair_batch.h"
#include <algorithm>
#include "base/error.h"
#include "datasets/row_batch.h"

namespace affinage {

PairBatch make_pair_batch(const std::vector<PreferencePair>& pairs, const std::vector<int64_t>& idx, c10::Device dev) {
  if (idx.empty()) fail("make_pair_batch: empty batch");
  std::vector<const std::vector<int>*> prompts, conts;
  for (int side = 0; side < 2; ++side)  // chosen rows first, then rejected
    for (int64_t i : idx)
      prompts.push_back(&pairs[i].prompt), conts.push_back(side == 0 ? &pairs[i].chosen : &pairs[i].rejected);
  auto [rb, real] = continuation_batch(prompts, conts, dev);
  PairBatch b;
  b.input_ids = rb.input_ids, b.targets = rb.targets, b.position_ids = rb.position_ids, b.doc_ids = rb.doc_ids;
  b.pairs = idx.size();
  b.real_tokens = real;
  return b;
}

PairLogps pair_logps(CausalLMImpl& m, const PairBatch& b) {
  auto [sums, counts] = continuation_logprobs(m, RowBatch{b.input_ids, b.targets, b.position_ids, b.doc_ids});
  const int64_t P = b.pairs;
  auto len = counts.to(at::kFloat);
  return {sums.narrow(0, 0, P), sums.narrow(0, P, P), len.narrow(0, 0, P), len.narrow(0, P, P)};
}

ReferencePolicy::ReferencePolicy(CausalLMImpl& m, const std::vector<NamedParam>& trainable, Reference mode)
    : m_(&m), disable_adapters_(mode == Reference::Base) {
  for (auto& p : trainable) {
    params_.push_back(p.param);
    initial_.push_back(p.param.detach().clone());
  }
}

std::pair<at::Tensor, at::Tensor> ReferencePolicy::logps(const PairBatch& b) {
  at::NoGradGuard ng;
  const bool was_training = m_->is_training();
  std::vector<at::Tensor> live;
  for (auto& p : params_) live.push_back(p.data());
  auto restore = [&] {
    for (size_t i = 0; i < live.size(); ++i) params_[i].set_data(live[i]);
    if (disable_adapters_) m_->set_adapters_enabled(true);
    m_->train(was_training);
  };
  for (size_t i = 0; i < params_.size(); ++i) params_[i].set_data(initial_[i]);
  if (disable_adapters_) m_->set_adapters_enabled(false);
  m_->eval();
  try {
    PairLogps lp = pair_logps(*m_, b);
    restore();
    return {lp.chosen_sum, lp.rejected_sum};
  } catch (...) {
    restore();
    throw;
  }
}

}  // namespace affinage
