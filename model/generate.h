// Text generation with a KV cache: greedy (temperature 0) or sampling with temperature, top-k and top-p,
// seeded per row so a row's output does not depend on what else is in the batch.
#pragma once
#include <cstdint>
#include <vector>
#include "model/model.h"
#include "text/tokenizer.h"

namespace affinage {

struct SamplingOptions {
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;
  int64_t top_k = 0;   // 0 = no top-k cut
  uint64_t seed = 0;   // row i samples with seed + i
  int64_t eos_id = 2;  // generation of a row stops after this id (it is included in the output)
};

// prompts: token ids, each non-empty (usually starting with BOS); different lengths are left-padded.
// Returns the generated ids of each row (prompt excluded).
std::vector<std::vector<int>> generate(CausalLMImpl& model, const std::vector<std::vector<int>>& prompts,
                                       const SamplingOptions& opts);

// The text of generated ids as it continues `prompt` (its first id a BOS): decoded together with the prompt so
// a first piece "▁word" keeps its space, then the prompt's text removed; a final `eos_id` is dropped.
std::string decode_continuation(const Tokenizer& tok, const std::vector<int>& prompt, std::vector<int> gen, int eos_id);

// One sampling decision from fp32 logits [vocab] (exposed for tests).
int sample_token(const at::Tensor& logits, const SamplingOptions& opts, at::Generator& gen);

}  // namespace affinage
