// Task metrics: generation scored against llama2.c's own greedy output, multiple choice and preference accuracy
// against a plain full-logits scoring in the test, the scoring rules on hand cases, and `eval --compare`.
#include <fstream>
#include <nlohmann/json.hpp>
#include "datasets/jsonl.h"
#include "eval/tasks.h"
#include "model/loader.h"
#include "tests/test_util.h"
#include "train/prepare.h"

using namespace affinage;
using affinage::test::repo_path;
using json = nlohmann::json;

static const std::string kModel = "models/stories260K";

static CausalLM stories() {
  CausalLM m = load_model(repo_path(kModel), at::kFloat, c10::Device("cpu"));
  m->eval();
  return m;
}

static std::string write_rows(const std::string& tag, const std::vector<json>& rows) {
  std::string path = affinage::test::temp_dir(tag) + "/task.jsonl";
  std::ofstream f(path);
  for (auto& r : rows) f << r.dump() << "\n";
  return path;
}

// Summed log-prob of `cont` after `prompt` from one full forward (the independent reference).
static double plain_logprob(CausalLMImpl& m, const std::vector<int>& prompt, const std::vector<int>& cont) {
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  seq.insert(seq.end(), cont.begin(), cont.end());
  at::NoGradGuard ng;
  auto lp = at::log_softmax(m.forward(at::tensor(seq, at::kLong).unsqueeze(0))[0].to(at::kDouble), -1);
  double s = 0;
  for (size_t t = prompt.size() - 1; t + 1 < seq.size(); ++t) s += lp[t][seq[t + 1]].item<double>();
  return s;
}

TEST(EvalTasks, ScoringRules) {
  EXPECT_TRUE(answer_exact("  Paris\n", "Paris"));
  EXPECT_FALSE(answer_exact("Paris.", "Paris"));
  EXPECT_TRUE(answer_contains("It is PARIS.", "paris"));
  EXPECT_FALSE(answer_contains("Lyon", "paris"));
  EXPECT_EQ(extract_answer("so the answer is 42.", "answer is (\\d+)"), "42");
  EXPECT_EQ(extract_answer("no number", "(\\d+)"), "");
  EXPECT_EQ(extract_answer("x=7", "\\d"), "7");
  affinage::test::expect_error([] { extract_answer("a", "(("); }, {"--extract", "not a valid regular expression"});
}

TEST(EvalTasks, TaskTypeFromTheFirstRowReadLikeTrainingData) {
  const std::string dir = affinage::test::temp_dir("task_type");
  auto file = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  // a BOM, CRLF and blank lines before the first row are skipped as read_jsonl skips them
  EXPECT_EQ(detect_task_type(file("c.jsonl", "\xEF\xBB\xBF\r\n\n{\"prompt\": \"a\", \"choices\": [\"b\"]}\r\n")),
            "choice");
  EXPECT_EQ(detect_task_type(file("p.jsonl", R"({"prompt": "a", "chosen": "b", "rejected": "c"})")), "preference");
  EXPECT_EQ(detect_task_type(file("g.jsonl", R"({"prompt": "a", "references": ["b"]})")), "generation");
  EXPECT_EQ(detect_task_type(file("l.jsonl", R"({"text": "a"})")), "loss");
  affinage::test::expect_error([&] { detect_task_type(file("e.jsonl", "\n \n")); }, {"e.jsonl", "no rows"});
  affinage::test::expect_error([&] { detect_task_type(file("a.jsonl", "\n[1]\n")); }, {"a.jsonl:2: not a JSON object"});
  affinage::test::expect_error([&] { detect_task_type(file("j.jsonl", "{oops\n")); }, {"j.jsonl:1: not valid JSON"});
  affinage::test::expect_error([&] { detect_task_type(dir + "/missing.jsonl"); }, {"missing.jsonl: cannot open"});
}

TEST(EvalTasks, GenerationMatchesLlama2cGreedyOutput) {
  auto tok = affinage::test::stories_tokenizer();
  std::ifstream f(affinage::test::data_path("stories260K_reference_partial.json"));
  auto ref = json::parse(f);
  std::vector<int> ids = ref["first_20_generated_ids"].get<std::vector<int>>();
  std::string text = tok->decode(ids);
  std::string word = text.substr(text.rfind(' ') + 1);  // the last word of llama2.c's continuation
  std::string path = write_rows(
      "gen_task", {{{"prompt", ""}, {"reference", text}}, {{"prompt", ""}, {"references", {"zebra", word}}}});
  CausalLM m = stories();
  TaskOptions o;
  o.max_new_tokens = 20;
  o.extract = "(\\w+)$";
  auto r = evaluate_task(*m, *tok, path, o);
  EXPECT_EQ(r["task"], "generation");
  EXPECT_EQ(r["rows"], 2);
  EXPECT_DOUBLE_EQ(r["exact_match"].get<double>(), 0.5);  // row 1 exactly; row 2's references are single words
  EXPECT_DOUBLE_EQ(r["contains"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(r["extracted_match"].get<double>(), 0.5);  // the last word equals row 2's reference
  EXPECT_EQ(r["examples"][0]["output"], text);
}

TEST(EvalTasks, ChoiceAndPreferenceEqualPlainScoring) {
  auto tok = affinage::test::stories_tokenizer();
  std::vector<json> rows = {
      {{"prompt", "Once upon a time, there was a little"}, {"choices", {"girl", "zq xv", "dog named"}}, {"answer", 0}},
      {{"prompt", "Lily and Tom went to the"}, {"choices", {"park.", "banana clock seven"}}, {"answer", "park."}},
      {{"prompt", "The sun was"}, {"choices", {"blue tree", "shining"}}, {"answer", 0}}};
  std::string path = write_rows("choice_task", rows);
  CausalLM m = stories();
  TaskOptions o;
  o.batch = 3;
  auto r = evaluate_task(*m, *tok, path, o);
  double acc = 0, acc_norm = 0;
  for (auto& row : rows) {  // the same rules, by hand: " " + choice after the prompt, summed log-probs
    std::string p = row["prompt"];
    std::vector<int> body = tok->encode(p), prompt{tok->bos_id()};
    prompt.insert(prompt.end(), body.begin(), body.end());
    std::vector<std::string> ch = row["choices"];
    int64_t ans = row["answer"].is_number() ? row["answer"].get<int64_t>() : 0;
    size_t best = 0, best_n = 0;
    std::vector<double> s, sn;
    for (auto& c : ch) {
      s.push_back(plain_logprob(*m, prompt, completion_ids(*tok, p, " " + c, body)));
      sn.push_back(s.back() / double(c.size() + 1));
    }
    for (size_t j = 0; j < ch.size(); ++j) best = s[j] > s[best] ? j : best, best_n = sn[j] > sn[best_n] ? j : best_n;
    acc += best == (size_t)ans, acc_norm += best_n == (size_t)ans;
  }
  EXPECT_EQ(r["task"], "choice");
  EXPECT_DOUBLE_EQ(r["acc"].get<double>(), acc / 3);
  EXPECT_DOUBLE_EQ(r["acc_norm"].get<double>(), acc_norm / 3);
  EXPECT_GE(acc, 2.0);  // a story model knows "little girl" and "went to the park."

  // Preference accuracy: the share of pairs whose chosen response ([BOS] prompt | response [EOS]) has the higher
  // summed log-prob, and per token, from plain full forwards of each pair.
  std::string prefs = repo_path("datasets/data/stories_words_prefs_eval.jsonl");
  auto pr = evaluate_task(*m, *tok, prefs, o);
  double hits = 0, hits_tok = 0, margin = 0;
  int n = 0;
  std::ifstream pf(prefs);
  for (std::string line; std::getline(pf, line);) {
    if (line.empty()) continue;
    auto row = json::parse(line);
    std::string p = row["prompt"];
    std::vector<int> body = tok->encode(p), prompt{tok->bos_id()};
    prompt.insert(prompt.end(), body.begin(), body.end());
    auto c = completion_ids(*tok, p, row["chosen"], body), rj = completion_ids(*tok, p, row["rejected"], body);
    c.push_back(tok->eos_id()), rj.push_back(tok->eos_id());
    const double lc = plain_logprob(*m, prompt, c), lr = plain_logprob(*m, prompt, rj);
    hits += lc > lr, hits_tok += lc / c.size() > lr / rj.size(), margin += lc - lr, ++n;
  }
  EXPECT_EQ(pr["task"], "preference");
  EXPECT_EQ(pr["rows"], 52);
  ASSERT_EQ(n, 52);
  EXPECT_DOUBLE_EQ(pr["accuracy"].get<double>(), hits / n);
  EXPECT_DOUBLE_EQ(pr["accuracy_per_token"].get<double>(), hits_tok / n);
  EXPECT_NEAR(pr["logp_margin"].get<double>(), margin / n, 1e-3);  // fp32 batched vs fp64 plain sums
  EXPECT_GT(hits, 0);
  EXPECT_LT(hits, n);  // the base model prefers some chosen stories and some rejected ones: the check sees both
}

TEST(EvalTasks, CompareRunsTheSameEvalSideBySide) {
  std::string path = write_rows("cmp_task", {{{"prompt", "Once upon a time"}, {"reference", "girl"}}});
  auto r = affinage::test::run_cli("eval --model " + repo_path(kModel) + " --data '" + path + "' --compare base " +
                                   repo_path(kModel) + " --max-new-tokens 12 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["name"], "base");
  EXPECT_EQ(j[0]["examples"][0]["output"], j[1]["examples"][0]["output"]);  // the same model twice
  auto bad = affinage::test::run_cli("eval --model " + repo_path(kModel) + " --data '" + path + "' --compare /nope");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("--compare: '/nope'"), std::string::npos) << bad.err;
}
