// `affinage inspect PATH [--json]`: what a safetensors file, a model folder or a PEFT adapter folder holds
// (app/inspect.h).
#include <iostream>
#include "app/inspect.h"
#include "cli/commands.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_inspect(const Args& args) {
  po::options_description opts("inspect options");
  std::string path;
  bool as_json = false;
  opts.add_options()("path", po::value<std::string>(&path)->required(),
                     "safetensors file, model folder or adapter folder")("json", po::bool_switch(&as_json),
                                                                         "print one JSON object instead of text");
  po::positional_options_description pos;
  pos.add("path", 1);
  po::variables_map vm;
  if (parse_args(args, "usage: affinage inspect PATH [--json]", opts, vm, &pos)) return 0;
  const auto out = inspect_path(path);
  std::cout << (as_json ? out.dump() + "\n" : format_inspect(out));
  return 0;
}

}  // namespace affinage::cli
