// affinage run: a recipe file → a training run (its stage), with --set overrides and --resume.
#include <filesystem>
#include <iostream>
#include "cli/commands.h"
#include "core/error.h"
#include "core/recipe.h"
#include "core/safetensors.h"
#include "sft/sft.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_run(const Args& args) {
  std::string path;
  std::vector<std::string> sets;
  bool resume = false;
  po::options_description opts("run options");
  opts.add_options()
      ("recipe", po::value(&path)->required(), "recipe file (JSON, comments allowed)")
      ("set", po::value(&sets)->composing(), "override a key: --set lora.r=16 (repeatable)")
      ("resume", po::bool_switch(&resume), "continue from the newest checkpoint in the output folder");
  po::positional_options_description pos;
  pos.add("recipe", 1);
  po::variables_map vm;
  if (parse_args(args, "usage: affinage run RECIPE [--set key=value ...] [--resume]", opts, vm, &pos)) return 0;
  Recipe r = load_recipe(path, sets);
  std::filesystem::create_directories(r.output_dir);
  write_file_atomic(r.output_dir + "/recipe.json", recipe_to_json(r).dump(2) + "\n");
  if (r.stage == "sft") {
    auto res = run_sft(r, resume);
    nlohmann::json summary = {{"stage", "sft"}, {"steps", res.summary.steps}, {"final", res.summary.last},
                              {"eval", res.summary.eval}, {"initial_eval", res.summary.initial_eval},
                              {"data", res.data_stats}};
    write_file_atomic(r.output_dir + "/summary.json", summary.dump(2) + "\n");
    std::cout << "done: " << res.summary.steps << " steps; adapter in " << r.output_dir << "/adapter\n";
    return 0;
  }
  fail("recipe ", path, ": stage '", r.stage, "' is not available in this build (sft)");
}

}  // namespace affinage::cli
