// `affinage tokenize`: text or a chat (messages JSON) to token ids, to check what the model will see.
#include <iostream>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/files.h"
#include "cli/commands.h"
#include "datasets/jsonl.h"
#include "text/chat.h"
#include "text/tokenizer.h"

namespace po = boost::program_options;

namespace affinage::cli {

namespace {

// Reads either a JSON array of messages or an object {"messages": [...]}, with the parser training uses
// (datasets/jsonl.h), so a chat that tokenizes here trains the same way.
std::vector<Message> read_messages(const std::string& path) {
  nlohmann::json j = nlohmann::json::parse(read_file(path), nullptr, false);
  if (j.is_discarded()) fail("messages file '", path, "' is not valid JSON");
  if (j.is_object()) {
    if (!j.contains("messages"))
      fail("messages file '", path,
           "': the object has no \"messages\" key; give [{\"role\": ..., \"content\": ...}] "
           "or {\"messages\": [...]}");
    j = j["messages"];
  }
  return parse_messages(j, "messages", path);
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
  opts.add_options()("tokenizer", po::value(&tokenizer_path)->required(), "SentencePiece tokenizer.model")(
      "text", po::value(&text), "text to encode")(
      "messages", po::value(&messages_path),
      "chat JSON: [{role, content[, weight]}, ...] or {\"messages\": [...]}; rendered in the Mistral format")(
      "bos", "prepend BOS to --text (a chat always starts with one BOS)")(
      "json", "print {\"ids\": [...]} (and \"trainable\" for a chat) instead of plain lines")(
      "chat-format", po::value(&chat_format), "auto | mistral_v1 | mistral_v3 (default auto: from the tokenizer)");
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
