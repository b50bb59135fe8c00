// Mistral instruct chat rendering to token ids with per-token "trainable" flags, as mistral-common's
// instruct tokenizers (V1, V3) render them.
#pragma once
#include <string>
#include <vector>
#include "text/tokenizer.h"

namespace affinage {

struct Message {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
  double weight = 1.0;  // assistant turns with weight 0 are rendered but not trained
};

enum class ChatFormat {
  MistralV1,  // text markers: sp("[INST] " + user + " [/INST]"), system prepended to the first user turn
  MistralV3,  // control tokens [INST]=piece "[INST]", [/INST]; system prepended to the last user turn
};

// V3 when the tokenizer has "[INST]" and "[/INST]" as control pieces, else V1.
ChatFormat detect_chat_format(const Tokenizer& tok);
ChatFormat chat_format_from_name(const std::string& name, const Tokenizer& tok);  // "auto"|"mistral_v1"|"mistral_v3"
std::string chat_format_name(ChatFormat f);

struct RenderedChat {
  std::vector<int> ids;            // starts with exactly one BOS
  std::vector<uint8_t> trainable;  // same length; 1 on assistant content tokens and their EOS
};

// Renders a conversation. Roles must alternate user/assistant after an optional leading system message;
// errors say which message is wrong. With add_generation_prompt the conversation must end on a user
// turn and nothing is appended after it (the model continues after [/INST]).
RenderedChat render_chat(const Tokenizer& tok, const std::vector<Message>& messages, ChatFormat fmt,
                         bool add_generation_prompt = false);

}  // namespace affinage
