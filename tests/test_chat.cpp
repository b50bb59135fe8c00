// Chat rendering tests: v1 and v3 token layouts built by hand from encode() pieces (mistral-common),
// trainable flags, weights, the single BOS, generation prompts and role-order errors.
#include <algorithm>

#include "base/error.h"
#include "tests/test_util.h"
#include "text/chat.h"

using namespace affinage;
using affinage::test::data_path;

namespace {

std::shared_ptr<Tokenizer> v1() { return affinage::test::mistral_v1_tokenizer(); }
std::shared_ptr<Tokenizer> v3() { return affinage::test::mistral_v3_tokenizer(); }

// Expected output assembled piece by piece.
struct Expect {
  std::vector<int> ids;
  std::vector<uint8_t> trainable;
  void add(const std::vector<int>& v, uint8_t t) {
    ids.insert(ids.end(), v.begin(), v.end());
    trainable.insert(trainable.end(), v.size(), t);
  }
};

const std::vector<Message> kChat = {
    {"system", "You are terse.", 1.0},      {"user", "What is 2+2?", 1.0},     {"assistant", "4.", 1.0},
    {"user", "And 3+3? Say <s> too.", 1.0}, {"assistant", "6, and <s>.", 1.0},
};

using affinage::test::expect_error;

}  // namespace

TEST(Chat, DetectsFormatFromControlPieces) {
  EXPECT_EQ(detect_chat_format(*v1()), ChatFormat::MistralV1);
  EXPECT_EQ(detect_chat_format(*v3()), ChatFormat::MistralV3);
  EXPECT_EQ(chat_format_from_name("auto", *v3()), ChatFormat::MistralV3);
  EXPECT_EQ(chat_format_from_name("mistral_v1", *v3()), ChatFormat::MistralV1);
  EXPECT_EQ(chat_format_name(ChatFormat::MistralV1), "mistral_v1");
  EXPECT_EQ(chat_format_name(ChatFormat::MistralV3), "mistral_v3");
  expect_error([] { chat_format_from_name("mistral_v3", *v1()); }, {"mistral_v3", "[INST]"});
  expect_error([] { chat_format_from_name("chatml", *v1()); }, {"chatml", "mistral_v1"});
}

TEST(Chat, MistralV1MultiTurnWithSystemPrompt) {
  auto& t = *v1();
  Expect e;
  e.add({1}, 0);
  e.add(t.encode("[INST] You are terse.\n\nWhat is 2+2? [/INST]"), 0);  // system on the FIRST user turn
  e.add(t.encode("4."), 1);
  e.add({2}, 1);
  e.add(t.encode("[INST] And 3+3? Say <s> too. [/INST]"), 0);
  e.add(t.encode("6, and <s>."), 1);
  e.add({2}, 1);
  auto r = render_chat(t, kChat, ChatFormat::MistralV1);
  EXPECT_EQ(r.ids, e.ids);
  EXPECT_EQ(r.trainable, e.trainable);
  EXPECT_EQ(r.ids[0], 1);
  EXPECT_EQ(std::count(r.ids.begin(), r.ids.end(), 1), 1) << "exactly one BOS";
  EXPECT_EQ(std::count(r.ids.begin(), r.ids.end(), 2), 2) << "one EOS per assistant turn";
  // The documented v1 template: "<s> [INST] user [/INST] answer</s> [INST] ..." (mistral cookbook).
  EXPECT_EQ(t.decode(r.ids),
            "[INST] You are terse.\n\nWhat is 2+2? [/INST] 4. [INST] And 3+3? Say <s> too. [/INST] 6, and <s>.");
}

TEST(Chat, MistralV3MultiTurnWithSystemPrompt) {
  auto& t = *v3();
  Expect e;
  e.add({1}, 0);
  e.add({3}, 0);
  e.add(t.encode("What is 2+2?"), 0);
  e.add({4}, 0);
  e.add(t.encode("4."), 1);
  e.add({2}, 1);
  e.add({3}, 0);
  e.add(t.encode("You are terse.\n\nAnd 3+3? Say <s> too."), 0);  // system on the LAST user turn
  e.add({4}, 0);
  e.add(t.encode("6, and <s>."), 1);
  e.add({2}, 1);
  auto r = render_chat(t, kChat, ChatFormat::MistralV3);
  EXPECT_EQ(r.ids, e.ids);
  EXPECT_EQ(r.trainable, e.trainable);
  EXPECT_EQ(std::count(r.ids.begin(), r.ids.end(), 1), 1) << "exactly one BOS";
  EXPECT_EQ(std::count(r.ids.begin(), r.ids.end(), 3), 2);
  EXPECT_EQ(std::count(r.ids.begin(), r.ids.end(), 4), 2);
  // mistral-common's v3 layout: no space token of our own after [INST]; the "▁" of the first content piece is it.
  EXPECT_EQ(t.id_to_piece(r.ids[2]).rfind("▁", 0), 0u);
  EXPECT_EQ(t.encode("What is 2+2?")[0], r.ids[2]);
}

TEST(Chat, TrainableCountsMatchAssistantTokens) {
  for (auto tok : {v1(), v3()}) {
    auto fmt = detect_chat_format(*tok);
    auto r = render_chat(*tok, kChat, fmt);
    ASSERT_EQ(r.ids.size(), r.trainable.size());
    size_t expected = tok->encode("4.").size() + 1 + tok->encode("6, and <s>.").size() + 1;
    EXPECT_EQ((size_t)std::count(r.trainable.begin(), r.trainable.end(), 1), expected) << chat_format_name(fmt);
    EXPECT_EQ(r.trainable.back(), 1) << "the final EOS is trained";
    EXPECT_EQ(r.ids.back(), 2);
    EXPECT_EQ(r.trainable[0], 0) << "BOS is not trained";
  }
}

TEST(Chat, WeightZeroTurnIsRenderedButNotTrained) {
  auto chat = kChat;
  chat[2].weight = 0;
  auto& t = *v3();
  auto full = render_chat(t, kChat, ChatFormat::MistralV3);
  auto r = render_chat(t, chat, ChatFormat::MistralV3);
  EXPECT_EQ(r.ids, full.ids);
  // First assistant turn: positions after the first [/INST] (id 4) up to and including the first EOS.
  size_t a0 = std::find(r.ids.begin(), r.ids.end(), 4) - r.ids.begin() + 1;
  size_t a1 = std::find(r.ids.begin(), r.ids.end(), 2) - r.ids.begin();
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (i >= a0 && i <= a1) EXPECT_EQ(r.trainable[i], 0) << i;
    else EXPECT_EQ(r.trainable[i], full.trainable[i]) << i;
  }
  EXPECT_EQ((size_t)std::count(r.trainable.begin(), r.trainable.end(), 1), t.encode("6, and <s>.").size() + 1);
}

TEST(Chat, NoSystemPromptAndSingleTurn) {
  auto& t = *v1();
  std::vector<Message> chat = {{"user", "Hi", 1.0}, {"assistant", "Hello!", 1.0}};
  Expect e;
  e.add({1}, 0);
  e.add(t.encode("[INST] Hi [/INST]"), 0);
  e.add(t.encode("Hello!"), 1);
  e.add({2}, 1);
  auto r = render_chat(t, chat, ChatFormat::MistralV1);
  EXPECT_EQ(r.ids, e.ids);
  EXPECT_EQ(r.trainable, e.trainable);
}

TEST(Chat, V3StripsTrailingSpacesOfAssistantTextLikeMistralCommon) {
  auto& t = *v3();
  std::vector<Message> chat = {{"user", "Hi", 1.0}, {"assistant", "Hello!  ", 1.0}};
  auto r = render_chat(t, chat, ChatFormat::MistralV3);
  auto answer = t.encode("Hello!");
  std::vector<int> tail(r.ids.end() - answer.size() - 1, r.ids.end() - 1);
  EXPECT_EQ(tail, answer);
}

TEST(Chat, GenerationPromptIsThePrefixOfTheFullConversation) {
  for (auto tok : {v1(), v3()}) {
    auto fmt = detect_chat_format(*tok);
    std::vector<Message> prompt(kChat.begin(), kChat.end() - 1);
    auto p = render_chat(*tok, prompt, fmt, /*add_generation_prompt=*/true);
    auto full = render_chat(*tok, kChat, fmt);
    ASSERT_LT(p.ids.size(), full.ids.size());
    EXPECT_TRUE(std::equal(p.ids.begin(), p.ids.end(), full.ids.begin())) << chat_format_name(fmt);
    EXPECT_EQ(std::count(p.trainable.begin(), p.trainable.end(), 1),
              (long)tok->encode("4.").size() + 1);  // earlier assistant turns keep their flags
    if (fmt == ChatFormat::MistralV3) {
      EXPECT_EQ(p.ids.back(), 4);
    }
    expect_error([&] { render_chat(*tok, kChat, fmt, true); }, {"message 4", "end on a user"});
  }
}

TEST(Chat, RoleOrderErrorsNameTheMessage) {
  auto& t = *v1();
  auto F = ChatFormat::MistralV1;
  expect_error([&] { render_chat(t, {}, F); }, {"no messages"});
  expect_error(
      [&] {
        render_chat(t, {{"assistant", "x", 1}, {"user", "y", 1}}, F);
      },
      {"message 0", "assistant", "user"});
  expect_error([&] { render_chat(t, {{"user", "x", 1}, {"user", "y", 1}}, F); }, {"message 1", "'user'", "assistant"});
  expect_error(
      [&] {
        render_chat(t, {{"user", "x", 1}, {"assistant", "y", 1}, {"system", "z", 1}}, F);
      },
      {"message 2", "system"});
  expect_error([&] { render_chat(t, {{"system", "x", 1}, {"assistant", "y", 1}}, F); }, {"message 1"});
  expect_error([&] { render_chat(t, {{"system", "x", 1}}, F); }, {"no user message"});
  expect_error([&] { render_chat(t, {{"user", "x", 1}, {"bot", "y", 1}}, F); }, {"message 1", "'bot'"});
  expect_error([&] { render_chat(t, {{"user", "x", 1}, {"assistant", "", 1}}, F); }, {"message 1", "empty"});
  expect_error([&] { render_chat(t, {{"user", "x", 1}, {"assistant", "y", -1}}, F); }, {"message 1", "weight"});
}
