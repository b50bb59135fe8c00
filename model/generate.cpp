// Text generation with a KV cache (see model/generate.h).
#include "model/generate.h"
#include <ATen/CPUGeneratorImpl.h>
#include "base/error.h"

namespace affinage {

int sample_token(const at::Tensor& logits_in, const SamplingOptions& o, at::Generator& gen) {
  auto logits = logits_in.to(at::kCPU, at::kFloat);
  if (o.temperature <= 0) return static_cast<int>(logits.argmax().item<int64_t>());
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(0)) {
    auto kth = std::get<0>(logits.topk(o.top_k)).min();
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  auto probs = at::softmax(logits, 0);
  if (o.top_p < 1.0) {
    auto [sorted, idx] = probs.sort(0, /*descending=*/true);
    auto cum = sorted.cumsum(0);
    // keep the smallest prefix whose mass reaches top_p: drop a token when the mass before it already does
    auto drop = (cum - sorted) >= o.top_p;
    sorted = sorted.masked_fill(drop, 0.0);
    probs = at::zeros_like(probs).scatter(0, idx, sorted);
  }
  return static_cast<int>(at::multinomial(probs, 1, false, gen).item<int64_t>());
}

std::vector<std::vector<int>> generate(CausalLMImpl& model, const std::vector<std::vector<int>>& prompts,
                                       const SamplingOptions& o) {
  torch::NoGradGuard ng;
  int64_t B = prompts.size();
  if (B == 0) return {};
  size_t maxlen = 0;
  for (auto& p : prompts) {
    if (p.empty()) fail("generate: empty prompt (give at least BOS)");
    maxlen = std::max(maxlen, p.size());
  }
  auto dev = model.head_weight().device();
  int64_t cap = static_cast<int64_t>(maxlen) + o.max_new_tokens;
  auto ids = torch::zeros({B, (int64_t)maxlen}, torch::kLong);
  auto pos = torch::zeros({B, (int64_t)maxlen}, torch::kLong);
  auto valid = torch::zeros({B, (int64_t)maxlen}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) {
    int64_t pad = maxlen - prompts[b].size();
    for (size_t t = 0; t < prompts[b].size(); ++t) {
      ids[b][pad + t] = prompts[b][t];
      pos[b][pad + t] = (int64_t)t;
      valid[b][pad + t] = true;
    }
  }
  std::vector<at::Generator> gens;
  for (int64_t b = 0; b < B; ++b) gens.push_back(at::detail::createCPUGenerator(o.seed + b));
  auto cache = model.new_cache(B, cap);
  auto logits = model.forward_cached(ids.to(dev), pos.to(dev), cache, valid.to(dev)).cpu();
  std::vector<std::vector<int>> out(B);
  std::vector<bool> done(B, false);
  std::vector<int64_t> next_pos(B);
  for (int64_t b = 0; b < B; ++b) next_pos[b] = prompts[b].size();
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    auto next = torch::zeros({B, 1}, torch::kLong);
    auto npos = torch::zeros({B, 1}, torch::kLong);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (!done[b]) {
        int tok = sample_token(logits[b], o, gens[b]);
        out[b].push_back(tok);
        if (tok == o.eos_id) done[b] = true;
        next[b][0] = tok;
      }
      npos[b][0] = next_pos[b]++;
      all_done = all_done && done[b];
    }
    if (all_done || step + 1 == o.max_new_tokens) break;
    logits = model.forward_cached(next.to(dev), npos.to(dev), cache).cpu();
  }
  return out;
}

std::string decode_continuation(const Tokenizer& tok, const std::vector<int>& prompt, std::vector<int> gen,
                                int eos_id) {
  if (!gen.empty() && gen.back() == eos_id) gen.pop_back();
  std::vector<int> all(prompt.begin() + (prompt.empty() ? 0 : 1), prompt.end());
  const std::string head = tok.decode(all);
  all.insert(all.end(), gen.begin(), gen.end());
  std::string text = tok.decode(all);
  return text.rfind(head, 0) == 0 ? text.substr(head.size()) : tok.decode(gen);
}

}  // namespace affinage
