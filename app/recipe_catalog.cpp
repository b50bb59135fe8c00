// The shipped recipes (recipes/*.json), each introduced by its comment header (what it does; Hardware:; Time:)
// (see app/recipe_catalog.h).
#include "app/recipe_catalog.h"
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <vector>
#include "base/error.h"
#include "base/files.h"

namespace fs = std::filesystem;

namespace affinage {
namespace {

// The leading // comment lines of a recipe file, without the slashes.
std::vector<std::string> header_of(const std::string& text) {
  std::vector<std::string> h;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto i = line.find_first_not_of(" \t");
    if (i == std::string::npos) {
      if (h.empty()) continue;
      break;
    }
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

}  // namespace

std::string recipes_dir() {
  if (const char* env = std::getenv("AFFINAGE_RECIPES")) {
    if (!fs::is_directory(env))
      fail("AFFINAGE_RECIPES='", env, "' is not a folder; point it at a folder of recipe .json files");
    return std::string(env);
  }
  const fs::path exe = executable_dir();
  std::vector<fs::path> tries = {exe / "recipes", exe.parent_path() / "recipes",  // installed; build/affinage
                                 exe / "../share/affinage/recipes"};
  for (auto& p : tries)
    if (fs::is_directory(p)) return fs::canonical(p).string();
  fail("no recipes folder found (looked in ", tries[0].string(), ", ", tries[1].string(), " and ", tries[2].string(),
       "); set AFFINAGE_RECIPES=DIR");
}

std::string find_recipe(std::string name) {
  const fs::path dir = recipes_dir();
  if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) name.resize(name.size() - 5);
  fs::path p = dir / (name + ".json");
  if (name.empty() || name.find('/') != std::string::npos || !fs::is_regular_file(p))
    fail("no recipe '", name, "' in ", dir.string(), "; `affinage recipes list` shows the names");
  return p.string();
}

std::string list_recipes() {
  const fs::path dir = recipes_dir();
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::ostringstream out;
  out << "recipes in " << dir.string() << " (affinage recipes show NAME):\n";
  size_t w = 0;
  for (auto& f : files) w = std::max(w, f.stem().string().size());
  for (auto& f : files) {
    auto h = header_of(read_file(f.string()));
    std::string name = f.stem().string(), pad(w + 2 - name.size(), ' ');
    out << "  " << name << pad << (h.empty() ? "(no comment header)" : h[0]) << "\n";
    for (const char* key : {"Hardware:", "Time:"}) {
      std::string v = header_field(h, key);
      if (!v.empty()) out << "  " << std::string(w + 2, ' ') << key << " " << v << "\n";
    }
  }
  return out.str();
}

std::string copy_recipe(const std::string& name, const std::string& dest_arg) {
  const fs::path src = find_recipe(name);
  fs::path dest = dest_arg;
  if (fs::is_directory(dest)) dest /= src.filename();
  if (fs::exists(dest))
    fail("'", dest.string(), "' exists; not overwriting it: choose another DEST or remove it first");
  copy_file_sha256(src.string(), dest.string());
  return dest.string();
}

}  // namespace affinage
