// Tokenizer tests: exact ids against mistral-tokenizer-js's published cases, the v1/v3 vocabulary relation,
// byte fallback, unigram models, special ids, error messages, and SentencePiece living beside LibTorch.
#include <torch/torch.h>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "tests/test_util.h"
#include "text/tokenizer.h"

using namespace affinage;
using affinage::test::data_path;
using affinage::test::repo_path;

namespace {

std::shared_ptr<Tokenizer> v1() { return affinage::test::mistral_v1_tokenizer(); }
std::shared_ptr<Tokenizer> v3() { return affinage::test::mistral_v3_tokenizer(); }

nlohmann::json js_cases() {
  std::ifstream f(data_path("mistral-tokenizer-js_cases.json"));
  return nlohmann::json::parse(f);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// Expects `fn` to throw affinage::Error whose message contains every one of `parts`.
using affinage::test::expect_error;

}  // namespace

TEST(Tokenizer, MistralV1MatchesMistralTokenizerJsCases) {
  auto cases = js_cases();
  ASSERT_EQ(cases.size(), 12u);
  for (auto& c : cases) {
    std::string text = c["text"];
    std::vector<int> expected = c["ids_with_bos"].get<std::vector<int>>();
    std::vector<int> got{v1()->bos_id()};
    auto ids = v1()->encode(text);
    got.insert(got.end(), ids.begin(), ids.end());
    EXPECT_EQ(got, expected) << "text: " << text;
    EXPECT_EQ(v1()->decode(ids), text);
    EXPECT_EQ(v1()->decode(expected), text) << "BOS must decode to nothing";
  }
}

TEST(Tokenizer, MistralV1SpecialIds) {
  EXPECT_EQ(v1()->vocab_size(), 32000);
  EXPECT_EQ(v1()->bos_id(), 1);
  EXPECT_EQ(v1()->eos_id(), 2);
  EXPECT_EQ(v1()->unk_id(), 0);
  EXPECT_EQ(v1()->pad_id(), -1);
  EXPECT_EQ(v1()->id_to_piece(1), "<s>");
  EXPECT_EQ(v1()->id_to_piece(2), "</s>");
  EXPECT_EQ(v1()->id_to_piece(0), "<unk>");
  EXPECT_TRUE(v1()->is_control(1));
  EXPECT_TRUE(v1()->is_control(2));
  EXPECT_TRUE(v1()->is_unknown(0));
  EXPECT_FALSE(v1()->is_unknown(1));
  // <0x0A> is id 13 in the published cases ("\n" -> 28705, 13).
  EXPECT_TRUE(v1()->is_byte(13));
  EXPECT_EQ(v1()->id_to_piece(13), "<0x0A>");
  EXPECT_FALSE(v1()->is_byte(13300));
  EXPECT_FALSE(v1()->is_control(13300));
  EXPECT_FALSE(v1()->is_user_defined(13300));
}

TEST(Tokenizer, PieceToIdDistinguishesMissingPieceFromUnk) {
  EXPECT_EQ(v1()->piece_to_id("<unk>"), 0);
  EXPECT_EQ(v1()->piece_to_id("<s>"), 1);
  EXPECT_EQ(v1()->piece_to_id("▁grabbed"), 13300);  // "grabbed" -> [13300] in the js cases
  EXPECT_EQ(v1()->id_to_piece(13300), "▁grabbed");
  EXPECT_EQ(v1()->piece_to_id("no-such-piece-xyzzy"), -1);
  EXPECT_EQ(v1()->piece_to_id("[INST]"), -1);  // v1 writes its markers as text
}

TEST(Tokenizer, DecodeDropsControlTokens) {
  auto ids = v1()->encode("Hello world");
  std::vector<int> wrapped{1};
  wrapped.insert(wrapped.end(), ids.begin(), ids.end());
  wrapped.push_back(2);
  EXPECT_EQ(v1()->decode(wrapped), "Hello world");

  auto ids3 = v3()->encode("Hello world");
  std::vector<int> inst{1, 3};
  inst.insert(inst.end(), ids3.begin(), ids3.end());
  inst.push_back(4);
  inst.push_back(2);
  EXPECT_EQ(v3()->decode(inst), "Hello world");
}

TEST(Tokenizer, OutOfRangeIdsAreErrors) {
  expect_error([] { v1()->decode({1, 32000}); }, {"32000", "position 1", "tokenizer.model"});
  expect_error([] { v1()->id_to_piece(-1); }, {"-1"});
  expect_error([] { v1()->is_control(40000); }, {"40000"});
}

TEST(Tokenizer, MistralV3ControlPiecesAndShiftedVocabulary) {
  EXPECT_EQ(v3()->vocab_size(), 32768);
  EXPECT_EQ(v3()->bos_id(), 1);
  EXPECT_EQ(v3()->eos_id(), 2);
  EXPECT_EQ(v3()->unk_id(), 0);
  EXPECT_EQ(v3()->pad_id(), -1);
  EXPECT_EQ(v3()->piece_to_id("[INST]"), 3);
  EXPECT_EQ(v3()->piece_to_id("[/INST]"), 4);
  EXPECT_TRUE(v3()->is_control(3));
  EXPECT_TRUE(v3()->is_control(4));
  // v3 = v1 with 768 control pieces inserted after </s>: every v1 piece from id 3 on moved up by 768.
  for (int id : {3, 13, 258, 259, 1000, 13300, 28705, 31999}) {
    EXPECT_EQ(v3()->id_to_piece(id + 768), v1()->id_to_piece(id)) << "v1 id " << id;
    EXPECT_EQ(v3()->is_byte(id + 768), v1()->is_byte(id)) << "v1 id " << id;
  }
  for (auto& c : js_cases()) {
    std::string text = c["text"];
    auto a = v1()->encode(text), b = v3()->encode(text);
    ASSERT_EQ(a.size(), b.size()) << text;
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(b[i], a[i] + 768) << text << " position " << i;
  }
}

TEST(Tokenizer, MistralV3NeverEncodesTextAsControlTokens) {
  for (std::string text : {"[INST]", "[/INST]", "[INST] hi [/INST]", "<s></s>"}) {
    for (int id : v3()->encode(text)) {
      EXPECT_FALSE(v3()->is_control(id)) << text << " gave control id " << id;
      EXPECT_NE(id, 3);
      EXPECT_NE(id, 4);
    }
    EXPECT_EQ(v3()->decode(v3()->encode(text)), text);
  }
}

TEST(Tokenizer, UnigramModelRoundTrip) {
  auto t = Tokenizer::load(data_path("tokenizers/unigram/test_model.model"));
  EXPECT_EQ(t->vocab_size(), 1000);
  EXPECT_EQ(t->id_to_piece(t->unk_id()), "<unk>");
  EXPECT_EQ(t->id_to_piece(t->bos_id()), "<s>");
  EXPECT_EQ(t->id_to_piece(t->eos_id()), "</s>");
  EXPECT_TRUE(t->is_unknown(t->unk_id()));
  std::string text = "I saw a girl with a telescope. The quick brown fox jumps over the lazy dog.";
  auto ids = t->encode(text);
  ASSERT_GT(ids.size(), 10u);
  for (int id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, t->vocab_size());
    EXPECT_FALSE(t->is_control(id));
  }
  EXPECT_EQ(t->decode(ids), text);
  // The concatenated pieces spell the text with "▁" for spaces (and the dummy prefix in front).
  std::string pieces;
  for (int id : ids) pieces += t->id_to_piece(id);
  std::string spelled = "▁";
  for (char ch : text) spelled += ch == ' ' ? std::string("▁") : std::string(1, ch);
  EXPECT_EQ(pieces, spelled);
}

TEST(Tokenizer, ByteFallbackOnStories260K) {
  auto t = Tokenizer::load(repo_path("models/stories260K/tokenizer.model"));
  EXPECT_EQ(t->vocab_size(), 512);
  std::string text = "é🦙";  // U+1F999 is F0 9F A6 99 in UTF-8
  auto ids = t->encode(text);
  std::vector<std::string> bytes;
  for (int id : ids)
    if (t->is_byte(id)) bytes.push_back(t->id_to_piece(id));
  EXPECT_EQ(bytes, (std::vector<std::string>{"<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"}));
  EXPECT_EQ(t->decode(ids), text);
}

TEST(Tokenizer, UserDefinedPieces) {
  // A model with a user-defined piece, made by appending one SentencePiece entry (field 1 of ModelProto:
  // piece "XQZ", score 0, type USER_DEFINED = 4) to the unigram test model: protobuf appends repeated fields.
  std::string piece =
      std::string("\x0a\x03XQZ", 5) + std::string("\x15\x00\x00\x00\x00", 5) + std::string("\x18\x04", 2);
  std::string bytes = slurp(data_path("tokenizers/unigram/test_model.model"));
  bytes += '\x0a';
  bytes += char(piece.size());
  bytes += piece;
  std::string dir = affinage::test::temp_dir("tok_userdef"), path = dir + "/user_defined.model";
  write_file(path, bytes);
  auto t = Tokenizer::load(path);
  ASSERT_EQ(t->vocab_size(), 1001);
  EXPECT_EQ(t->piece_to_id("XQZ"), 1000);
  EXPECT_TRUE(t->is_user_defined(1000));
  EXPECT_FALSE(t->is_control(1000));
  for (int id : {0, 1, 2, 5, 999}) EXPECT_FALSE(t->is_user_defined(id)) << id;
  // SentencePiece always cuts a user-defined piece out whole.
  auto ids = t->encode("aXQZb");
  EXPECT_NE(std::find(ids.begin(), ids.end(), 1000), ids.end());
  EXPECT_EQ(t->decode(ids), "aXQZb");
  std::filesystem::remove_all(dir);
}

TEST(Tokenizer, MissingFileIsAnErrorNamingIt) {
  std::string dir = affinage::test::temp_dir("tok_missing"), path = dir + "/tokenizer.model";
  expect_error([&] { Tokenizer::load(path); }, {path, "does not exist"});
  std::filesystem::remove_all(dir);
}

TEST(Tokenizer, NonModelFileIsAnErrorNamingIt) {
  std::string dir = affinage::test::temp_dir("tok_bad");
  for (std::string content : {std::string("this is not a sentencepiece model\n"), std::string()}) {
    std::string path = dir + "/tokenizer.model";
    write_file(path, content);
    expect_error([&] { Tokenizer::load(path); }, {path, "SentencePiece"});
  }
  expect_error([&] { Tokenizer::load(data_path("mistral-tokenizer-js_cases.json")); },
               {"mistral-tokenizer-js_cases.json", "SentencePiece"});
  expect_error([&] { Tokenizer::load(dir); }, {dir, "folder"});
  std::filesystem::remove_all(dir);
}

// The reason for the dlopen'd shim: libsentencepiece's protobuf-lite and LibTorch's protobuf in one process.
TEST(Tokenizer, LivesBesideLibTorch) {
  torch::manual_seed(0);
  auto a = torch::randn({4, 8});
  auto t = Tokenizer::load(data_path("tokenizers/mistral_v1/tokenizer.model"));
  auto ids = t->encode("Hello world, tensors and tokens together");
  auto idt = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong);
  ASSERT_EQ(idt.numel(), (int64_t)ids.size());
  auto emb = torch::randn({32000, 8});
  auto x = emb.index_select(0, idt);  // [n, 8]
  auto y = torch::matmul(x, a.t());   // [n, 4]
  // Independent check of the matmul: one element by hand.
  double ref = 0;
  for (int k = 0; k < 8; ++k) ref += x[0][k].item<double>() * a[1][k].item<double>();
  EXPECT_NEAR(y[0][1].item<double>(), ref, 1e-5);
  EXPECT_EQ(t->encode("Hello world, tensors and tokens together"), ids);
  EXPECT_EQ(t->decode(ids), "Hello world, tensors and tokens together");
}
