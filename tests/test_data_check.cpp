// `affinage data check`: every malformed row named with its line, statistics equal to hand counts and to the
// training loaders' own, the trained-token marks where the loss is, the step/FLOP estimate, the shipped recipes.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "app/data_check.h"
#include "config/recipe_file.h"
#include "datasets/preference_data.h"
#include "datasets/sft_data.h"
#include "tests/test_util.h"

using namespace affinage;
using affinage::test::repo_path;
using affinage::test::run_cli;
using affinage::test::scratch_dir;
using affinage::test::write_scratch;
namespace fs = std::filesystem;

namespace {

std::string stories_tok() { return repo_path("models/stories260K/tokenizer.model"); }

// A recipe over one file, as `data check --data` builds it.
Recipe file_recipe(const std::string& path, Stage stage = Stage::Sft, int64_t seq_len = 64) {
  Recipe r;
  r.name = "test";
  r.stage = stage;
  r.data.train = {DataSource{path, "auto", 1.0}};
  r.data.seq_len = seq_len;
  return r;
}

CheckOptions with_tokenizer(const std::string& tok, int64_t show = 0) {
  CheckOptions o;
  o.tokenizer = tok;
  o.show = show;
  o.measure = false;
  return o;
}

// The shipped recipes use paths relative to the repository root.
struct AtRepoRoot {
  fs::path cwd = fs::current_path();
  AtRepoRoot() { fs::current_path(repo_path("")); }
  ~AtRepoRoot() { fs::current_path(cwd); }
};

void expect_has(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in:\n" << text;
}

// Line 1 and 14 are fine, line 8 is blank; every other line is broken in its own way.
const char* kBadSft = R"({"prompt": "Hi", "completion": " there"})"
                      "\n"
                      R"({"prompt": "Hi", "completion": " there")"
                      "\n"
                      R"({"prompt": "Hi"})"
                      "\n"
                      R"({"text": 42})"
                      "\n"
                      R"({"messages": [{"role": "robot", "content": "beep"}]})"
                      "\n"
                      R"({"text": ""})"
                      "\n"
                      R"({"prompt": "Q", "chosen": "a", "rejected": "b"})"
                      "\n"
                      "\n"
                      R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})"
                      "\n"
                      R"({"question": "x"})"
                      "\n"
                      R"(["a"])"
                      "\n"
                      R"({"messages": "hello"})"
                      "\n"
                      R"({"completion": "no prompt"})"
                      "\n"
                      R"({"text": "fine"})"
                      "\n";

}  // namespace

TEST(DataCheck, EveryMalformedRowIsNamedWithItsLineAndField) {
  const std::string bad = write_scratch("bad.jsonl", kBadSft);
  Recipe r = file_recipe(bad);
  r.data.eval = DataSource{scratch_dir() + "/missing_eval.jsonl", "auto", 1.0};  // the eval file is checked too
  StageReport rep = check_stage(r, with_tokenizer(stories_tok()));
  ASSERT_EQ(rep.errors.size(), 2u);
  EXPECT_FALSE(rep.has_stats);
  const std::string& e = rep.errors[0];
  expect_has(e, "11 lines cannot be used");
  for (const char* part :
       {"bad.jsonl:2: not valid JSON", "bad.jsonl:3: field 'completion': missing; add it, or map",
        "bad.jsonl:4: field 'text': must be a string, got a number",
        "bad.jsonl:5: field 'messages[0].role': unknown role 'robot'; use \"system\", \"user\" or \"assistant\"",
        "bad.jsonl:6: field 'text': empty; remove the row or give it text",
        "bad.jsonl:7: a preference row (prompt/chosen/rejected) cannot train with stage \"sft\"; use stage \"dpo\"",
        "bad.jsonl:9: field 'messages': chat: message 1 has role 'user'",
        "bad.jsonl:10: no known format in keys {'question'}", "map other names with data.columns",
        "bad.jsonl:11: a row must be a JSON object, got an array", "bad.jsonl:12: field 'messages': must be an array",
        "bad.jsonl:13: field 'prompt': missing"})
    expect_has(e, part);
  for (const char* fine : {"bad.jsonl:1:", "bad.jsonl:8:", "bad.jsonl:14:"})
    EXPECT_EQ(e.find(fine), std::string::npos) << fine;
  expect_has(rep.errors[1], "missing_eval.jsonl: cannot open the data file");
  ASSERT_EQ(rep.files.size(), 2u);
  EXPECT_EQ(rep.files[0].rows, -1);
  EXPECT_EQ(rep.files[1].split, "eval");
}

TEST(DataCheck, BrokenPreferenceRowsAreNamedWithTheirLine) {
  const std::string bad = write_scratch(
      "bad_prefs.jsonl",
      R"({"prompt": "a", "chosen": "b", "rejected": "c"})"
      "\n"
      R"({"prompt": "a", "chosen": 5, "rejected": "c"})"
      "\n"
      R"({"prompt": "a", "chosen": "b"})"
      "\n"
      R"({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "user", "content": "x"}], "rejected": "y"})"
      "\n"
      R"({"text": "an sft row"})"
      "\n");
  StageReport rep = check_stage(file_recipe(bad, Stage::Dpo), with_tokenizer(stories_tok()));
  ASSERT_EQ(rep.errors.size(), 1u);
  const std::string& e = rep.errors[0];
  expect_has(e, "4 lines cannot be used");
  expect_has(e, "bad_prefs.jsonl:2: field 'chosen': must be a string, got a number");
  expect_has(e, "bad_prefs.jsonl:3: field 'rejected': missing");
  expect_has(e, "bad_prefs.jsonl:4: field 'chosen': must start with an assistant message");
  expect_has(e, "bad_prefs.jsonl:5: field 'chosen': missing");
  EXPECT_EQ(e.find("bad_prefs.jsonl:1:"), std::string::npos);
}

// stories260K pieces: "Once upon" 2 ids, " a time" 2, "The cat sat." 6 (affinage tokenize).
// Row 1: <s> Once upon | a time </s>: 6 tokens, 3 trained. Row 2: <s> | The cat sat. </s>: 8 tokens, 7 trained.
TEST(DataCheck, StatisticsOfASmallFileEqualHandCounts) {
  const std::string f = write_scratch("small.jsonl", R"({"prompt": "Once upon", "completion": " a time"})"
                                                     "\n"
                                                     R"({"text": "The cat sat."})"
                                                     "\n");
  StageReport rep = check_stage(file_recipe(f), with_tokenizer(stories_tok()));
  ASSERT_TRUE(rep.errors.empty()) << rep.errors[0];
  const auto& s = rep.train.stats;  // DataStats::to_json()
  EXPECT_EQ(s["rows"], 2);
  EXPECT_EQ(s["tokens"], 14);
  EXPECT_EQ(s["trained_tokens"], 10);
  EXPECT_EQ(rep.to_json()["splits"]["train"]["trained_share"].get<double>(), 10.0 / 14.0);
  EXPECT_EQ(s["truncated"].get<int64_t>() + s["dropped"].get<int64_t>(), 0);
  EXPECT_EQ(s["packed_rows"], 2);
  EXPECT_DOUBLE_EQ(s["packing_efficiency"].get<double>(), 14.0 / 128.0);
  EXPECT_EQ(rep.train.longest.tokens, 8);
  EXPECT_EQ(rep.train.longest.line, 2);
  EXPECT_EQ(rep.eval.stats["rows"], 0);

  // seq_len 7 cuts one token of row 2 ("right") or drops it ("drop"); packing in 16 puts both in one row.
  rep = check_stage(file_recipe(f, Stage::Sft, 7), with_tokenizer(stories_tok()));
  EXPECT_EQ(rep.train.stats["truncated"], 1);
  EXPECT_EQ(rep.train.cut_tokens, 1);
  EXPECT_EQ(rep.train.stats["tokens"], 13);
  EXPECT_EQ(rep.train.stats["trained_tokens"], 9);
  Recipe drop = file_recipe(f, Stage::Sft, 7);
  drop.data.truncation = Truncation::Drop;
  rep = check_stage(drop, with_tokenizer(stories_tok()));
  EXPECT_EQ(rep.train.stats["dropped"], 1);
  EXPECT_EQ(rep.train.dropped_tokens, 8);
  EXPECT_EQ(rep.train.stats["tokens"], 6);
  Recipe packed = file_recipe(f, Stage::Sft, 16);
  packed.data.packing = true;
  rep = check_stage(packed, with_tokenizer(stories_tok()));
  EXPECT_EQ(rep.train.stats["packed_rows"], 1);
  EXPECT_DOUBLE_EQ(rep.train.stats["packing_efficiency"].get<double>(), 14.0 / 16.0);
}

TEST(DataCheck, StatisticsEqualTheTrainingLoaders) {
  AtRepoRoot root;
  auto tok = Tokenizer::load(stories_tok());
  for (const char* path :
       {"recipes/stories260k_sft.json", "recipes/stories260k_sft_dpo.json", "recipes/stories260k_dpo.json"}) {
    for (const Recipe& r : expand_stages(load_recipe(path))) {
      StageReport rep = check_stage(r, with_tokenizer(""));
      ASSERT_TRUE(rep.errors.empty()) << path << ": " << rep.errors[0];
      if (r.stage == Stage::Sft) {
        SftData d = build_sft_data(r.data, *tok, r.seed);
        EXPECT_EQ(rep.train.stats, d.train_stats.to_json()) << path;
        EXPECT_EQ(rep.eval.stats, d.eval_stats.to_json()) << path;
      } else {
        const int64_t max_prompt = r.dpo.max_prompt_len > 0 ? r.dpo.max_prompt_len : r.data.seq_len / 2;
        PreferenceData d = build_preference_data(r.data, max_prompt, *tok, r.seed);
        EXPECT_EQ(rep.train.stats, d.train_stats.to_json()) << path;
        EXPECT_EQ(rep.eval.stats, d.eval_stats.to_json()) << path;
      }
    }
  }
}

TEST(DataCheck, MarksAreOnTheTrainedTokens) {
  // Mistral v3: system prompt on the last user turn; the weight-0 answer is context; the last answer and its
  // EOS are trained.
  const std::string f = write_scratch(
      "chat.jsonl", R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},)"
                    R"( {"role": "assistant", "content": "Hello.", "weight": 0}, {"role": "user", "content": "Bye"},)"
                    R"( {"role": "assistant", "content": "Goodbye."}]})"
                    "\n");
  StageReport rep = check_stage(file_recipe(f),
                                with_tokenizer(affinage::test::data_path("tokenizers/mistral_v3/tokenizer.model"), 1));
  ASSERT_TRUE(rep.errors.empty()) << rep.errors[0];
  ASSERT_EQ(rep.samples.size(), 1u);
  const std::vector<MarkedSpan> want = {
      {"<s>", false, true},     {"[INST]", false, true},   {"Hi", false, false},    {"[/INST]", false, true},
      {"Hello.", false, false}, {"</s>", false, true},     {"[INST]", false, true}, {"Be brief.\n\nBye", false, false},
      {"[/INST]", false, true}, {"Goodbye.", true, false}, {"</s>", true, true}};
  const auto& got = rep.samples[0].parts.at(0).second;
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].text, want[i].text) << i;
    EXPECT_EQ(got[i].trained, want[i].trained) << i;
    EXPECT_EQ(got[i].control, want[i].control) << i;
  }

  // Through the CLI: plain text with the trained tokens between ⟦ ⟧; a cut sample says so.
  const std::string small = write_scratch("marks.jsonl", R"({"prompt": "Once upon", "completion": " a time"})"
                                                         "\n"
                                                         R"({"text": "The cat sat."})"
                                                         "\n");
  auto r = run_cli("data check --data '" + small + "' --tokenizer '" + stories_tok() + "' --seq-len 7 --show 2");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  expect_has(r.out, "\n    <s>Once upon\u27e6 a time</s>\u27e7\n");
  expect_has(r.out, "\n    <s>\u27e6The cat sat.\u27e7\n");  // EOS cut by seq_len 7
  expect_has(r.out, "cut: the last 1 tokens");

  // DPO: the prompt is context, both responses (with their EOS) are trained.
  const std::string prefs =
      write_scratch("marks_prefs.jsonl", R"({"prompt": "Once upon", "chosen": " a time", "rejected": " the cat"})"
                                         "\n");
  rep = check_stage(file_recipe(prefs, Stage::Dpo), with_tokenizer(stories_tok(), 1));
  ASSERT_TRUE(rep.errors.empty()) << rep.errors[0];
  const auto& parts = rep.samples.at(0).parts;
  ASSERT_EQ(parts.size(), 3u);
  auto text = [](const std::vector<MarkedSpan>& spans) {
    std::string s;
    for (auto& m : spans) s += (m.trained ? "[" : "") + m.text + (m.trained ? "]" : "");
    return s;
  };
  EXPECT_EQ(parts[0].first, "prompt");
  EXPECT_EQ(text(parts[0].second), "<s>Once upon");
  EXPECT_EQ(text(parts[1].second), "[ a time][</s>]");
  EXPECT_EQ(text(parts[2].second), "[ the cat][</s>]");
}

TEST(DataCheck, EstimateFollowsTheTrainingLoop) {
  AtRepoRoot root;
  // stories260K: N = 5 layers x (64·64 q + 2·64·32 k,v + 64·64 o + 3·64·172 mlp) + 512·64 head = 259,328;
  // L = 5, H·d = 8·8 = 64; packed rows of T = 256.
  const double N = 259328, L = 5, Hd = 64, T = 256;
  Recipe r = load_recipe("recipes/stories260k_sft.json",
                         {"eval.every=0", "eval.max_batches=0", "train.max_steps=40", "train.batch_size=8",
                          "train.grad_accum=1", "data.seq_len=256", "data.packing=true"});
  CheckOptions o = with_tokenizer("");
  o.tokens_per_s = 1000;
  StageReport rep = check_stage(r, o);
  ASSERT_TRUE(rep.estimate) << rep.no_estimate;
  const Estimate& e = *rep.estimate;
  EXPECT_EQ(e.steps, 40);
  EXPECT_EQ(e.matmul_params, 259328);
  EXPECT_EQ(e.train_tokens, 40 * 8 * T);
  const double train = 40 * 8 * T * (4 * N + 6 * L * T * Hd);
  EXPECT_NEAR(e.train_flops, train, 1e-9 * train);
  // eval.every 0: the held-out set is scored at step 0 and at the end, every row forward only
  EXPECT_EQ(e.evaluations, 2);
  const double eval = rep.eval.stats["packed_rows"].get<double>() * T * (2 * N + 2 * L * T * Hd);
  EXPECT_NEAR(e.flops, train + 2 * eval, 1e-9 * e.flops);
  EXPECT_NEAR(e.seconds, e.train_real_tokens / 1000 * (e.flops / e.train_flops), 1e-9 * e.seconds);

  // DPO: the live reference adds a forward; a loss without a reference (SimPO) and no eval set adds nothing.
  Recipe d = load_recipe("recipes/stories260k_dpo.json");
  rep = check_stage(d, with_tokenizer(""));
  ASSERT_TRUE(rep.estimate);
  EXPECT_GT(rep.estimate->flops, 1.3 * rep.estimate->train_flops);
  Recipe simpo = load_recipe("recipes/stories260k_dpo.json", {"dpo.loss=simpo", "data.eval=null"});
  rep = check_stage(simpo, with_tokenizer(""));
  ASSERT_TRUE(rep.estimate) << rep.no_estimate;
  EXPECT_EQ(rep.estimate->evaluations, 0);
  EXPECT_DOUBLE_EQ(rep.estimate->flops, rep.estimate->train_flops);
}

TEST(DataCheck, CliChecksRecipesAndExitsOneOnBrokenRows) {
  {
    AtRepoRoot root;
    auto r = run_cli("data check recipes/stories260k_sft.json --no-measure");
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    expect_has(r.out, "ok: every row of every file is valid");
    r = run_cli("data check recipes/stories260k_sft_dpo.json --json --show 1 --tokens-per-s 1500");
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["ok"].get<bool>());
    ASSERT_EQ(j["stages"].size(), 2u);
    EXPECT_EQ(j["stages"][0]["stage"], "sft");
    EXPECT_EQ(j["stages"][1]["stage"], "dpo");
    EXPECT_GT(j["stages"][1]["estimate"]["steps"].get<int64_t>(), 0);
    EXPECT_GT(j["stages"][1]["estimate"]["seconds"].get<double>(), 0);
    EXPECT_EQ(j["stages"][1]["samples"][0]["parts"].size(), 3u);
  }
  const std::string bad = write_scratch("cli_bad.jsonl", kBadSft);
  auto r = run_cli("data check --data '" + bad + "' --tokenizer '" + stories_tok() + "'");
  EXPECT_EQ(r.code, 1);
  for (int line : {2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13})
    expect_has(r.out, "cli_bad.jsonl:" + std::to_string(line) + ": ");
  r = run_cli("data check --data '" + bad + "' --tokenizer '" + stories_tok() + "' --json");
  EXPECT_EQ(r.code, 1);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_FALSE(j["ok"].get<bool>());
  expect_has(j["stages"][0]["errors"][0].get<std::string>(), "cli_bad.jsonl:13: field 'prompt': missing");

  r = run_cli("data check --data '" + bad + "'");
  EXPECT_EQ(r.code, 1);
  expect_has(r.err, "--data needs --tokenizer");
}
