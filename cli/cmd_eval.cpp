// affinage eval: loss/perplexity, generation, multiple-choice and preference metrics of a model (+ adapter) on a
// JSONL file (eval/tasks.h), optionally side by side for several models/adapters (--compare).
#include <filesystem>
#include <iomanip>
#include <iostream>
#include "base/error.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "eval/tasks.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace affinage::cli {

// A --compare entry: "base" (the --model alone), an adapter folder/file (on --model), or a model folder.
static InferenceOptions compare_target(const InferenceOptions& io, const std::string& what) {
  InferenceOptions o = io;
  if (what == "base") return o.adapter.clear(), o;
  if (fs::exists(fs::path(what) / "adapter_config.json") || fs::path(what).extension() == ".safetensors") {
    o.adapter = what;
    return o;
  }
  if (fs::exists(fs::path(what) / "config.json") || fs::exists(fs::path(what) / "params.json")) {
    o.model = what, o.adapter.clear();
    return o;
  }
  fail("--compare: '", what,
       "' is not \"base\", a PEFT adapter folder (adapter_config.json) or a model folder (config.json)");
}

static std::string fmt(const nlohmann::json& v) {
  if (!v.is_number()) return v.dump();
  std::ostringstream os;
  os << std::fixed << std::setprecision(4) << v.get<double>();
  return os.str();
}

int cmd_eval(const Args& args) {
  InferenceOptions io;
  std::string data;
  TaskOptions to;
  std::vector<std::string> compare;
  bool json = false;
  po::options_description opts("eval options");
  add_inference_options(opts, io);
  opts.add_options()(
      "data", po::value(&data)->required(),
      "JSONL file: documents/chats/prompt-completion rows (loss), "
      "{prompt, reference} (generation), {prompt, choices, answer} (choice), {prompt, chosen, rejected} (preference)")(
      "task", po::value(&to.type)->default_value("auto"),
      "auto | loss | generation | choice | preference (auto: from the rows)")(
      "seq-len", po::value(&to.seq_len)->default_value(0), "loss: context for scoring (0 = the model's maximum)")(
      "batch", po::value(&to.batch)->default_value(4), "rows per forward pass")(
      "max-new-tokens", po::value(&to.max_new_tokens)->default_value(64), "generation: tokens per answer")(
      "samples", po::value(&to.samples)->default_value(1), "generation: answers per prompt (with --temperature > 0)")(
      "temperature", po::value(&to.temperature)->default_value(0.0), "generation: 0 = greedy")(
      "seed", po::value(&to.seed)->default_value(0), "generation: sampling seed")(
      "extract", po::value(&to.extract), "generation: regex whose first group is the answer (extracted_match)")(
      "compare", po::value(&compare)->multitoken(),
      "evaluate several side by side: \"base\", adapter folders, model folders")("json", po::bool_switch(&json),
                                                                                 "print JSON");
  po::variables_map vm;
  const char* usage =
      "usage: affinage eval --model DIR [--adapter DIR] --data FILE.jsonl [--task T] [--compare A B ...] [--json]";
  if (parse_args(args, usage, opts, vm)) return 0;
  if (compare.empty()) {
    auto lm = load_for_inference(io);
    auto r = evaluate_task(*lm.model, *lm.tokenizer, data, to);
    if (json) {
      std::cout << r.dump() << "\n";
    } else if (r["task"] == "loss") {
      std::cout << "loss " << r["loss"] << "\nperplexity " << r["perplexity"] << "\ntokens " << r["tokens"] << "\n";
    } else {
      for (auto& [k, v] : r.items())
        if (k != "examples" && k != "file")
          std::cout << k << " " << (v.is_string() ? v.get<std::string>() : fmt(v)) << "\n";
    }
    return 0;
  }
  std::vector<nlohmann::json> results;
  for (auto& c : compare) {
    auto lm = load_for_inference(compare_target(io, c));
    auto r = evaluate_task(*lm.model, *lm.tokenizer, data, to);
    r["name"] = c;
    results.push_back(r);
  }
  if (json) {
    std::cout << nlohmann::json(results).dump() << "\n";
    return 0;
  }
  std::cout << std::left << std::setw(22) << "metric";
  for (auto& c : compare) {  // "runs/x/2-dpo/adapter" is labelled "2-dpo"
    fs::path p = fs::path(c).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    std::string label = p.filename() == "adapter" ? p.parent_path().filename().string() : p.filename().string();
    std::cout << "  " << std::setw(14) << label.substr(0, 14);
  }
  std::cout << "\n";
  for (auto& [k, v] : results[0].items()) {
    if (!v.is_number() || k == "rows" || k == "samples") continue;
    std::cout << std::setw(22) << k;
    for (auto& r : results) std::cout << "  " << std::setw(14) << fmt(r.value(k, nlohmann::json()));
    std::cout << "\n";
  }
  return 0;
}

}  // namespace affinage::cli
