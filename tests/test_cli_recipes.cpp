// `affinage recipes`: every shipped recipe has its header (a one-line summary, Hardware:, Time:) and parses; list,
// show and copy work, copy never overwrites, and AFFINAGE_RECIPES points the command elsewhere.
#include <gtest/gtest.h>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include "base/files.h"
#include "config/recipe_file.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using affinage::read_file;
using affinage::test::repo_path;
using affinage::test::run_cli;

namespace {

std::vector<fs::path> shipped() {
  std::vector<fs::path> v;
  for (auto& e : fs::directory_iterator(repo_path("recipes")))
    if (e.path().extension() == ".json") v.push_back(e.path());
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::string> header(const fs::path& p) {
  std::vector<std::string> h;
  std::istringstream in(read_file(p.string()));
  std::string l;
  while (std::getline(in, l) && l.rfind("//", 0) == 0) h.push_back(l.size() > 3 ? l.substr(3) : "");
  return h;
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(CliRecipes, EveryShippedRecipeSaysWhatWhereAndHowLongAndParses) {
  ASSERT_GE(shipped().size(), 5u);
  for (auto& p : shipped()) {
    SCOPED_TRACE(p.string());
    auto h = header(p);
    ASSERT_GE(h.size(), 3u) << "needs a // comment header: what it does, Hardware:, Time:";
    EXPECT_EQ(h[0].back(), '.') << "the first line is the one-line summary `recipes list` shows: end it with a period";
    EXPECT_LE(h[0].size(), 115u) << h[0];
    int hw = 0, t = 0;
    for (auto& l : h) hw += l.rfind("Hardware: ", 0) == 0, t += l.rfind("Time: ", 0) == 0;
    EXPECT_EQ(hw, 1) << "one line starting 'Hardware: ' (what it runs on)";
    EXPECT_EQ(t, 1) << "one line starting 'Time: ' (how long it takes there)";
    auto r = affinage::load_recipe(p.string());
    EXPECT_FALSE(r.name.empty());
  }
}

TEST(CliRecipes, ListShowsEveryRecipeWithItsSummaryHardwareAndTime) {
  auto r = run_cli("recipes list");
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto& p : shipped()) {
    auto h = header(p);
    EXPECT_TRUE(has(r.out, "  " + p.stem().string() + " ")) << p;
    EXPECT_TRUE(has(r.out, h[0])) << h[0];
    for (auto& l : h) {
      if (l.rfind("Hardware: ", 0) == 0 || l.rfind("Time: ", 0) == 0) {
        EXPECT_TRUE(has(r.out, l)) << l;
      }
    }
  }
}

TEST(CliRecipes, ShowPrintsTheFileAndCopyNeverOverwrites) {
  const std::string src = repo_path("recipes/stories260k_sft.json");
  auto r = run_cli("recipes show stories260k_sft");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, read_file(src));

  auto tmp = affinage::test::temp_dir("recipes_copy");
  r = run_cli("recipes copy stories260k_sft '" + tmp + "'");  // into a folder
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(tmp + "/stories260k_sft.json"), read_file(src));
  r = run_cli("recipes copy stories260k_dpo '" + tmp + "/mine.json'");  // to a file name
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(tmp + "/mine.json"), read_file(repo_path("recipes/stories260k_dpo.json")));
  r = run_cli("recipes copy stories260k_sft '" + tmp + "/mine.json'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.err, tmp + "/mine.json") && has(r.err, "not overwriting")) << r.err;
  EXPECT_EQ(read_file(tmp + "/mine.json"), read_file(repo_path("recipes/stories260k_dpo.json")));

  r = run_cli("recipes show nope.json");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(has(r.err, "no recipe 'nope'") && has(r.err, "recipes list")) << r.err;

  // AFFINAGE_RECIPES: another folder of recipes.
  affinage::write_file_atomic(tmp + "/x.json", "// Mine: a test recipe.\n// Hardware: none.\n// Time: none.\n{}\n");
  setenv("AFFINAGE_RECIPES", tmp.c_str(), 1);
  r = run_cli("recipes list");
  unsetenv("AFFINAGE_RECIPES");
  EXPECT_TRUE(has(r.out, "  x  ") && has(r.out, "Mine: a test recipe.") && has(r.out, "Time: none.")) << r.out;
  fs::remove_all(tmp);
}
