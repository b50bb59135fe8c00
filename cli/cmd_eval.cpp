// affinage eval: loss and perplexity of a model (+ adapter) on a JSONL file.
#include <iostream>
#include "cli/commands.h"
#include "cli/common.h"
#include "eval/perplexity.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_eval(const Args& args) {
  InferenceOptions io;
  std::string data, format = "auto";
  int64_t seq_len = 0, batch = 4;
  bool json = false;
  po::options_description opts("eval options");
  add_inference_options(opts, io);
  opts.add_options()
      ("data", po::value(&data)->required(), "JSONL file: {\"text\"} documents, chats or prompt/completion rows")
      ("format", po::value(&format)->default_value("auto"), "auto | text | messages | prompt_completion | alpaca")
      ("seq-len", po::value(&seq_len)->default_value(0), "context for scoring (0 = the model's maximum)")
      ("batch", po::value(&batch)->default_value(4), "rows per forward pass")
      ("json", po::bool_switch(&json), "print one JSON object");
  po::variables_map vm;
  if (parse_args(args, "usage: affinage eval --model DIR [--adapter DIR] --data FILE.jsonl [--json]", opts, vm)) return 0;
  auto lm = load_for_inference(io);
  auto r = evaluate_loss(*lm.model, *lm.tokenizer, data, seq_len, batch, format);
  if (json) std::cout << r.to_json().dump() << "\n";
  else std::cout << "loss " << r.loss << "\nperplexity " << r.perplexity << "\ntokens " << r.tokens << "\n";
  return 0;
}

}  // namespace affinage::cli
