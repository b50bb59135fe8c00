// Loss and perplexity on a JSONL file (see eval/perplexity.h).
#include "eval/perplexity.h"
#include <cmath>
#include "datasets/row_batch.h"
#include "text/chat.h"

namespace affinage {

nlohmann::json LossEval::to_json() const {
  return {{"loss", loss},
          {"perplexity", perplexity},
          {"tokens", tokens},
          {"documents", documents},
          {"truncated", truncated}};
}

LossEval evaluate_loss(CausalLMImpl& m, const Tokenizer& tok, const std::string& file, int64_t seq_len, int64_t batch,
                       const std::string& format) {
  torch::NoGradGuard ng;
  if (seq_len <= 0) seq_len = m.config().max_position_embeddings;
  DataSource src;
  src.path = file;
  src.format = format;
  auto samples = load_sft_file(src, tok, detect_chat_format(tok), {});
  DataStats st;
  LossEval r;
  r.documents = samples.size();
  truncate_samples(samples, seq_len, Truncation::Right, st);
  r.truncated = st.truncated;
  auto rows = make_rows(samples, seq_len, /*packing=*/true, st);
  auto dev = m.head_weight().device();
  double total = 0;
  for (size_t s = 0; s < rows.size(); s += batch) {
    std::vector<int64_t> idx;
    for (size_t i = s; i < std::min(rows.size(), s + batch); ++i) idx.push_back(i);
    auto l = row_batch_nll(m, rows_to_batch(rows, idx, dev));
    total += l.sum.item<double>();
    r.tokens += l.count;
  }
  r.loss = r.tokens > 0 ? total / double(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace affinage
