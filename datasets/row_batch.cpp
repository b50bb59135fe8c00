// Rows → device tensors and their next-token loss (see datasets/row_batch.h).
#include "datasets/row_batch.h"
#include <algorithm>
#include "base/error.h"

namespace affinage {

int64_t RowBatch::real_tokens() const { return (doc_ids >= 0).sum().item<int64_t>(); }

RowBatch rows_to_batch(const std::vector<Row>& rows, const std::vector<int64_t>& idx, c10::Device dev) {
  if (idx.empty()) fail("rows_to_batch: empty batch");
  int64_t B = idx.size(), T = rows[idx[0]].input_ids.size();
  auto stack = [&](std::vector<int64_t> Row::*field) {
    auto t = at::empty({B, T}, at::kLong);
    auto* p = t.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      const auto& v = rows[idx[b]].*field;
      if ((int64_t)v.size() != T) fail("rows_to_batch: rows of different lengths (", v.size(), " vs ", T, ")");
      std::copy(v.begin(), v.end(), p + b * T);
    }
    return t.to(dev);
  };
  return {stack(&Row::input_ids), stack(&Row::targets), stack(&Row::position_ids), stack(&Row::doc_ids)};
}

TokenLoss row_batch_nll(CausalLMImpl& m, const RowBatch& b) {
  return token_nll(m, m.hidden_states(b.input_ids, b.position_ids, b.doc_ids), b.targets);
}

std::pair<RowBatch, int64_t> continuation_batch(const std::vector<const std::vector<int>*>& prompts,
                                                const std::vector<const std::vector<int>*>& conts, c10::Device dev) {
  if (prompts.empty() || prompts.size() != conts.size())
    fail("continuation_batch: ", prompts.size(), " prompts for ", conts.size(), " continuations");
  const int64_t N = prompts.size();
  int64_t T = 0;
  for (int64_t r = 0; r < N; ++r) T = std::max<int64_t>(T, prompts[r]->size() + conts[r]->size());
  auto ids = at::zeros({N, T}, at::kLong), tg = at::full({N, T}, kIgnoreIndex, at::kLong);
  auto pos = at::zeros({N, T}, at::kLong), doc = at::full({N, T}, -1, at::kLong);
  auto *pi = ids.data_ptr<int64_t>(), *pt = tg.data_ptr<int64_t>(), *pp = pos.data_ptr<int64_t>(),
       *pd = doc.data_ptr<int64_t>();
  int64_t real = 0;
  for (int64_t r = 0; r < N; ++r) {
    const std::vector<int>&p = *prompts[r], &c = *conts[r];
    const int64_t np = p.size(), n = np + c.size();
    for (int64_t t = 0; t < n; ++t) {
      pi[r * T + t] = t < np ? p[t] : c[t - np];
      pp[r * T + t] = t;
      pd[r * T + t] = 0;
      if (t + 1 >= np && t + 1 < n) pt[r * T + t] = c[t + 1 - np];  // predict every continuation token
    }
    real += n;
  }
  return {RowBatch{ids.to(dev), tg.to(dev), pos.to(dev), doc.to(dev)}, real};
}

std::pair<at::Tensor, at::Tensor> continuation_logprobs(CausalLMImpl& m, const RowBatch& b) {
  return sequence_logprobs(m, m.hidden_states(b.input_ids, b.position_ids, b.doc_ids), b.targets);
}

}  // namespace affinage
