// Data made by a model itself, for a task anyone can check: "write a story that uses the word W". Stories are
// sampled for prompts naming a word; those that use the word satisfy the request (rejection sampling). The
// satisfying ones are SFT data; satisfying vs. not, for the same prompt, are DPO pairs. The same check scores
// a model on held-out words (eval/). Used by the quickstart and the DPO tests on stories260K.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "model/generate.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace affinage {

// The prompt that asks for word w: "Topic: <w>\nOnce upon a time" (the model continues the story).
std::string word_prompt(const std::string& word);

// True when `text` uses `word` as a whole word, case-insensitive, also as a plural ("dog", "Dogs", "dog's").
bool uses_word(const std::string& text, const std::string& word);

// `text` with every whole-word use of `word` (as uses_word finds them) replaced by `other`, keeping a capital
// first letter and a plural "s": a minimal pair that differs only where the request is met.
std::string replace_word(const std::string& text, const std::string& word, const std::string& other);

// A sampled continuation cut after its last full sentence (., ! or ?), so training text does not end mid-word.
std::string cut_to_sentence(const std::string& text);

struct WordSample {
  std::string word, prompt, completion;
  bool ok = false;  // uses_word(completion, word)
};

// `per_word` samples for each word (seeded, batched `batch` prompts at a time), in word order.
std::vector<WordSample> sample_word_stories(CausalLMImpl& model, const Tokenizer& tok,
                                            const std::vector<std::string>& words, int64_t per_word,
                                            const SamplingOptions& opts, int64_t batch = 64);

}  // namespace affinage
