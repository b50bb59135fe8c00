// Rows → device tensors and their next-token loss (see datasets/row_batch.h).
#include "datasets/row_batch.h"
#include "core/error.h"

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

}  // namespace affinage
