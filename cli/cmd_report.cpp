// `affinage report RUN_DIR`: (re)builds RUN_DIR/report.html from the run's metrics.jsonl, recipe.json and
// summary.json; `affinage run` writes it after each stage, this rebuilds it for a run in progress or an older one.
#include <iostream>
#include "app/report.h"
#include "cli/commands.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_report(const Args& args) {
  std::string dir;
  po::options_description opts("report options");
  opts.add_options()("run-dir", po::value(&dir)->required(), "a run's output_dir (holds metrics.jsonl)");
  po::positional_options_description pos;
  pos.add("run-dir", 1);
  po::variables_map vm;
  if (parse_args(args,
                 "usage: affinage report RUN_DIR\n\nWrites RUN_DIR/report.html: a self-contained page (charts, "
                 "final metrics, resolved recipe) that any browser opens offline.",
                 opts, vm, &pos))
    return 0;
  std::cout << write_report(dir) << "\n";
  return 0;
}

}  // namespace affinage::cli
