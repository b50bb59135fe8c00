// The README's first command, shortened: scripts/quickstart.sh with few samples and steps runs every stage of
// the pipeline (data from the model, SFT then DPO, held-out eval table, merge, publish) and leaves its files.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "tests/test_util.h"

namespace fs = std::filesystem;
using affinage::test::repo_path;

TEST(Quickstart, ShortenedPipelineRunsEndToEnd) {
  std::string out = affinage::test::temp_dir("quickstart");
  std::string log = out + ".log";
  std::string cmd = "cd '" + repo_path("") + "' && QS_NO_BUILD=1 QS_OUT='" + out + "' QS_PER_WORD=6 QS_STEPS=3 QS_SAMPLES=2 " +
                    "bash scripts/quickstart.sh > '" + log + "' 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  ASSERT_EQ(rc, 0) << text;
  for (const char* line : {"base stories260K", "+ SFT adapter", "+ SFT + DPO adapter"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " missing from:\n" << text;
  for (const char* p : {"data/sft.jsonl", "data/prefs.jsonl", "train/1-sft/adapter/adapter_model.safetensors",
                        "train/2-dpo/adapter/adapter_model.safetensors", "merged/config.json", "merged/model.safetensors",
                        "publish/README.md", "publish/provenance.json", "heldout_eval.json"})
    EXPECT_TRUE(fs::exists(out + "/" + p)) << p;
  auto ev = nlohmann::json::parse(std::ifstream(out + "/heldout_eval.json"));
  ASSERT_EQ(ev.size(), 3u);
  for (auto& r : ev) {
    EXPECT_EQ(r["samples"], 16);  // 8 held-out words x 2 samples
    EXPECT_GE(r["word_match"].get<double>(), 0.0);
  }
  auto dpo = nlohmann::json::parse(std::ifstream(out + "/train/2-dpo/recipe.json"));
  EXPECT_EQ(dpo["lora"]["init_from"], out + "/train/1-sft/adapter");
}
