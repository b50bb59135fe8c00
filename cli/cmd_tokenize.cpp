// `affinage tokenize`: text or a chat (messages JSON) to token ids, to check what the model will see.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/chat.h"
#include "core/error.h"
#include "core/tokenizer.h"

namespace po = boost::program_options;

namespace affinage::cli {

namespace {

// Reads either a JSON array of {role, content[, weight]} or an object {"messages": [...]}.
std::vector<Message> read_messages(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail("messages file '", path, "' cannot be opened");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    fail("messages file '", path, "' is not valid JSON: ", e.what());
  }
  if (j.is_object()) {
    if (!j.contains("messages"))
      fail("messages file '", path, "': the object has no \"messages\" key; give [{\"role\": ..., \"content\": ...}] "
           "or {\"messages\": [...]}");
    j = j["messages"];
  }
  if (!j.is_array()) fail("messages file '", path, "': \"messages\" must be a JSON array of {role, content} objects");
  std::vector<Message> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    if (!m.is_object()) fail("messages file '", path, "': message ", i, " is not an object");
    for (const auto& [key, value] : m.items()) {
      if (key != "role" && key != "content" && key != "weight")
        fail("messages file '", path, "': message ", i, " has unknown key '", key, "' (role, content, weight)");
    }
    if (!m.contains("role") || !m["role"].is_string())
      fail("messages file '", path, "': message ", i, " needs a string \"role\"");
    if (!m.contains("content") || !m["content"].is_string())
      fail("messages file '", path, "': message ", i, " needs a string \"content\"");
    Message msg;
    msg.role = m["role"].get<std::string>();
    msg.content = m["content"].get<std::string>();
    if (m.contains("weight")) {
      if (!m["weight"].is_number()) fail("messages file '", path, "': message ", i, " has a non-numeric \"weight\"");
      msg.weight = m["weight"].get<double>();
    }
    out.push_back(std::move(msg));
  }
  return out;
}

template <class T>
void print_line(const std::vector<T>& v) {
  for (size_t i = 0; i < v.size(); ++i) std::cout << (i ? " " : "") << int(v[i]);
  std::cout << "\n";
}

}  // namespace

int cmd_tokenize(const Args& args) {
  std::string tokenizer_path, text, messages_path, chat_format = "auto";
  po::options_description opts("options");
  opts.add_options()
      ("tokenizer", po::value(&tokenizer_path)->required(), "SentencePiece tokenizer.model")
      ("text", po::value(&text), "text to encode")
      ("messages", po::value(&messages_path),
       "chat JSON: [{role, content[, weight]}, ...] or {\"messages\": [...]}; rendered in the Mistral format")
      ("bos", "prepend BOS to --text (a chat always starts with one BOS)")
      ("json", "print {\"ids\": [...]} (and \"trainable\" for a chat) instead of plain lines")
      ("chat-format", po::value(&chat_format), "auto | mistral_v1 | mistral_v3 (default auto: from the tokenizer)");
  const std::string usage =
      "usage: affinage tokenize --tokenizer FILE (--text TEXT | --messages FILE.json) [--bos] [--json] "
      "[--chat-format auto|mistral_v1|mistral_v3]\n"
      "Prints the ids space-separated on one line; with --messages a second line holds the trainable flags.";
  po::variables_map vm;
  if (parse_args(args, usage, opts, vm)) return 0;
  const bool has_text = vm.count("text") > 0, has_messages = vm.count("messages") > 0;
  if (has_text == has_messages) fail("give exactly one of --text or --messages (see affinage tokenize --help)");

  auto tok = Tokenizer::load(tokenizer_path);
  std::vector<int> ids;
  std::vector<uint8_t> trainable;
  if (has_text) {
    if (vm.count("bos")) {
      if (tok->bos_id() < 0) fail("tokenizer ", tokenizer_path, " has no BOS piece; drop --bos");
      ids.push_back(tok->bos_id());
    }
    auto enc = tok->encode(text);
    ids.insert(ids.end(), enc.begin(), enc.end());
  } else {
    auto messages = read_messages(messages_path);
    ChatFormat fmt = chat_format_from_name(chat_format, *tok);
    RenderedChat r;
    try {
      r = render_chat(*tok, messages, fmt);
    } catch (const Error& e) {
      fail("messages file '", messages_path, "': ", e.what());
    }
    ids = std::move(r.ids);
    trainable = std::move(r.trainable);
  }

  if (vm.count("json")) {
    nlohmann::json out;
    out["ids"] = ids;
    if (has_messages) {
      std::vector<int> flags(trainable.begin(), trainable.end());
      out["trainable"] = flags;
    }
    std::cout << out.dump() << "\n";
  } else {
    print_line(ids);
    if (has_messages) print_line(trainable);
  }
  return 0;
}

}  // namespace affinage::cli
