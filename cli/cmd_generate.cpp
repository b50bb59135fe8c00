// affinage generate: greedy or sampled continuation of a prompt (or of BOS alone), optionally as a chat turn.
#include <iostream>
#include <nlohmann/json.hpp>
#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "model/generate.h"
#include "text/chat.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_generate(const Args& args) {
  InferenceOptions io;
  std::string prompt;
  bool chat = false, json = false;
  SamplingOptions so;
  po::options_description opts("generate options");
  add_inference_options(opts, io);
  opts.add_options()("prompt", po::value(&prompt), "text to continue (default: start from BOS alone)")(
      "chat", po::bool_switch(&chat), "wrap the prompt as a user turn of the model's chat format")(
      "max-new-tokens", po::value(&so.max_new_tokens)->default_value(128), "stop after N new tokens (or at EOS)")(
      "temperature", po::value(&so.temperature)->default_value(0.0), "0 = greedy")(
      "top-p", po::value(&so.top_p)->default_value(1.0), "nucleus sampling mass")(
      "top-k", po::value(&so.top_k)->default_value(0), "keep the K most likely tokens (0 = all)")(
      "seed", po::value(&so.seed)->default_value(0), "sampling seed")(
      "json", po::bool_switch(&json), "print {\"text\", \"token_ids\"} (generated part only)");
  po::variables_map vm;
  if (parse_args(args, "usage: affinage generate --model DIR [--adapter DIR] [--prompt TEXT] [--chat] [options]", opts,
                 vm))
    return 0;
  if (so.max_new_tokens < 1) fail("--max-new-tokens must be >= 1");
  if (so.top_p <= 0 || so.top_p > 1) fail("--top-p must be in (0, 1]");
  if (chat && prompt.empty()) fail("--chat needs a --prompt");
  auto lm = load_for_inference(io);
  auto& tok = *lm.tokenizer;
  std::vector<int> ids;
  if (chat) {
    ids = render_chat(tok, {{"user", prompt, 1.0}}, detect_chat_format(tok), /*add_generation_prompt=*/true).ids;
  } else {
    if (tok.bos_id() < 0) fail("tokenizer ", tok.path(), " has no BOS token");
    ids.push_back(tok.bos_id());
    if (!prompt.empty())
      for (int t : tok.encode(prompt)) ids.push_back(t);
  }
  so.eos_id = tok.eos_id();
  auto out = generate(*lm.model, {ids}, so)[0];
  std::vector<int> text_ids = out;
  if (!text_ids.empty() && text_ids.back() == so.eos_id) text_ids.pop_back();
  std::string text = tok.decode(text_ids);
  if (json) std::cout << nlohmann::json{{"text", text}, {"token_ids", out}}.dump() << "\n";
  else std::cout << (prompt.empty() || chat ? "" : prompt) << text << "\n";
  return 0;
}

}  // namespace affinage::cli
