// Fixed-length rows (datasets/sft_data.h) → device tensors, and their next-token loss: the one path
// training and evaluation share.
#pragma once
#include <vector>
#include <ATen/ATen.h>
#include "core/loss.h"
#include "core/model.h"
#include "datasets/sft_data.h"

namespace affinage {

struct RowBatch {
  at::Tensor input_ids, targets, position_ids, doc_ids;  // each [B, T] int64
  int64_t real_tokens() const;                            // tokens that are not padding (doc id >= 0)
};

// rows[idx[0]], rows[idx[1]], ... stacked on `dev`. All rows must have the same length.
RowBatch rows_to_batch(const std::vector<Row>& rows, const std::vector<int64_t>& idx, c10::Device dev);

// Summed NLL of the batch's targets (packing-aware forward) and their count.
TokenLoss row_batch_nll(CausalLMImpl& m, const RowBatch& b);

}  // namespace affinage
