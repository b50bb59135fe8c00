// `affinage recipes list|show NAME|copy NAME DEST`: the shipped recipes (recipes/*.json), each introduced by
// its comment header (what it does; Hardware:; Time:), printed whole, or copied to start your own.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include "cli/commands.h"
#include "core/error.h"
#include "core/files.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace affinage::cli {

namespace {

// $AFFINAGE_RECIPES, else recipes/ beside or above the executable (build/affinage -> recipes/), else the
// source tree the binary was built from.
fs::path recipes_dir() {
  if (const char* env = std::getenv("AFFINAGE_RECIPES")) {
    if (!fs::is_directory(env)) fail("AFFINAGE_RECIPES='", env, "' is not a folder; point it at a folder of recipe .json files");
    return env;
  }
  std::vector<fs::path> tries;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) tries = {exe.parent_path() / "recipes", exe.parent_path().parent_path() / "recipes"};
  tries.push_back(fs::path(AFFINAGE_SOURCE_DIR) / "recipes");
  for (auto& p : tries)
    if (fs::is_directory(p)) return p;
  fail("no recipes folder found (looked in ", tries.front().string(), " and ", tries.back().string(),
       "); set AFFINAGE_RECIPES=DIR");
}

// The leading // comment lines of a recipe file, without the slashes.
std::vector<std::string> header_of(const std::string& text) {
  std::vector<std::string> h;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto i = line.find_first_not_of(" \t");
    if (i == std::string::npos) { if (h.empty()) continue; break; }
    if (line.compare(i, 2, "//") != 0) break;
    std::string t = line.substr(i + 2);
    h.push_back(t.empty() || t[0] != ' ' ? t : t.substr(1));
  }
  return h;
}

std::string header_field(const std::vector<std::string>& h, const std::string& key) {  // "Hardware:" -> rest
  for (auto& l : h) {
    if (l.rfind(key, 0) != 0) continue;
    auto i = l.find_first_not_of(' ', key.size());
    return i == std::string::npos ? "" : l.substr(i);
  }
  return "";
}

fs::path find_recipe(const fs::path& dir, std::string name) {
  if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) name.resize(name.size() - 5);
  fs::path p = dir / (name + ".json");
  if (name.empty() || name.find('/') != std::string::npos || !fs::is_regular_file(p))
    fail("no recipe '", name, "' in ", dir.string(), "; `affinage recipes list` shows the names");
  return p;
}

}  // namespace

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
      "       affinage recipes copy NAME DEST   copy it to DEST (a file, or a folder to copy into) to edit; never overwrites\n\n"
      "Recipes are found in $AFFINAGE_RECIPES, else recipes/ next to the executable or the source tree.";
  if (parse_args(args, usage, opts, vm, &pos)) return 0;
  std::string verb = pos_args.empty() ? "list" : pos_args[0];
  size_t want = verb == "list" ? 1 : verb == "show" ? 2 : verb == "copy" ? 3 : 0;
  if (want == 0) fail("unknown action '", verb, "': use list, show NAME or copy NAME DEST");
  if (pos_args.size() > want || (pos_args.size() < want && verb != "list"))
    fail("'recipes ", verb, "' takes ", want - 1, " argument(s): affinage recipes ",
         verb == "show" ? "show NAME" : verb == "copy" ? "copy NAME DEST" : "list");
  fs::path dir = recipes_dir();
  if (verb == "list") {
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::cout << "recipes in " << dir.string() << " (affinage recipes show NAME):\n";
    size_t w = 0;
    for (auto& f : files) w = std::max(w, f.stem().string().size());
    for (auto& f : files) {
      auto h = header_of(read_file(f.string()));
      std::string name = f.stem().string(), pad(w + 2 - name.size(), ' ');
      std::cout << "  " << name << pad << (h.empty() ? "(no comment header)" : h[0]) << "\n";
      for (const char* key : {"Hardware:", "Time:"}) {
        std::string v = header_field(h, key);
        if (!v.empty()) std::cout << "  " << std::string(w + 2, ' ') << key << " " << v << "\n";
      }
    }
    return 0;
  }
  fs::path src = find_recipe(dir, pos_args[1]);
  if (verb == "show") {
    std::cout << read_file(src.string());
    return 0;
  }
  fs::path dest = pos_args[2];
  if (fs::is_directory(dest)) dest /= src.filename();
  if (fs::exists(dest)) fail("'", dest.string(), "' exists; not overwriting it: choose another DEST or remove it first");
  copy_file_sha256(src.string(), dest.string());
  std::cout << "copied " << src.string() << " to " << dest.string() << "\n"
            << "run it with:  affinage run " << dest.string() << "   (relative paths in it resolve against the current folder)\n";
  return 0;
}

}  // namespace affinage::cli
