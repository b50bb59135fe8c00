// Builds a CausalLM from a model folder (HF single/sharded or Mistral consolidated), one tensor at a time.
#pragma once
#include <optional>
#include <string>
#include "model/model.h"

namespace affinage {

// dtype: the checkpoint's torch_dtype when not given. Every parameter must be in the checkpoint with the
// right shape; rotary inv_freq buffers and a stored lm_head of a tied model are ignored; any other unknown
// tensor is an error (it would mean an architecture we do not implement, e.g. attention biases).
CausalLM load_model(const std::string& dir, std::optional<c10::ScalarType> dtype = std::nullopt,
                    c10::Device device = c10::Device("cpu"));

}  // namespace affinage
