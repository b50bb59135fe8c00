// Next-token losses on target positions only (see model/loss.h).
#include "model/loss.h"

namespace affinage {

// Log-probs of the targets at the selected flat positions, chunk by chunk: [N] fp32.
static at::Tensor target_logprobs(CausalLMImpl& m, const at::Tensor& flat_hidden, const at::Tensor& flat_targets,
                                  int64_t chunk) {
  std::vector<at::Tensor> parts;
  int64_t n = flat_hidden.size(0);
  for (int64_t s = 0; s < n; s += chunk) {
    int64_t len = std::min(chunk, n - s);
    auto logits = m.logits(flat_hidden.narrow(0, s, len)).to(at::kFloat);  // [len, V]
    auto lp = at::log_softmax(logits, -1);
    parts.push_back(lp.gather(1, flat_targets.narrow(0, s, len).unsqueeze(1)).squeeze(1));
  }
  return parts.empty() ? at::zeros({0}, flat_hidden.options().dtype(at::kFloat)) : at::cat(parts);
}

TokenLoss token_nll(CausalLMImpl& m, const at::Tensor& hidden, const at::Tensor& targets, int64_t chunk) {
  auto t = targets.reshape({-1});
  auto idx = (t != kIgnoreIndex).nonzero().squeeze(1);
  auto h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, idx);
  auto lp = target_logprobs(m, h, t.index_select(0, idx), chunk);
  return {-lp.sum(), idx.size(0)};
}

std::pair<at::Tensor, at::Tensor> sequence_logprobs(CausalLMImpl& m, const at::Tensor& hidden,
                                                    const at::Tensor& targets, int64_t chunk) {
  int64_t B = targets.size(0);
  auto t = targets.reshape({-1});
  auto idx = (t != kIgnoreIndex).nonzero().squeeze(1);
  auto h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, idx);
  auto lp = target_logprobs(m, h, t.index_select(0, idx), chunk);
  auto row = at::div(idx, targets.size(1), "floor");
  auto sums = at::zeros({B}, lp.options()).index_add(0, row, lp);
  auto counts = at::zeros({B}, targets.options().dtype(at::kLong)).index_add(0, row, at::ones_like(row));
  return {sums, counts};
}

}  // namespace affinage
