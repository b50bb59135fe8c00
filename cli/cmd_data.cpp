// affinage data: work on training data before spending compute on it.
//   data synth: word-story SFT data and DPO pairs sampled from a model itself (app/synth.h).
#include <iostream>
#include "app/synth.h"
#include "base/error.h"
#include "base/strings.h"
#include "cli/commands.h"
#include "cli/common.h"

namespace po = boost::program_options;

namespace affinage::cli {

static int data_synth(const Args& args) {
  SynthOptions so;
  std::string words_arg, rejected = "sampled";
  po::options_description opts("data synth options");
  add_inference_options(opts, so.model);
  opts.add_options()("words", po::value(&words_arg)->required(), "comma-separated words the stories are asked to use")(
      "per-word", po::value(&so.per_word)->default_value(16), "stories sampled per word")(
      "max-pairs-per-word", po::value(&so.max_pairs_per_word)->default_value(0), "cap on DPO pairs per word (0 = all)")(
      "rejected", po::value(&rejected)->default_value("sampled"),
      "DPO rejected answers: `sampled` = a story for the "
      "same prompt that does not use the word; `swapped` = the chosen story with the word replaced by the next word "
      "of the list (minimal pairs that differ only where the request is met)")(
      "out", po::value(&so.out_dir)->required(), "folder for sft.jsonl, prefs.jsonl and samples.jsonl")(
      "max-new-tokens", po::value(&so.sampling.max_new_tokens)->default_value(96), "tokens sampled per story")(
      "temperature", po::value(&so.sampling.temperature)->default_value(1.0), "sampling temperature")(
      "top-k", po::value(&so.sampling.top_k)->default_value(0), "keep the K most likely tokens (0 = all)")(
      "seed", po::value(&so.sampling.seed)->default_value(0), "sampling seed (story i uses seed + i)");
  po::variables_map vm;
  const char* usage =
      "usage: affinage data synth --model DIR [--adapter DIR] --words w1,w2,... --out DIR [options]\n\n"
      "Samples stories for the prompt \"Topic: <word>\\nOnce upon a time\" and checks whether each uses its word.\n"
      "Writes sft.jsonl (prompt/completion of the stories that do), prefs.jsonl (prompt/chosen/rejected: one that\n"
      "does vs. one that does not, same prompt) and samples.jsonl (every story with its verdict).";
  if (parse_args(args, usage, opts, vm)) return 0;
  if (rejected != "sampled" && rejected != "swapped") fail("--rejected: '", rejected, "' is not sampled or swapped");
  so.words = split_list(words_arg);
  so.swapped_rejected = rejected == "swapped";
  SynthResult r = synthesize_word_data(so);
  std::cout << r.using_word << " of " << r.stories << " stories use their word (" << (100.0 * r.using_word / r.stories)
            << "%); " << so.out_dir << "/sft.jsonl has " << r.using_word << " rows, " << so.out_dir << "/prefs.jsonl "
            << r.pairs << " pairs\n";
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
