// `affinage data synth`: word-story SFT data and DPO pairs sampled from a model itself (datasets/word_stories.h):
// sft.jsonl (stories that use their word), prefs.jsonl (one that does vs. one that does not, same prompt) and
// samples.jsonl (every story with its verdict) in an output folder.
#pragma once
#include <cstdint>
#include <string>
#include <vector>
#include "app/inference.h"
#include "model/generate.h"

namespace affinage {

struct SynthOptions {
  InferenceOptions model;
  std::vector<std::string> words;  // asked for, in order
  int64_t per_word = 16;           // stories sampled per word
  int64_t max_pairs_per_word = 0;  // 0 = all
  bool swapped_rejected = false;   // rejected = the chosen story with the word replaced by the next word of the list
  SamplingOptions sampling;
  std::string out_dir;
};

struct SynthResult {
  int64_t stories = 0, using_word = 0, pairs = 0;
};

// Prints a line per word on stderr. Errors name the option at fault.
SynthResult synthesize_word_data(SynthOptions o);

}  // namespace affinage
