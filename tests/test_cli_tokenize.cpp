// `affinage tokenize` end to end: ids checked against mistral-tokenizer-js's published ids and against the
// library's own chat rendering; error messages name the offending file.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "text/chat.h"

using namespace affinage;
using affinage::test::data_path;
using affinage::test::run_cli;
using affinage::test::write_scratch;

namespace {

std::string v1_path() { return data_path("tokenizers/mistral_v1/tokenizer.model"); }
std::string v3_path() { return data_path("tokenizers/mistral_v3/tokenizer.model"); }

const char* kChatJson = R"([
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi"},
  {"role": "assistant", "content": "Hello.", "weight": 0},
  {"role": "user", "content": "Bye"},
  {"role": "assistant", "content": "Goodbye."}
])";

std::vector<Message> chat_messages() {
  return {{"system", "Be brief.", 1},
          {"user", "Hi", 1},
          {"assistant", "Hello.", 0},
          {"user", "Bye", 1},
          {"assistant", "Goodbye.", 1}};
}

}  // namespace

TEST(CliTokenize, TextMatchesPublishedIds) {
  // mistral-tokenizer-js: " grabbed" -> [1, 28705, 13300]
  auto r = run_cli("tokenize --tokenizer '" + v1_path() + "' --text ' grabbed' --bos");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1 28705 13300\n");
  r = run_cli("tokenize --tokenizer '" + v1_path() + "' --text grabbed");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "13300\n");
  r = run_cli("tokenize --tokenizer '" + v1_path() + "' --text grabbed --bos --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"].get<std::vector<int>>(), (std::vector<int>{1, 13300}));
  EXPECT_FALSE(j.contains("trainable"));
}

TEST(CliTokenize, MessagesArrayAndObjectFormsRenderTheChat) {
  auto tok = Tokenizer::load(v3_path());
  auto expected = render_chat(*tok, chat_messages(), ChatFormat::MistralV3);
  std::vector<int> flags(expected.trainable.begin(), expected.trainable.end());
  ASSERT_GT(std::count(flags.begin(), flags.end(), 0), 0);
  ASSERT_GT(std::count(flags.begin(), flags.end(), 1), 0);

  std::string arr = write_scratch("chat.json", kChatJson);
  std::string obj = write_scratch("chat_obj.json", std::string("{\"messages\": ") + kChatJson + "}");
  for (const auto& path : {arr, obj}) {
    auto r = run_cli("tokenize --tokenizer '" + v3_path() + "' --messages '" + path + "' --json");
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["ids"].get<std::vector<int>>(), expected.ids);
    EXPECT_EQ(j["trainable"].get<std::vector<int>>(), flags);
  }
  // Plain output: ids on the first line, trainable flags on the second.
  auto r = run_cli("tokenize --tokenizer '" + v3_path() + "' --messages '" + arr + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  std::string line1, line2;
  for (size_t i = 0; i < expected.ids.size(); ++i) line1 += (i ? " " : "") + std::to_string(expected.ids[i]);
  for (size_t i = 0; i < flags.size(); ++i) line2 += (i ? " " : "") + std::to_string(flags[i]);
  EXPECT_EQ(r.out, line1 + "\n" + line2 + "\n");
  // Forcing v1 on the v3 tokenizer renders text markers instead of control tokens.
  r = run_cli("tokenize --tokenizer '" + v3_path() + "' --messages '" + arr + "' --json --chat-format mistral_v1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto v1_render = render_chat(*tok, chat_messages(), ChatFormat::MistralV1);
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"].get<std::vector<int>>(), v1_render.ids);
}

TEST(CliTokenize, ErrorsNameTheFile) {
  auto r = run_cli("tokenize --tokenizer /nonexistent/tokenizer.model --text hi");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("/nonexistent/tokenizer.model"), std::string::npos) << r.err;

  std::string bad = write_scratch("bad.json", "[{\"role\": \"user\", \"content\": ");
  r = run_cli("tokenize --tokenizer '" + v1_path() + "' --messages '" + bad + "'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;

  std::string order = write_scratch("order.json", R"([{"role": "assistant", "content": "x"}])");
  r = run_cli("tokenize --tokenizer '" + v1_path() + "' --messages '" + order + "'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find(order), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("message 0"), std::string::npos) << r.err;

  std::string nocontent = write_scratch("nocontent.json", R"({"messages": [{"role": "user"}]})");
  r = run_cli("tokenize --tokenizer '" + v1_path() + "' --messages '" + nocontent + "'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("content"), std::string::npos) << r.err;

  r = run_cli("tokenize --tokenizer '" + v1_path() + "'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--text"), std::string::npos) << r.err;

  r = run_cli("tokenize --tokenizer '" + v1_path() + "' --text hi --messages '" + order + "'");
  EXPECT_NE(r.code, 0);
}

TEST(CliTokenize, HelpWorks) {
  auto r = run_cli("tokenize --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--messages"), std::string::npos);
}

TEST(CliTokenize, MissingShimSaysWhereItLooked) {
  // std::system passes our environment to the child: point the loader at a library that is not there.
  setenv("AFFINAGE_SPM_LIB", "/nonexistent/libaffinage_spm.so", 1);
  auto r = run_cli("tokenize --tokenizer '" + v1_path() + "' --text hi");
  unsetenv("AFFINAGE_SPM_LIB");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("/nonexistent/libaffinage_spm.so"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("AFFINAGE_SPM_LIB"), std::string::npos) << r.err;
}
