// The README's first command, shortened: scripts/quickstart.sh with few samples and steps runs every stage of
// the pipeline (data from the model, SFT then DPO, held-out eval table, merge, publish) and leaves its files.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include "tests/test_util.h"

namespace fs = std::filesystem;
using affinage::test::repo_path;

TEST(Quickstart, ShortenedPipelineRunsEndToEnd) {
  std::string out = affinage::test::temp_dir("quickstart");
  std::string log = out + ".log";
  std::string cmd = "cd '" + repo_path("") + "' && QS_NO_BUILD=1 QS_OUT='" + out +
                    "' QS_PER_WORD=6 QS_STEPS=3 QS_SAMPLES=2 " + "bash scripts/quickstart.sh > '" + log + "' 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  ASSERT_EQ(rc, 0) << text;
  for (const char* line : {"base stories260K", "+ SFT adapter", "+ SFT + DPO adapter"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " missing from:\n" << text;
  for (const char* p :
       {"data/sft.jsonl", "data/prefs.jsonl", "train/1-sft/adapter/adapter_model.safetensors",
        "train/2-dpo/adapter/adapter_model.safetensors", "merged/config.json", "merged/model.safetensors",
        "publish/README.md", "publish/provenance.json", "heldout_eval.json"})
    EXPECT_TRUE(fs::exists(out + "/" + p)) << p;
  // The table the script prints is the eval's own result: a share of the 16 stories (8 held-out words x 2
  // samples), each printed as a percentage with one decimal.
  auto ev = nlohmann::json::parse(std::ifstream(out + "/heldout_eval.json"));
  ASSERT_EQ(ev.size(), 3u);
  const char* rows[3] = {"base stories260K", "+ SFT adapter", "+ SFT + DPO adapter"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ev[i]["samples"], 16);
    const double share = ev[i]["word_match"].get<double>(), stories = share * 16;
    EXPECT_NEAR(stories, std::round(stories), 1e-9) << "not a count of the 16 stories: " << share;
    EXPECT_TRUE(stories >= 0 && stories <= 16) << share;
    char line[64];
    std::snprintf(line, sizeof line, "%5.1f%%", 100 * share);
    const size_t at = text.find(rows[i]);
    ASSERT_NE(at, std::string::npos);
    EXPECT_EQ(text.substr(at, text.find('\n', at) - at).find(line) != std::string::npos, true)
        << rows[i] << " does not print " << line << " in:\n"
        << text;
  }
  // The data the model made for itself keeps its contract, checked here with a regex of our own: every SFT story
  // uses the word its prompt asks for; every DPO pair's chosen story does and its rejected one does not.
  auto uses = [](const std::string& story, const std::string& word) {
    return std::regex_search(story, std::regex("\\b" + word + "s?\\b", std::regex::icase));
  };
  auto word_of = [](const std::string& prompt) { return prompt.substr(7, prompt.find('\n') - 7); };  // "Topic: w\n..."
  int sft_rows = 0, pairs = 0;
  std::ifstream sft(out + "/data/sft.jsonl"), prefs(out + "/data/prefs.jsonl");
  for (std::string line; std::getline(sft, line); ++sft_rows) {
    auto r = nlohmann::json::parse(line);
    EXPECT_TRUE(uses(r["completion"], word_of(r["prompt"]))) << line;
  }
  for (std::string line; std::getline(prefs, line); ++pairs) {
    auto r = nlohmann::json::parse(line);
    EXPECT_TRUE(uses(r["chosen"], word_of(r["prompt"]))) << line;
    EXPECT_FALSE(uses(r["rejected"], word_of(r["prompt"]))) << line;
  }
  EXPECT_GT(sft_rows, 0);
  EXPECT_EQ(pairs, sft_rows);  // --rejected swapped: one minimal pair per kept story
  auto dpo = nlohmann::json::parse(std::ifstream(out + "/train/2-dpo/recipe.json"));
  EXPECT_EQ(dpo["lora"]["init_from"], out + "/train/1-sft/adapter");
}
