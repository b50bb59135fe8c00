// Mistral instruct chat rendering, following mistral-common's InstructTokenizerV1/V3.
#include "text/chat.h"

#include <cmath>

#include "base/error.h"

namespace affinage {

namespace {

// The id of a control piece, or -1 when the vocabulary lacks it or has it as ordinary text.
int control_id(const Tokenizer& tok, const std::string& piece) {
  int id = tok.piece_to_id(piece);
  return id >= 0 && tok.is_control(id) ? id : -1;
}

void append(RenderedChat& r, const std::vector<int>& ids, uint8_t trainable) {
  r.ids.insert(r.ids.end(), ids.begin(), ids.end());
  r.trainable.insert(r.trainable.end(), ids.size(), trainable);
}

// Checks the role sequence: [system] user assistant user ... ; returns the index of the first non-system message.
size_t check_roles(const std::vector<Message>& messages, bool add_generation_prompt) {
  if (messages.empty()) fail("chat: the conversation has no messages");
  size_t first = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      fail("chat: message ", i, " has role '", m.role, "'; expected \"system\", \"user\" or \"assistant\"");
    if (m.role == "system") {
      if (i != 0) fail("chat: message ", i, " is a system message; only the first message may be a system message");
      first = 1;
      continue;
    }
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (m.role != expected)
      fail("chat: message ", i, " has role '", m.role, "' but '", expected,
           "' was expected: after an optional system message, roles must alternate user, assistant, user, ...");
    if (!std::isfinite(m.weight) || m.weight < 0)
      fail("chat: message ", i, " has weight ", m.weight, "; a weight must be 0 (not trained) or positive");
    if (m.role == "assistant" && m.content.empty())
      fail("chat: message ", i, " (assistant) has empty content; an assistant turn needs text to train on");
  }
  if (first == messages.size()) fail("chat: the conversation has a system message but no user message");
  if (add_generation_prompt && messages.back().role != "user")
    fail("chat: message ", messages.size() - 1,
         " is an assistant message, but a generation prompt needs the "
         "conversation to end on a user message");
  return first;
}

}  // namespace

ChatFormat detect_chat_format(const Tokenizer& tok) {
  return control_id(tok, "[INST]") >= 0 && control_id(tok, "[/INST]") >= 0 ? ChatFormat::MistralV3
                                                                           : ChatFormat::MistralV1;
}

ChatFormat chat_format_from_name(const std::string& name, const Tokenizer& tok) {
  if (name == "auto") return detect_chat_format(tok);
  if (name == "mistral_v1") return ChatFormat::MistralV1;
  if (name == "mistral_v3") {
    if (detect_chat_format(tok) != ChatFormat::MistralV3)
      fail("chat format mistral_v3 needs [INST] and [/INST] control pieces, which tokenizer ", tok.path(),
           " lacks; use mistral_v1 or auto");
    return ChatFormat::MistralV3;
  }
  fail("unknown chat format '", name, "'; expected auto, mistral_v1 or mistral_v3");
}

std::string chat_format_name(ChatFormat f) { return f == ChatFormat::MistralV3 ? "mistral_v3" : "mistral_v1"; }

RenderedChat render_chat(const Tokenizer& tok, const std::vector<Message>& messages, ChatFormat fmt,
                         bool add_generation_prompt) {
  if (tok.bos_id() < 0 || tok.eos_id() < 0)
    fail("chat: tokenizer ", tok.path(), " has no BOS or EOS piece (bos ", tok.bos_id(), ", eos ", tok.eos_id(),
         "); Mistral chat rendering needs both");
  const size_t first = check_roles(messages, add_generation_prompt);
  const std::string system = first == 1 ? messages[0].content : std::string();

  // mistral-common puts the system prompt on the first user message in v1 and on the last one in v2/v3.
  size_t first_user = first, last_user = first;
  for (size_t i = first; i < messages.size(); ++i)
    if (messages[i].role == "user") last_user = i;
  const size_t system_target = fmt == ChatFormat::MistralV1 ? first_user : last_user;

  int inst = -1, end_inst = -1;
  if (fmt == ChatFormat::MistralV3) {
    inst = control_id(tok, "[INST]");
    end_inst = control_id(tok, "[/INST]");
    if (inst < 0 || end_inst < 0)
      fail("chat: format mistral_v3 needs [INST] and [/INST] control pieces, which tokenizer ", tok.path(),
           " lacks; use mistral_v1");
  }

  RenderedChat r;
  append(r, {tok.bos_id()}, 0);
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "user") {
      std::string content = m.content;
      if (i == system_target && !system.empty()) content = system + "\n\n" + content;
      if (fmt == ChatFormat::MistralV1) {
        append(r, tok.encode("[INST] " + content + " [/INST]"), 0);
      } else {
        // No space is added after [INST]: SentencePiece's dummy "▁" prefix supplies it, as in mistral-common.
        append(r, {inst}, 0);
        append(r, tok.encode(content), 0);
        append(r, {end_inst}, 0);
      }
    } else {
      std::string content = m.content;
      // mistral-common (InstructTokenizerV2 and later) strips trailing spaces of assistant text; V1 keeps them.
      if (fmt == ChatFormat::MistralV3) content.erase(content.find_last_not_of(' ') + 1);
      const uint8_t train = m.weight > 0 ? 1 : 0;
      append(r, tok.encode(content), train);
      append(r, {tok.eos_id()}, train);  // the EOS is a label: it teaches the model to stop
    }
  }
  return r;
}

}  // namespace affinage
