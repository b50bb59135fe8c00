// Fixed-length rows (datasets/sft_data.h) → device tensors, and their next-token loss: the one path
// training and evaluation share.
#pragma once
#include <ATen/ATen.h>
#include <vector>
#include "datasets/sft_data.h"
#include "model/loss.h"
#include "model/model.h"

namespace affinage {

struct RowBatch {
  at::Tensor input_ids, targets, position_ids, doc_ids;  // each [B, T] int64
  int64_t real_tokens() const;                           // tokens that are not padding (doc id >= 0)
};

// rows[idx[0]], rows[idx[1]], ... stacked on `dev`. All rows must have the same length.
RowBatch rows_to_batch(const std::vector<Row>& rows, const std::vector<int64_t>& idx, c10::Device dev);

// Summed NLL of the batch's targets (packing-aware forward) and their count.
TokenLoss row_batch_nll(CausalLMImpl& m, const RowBatch& b);

// Prompt + continuation sequences (DPO responses, multiple-choice answers) as one right-padded batch:
// row i is prompts[i] + conts[i], targets pre-shifted on the continuation tokens only (kIgnoreIndex elsewhere),
// padding with doc id -1. Returns the batch and the count of real tokens.
std::pair<RowBatch, int64_t> continuation_batch(const std::vector<const std::vector<int>*>& prompts,
                                                const std::vector<const std::vector<int>*>& conts, c10::Device dev);

// Summed log-probs [N] (fp32, differentiable) and token counts [N] of each row's continuation.
std::pair<at::Tensor, at::Tensor> continuation_logprobs(CausalLMImpl& m, const RowBatch& b);

}  // namespace affinage
