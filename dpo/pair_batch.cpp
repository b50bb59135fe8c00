// Pair batches, response log-probs and the reference policy (contract in dpo/pair_batch.h).
#include "dpo/pair_batch.h"
#include <algorithm>
#include "core/error.h"
#include "core/loss.h"

namespace affinage {

PairBatch make_pair_batch(const std::vector<PreferencePair>& pairs, const std::vector<int64_t>& idx, c10::Device dev) {
  if (idx.empty()) fail("make_pair_batch: empty batch");
  const int64_t P = idx.size();
  int64_t T = 0;
  for (int64_t i : idx) T = std::max<int64_t>(T, pairs[i].prompt.size() + std::max(pairs[i].chosen.size(), pairs[i].rejected.size()));
  auto ids = at::zeros({2 * P, T}, at::kLong), tg = at::full({2 * P, T}, -100, at::kLong);
  auto pos = at::zeros({2 * P, T}, at::kLong), doc = at::full({2 * P, T}, -1, at::kLong);
  auto *pi = ids.data_ptr<int64_t>(), *pt = tg.data_ptr<int64_t>(), *pp = pos.data_ptr<int64_t>(), *pd = doc.data_ptr<int64_t>();
  PairBatch b;
  for (int64_t r = 0; r < 2 * P; ++r) {
    const PreferencePair& p = pairs[idx[r % P]];
    const std::vector<int>& resp = r < P ? p.chosen : p.rejected;
    const int64_t np = p.prompt.size(), n = np + resp.size();
    for (int64_t t = 0; t < n; ++t) {
      pi[r * T + t] = t < np ? p.prompt[t] : resp[t - np];
      pp[r * T + t] = t;
      pd[r * T + t] = 0;
      if (t + 1 >= np && t + 1 < n) pt[r * T + t] = resp[t + 1 - np];  // predict every response token
    }
    b.real_tokens += n;
  }
  b.input_ids = ids.to(dev), b.targets = tg.to(dev), b.position_ids = pos.to(dev), b.doc_ids = doc.to(dev);
  b.pairs = P;
  return b;
}

PairLogps pair_logps(CausalLMImpl& m, const PairBatch& b) {
  auto [sums, counts] = sequence_logprobs(m, m.hidden_states(b.input_ids, b.position_ids, b.doc_ids), b.targets);
  const int64_t P = b.pairs;
  auto len = counts.to(at::kFloat);
  return {sums.narrow(0, 0, P), sums.narrow(0, P, P), len.narrow(0, 0, P), len.narrow(0, P, P)};
}

ReferencePolicy::ReferencePolicy(CausalLMImpl& m, const std::vector<NamedParam>& trainable, const std::string& mode)
    : m_(&m), disable_adapters_(mode == "base") {
  if (mode != "initial" && mode != "base") fail("dpo.reference: unknown mode '", mode, "'; use \"initial\" or \"base\"");
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
