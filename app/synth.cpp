// `affinage data synth` as a library (see app/synth.h).
#include "app/synth.h"
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include "base/error.h"
#include "base/files.h"
#include "datasets/word_stories.h"

namespace fs = std::filesystem;

namespace affinage {

SynthResult synthesize_word_data(SynthOptions o) {
  const auto& words = o.words;
  if (words.empty()) fail("--words: no word given; e.g. --words dog,ball,cake");
  if (o.per_word < 1) fail("--per-word must be >= 1");
  if (o.swapped_rejected && words.size() < 2) fail("--rejected swapped needs at least two words");
  auto lm = load_for_inference(o.model);
  o.sampling.eos_id = lm.tokenizer->eos_id();
  auto samples = sample_word_stories(*lm.model, *lm.tokenizer, words, o.per_word, o.sampling);

  std::ostringstream sft, prefs, all;
  std::map<std::string, std::pair<std::vector<const WordSample*>, std::vector<const WordSample*>>> by_word;
  for (auto& s : samples) {
    all << nlohmann::json{{"word", s.word}, {"prompt", s.prompt}, {"completion", s.completion}, {"uses_word", s.ok}}
               .dump()
        << "\n";
    if (s.ok) sft << nlohmann::json{{"prompt", s.prompt}, {"completion", s.completion}}.dump() << "\n";
    (s.ok ? by_word[s.word].first : by_word[s.word].second).push_back(&s);
  }
  SynthResult res;
  res.stories = samples.size();
  for (size_t k = 0; k < words.size(); ++k) {
    const std::string& w = words[k];
    auto& [good, bad] = by_word[w];
    res.using_word += good.size();
    size_t n = o.swapped_rejected ? good.size() : std::min(good.size(), bad.size());
    if (o.max_pairs_per_word > 0) n = std::min<size_t>(n, o.max_pairs_per_word);
    for (size_t i = 0; i < n; ++i, ++res.pairs) {
      std::string rej =
          o.swapped_rejected ? replace_word(good[i]->completion, w, words[(k + 1) % words.size()]) : bad[i]->completion;
      prefs << nlohmann::json{{"prompt", good[i]->prompt}, {"chosen", good[i]->completion}, {"rejected", rej}}.dump()
            << "\n";
    }
    std::cerr << "  " << w << ": " << good.size() << "/" << good.size() + bad.size() << " stories use the word\n";
  }
  fs::create_directories(o.out_dir);
  write_file_atomic(o.out_dir + "/samples.jsonl", all.str());
  write_file_atomic(o.out_dir + "/sft.jsonl", sft.str());
  write_file_atomic(o.out_dir + "/prefs.jsonl", prefs.str());
  return res;
}

}  // namespace affinage
