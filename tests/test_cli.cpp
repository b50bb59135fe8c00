// The CLI contract of generate, eval and run, through the real binary.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "base/files.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "tests/test_util.h"
#include "text/tokenizer.h"

using namespace affinage;
using affinage::test::data_path;
using affinage::test::repo_path;
using affinage::test::run_cli;
namespace fs = std::filesystem;

static const std::string kModel = "--model '" + repo_path("models/stories260K") + "' --device cpu";

TEST(Cli, GenerateGreedyFromBosReproducesLlama2c) {
  auto r = run_cli("generate " + kModel + " --max-new-tokens 20 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  auto ref = nlohmann::json::parse(read_file(data_path("stories260K_reference_partial.json")));
  auto ids = j["token_ids"].get<std::vector<int>>();
  auto want = ref["first_20_generated_ids"].get<std::vector<int>>();
  // run.c does not stop at EOS within these 20 tokens; neither may we stop earlier than it does
  ASSERT_LE(ids.size(), want.size());
  EXPECT_TRUE(std::equal(ids.begin(), ids.end(), want.begin()));
  auto tok = Tokenizer::load(repo_path("models/stories260K/tokenizer.model"));
  EXPECT_EQ(j["text"].get<std::string>(), tok->decode(ids));
}

TEST(Cli, GenerateSamplingIsSeededAndBounded) {
  auto gen = [](int seed) {
    return run_cli("generate " + kModel +
                   " --prompt 'Once upon a time' --temperature 1.2 --top-p 0.95 --top-k 100 --seed " +
                   std::to_string(seed) + " --max-new-tokens 15 --json");
  };
  auto a = gen(7), b = gen(7);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);  // same seed, same text
  EXPECT_LE(nlohmann::json::parse(a.out)["token_ids"].size(), 15u);
  int differ = 0;  // a confident model may repeat itself for one seed, not for four
  for (int seed : {8, 9, 10, 11}) differ += gen(seed).out != a.out;
  EXPECT_GE(differ, 1);
}

TEST(Cli, EvalLossEqualsPlainPerDocumentComputation) {
  auto dir = affinage::test::temp_dir("cli_eval");
  std::string file = dir + "/docs.jsonl";
  std::vector<std::string> docs = {"Once upon a time there was a little cat.", "The dog ran to the park and played.",
                                   "Lily liked to draw pictures of the sun."};
  {
    std::ofstream f(file);
    for (auto& d : docs) f << nlohmann::json{{"text", d}}.dump() << "\n";
  }
  auto r = run_cli("eval " + kModel + " --data '" + file + "' --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  // reference: each document alone, [BOS] + text + [EOS], mean NLL over every predicted token
  auto tok = Tokenizer::load(repo_path("models/stories260K/tokenizer.model"));
  auto m = load_model(repo_path("models/stories260K"), torch::kFloat32);
  torch::NoGradGuard ng;
  double nll = 0;
  int64_t n = 0;
  for (auto& d : docs) {
    std::vector<int64_t> ids = {tok->bos_id()};
    for (int t : tok->encode(d)) ids.push_back(t);
    ids.push_back(tok->eos_id());
    auto lp = torch::log_softmax(m->forward(torch::tensor(ids).unsqueeze(0))[0].to(torch::kDouble), -1);
    for (size_t t = 0; t + 1 < ids.size(); ++t, ++n) nll -= lp[t][ids[t + 1]].item<double>();
  }
  EXPECT_EQ(j["tokens"].get<int64_t>(), n);
  EXPECT_NEAR(j["loss"].get<double>(), nll / n, 1e-5);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(nll / n), 1e-3);
}

TEST(Cli, ErrorsNameTheFileAndExitNonZero) {
  auto r = run_cli("eval --model /nonexistent/model --data x.jsonl");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("/nonexistent/model"), std::string::npos) << r.err;
  auto dir = affinage::test::temp_dir("cli_bad");
  {
    std::ofstream f(dir + "/bad.jsonl");
    f << "{\"text\": \"fine\"}\n{\"text\": 3}\n";
  }
  r = run_cli("eval " + kModel + " --data '" + dir + "/bad.jsonl'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("bad.jsonl:2"), std::string::npos) << r.err;
  r = run_cli("generate --bogus-flag");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("bogus-flag"), std::string::npos) << r.err;
  for (auto cmd : {"run", "generate", "eval", "inspect", "tokenize"}) {
    r = run_cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find("usage"), std::string::npos) << cmd;
  }
}

TEST(Cli, RunWritesTheRunFolderAndRejectsBadRecipes) {
  auto out = affinage::test::temp_dir("cli_run");
  std::string sets =
      " --set output_dir=" + out + " --set train.max_steps=3 --set eval.every=0 --set checkpoint.every=2";
  // the recipe's relative paths resolve against the current directory, as for a user at the repo root
  auto cwd = fs::current_path();
  fs::current_path(repo_path(""));
  auto r = run_cli("run recipes/stories260k_sft.json" + sets);
  fs::current_path(cwd);
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto f : {"recipe.json", "metrics.jsonl", "summary.json", "data_stats.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "checkpoints/step-00000002/state.json",
                 "checkpoints/step-00000003/state.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  auto resolved = nlohmann::json::parse(read_file(out + "/recipe.json"));
  EXPECT_EQ(resolved["train"]["max_steps"], 3);
  // the adapter loads back through generate
  auto g = run_cli("generate " + kModel + " --adapter '" + out + "/adapter' --max-new-tokens 5 --json");
  EXPECT_EQ(g.code, 0) << g.err;
  // a typo in a key is an error naming the key and the file
  auto dir = affinage::test::temp_dir("cli_recipe");
  {
    std::ofstream f(dir + "/r.json");
    f << R"({"name": "x", "model": "m", "output_dir": "o", "data": {"train": "t.jsonl"}, "lora": {"rnak": 4}})";
  }
  r = run_cli("run '" + dir + "/r.json'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("lora.rnak"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("r.json"), std::string::npos) << r.err;
}
