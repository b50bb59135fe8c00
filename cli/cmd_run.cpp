// affinage run: a recipe file → a training run (app/run.h), with --set overrides and --resume; data-parallel
// under torchrun/srun or with --nproc K (app/launch.h).
#include "app/launch.h"
#include "app/run.h"
#include "cli/commands.h"
#include "config/recipe_file.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_run(const Args& args) {
  RunOptions o;
  int nproc = 0;
  po::options_description opts("run options");
  opts.add_options()("recipe", po::value(&o.recipe)->required(), "recipe file (JSON, comments allowed)")(
      "set", po::value(&o.overrides)->composing(), "override a key: --set lora.r=16 (repeatable)")(
      "resume", po::bool_switch(&o.resume),
      "continue from the newest checkpoint in the output folder; in a "
      "multi-stage recipe, finished stages are skipped")(
      "nproc", po::value(&nproc),
      "train data-parallel on K local processes (Gloo on CPU, NCCL on GPUs; the "
      "same result as one process). Several machines: torchrun or srun, see docs/distributed.md");
  po::positional_options_description pos;
  pos.add("recipe", 1);
  po::variables_map vm;
  if (parse_args(args, "usage: affinage run RECIPE [--set key=value ...] [--resume] [--nproc K]", opts, vm, &pos))
    return 0;
  if (nproc > 0) {
    expand_stages(load_recipe(o.recipe, o.overrides));  // a broken recipe fails once, before K processes start
    Args child{o.recipe};
    for (auto& s : o.overrides) child.push_back("--set"), child.push_back(s);
    if (o.resume) child.push_back("--resume");
    return launch_local_ranks(nproc, child);
  }
  run_recipe(o);
  return 0;
}

}  // namespace affinage::cli
