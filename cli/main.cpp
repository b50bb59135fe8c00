// affinage: the command-line entry point. Dispatches to a subcommand and turns errors into one line on stderr.
#include <iostream>
#include <map>
#include "base/error.h"
#include "base/runtime.h"
#include "cli/commands.h"

namespace po = boost::program_options;

namespace affinage::cli {

bool parse_args(const Args& args, const std::string& usage, po::options_description& opts, po::variables_map& vm,
                const po::positional_options_description* pos) {
  opts.add_options()("help,h", "show this help");
  auto parser = po::command_line_parser(args).options(opts);
  if (pos) parser.positional(*pos);
  po::store(parser.run(), vm);
  if (vm.count("help")) {
    std::cout << usage << "\n\n" << opts << "\n";
    return true;
  }
  po::notify(vm);
  return false;
}

}  // namespace affinage::cli

using namespace affinage::cli;

struct Sub {
  int (*fn)(const Args&);
  const char* summary;
  bool computes = false;  // runs a model: OpenMP threads should sleep between regions, freed memory is kept
};
static const std::map<std::string, Sub>& subcommands() {
  static const std::map<std::string, Sub> m = {
      {"run", {cmd_run, "train from a recipe file (SFT, DPO): affinage run RECIPE [--set k=v] [--resume]", true}},
      {"generate", {cmd_generate, "sample or greedy-decode text from a model (+ adapter)", true}},
      {"eval", {cmd_eval, "loss and perplexity of a model (+ adapter) on a JSONL file", true}},
      {"inspect", {cmd_inspect, "show what a model folder, adapter folder or safetensors file holds"}},
      {"tokenize", {cmd_tokenize, "text or a chat (messages JSON) to token ids"}},
      {"data",
       {cmd_data,
        "training data: check (validate, count, show masks) and synth (stories sampled from a model as SFT/DPO data)",
        true}},
      {"merge", {cmd_merge, "fold LoRA adapters into a base model (linear, TIES, DARE): a new model folder"}},
      {"publish", {cmd_publish, "a folder ready for the Hugging Face Hub: files, model card, provenance"}},
      {"report", {cmd_report, "(re)build RUN_DIR/report.html: charts, final metrics, recipe (self-contained)"}},
      {"recipes", {cmd_recipes, "the shipped recipes: list | show NAME | copy NAME DEST"}},
  };
  return m;
}

static void usage(std::ostream& os) {
  os << "affinage " << AFFINAGE_VERSION << " - fine-tuning and post-training of Llama/Mistral models\n\n"
     << "usage: affinage COMMAND [options]   (affinage COMMAND --help for its options)\n\ncommands:\n";
  for (auto& [name, sub] : subcommands())
    os << "  " << name << std::string(10 - name.size(), ' ') << sub.summary << "\n";
}

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    usage(std::cout);
    return 0;
  }
  if (name == "--version") {
    std::cout << "affinage " << AFFINAGE_VERSION << "\n";
    return 0;
  }
  auto it = subcommands().find(name);
  if (it == subcommands().end()) {
    std::cerr << "affinage: unknown command '" << name << "'\n\n";
    usage(std::cerr);
    return 2;
  }
  if (it->second.computes) {
    // Only the commands that run a model pay for the re-execution (it doubles the start-up of the others).
    affinage::prefer_passive_omp_wait(argv);  // OpenMP threads sleep instead of spinning (base/runtime.h)
    affinage::keep_freed_memory();
  }
  Args args(argv + 2, argv + argc);
  try {
    return it->second.fn(args);
  } catch (const po::error& e) {
    std::cerr << "affinage " << name << ": " << e.what() << " (see affinage " << name << " --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "affinage " << name << ": error: " << e.what() << "\n";
    return 1;
  }
}
