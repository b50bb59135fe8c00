// Next-token losses that run the head only where there is a target (target != -100), in chunks, so
// full-vocabulary logits never exist for untrained positions (prompt tokens, padding).
#pragma once
#include <ATen/ATen.h>
#include "core/model.h"

namespace affinage {

struct TokenLoss {
  at::Tensor sum;     // fp32 scalar: summed negative log-likelihood (differentiable)
  int64_t count = 0;  // number of target tokens
};

// hidden [B, T, D] (final-normed), targets [B, T] pre-shifted (-100 = none).
TokenLoss token_nll(CausalLMImpl& m, const at::Tensor& hidden, const at::Tensor& targets, int64_t chunk = 2048);

// Per-row sums of target log-probabilities [B] (fp32, differentiable) and per-row target counts [B].
std::pair<at::Tensor, at::Tensor> sequence_logprobs(CausalLMImpl& m, const at::Tensor& hidden,
                                                    const at::Tensor& targets, int64_t chunk = 2048);

}  // namespace affinage
