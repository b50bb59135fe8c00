// Preference data: TRL's explicit/implicit, text/conversational rows and mapped columns become one prompt's
// ids shared by both responses; truncation cuts the prompt's start first; broken rows name file:line:field.
#include <fstream>
#include <nlohmann/json.hpp>
#include "datasets/preference_data.h"
#include "tests/test_util.h"
#include "text/chat.h"

using namespace affinage;
using affinage::test::expect_error;
using json = nlohmann::json;

static PreferencePair render(const json& row, std::shared_ptr<Tokenizer> tok,
                             std::map<std::string, std::string> cols = {}) {
  return render_preference_row(row, *tok, detect_chat_format(*tok), cols, "f.jsonl", 7);
}

static std::vector<int> cat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(PreferenceData, TextPairSharesThePromptIdsAndEndsWithEos) {
  auto tok = affinage::test::mistral_v1_tokenizer();
  auto p =
      render({{"prompt", "The capital of France is"}, {"chosen", " Paris."}, {"rejected", " Lyon, of course."}}, tok);
  std::vector<int> want_prompt = cat({tok->bos_id()}, tok->encode("The capital of France is"));
  EXPECT_EQ(p.prompt, want_prompt);
  for (auto [resp, text] : {std::pair{&p.chosen, " Paris."}, std::pair{&p.rejected, " Lyon, of course."}}) {
    ASSERT_EQ(resp->back(), tok->eos_id());
    std::vector<int> body(resp->begin(), resp->end() - 1);
    // the whole sequence is the joint tokenization of prompt + response: no boundary drift
    EXPECT_EQ(cat(std::vector<int>(p.prompt.begin() + 1, p.prompt.end()), body),
              tok->encode(std::string("The capital of France is") + text));
  }
  EXPECT_EQ(p.file, "f.jsonl");
  EXPECT_EQ(p.line, 7);
}

TEST(PreferenceData, ConversationalPairContinuesTheRenderedPrompt) {
  auto tok = affinage::test::mistral_v3_tokenizer();
  json prompt = json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi?"}}});
  auto p = render({{"prompt", prompt},
                   {"chosen", json::array({{{"role", "assistant"}, {"content", "Hello."}}})},
                   {"rejected", "Go away."}},  // a string response is one assistant message
                  tok);
  auto gen = render_chat(*tok, {{"system", "Be brief.", 1}, {"user", "Hi?", 1}}, ChatFormat::MistralV3, true).ids;
  EXPECT_EQ(p.prompt, gen);
  EXPECT_EQ(p.prompt.back(), 4);  // [/INST]
  EXPECT_EQ(p.chosen, cat(tok->encode("Hello."), {tok->eos_id()}));
  EXPECT_EQ(p.rejected, cat(tok->encode("Go away."), {tok->eos_id()}));
}

TEST(PreferenceData, ImplicitPromptIsTheSharedPrefix) {
  auto tok = affinage::test::mistral_v3_tokenizer();
  json u = {{"role", "user"}, {"content", "Name a color."}};
  auto conv = render({{"chosen", json::array({u, {{"role", "assistant"}, {"content", "Blue."}}})},
                      {"rejected", json::array({u, {{"role", "assistant"}, {"content", "No."}}})}},
                     tok);
  EXPECT_EQ(conv.prompt, render_chat(*tok, {{"user", "Name a color.", 1}}, ChatFormat::MistralV3, true).ids);
  EXPECT_EQ(conv.chosen, cat(tok->encode("Blue."), {tok->eos_id()}));

  auto v1 = affinage::test::mistral_v1_tokenizer();
  auto text = render({{"chosen", "The sky is blue today."}, {"rejected", "The sky is green today."}}, v1);
  EXPECT_EQ(text.prompt, cat({v1->bos_id()}, v1->encode("The sky is")));  // cut at a word boundary
  EXPECT_EQ(cat(std::vector<int>(text.prompt.begin() + 1, text.prompt.end()),
                std::vector<int>(text.chosen.begin(), text.chosen.end() - 1)),
            v1->encode("The sky is blue today."));
}

TEST(PreferenceData, ColumnMappingReadsStackExchangePairs) {
  auto tok = affinage::test::mistral_v1_tokenizer();
  DataSource src{affinage::test::data_path("datasets/torchtune__stack_exchange_paired_tiny.jsonl"), "auto", 1.0};
  auto pairs = load_preference_file(src, *tok, ChatFormat::MistralV1,
                                    {{"prompt", "question"}, {"chosen", "response_j"}, {"rejected", "response_k"}});
  ASSERT_EQ(pairs.size(), 25u);
  std::ifstream f(src.path);
  std::string line;
  std::getline(f, line);
  auto row = json::parse(line);
  EXPECT_EQ(pairs[0].prompt, cat({tok->bos_id()}, tok->encode(row["question"].get<std::string>())));
  std::vector<int> seq(pairs[0].prompt.begin() + 1, pairs[0].prompt.end());
  seq.insert(seq.end(), pairs[0].chosen.begin(), pairs[0].chosen.end() - 1);
  EXPECT_EQ(tok->decode(seq),
            tok->decode(tok->encode(row["question"].get<std::string>() + row["response_j"].get<std::string>())));
  expect_error([&] { load_preference_file(src, *tok, ChatFormat::MistralV1, {}); },
               {"torchtune__stack_exchange_paired_tiny.jsonl:1", "'chosen'", "data.columns", "25 lines"});
}

TEST(PreferenceData, TruncationCutsThePromptStartFirst) {
  PreferencePair p;
  p.prompt = {1, 10, 11, 12, 13, 14, 15, 16, 17, 18};  // 10 tokens
  p.chosen = {20, 21, 22, 2};
  p.rejected = {30, 31, 2};
  std::vector<PreferencePair> v{p};
  PreferenceStats st;
  truncate_pairs(v, 12, 4, Truncation::Right,
                 st);  // needs 14: the prompt loses 2 tokens after BOS, responses stay whole
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].prompt, (std::vector<int>{1, 12, 13, 14, 15, 16, 17, 18}));
  EXPECT_EQ(v[0].chosen, p.chosen);
  EXPECT_EQ(st.truncated_prompts, 1);
  EXPECT_EQ(st.truncated_responses, 0);

  v = {p};
  st = {};
  truncate_pairs(v, 6, 4, Truncation::Right, st);  // prompt floor 4 (BOS + 3 last), then responses cut to 2
  EXPECT_EQ(v[0].prompt, (std::vector<int>{1, 16, 17, 18}));
  EXPECT_EQ(v[0].chosen, (std::vector<int>{20, 21}));
  EXPECT_EQ(v[0].rejected, (std::vector<int>{30, 31}));
  EXPECT_EQ(st.truncated_responses, 2);

  PreferencePair same = p;
  same.rejected = same.chosen;
  v = {p, same};
  st = {};
  truncate_pairs(v, 12, 4, Truncation::Drop, st);  // the long one dropped by policy, the identical one always
  EXPECT_TRUE(v.empty());
  EXPECT_EQ(st.dropped, 2);
  EXPECT_EQ(st.pairs, 2);
}

TEST(PreferenceData, BrokenRowsNameFileLineAndField) {
  auto tok = affinage::test::mistral_v3_tokenizer();
  std::string path = affinage::test::temp_dir("pref_bad") + "/bad.jsonl";
  std::ofstream(path)
      << R"({"prompt": "a", "chosen": "b", "rejected": "c"})"
      << "\n"
      << R"({"prompt": "a", "chosen": 3, "rejected": "c"})"
      << "\n"
      << "\n"
      << R"({"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "user", "content": "y"}], "rejected": "n"})"
      << "\n"
      << R"({"chosen": [{"role": "user", "content": "p"}], "rejected": [{"role": "user", "content": "q"}]})"
      << "\n"
      << R"({"prompt": "a", "chosen": "b"})"
      << "\n";
  expect_error(
      [&] {
        load_preference_file({path, "auto", 1.0}, *tok, ChatFormat::MistralV3, {});
      },
      {"4 lines cannot be used", "bad.jsonl:2: field 'chosen': must be a string",
       "bad.jsonl:4: field 'chosen': must start with an assistant message", "bad.jsonl:5: fields 'chosen'/'rejected'",
       "bad.jsonl:6: field 'rejected': missing"});
  expect_error(
      [&] {
        load_preference_file({path, "text", 1.0}, *tok, ChatFormat::MistralV3, {});
      },
      {"format 'text'", "preference"});
}
