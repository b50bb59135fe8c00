// Tests of the SFT data pipeline: each row format against hand-composed ids, error messages naming
// file:line:field, truncation and packing invariants, seeded eval split and sampling weights.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <tuple>
#include "base/error.h"
#include "config/recipe_file.h"
#include "datasets/sft_data.h"
#include "test_util.h"

namespace affinage {
namespace {

using nlohmann::json;
using test::data_path;
using test::repo_path;

std::shared_ptr<Tokenizer> v1() { return affinage::test::mistral_v1_tokenizer(); }
std::shared_ptr<Tokenizer> v3() { return affinage::test::mistral_v3_tokenizer(); }
std::shared_ptr<Tokenizer> stories() { return affinage::test::stories_tokenizer(); }

std::vector<int> cat(std::initializer_list<std::vector<int>> parts) {
  std::vector<int> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
int piece(const Tokenizer& tok, const std::string& p) {
  int id = tok.piece_to_id(p);
  EXPECT_GE(id, 0) << "piece " << p;
  return id;
}
// trainable flags: `untrained` zeros then ones up to n
std::vector<uint8_t> flags(size_t n, size_t untrained) {
  std::vector<uint8_t> f(n, 1);
  std::fill(f.begin(), f.begin() + untrained, 0);
  return f;
}

Sample render(const json& row, const Tokenizer& tok, const std::map<std::string, std::string>& cols = {},
              ChatFormat chat = ChatFormat::MistralV1) {
  return render_sft_row(row, "auto", tok, chat, cols, "rows.jsonl", 1);
}

std::string write_file(const std::string& name, const std::string& text) {
  std::string path = test::temp_dir("sft_data") + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

using affinage::test::error_of;

TEST(SftRender, TextIsBosTextEosAllButBosTrained) {
  for (auto tok : {v1(), stories()}) {
    Sample s = render(json{{"text", "Hello world"}}, *tok);
    std::vector<int> want = cat({{tok->bos_id()}, tok->encode("Hello world"), {tok->eos_id()}});
    EXPECT_EQ(s.ids, want) << tok->path();
    EXPECT_EQ(s.trainable, flags(want.size(), 1));
    EXPECT_EQ(s.file, "rows.jsonl");
    EXPECT_EQ(s.line, 1);
  }
  // Pieces seen with spm_encode: "▁Hello ▁world" (v1), "▁He ll o ▁w or ld" (stories260K).
  const Tokenizer& t = *v1();
  EXPECT_EQ(render(json{{"text", "Hello world"}}, t).ids,
            (std::vector<int>{1, piece(t, "▁Hello"), piece(t, "▁world"), 2}));
}

TEST(SftRender, PromptCompletionTokenizesTheJoinedText) {
  const Tokenizer& t = *v1();
  // spm_encode "Q: 2+2= 4" → "▁Q : ▁ 2 + 2 = ▁ 4": the completion is the "▁ 4" after the prompt's ids.
  Sample s = render(json{{"prompt", "Q: 2+2="}, {"completion", " 4"}}, t);
  std::vector<int> p = t.encode("Q: 2+2=");
  std::vector<int> want = cat({{1}, p, {piece(t, "▁"), piece(t, "4")}, {2}});
  EXPECT_EQ(s.ids, want);
  EXPECT_EQ(s.trainable, flags(want.size(), 1 + p.size()));

  // "Hello" + " world": one "▁world", not encode(" world") = "▁ ▁world" (the dummy prefix doubled).
  s = render(json{{"prompt", "Hello"}, {"completion", " world"}}, t);
  EXPECT_EQ(s.ids, (std::vector<int>{1, piece(t, "▁Hello"), piece(t, "▁world"), 2}));
  EXPECT_EQ(s.trainable, (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_NE(cat({t.encode("Hello"), t.encode(" world")}), t.encode("Hello world"));
}

TEST(SftRender, PromptCompletionBoundaryMergeKeepsPromptIdsAndText) {
  const Tokenizer& t = *v1();
  // "Hello " + "world": sp("Hello ") = "▁Hello ▁" is no prefix of sp("Hello world") = "▁Hello ▁world".
  // The prompt keeps its own ids and the completion follows without a second space.
  for (auto [prompt, completion] :
       std::vector<std::pair<std::string, std::string>>{{"Hello ", "world"}, {"Hel", "lo world"}}) {
    std::vector<int> p = t.encode(prompt);
    std::vector<int> full = t.encode(prompt + completion);
    ASSERT_FALSE(std::equal(p.begin(), p.end(), full.begin())) << "not a merge case: " << prompt;
    Sample s = render(json{{"prompt", prompt}, {"completion", completion}}, t);
    ASSERT_GT(s.ids.size(), p.size() + 2);
    EXPECT_EQ(std::vector<int>(s.ids.begin() + 1, s.ids.begin() + 1 + p.size()), p);
    EXPECT_EQ(s.ids.front(), 1);
    EXPECT_EQ(s.ids.back(), 2);
    EXPECT_EQ(t.decode(s.ids), prompt + completion);
    EXPECT_EQ(s.trainable, flags(s.ids.size(), 1 + p.size()));
  }
  // Hand-worked: "▁Hel" then "lo ▁world" (no dummy prefix on the completion).
  EXPECT_EQ(render(json{{"prompt", "Hel"}, {"completion", "lo world"}}, t).ids,
            (std::vector<int>{1, piece(t, "▁Hel"), piece(t, "lo"), piece(t, "▁world"), 2}));
}

TEST(SftRender, AlpacaIsInstructionInputThenOutput) {
  const Tokenizer& t = *v1();
  Sample s = render(json{{"instruction", "Add"}, {"input", "2 and 2"}, {"output", " 4"}}, t);
  std::vector<int> p = t.encode("Add\n\n2 and 2");
  EXPECT_EQ(s.ids, cat({{1}, p, {piece(t, "▁"), piece(t, "4")}, {2}}));
  EXPECT_EQ(s.trainable, flags(s.ids.size(), 1 + p.size()));
  // Empty or absent input: the instruction alone is the prompt.
  for (json row : {json{{"instruction", "Say hi"}, {"input", ""}, {"output", " hi"}},
                   json{{"instruction", "Say hi"}, {"output", " hi"}}}) {
    Sample a = render(row, t);
    EXPECT_EQ(a.ids, cat({{1}, t.encode("Say hi"), {piece(t, "▁hi")}, {2}}));
    EXPECT_EQ(a.trainable, flags(a.ids.size(), 1 + t.encode("Say hi").size()));
  }
}

TEST(SftRender, AlpacaFileRoundTripsItsText) {
  const Tokenizer& t = *v1();
  DataSource src{repo_path("datasets/data/alpaca_tiny.jsonl")};
  std::vector<Sample> samples = load_sft_file(src, t, ChatFormat::MistralV1, {});
  std::ifstream in(src.path);
  std::string line;
  size_t i = 0;
  while (std::getline(in, line)) {
    ASSERT_LT(i, samples.size());
    json row = json::parse(line);  // these rows also carry "text": alpaca must win the detection
    EXPECT_EQ(detect_format(row, "x"), "alpaca");
    std::string prompt = row["instruction"].get<std::string>();
    if (!row["input"].get<std::string>().empty()) prompt += "\n\n" + row["input"].get<std::string>();
    const Sample& s = samples[i];
    EXPECT_EQ(t.decode(s.ids), prompt + row["output"].get<std::string>()) << "row " << i;
    std::vector<int> p = t.encode(prompt);
    EXPECT_EQ(std::vector<int>(s.ids.begin() + 1, s.ids.begin() + 1 + p.size()), p) << "row " << i;
    EXPECT_EQ(s.trainable, flags(s.ids.size(), 1 + p.size())) << "row " << i;
    EXPECT_EQ(s.line, static_cast<int64_t>(i + 1));
    ++i;
  }
  EXPECT_EQ(i, samples.size());
  EXPECT_EQ(i, 40u);
}

TEST(SftRender, MessagesAgreeWithRenderChat) {
  json row = {{"messages",
               {{{"role", "system"}, {"content", "Be brief."}},
                {{"role", "user"}, {"content", "Hi"}},
                {{"role", "assistant"}, {"content", "Hello there"}},
                {{"role", "user"}, {"content", "Again"}},
                {{"role", "assistant"}, {"content", "Not trained"}, {"weight", 0}}}}};
  std::vector<Message> msgs = {{"system", "Be brief."},
                               {"user", "Hi"},
                               {"assistant", "Hello there"},
                               {"user", "Again"},
                               {"assistant", "Not trained", 0.0}};
  for (auto [tok, fmt] : {std::make_pair(v1(), ChatFormat::MistralV1), std::make_pair(v3(), ChatFormat::MistralV3)}) {
    Sample s = render(row, *tok, {}, fmt);
    RenderedChat r = render_chat(*tok, msgs, fmt);
    EXPECT_EQ(s.ids, r.ids);
    EXPECT_EQ(s.trainable, r.trainable);
    // Independently: only "Hello there" and its EOS are trained.
    size_t trained = std::count(s.trainable.begin(), s.trainable.end(), 1);
    EXPECT_EQ(trained, tok->encode("Hello there").size() + 1);
    EXPECT_EQ(s.ids.back(), tok->eos_id());
    EXPECT_EQ(s.trainable.back(), 0);  // the weight-0 turn's EOS
  }
}

TEST(SftRender, ColumnMappingAppliesBeforeDetection) {
  const Tokenizer& t = *v1();
  std::map<std::string, std::string> cols = {{"prompt", "question"}, {"completion", "answer"}};
  Sample mapped = render(json{{"question", "Q: 2+2="}, {"answer", " 4"}}, t, cols);
  Sample plain = render(json{{"prompt", "Q: 2+2="}, {"completion", " 4"}}, t);
  EXPECT_EQ(mapped.ids, plain.ids);
  EXPECT_EQ(mapped.trainable, plain.trainable);
  std::string err = error_of([&] { render(json{{"question", "Q"}, {"answer", "A"}}, t); });
  EXPECT_NE(err.find("rows.jsonl:1: no known format"), std::string::npos) << err;
  EXPECT_NE(err.find("'question'"), std::string::npos) << err;
  EXPECT_NE(err.find("data.columns"), std::string::npos) << err;
}

TEST(SftRender, DetectFormat) {
  EXPECT_EQ(detect_format(json{{"text", "a"}}, "w"), "text");
  EXPECT_EQ(detect_format(json{{"messages", json::array()}}, "w"), "messages");
  EXPECT_EQ(detect_format(json{{"prompt", "a"}, {"completion", "b"}}, "w"), "prompt_completion");
  EXPECT_EQ(detect_format(json{{"instruction", "a"}, {"output", "b"}}, "w"), "alpaca");
  EXPECT_EQ(detect_format(json{{"prompt", "a"}, {"chosen", "b"}, {"rejected", "c"}}, "w"), "preference");
  EXPECT_NE(error_of([] { detect_format(json{{"foo", 1}}, "f.jsonl:3"); }).find("f.jsonl:3:"), std::string::npos);
  std::string err = error_of([] {
    render_sft_row(json{{"prompt", "a"}, {"chosen", "b"}, {"rejected", "c"}}, "auto", *v1(), ChatFormat::MistralV1, {},
                   "p.jsonl", 4);
  });
  EXPECT_NE(err.find("p.jsonl:4:"), std::string::npos) << err;
  EXPECT_NE(err.find("dpo"), std::string::npos) << err;
  // An explicit format overrides detection and wants its own field.
  err = error_of([] {
    render_sft_row(json{{"prompt", "a"}, {"completion", "b"}}, "text", *v1(), ChatFormat::MistralV1, {}, "p.jsonl", 2);
  });
  EXPECT_NE(err.find("p.jsonl:2: field 'text': missing"), std::string::npos) << err;
}

TEST(SftLoad, BrokenLinesNameFileLineAndField) {
  // Line 3 is blank (skipped, but still counted); every other line but 1 is broken in its own way.
  const std::vector<std::pair<std::string, std::string>> lines = {
      {R"({"text": "fine"})", ""},
      {R"({"text": "unterminated)", ":2: not valid JSON ("},
      {"", ""},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "robot", "content": "x"}]})",
       ":4: field 'messages[2].role': unknown role 'robot'"},
      {R"({"messages": [{"role": "user", "content": ["a"]}]})", ":5: field 'messages[0].content': must be a string"},
      {R"({"text": ""})", ":6: field 'text': empty"},
      {R"({"prompt": "a"})", ":7: field 'completion': missing"},
      {R"({"foo": 1})", ":8: no known format"},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 0.5}]})",
       ":9: field 'messages[1].weight': must be 0"},
      {R"({"messages": [{"role": "assistant", "content": "x"}]})", ":10: field 'messages': chat: message 0"},
      {R"([1, 2])", ":11: a row must be a JSON object"},
      {R"({"instruction": 3, "output": "x"})", ":12: field 'instruction': must be a string, got a number"},
      {R"({"messages": {"role": "user"}})", ":13: field 'messages': must be an array"},
  };
  std::string text;
  for (const auto& l : lines) text += l.first + "\n";
  std::string path = write_file("broken.jsonl", text);
  std::string err = error_of([&] { load_sft_file(DataSource{path}, *v1(), ChatFormat::MistralV1, {}); });
  EXPECT_NE(err.find(path + ": 11 lines cannot be used"), std::string::npos) << err;
  for (const auto& l : lines) {
    if (l.second.empty()) continue;
    EXPECT_NE(err.find(path + l.second), std::string::npos) << l.second << "\n" << err;
  }
  EXPECT_EQ(err.find(":1:"), std::string::npos) << err;

  // One broken line: the message is that line's error alone.
  std::string one = write_file("one.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": 5}\n");
  err = error_of([&] { load_sft_file(DataSource{one}, *v1(), ChatFormat::MistralV1, {}); });
  EXPECT_EQ(err.rfind(one + ":3: field 'text': must be a string, got a number", 0), 0u) << err;

  err = error_of([&] { load_sft_file(DataSource{path + ".missing"}, *v1(), ChatFormat::MistralV1, {}); });
  EXPECT_NE(err.find(path + ".missing: cannot open"), std::string::npos) << err;
  std::string empty = write_file("empty.jsonl", "\n  \n");
  EXPECT_NE(error_of([&] { load_sft_file(DataSource{empty}, *v1(), ChatFormat::MistralV1, {}); }).find("no rows"),
            std::string::npos);
}

TEST(SftLoad, CrlfAndBlankLinesKeepLineNumbers) {
  std::string path = write_file("crlf.jsonl", "{\"text\": \"a\"}\r\n\r\n{\"text\": \"b\"}\r\n");
  std::vector<Sample> s = load_sft_file(DataSource{path}, *v1(), ChatFormat::MistralV1, {});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].line, 1);
  EXPECT_EQ(s[1].line, 3);
  EXPECT_EQ(s[1].ids, cat({{1}, v1()->encode("b"), {2}}));
}

Sample make_sample(std::vector<int> ids, std::vector<uint8_t> trainable, int64_t line = 0) {
  Sample s;
  s.ids = std::move(ids);
  s.trainable = std::move(trainable);
  s.file = "hand";
  s.line = line;
  return s;
}

std::vector<Sample> truncation_set() {
  return {
      make_sample({1, 5, 6, 7, 2}, {0, 1, 1, 1, 1}),                         // 5 tokens, fits
      make_sample({1, 5, 6, 7, 8, 9, 10, 11, 12, 2}, flags(10, 1)),          // 10: cut 2, 7 trained left
      make_sample({1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 2}, flags(12, 3)),  // 12: cut 4, 5 trained left
      make_sample({1, 5, 6, 7, 8, 9, 10, 11, 12, 2}, flags(10, 8)),          // prompt fills the first 8: nothing left
      make_sample({1, 5, 2}, {0, 0, 0}),                                     // nothing to train at all
  };
}

TEST(SftTruncate, RightPolicy) {
  std::vector<Sample> s = truncation_set();
  DataStats st;
  truncate_samples(s, 8, Truncation::Right, st);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[1].ids, (std::vector<int>{1, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(s[2].trainable, flags(8, 3));
  EXPECT_EQ(st.rows, 5);
  EXPECT_EQ(st.truncated, 2);
  EXPECT_EQ(st.truncated_tokens, 2 + 4);
  EXPECT_EQ(st.dropped, 2);
  EXPECT_EQ(st.tokens, 5 + 8 + 8);
  EXPECT_EQ(st.trained_tokens, 4 + 7 + 5);
}

TEST(SftTruncate, DropPolicy) {
  std::vector<Sample> s = truncation_set();
  DataStats st;
  truncate_samples(s, 8, Truncation::Drop, st);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].ids.size(), 5u);
  EXPECT_EQ(st.rows, 5);
  EXPECT_EQ(st.truncated, 0);
  EXPECT_EQ(st.truncated_tokens, 0);
  EXPECT_EQ(st.dropped, 4);
  EXPECT_EQ(st.tokens, 5);
  EXPECT_EQ(st.trained_tokens, 4);
  // an unknown policy name never gets this far: the recipe refuses it (RecipeTest checks data.truncation)
  EXPECT_NE(error_of([] {
              parse_enum<Truncation>("left", "data.truncation");
            }).find("data.truncation: 'left' is not one of right, drop"),
            std::string::npos);
}

TEST(SftRows, PackedRowsHandWorked) {
  std::vector<Sample> s = {make_sample({1, 10, 11, 12}, {0, 0, 1, 1}), make_sample({1, 20, 21}, {0, 1, 1}),
                           make_sample({1, 30, 31, 32, 33}, {0, 1, 1, 1, 1})};
  DataStats st;
  std::vector<Row> rows = make_rows(s, 8, true, st);
  ASSERT_EQ(rows.size(), 2u);  // 4 + 3 fit one row; 5 more do not, so the third document starts row 2
  const int64_t X = -100;
  EXPECT_EQ(rows[0].input_ids, (std::vector<int64_t>{1, 10, 11, 12, 1, 20, 21, 0}));
  EXPECT_EQ(rows[0].targets, (std::vector<int64_t>{X, 11, 12, X, 20, 21, X, X}));
  EXPECT_EQ(rows[0].position_ids, (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 0}));
  EXPECT_EQ(rows[0].doc_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, -1}));
  EXPECT_EQ(rows[1].input_ids, (std::vector<int64_t>{1, 30, 31, 32, 33, 0, 0, 0}));
  EXPECT_EQ(rows[1].targets, (std::vector<int64_t>{30, 31, 32, 33, X, X, X, X}));
  EXPECT_EQ(rows[1].position_ids, (std::vector<int64_t>{0, 1, 2, 3, 4, 0, 0, 0}));
  EXPECT_EQ(rows[1].doc_ids, (std::vector<int64_t>{0, 0, 0, 0, 0, -1, -1, -1}));
  EXPECT_EQ(st.packed_rows, 2);
  EXPECT_DOUBLE_EQ(st.packing_efficiency, 12.0 / 16.0);

  DataStats st2;
  std::vector<Row> unpacked = make_rows(s, 8, false, st2);
  ASSERT_EQ(unpacked.size(), 3u);
  EXPECT_EQ(unpacked[1].input_ids, (std::vector<int64_t>{1, 20, 21, 0, 0, 0, 0, 0}));
  EXPECT_EQ(unpacked[1].targets, (std::vector<int64_t>{20, 21, X, X, X, X, X, X}));
  EXPECT_EQ(unpacked[1].doc_ids, (std::vector<int64_t>{0, 0, 0, -1, -1, -1, -1, -1}));
  EXPECT_EQ(st2.packed_rows, 3);
  EXPECT_DOUBLE_EQ(st2.packing_efficiency, 12.0 / 24.0);

  std::string err = error_of([&] { make_rows({make_sample(std::vector<int>(9, 1), flags(9, 1), 7)}, 8, true, st); });
  EXPECT_NE(err.find("hand:7:"), std::string::npos) << err;
}

// (target, input it is predicted from, position): a trained target's identity within its document.
using Target = std::tuple<int64_t, int64_t, int64_t>;
std::multiset<Target> trained_targets(const std::vector<Row>& rows, int64_t seq_len) {
  std::multiset<Target> out;
  for (const Row& r : rows) {
    EXPECT_EQ(static_cast<int64_t>(r.input_ids.size()), seq_len);
    for (int64_t t = 0; t < seq_len; ++t) {
      if (r.doc_ids[t] < 0) {  // padding
        EXPECT_EQ(r.targets[t], -100);
        EXPECT_EQ(r.input_ids[t], 0);
        continue;
      }
      const bool continues = t > 0 && r.doc_ids[t] == r.doc_ids[t - 1];
      EXPECT_EQ(r.position_ids[t], continues ? r.position_ids[t - 1] + 1 : 0);
      if (r.targets[t] == -100) continue;
      // Never across a document boundary: the target is the next input of the same document.
      EXPECT_LT(t + 1, seq_len);
      if (t + 1 >= seq_len) continue;
      EXPECT_EQ(r.doc_ids[t + 1], r.doc_ids[t]);
      EXPECT_EQ(r.targets[t], r.input_ids[t + 1]);
      out.insert({r.targets[t], r.input_ids[t], r.position_ids[t]});
    }
  }
  return out;
}

TEST(SftRows, PackingPreservesEveryTrainedTargetOnce) {
  const int64_t seq_len = 512;
  DataSource src{repo_path("datasets/data/shakespeare_train.jsonl")};
  std::vector<Sample> s = load_sft_file(src, *stories(), ChatFormat::MistralV1, {});
  DataStats st;
  truncate_samples(s, seq_len, Truncation::Right, st);
  ASSERT_GT(st.truncated, 0);  // the longest speeches are over 512 tokens
  DataStats sp, su;
  std::vector<Row> packed = make_rows(s, seq_len, true, sp);
  std::vector<Row> unpacked = make_rows(s, seq_len, false, su);
  std::multiset<Target> a = trained_targets(packed, seq_len), b = trained_targets(unpacked, seq_len);
  EXPECT_EQ(a.size(), static_cast<size_t>(st.trained_tokens));
  EXPECT_TRUE(a == b);
  EXPECT_LT(packed.size(), unpacked.size());
  EXPECT_EQ(unpacked.size(), s.size());
  EXPECT_NEAR(sp.packing_efficiency, double(st.tokens) / (packed.size() * seq_len), 1e-12);
  EXPECT_NEAR(su.packing_efficiency, double(st.tokens) / (unpacked.size() * seq_len), 1e-12);
}

size_t count_rows(const std::string& path) {
  std::ifstream in(path);
  std::string l;
  size_t n = 0;
  while (std::getline(in, l)) n += l.find_first_not_of(" \t\r") != std::string::npos;
  return n;
}

bool same_rows(const std::vector<Row>& a, const std::vector<Row>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].input_ids != b[i].input_ids || a[i].targets != b[i].targets || a[i].doc_ids != b[i].doc_ids) return false;
  return true;
}

TEST(SftBuild, EvalSplitIsSeededAndSized) {
  DataConfig cfg;
  cfg.train = {DataSource{repo_path("datasets/data/shakespeare_train.jsonl")}};
  cfg.eval_split = 0.1;
  cfg.seq_len = 4096;  // nothing truncated: stats count every sample
  cfg.packing = true;
  const size_t n = count_rows(cfg.train[0].path);
  const int64_t n_eval = std::llround(0.1 * n);
  SftData a = build_sft_data(cfg, *stories(), 7), b = build_sft_data(cfg, *stories(), 7);
  SftData c = build_sft_data(cfg, *stories(), 8);
  EXPECT_EQ(a.eval_stats.rows, n_eval);
  EXPECT_EQ(a.train_stats.rows, static_cast<int64_t>(n) - n_eval);
  EXPECT_TRUE(same_rows(a.train, b.train));
  EXPECT_TRUE(same_rows(a.eval, b.eval));
  EXPECT_FALSE(same_rows(a.eval, c.eval));
  EXPECT_EQ(c.eval_stats.rows, n_eval);
  // Held-out and trained documents are disjoint: every document is in exactly one of the two.
  EXPECT_EQ(a.train_stats.tokens + a.eval_stats.tokens, c.train_stats.tokens + c.eval_stats.tokens);

  cfg.eval_split = 0;
  cfg.eval = DataSource{repo_path("datasets/data/shakespeare_eval.jsonl")};
  SftData d = build_sft_data(cfg, *stories(), 7);
  EXPECT_EQ(d.eval_stats.rows, static_cast<int64_t>(count_rows(cfg.eval->path)));
  EXPECT_EQ(d.train_stats.rows, static_cast<int64_t>(n));
  cfg.eval_split = 0.1;
  EXPECT_NE(error_of([&] { build_sft_data(cfg, *stories(), 7); }).find("both set"), std::string::npos);
}

// Each row of these files is a distinct text, so a sample is identified by its ids.
std::map<std::vector<int64_t>, int> histogram(const std::vector<Row>& rows) {
  std::map<std::vector<int64_t>, int> h;
  for (const Row& r : rows) h[r.input_ids]++;
  return h;
}

TEST(SftBuild, WeightsRepeatAndSubsample) {
  std::string a_text, b_text;
  for (int i = 0; i < 10; ++i) a_text += "{\"text\": \"alpha number " + std::to_string(i) + "\"}\n";
  for (int i = 0; i < 10; ++i) b_text += "{\"text\": \"beta number " + std::to_string(i) + "\"}\n";
  DataConfig cfg;
  cfg.train = {DataSource{write_file("a.jsonl", a_text), "auto", 2.0},
               DataSource{write_file("b.jsonl", b_text), "auto", 0.5}};
  cfg.seq_len = 32;
  cfg.packing = false;  // one sample per row
  SftData d = build_sft_data(cfg, *v1(), 3);
  ASSERT_EQ(d.train.size(), 25u);
  auto h = histogram(d.train);
  EXPECT_EQ(h.size(), 15u);  // 10 alpha texts + 5 distinct beta texts
  const auto alpha = v1()->encode("alpha");
  int alpha_rows = 0, beta_rows = 0;
  for (const auto& [ids, count] : h) {
    bool is_alpha = ids[1] == alpha[0];
    (is_alpha ? alpha_rows : beta_rows) += count;
    EXPECT_EQ(count, is_alpha ? 2 : 1);
  }
  EXPECT_EQ(alpha_rows, 20);
  EXPECT_EQ(beta_rows, 5);
  EXPECT_EQ(histogram(build_sft_data(cfg, *v1(), 3).train), h);  // same seed, same subset

  // 1.5 → 15 rows: every text once, five of them twice.
  cfg.train = {DataSource{cfg.train[0].path, "auto", 1.5}};
  SftData e = build_sft_data(cfg, *v1(), 3);
  ASSERT_EQ(e.train.size(), 15u);
  int twice = 0;
  for (const auto& [ids, count] : histogram(e.train)) twice += count == 2;
  EXPECT_EQ(twice, 5);
  EXPECT_EQ(histogram(e.train).size(), 10u);
}

TEST(SftBuild, StatsJsonHasEveryField) {
  DataStats st;
  st.rows = 3;
  st.packing_efficiency = 0.5;
  json j = st.to_json();
  for (const char* k : {"rows", "tokens", "trained_tokens", "truncated", "truncated_tokens", "dropped", "packed_rows",
                        "packing_efficiency"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["rows"], 3);
  EXPECT_EQ(j["packing_efficiency"], 0.5);
}

}  // namespace
}  // namespace affinage
