// Loss and perplexity of a model on a JSONL file: for {"text"} documents the mean next-token NLL over every
// predicted token of [BOS] + text + [EOS]; for chat and prompt/completion rows, over the trained tokens only.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include "model/model.h"
#include "text/tokenizer.h"

namespace affinage {

struct LossEval {
  double loss = 0;        // total NLL / tokens
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // predicted (scored) tokens
  int64_t documents = 0;
  int64_t truncated = 0;  // documents longer than the context, cut at seq_len
  nlohmann::json to_json() const;
};

// seq_len <= 0: the model's max_position_embeddings. Documents are packed (no attention across them).
LossEval evaluate_loss(CausalLMImpl& m, const Tokenizer& tok, const std::string& file, int64_t seq_len = 0,
                       int64_t batch = 4, const std::string& format = "auto");

}  // namespace affinage
