// Word-story sampling and its check (contract in datasets/word_stories.h).
#include "datasets/word_stories.h"
#include <cctype>
#include "base/error.h"
#include "base/strings.h"

namespace affinage {

std::string word_prompt(const std::string& word) { return "Topic: " + word + "\nOnce upon a time"; }

// Start offsets of the whole-word uses of `word` in `text` (case-insensitive, a plural "s" allowed).
static std::vector<size_t> word_uses(const std::string& text_in, const std::string& word_in) {
  const std::string text = lower(text_in), word = lower(word_in);
  std::vector<size_t> out;
  if (word.empty()) return out;
  auto letter = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  for (size_t p = text.find(word); p != std::string::npos; p = text.find(word, p + 1)) {
    if (p > 0 && letter(text[p - 1])) continue;
    size_t e = p + word.size();
    if (e < text.size() && text[e] == 's') ++e;  // plural
    if (e < text.size() && letter(text[e])) continue;
    out.push_back(p);
  }
  return out;
}

bool uses_word(const std::string& text, const std::string& word) { return !word_uses(text, word).empty(); }

std::string replace_word(const std::string& text, const std::string& word, const std::string& other) {
  std::string out;
  size_t last = 0;
  for (size_t p : word_uses(text, word)) {
    out += text.substr(last, p - last);
    std::string o = other;
    if (!o.empty() && std::isupper(static_cast<unsigned char>(text[p])))
      o[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(o[0])));
    out += o;
    last = p + word.size();
  }
  return out + text.substr(last);
}

std::string cut_to_sentence(const std::string& text) {
  size_t end = text.find_last_of(".!?");
  if (end == std::string::npos) return text;
  if (end + 1 < text.size() && text[end + 1] == '"') ++end;  // keep a closing quote
  return text.substr(0, end + 1);
}

std::vector<WordSample> sample_word_stories(CausalLMImpl& model, const Tokenizer& tok,
                                            const std::vector<std::string>& words, int64_t per_word,
                                            const SamplingOptions& opts, int64_t batch) {
  if (words.empty() || per_word < 1) fail("sample_word_stories: need at least one word and one sample per word");
  std::vector<WordSample> out;
  std::vector<std::vector<int>> prompts;
  for (auto& w : words)
    for (int64_t k = 0; k < per_word; ++k) {
      WordSample s;
      s.word = w, s.prompt = word_prompt(w);
      out.push_back(s);
      std::vector<int> ids{tok.bos_id()};
      for (int t : tok.encode(s.prompt)) ids.push_back(t);
      prompts.push_back(ids);
    }
  for (size_t s = 0; s < prompts.size(); s += batch) {
    std::vector<std::vector<int>> part(prompts.begin() + s, prompts.begin() + std::min(prompts.size(), s + batch));
    SamplingOptions o = opts;
    o.seed = opts.seed + s;  // row i of the whole set samples with seed + i, whatever the batch size
    auto gen = generate(model, part, o);
    for (size_t i = 0; i < gen.size(); ++i) {
      WordSample& ws = out[s + i];
      ws.completion = cut_to_sentence(decode_continuation(tok, part[i], gen[i], o.eos_id));
      ws.ok = uses_word(ws.completion, ws.word);
    }
  }
  return out;
}

}  // namespace affinage
