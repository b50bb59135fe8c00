// Next-token losses that run the head only where there is a target (target != kIgnoreIndex), in chunks, so
// full-vocabulary logits never exist for untrained positions (prompt tokens, padding).
#pragma once
#include <ATen/ATen.h>
#include "model/model.h"

namespace affinage {

// The target of a position that is not trained (prompt, padding, another document's start): PyTorch's and
// transformers' ignore_index, so pre-shifted targets mean the same thing here as there.
constexpr int64_t kIgnoreIndex = -100;

struct TokenLoss {
  at::Tensor sum;     // fp32 scalar: summed negative log-likelihood (differentiable)
  int64_t count = 0;  // number of target tokens
};

// hidden [B, T, D] (final-normed), targets [B, T] pre-shifted (kIgnoreIndex = none).
TokenLoss token_nll(CausalLMImpl& m, const at::Tensor& hidden, const at::Tensor& targets, int64_t chunk = 2048);

// Per-row sums of target log-probabilities [B] (fp32, differentiable) and per-row target counts [B].
std::pair<at::Tensor, at::Tensor> sequence_logprobs(CausalLMImpl& m, const at::Tensor& hidden,
                                                    const at::Tensor& targets, int64_t chunk = 2048);

}  // namespace affinage
