// `affinage recipes list|show NAME|copy NAME DEST`: the shipped recipes (app/recipe_catalog.h).
#include <iostream>
#include "app/recipe_catalog.h"
#include "base/error.h"
#include "base/files.h"
#include "cli/commands.h"

namespace po = boost::program_options;

namespace affinage::cli {

int cmd_recipes(const Args& args) {
  std::vector<std::string> pos_args;
  po::options_description opts("recipes options");
  opts.add_options()("args", po::value(&pos_args)->multitoken(), "list | show NAME | copy NAME DEST");
  po::positional_options_description pos;
  pos.add("args", -1);
  po::variables_map vm;
  const std::string usage =
      "usage: affinage recipes list             the shipped recipes: what each does, hardware, time\n"
      "       affinage recipes show NAME        print a recipe (comments included)\n"
      "       affinage recipes copy NAME DEST   copy it to DEST (a file, or a folder to copy into) to edit; never "
      "overwrites\n\n"
      "Recipes are found in $AFFINAGE_RECIPES, else recipes/ next to the executable or one folder above it.";
  if (parse_args(args, usage, opts, vm, &pos)) return 0;
  std::string verb = pos_args.empty() ? "list" : pos_args[0];
  size_t want = verb == "list" ? 1 : verb == "show" ? 2 : verb == "copy" ? 3 : 0;
  if (want == 0) fail("unknown action '", verb, "': use list, show NAME or copy NAME DEST");
  if (pos_args.size() > want || (pos_args.size() < want && verb != "list"))
    fail("'recipes ", verb, "' takes ", want - 1, " argument(s): affinage recipes ",
         verb == "show"   ? "show NAME"
         : verb == "copy" ? "copy NAME DEST"
                          : "list");
  if (verb == "list") {
    std::cout << list_recipes();
  } else if (verb == "show") {
    std::cout << read_file(find_recipe(pos_args[1]));
  } else {
    const std::string dest = copy_recipe(pos_args[1], pos_args[2]);
    std::cout << "copied " << find_recipe(pos_args[1]) << " to " << dest << "\n"
              << "run it with:  affinage run " << dest
              << "   (relative paths in it resolve against the current folder)\n";
  }
  return 0;
}

}  // namespace affinage::cli
