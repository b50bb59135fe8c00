// A run from a recipe: each of its stages in order (through the stage table), each stage's resolved recipe and
// summary.json in its folder, the report, then the recipe's merge and publish steps. Multi-stage resume skips the
// stages that finished. Data-parallel: under torchrun/srun, or `--nproc K` (app/launch.h) which starts the
// processes and runs this in each.
#pragma once
#include <string>
#include <vector>

namespace affinage {

struct RunOptions {
  std::string recipe;                  // the recipe file
  std::vector<std::string> overrides;  // --set key=value
  bool resume = false;                 // continue from the newest checkpoint; finished stages are skipped
};

// Runs the recipe in this process (one rank of a data-parallel run when WORLD_SIZE says so). Errors are thrown.
void run_recipe(const RunOptions& o);

}  // namespace affinage
