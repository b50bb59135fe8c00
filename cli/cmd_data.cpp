// affinage data: work on training data before spending compute on it.
//   data synth: word-story SFT data and DPO pairs sampled from a model itself (datasets/word_stories.h).
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "datasets/word_stories.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace affinage::cli {

static std::vector<std::string> split_words(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string w; std::getline(ss, w, ',');) {
    w.erase(0, w.find_first_not_of(' '));
    w.erase(w.find_last_not_of(' ') + 1);
    if (!w.empty()) out.push_back(w);
  }
  return out;
}

static int data_synth(const Args& args) {
  InferenceOptions io;
  std::string words_arg, out;
  int64_t per_word = 16, max_pairs = 0;
  std::string rejected = "sampled";
  SamplingOptions so;
  po::options_description opts("data synth options");
  add_inference_options(opts, io);
  opts.add_options()
      ("words", po::value(&words_arg)->required(), "comma-separated words the stories are asked to use")
      ("per-word", po::value(&per_word)->default_value(16), "stories sampled per word")
      ("max-pairs-per-word", po::value(&max_pairs)->default_value(0), "cap on DPO pairs per word (0 = all)")
      ("rejected", po::value(&rejected)->default_value("sampled"), "DPO rejected answers: `sampled` = a story for the "
       "same prompt that does not use the word; `swapped` = the chosen story with the word replaced by the next word "
       "of the list (minimal pairs that differ only where the request is met)")
      ("out", po::value(&out)->required(), "folder for sft.jsonl, prefs.jsonl and samples.jsonl")
      ("max-new-tokens", po::value(&so.max_new_tokens)->default_value(96), "tokens sampled per story")
      ("temperature", po::value(&so.temperature)->default_value(1.0), "sampling temperature")
      ("top-k", po::value(&so.top_k)->default_value(0), "keep the K most likely tokens (0 = all)")
      ("seed", po::value(&so.seed)->default_value(0), "sampling seed (story i uses seed + i)");
  po::variables_map vm;
  const char* usage =
      "usage: affinage data synth --model DIR [--adapter DIR] --words w1,w2,... --out DIR [options]\n\n"
      "Samples stories for the prompt \"Topic: <word>\\nOnce upon a time\" and checks whether each uses its word.\n"
      "Writes sft.jsonl (prompt/completion of the stories that do), prefs.jsonl (prompt/chosen/rejected: one that\n"
      "does vs. one that does not, same prompt) and samples.jsonl (every story with its verdict).";
  if (parse_args(args, usage, opts, vm)) return 0;
  auto words = split_words(words_arg);
  if (words.empty()) fail("--words: no word given; e.g. --words dog,ball,cake");
  if (per_word < 1) fail("--per-word must be >= 1");
  if (rejected != "sampled" && rejected != "swapped") fail("--rejected: '", rejected, "' is not sampled or swapped");
  if (rejected == "swapped" && words.size() < 2) fail("--rejected swapped needs at least two words");
  auto lm = load_for_inference(io);
  so.eos_id = lm.tokenizer->eos_id();
  auto samples = sample_word_stories(*lm.model, *lm.tokenizer, words, per_word, so);

  std::ostringstream sft, prefs, all;
  std::map<std::string, std::pair<std::vector<const WordSample*>, std::vector<const WordSample*>>> by_word;
  for (auto& s : samples) {
    all << nlohmann::json{{"word", s.word}, {"prompt", s.prompt}, {"completion", s.completion}, {"uses_word", s.ok}}.dump() << "\n";
    if (s.ok) sft << nlohmann::json{{"prompt", s.prompt}, {"completion", s.completion}}.dump() << "\n";
    (s.ok ? by_word[s.word].first : by_word[s.word].second).push_back(&s);
  }
  int64_t n_ok = 0, n_pairs = 0;
  for (size_t k = 0; k < words.size(); ++k) {
    const std::string& w = words[k];
    auto& [good, bad] = by_word[w];
    n_ok += good.size();
    size_t n = rejected == "swapped" ? good.size() : std::min(good.size(), bad.size());
    if (max_pairs > 0) n = std::min<size_t>(n, max_pairs);
    for (size_t i = 0; i < n; ++i, ++n_pairs) {
      std::string rej = rejected == "swapped" ? replace_word(good[i]->completion, w, words[(k + 1) % words.size()])
                                              : bad[i]->completion;
      prefs << nlohmann::json{{"prompt", good[i]->prompt}, {"chosen", good[i]->completion}, {"rejected", rej}}.dump() << "\n";
    }
    std::cerr << "  " << w << ": " << good.size() << "/" << good.size() + bad.size() << " stories use the word\n";
  }
  fs::create_directories(out);
  write_file_atomic(out + "/samples.jsonl", all.str());
  write_file_atomic(out + "/sft.jsonl", sft.str());
  write_file_atomic(out + "/prefs.jsonl", prefs.str());
  std::cout << n_ok << " of " << samples.size() << " stories use their word (" << (100.0 * n_ok / samples.size())
            << "%); " << out << "/sft.jsonl has " << n_ok << " rows, " << out << "/prefs.jsonl " << n_pairs << " pairs\n";
  return 0;
}

int cmd_data(const Args& args) {
  const std::string usage =
      "usage: affinage data SUBCOMMAND [options]   (affinage data SUBCOMMAND --help)\n\n"
      "subcommands:\n"
      "  synth     word-story SFT data and DPO pairs sampled from a model itself\n"
      "  check     validate every row of a recipe's data (or a file), its statistics, steps and time, samples\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << usage;
    return args.empty() ? 2 : 0;
  }
  Args rest(args.begin() + 1, args.end());
  if (args[0] == "synth") return data_synth(rest);
  if (args[0] == "check") return cmd_data_check(rest);
  fail("data: unknown subcommand '", args[0], "'; use check or synth (see affinage data --help)");
}

}  // namespace affinage::cli
