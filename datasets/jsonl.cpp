// JSONL reading and the field parsing every data format shares (contract in datasets/jsonl.h).
#include "datasets/jsonl.h"
#include <algorithm>
#include <fstream>
#include <sstream>
#include "base/error.h"

namespace affinage {

std::string json_type_name(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

const std::string& get_string(const nlohmann::json& obj, const std::string& key, const std::string& what,
                              const std::string& where, bool allow_empty) {
  auto it = obj.find(key);
  if (it == obj.end() && what == key)  // a top-level column: it may only be named differently in this file
    fail(where, ": field '", what, "': missing; add it, or map the file's name for it with data.columns, e.g. {\"", key,
         "\": \"my_", key, "\"}");
  if (it == obj.end()) fail(where, ": field '", what, "': missing");
  if (!it->is_string()) fail(where, ": field '", what, "': must be a string, got ", json_type_name(*it));
  const std::string& s = it->get_ref<const std::string&>();
  if (!allow_empty && s.empty()) fail(where, ": field '", what, "': empty; remove the row or give it text");
  return s;
}

nlohmann::json apply_columns(const nlohmann::json& row, const std::map<std::string, std::string>& columns) {
  if (columns.empty() || !row.is_object()) return row;
  nlohmann::json out = row;
  for (const auto& [canonical, name] : columns) {
    if (canonical == name || !row.contains(name)) continue;
    out[canonical] = row[name];
    out.erase(name);
  }
  return out;
}

std::vector<Message> parse_messages(const nlohmann::json& list, const std::string& field, const std::string& where) {
  if (!list.is_array())
    fail(where, ": field '", field, "': must be an array of {\"role\", \"content\"}, got ", json_type_name(list));
  if (list.empty()) fail(where, ": field '", field, "': empty; a conversation needs at least one message");
  std::vector<Message> messages;
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& m = list[i];
    const std::string base = field + "[" + std::to_string(i) + "]";
    if (!m.is_object())
      fail(where, ": field '", base, "': must be an object {\"role\", \"content\"}, got ", json_type_name(m));
    Message msg;
    msg.role = get_string(m, "role", base + ".role", where, false);
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
      fail(where, ": field '", base, ".role': unknown role '", msg.role,
           "'; use \"system\", \"user\" or \"assistant\"");
    // Multimodal / tool-call content (arrays, null) is not supported: say so rather than train on a dump.
    msg.content = get_string(m, "content", base + ".content", where, true);
    if (auto w = m.find("weight"); w != m.end()) {
      if (!w->is_number() || (w->get<double>() != 0.0 && w->get<double>() != 1.0))
        fail(where, ": field '", base, ".weight': must be 0 (not trained) or 1 (trained), got ", w->dump());
      msg.weight = w->get<double>();
    }
    messages.push_back(std::move(msg));
  }
  return messages;
}

// Opens a JSONL file and calls fn(text, line) for each non-blank line (1-based numbers; a UTF-8 BOM and CRLF
// removed) until fn returns false.
static void for_each_line(const std::string& path, const std::string& what,
                          const std::function<bool(const std::string& text, int64_t line)>& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    fail(path, ": cannot open the data file (relative paths resolve against the current directory; check ", what, ")");
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (line == 1 && text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // a UTF-8 byte-order mark
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    if (!fn(text, line)) return;
  }
}

static nlohmann::json parse_row(const std::string& text, const std::string& path, int64_t line) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ":", line, ": not valid JSON (", e.what(), "); each line must hold one whole JSON object");
  }
}

void read_jsonl(const std::string& path, const std::string& what,
                const std::function<void(const nlohmann::json& row, int64_t line)>& fn) {
  constexpr size_t kMaxErrors = 20;
  std::vector<std::string> errors;
  size_t n_errors = 0;
  for_each_line(path, what, [&](const std::string& text, int64_t line) {
    try {
      fn(parse_row(text, path, line), line);
    } catch (const Error& e) {
      if (++n_errors <= kMaxErrors) errors.push_back(e.what());
    }
    return true;
  });
  if (n_errors == 1) throw Error(errors[0]);
  if (n_errors > 1) {
    std::ostringstream os;
    os << path << ": " << n_errors << " lines cannot be used; fix them and run again:";
    for (const auto& e : errors) os << "\n  " << e;
    if (n_errors > errors.size()) os << "\n  ... and " << n_errors - errors.size() << " more";
    throw Error(os.str());
  }
}

std::pair<nlohmann::json, int64_t> first_jsonl_row(const std::string& path, const std::string& what) {
  std::pair<nlohmann::json, int64_t> first{nullptr, 0};
  for_each_line(path, what, [&](const std::string& text, int64_t line) {
    first = {parse_row(text, path, line), line};
    return false;
  });
  if (first.second == 0) fail(path, ": no rows (", what, ")");
  if (!first.first.is_object()) fail(path, ":", first.second, ": not a JSON object");
  return first;
}

// SentencePiece adds a dummy "▁" to every encode call, so sp(prompt) + sp(completion) is not how the joined
// text tokenizes. Like TRL's SFTTrainer (it tokenizes prompt and prompt+completion and masks by the length of
// the prompt's ids), we tokenize the whole text once and take the completion as what follows the prompt's ids.
// When the boundary merges (sp(prompt + completion) does not start with sp(prompt): "Hel" + "lo", or a prompt
// ending in a space), TRL would silently put the mask in the wrong place. We keep sp(prompt) (what generation
// sees) and append the completion tokenized without the dummy prefix: sp("\n" + completion) minus the ids of
// sp("\n"), so the ids still decode to exactly prompt + completion. If the newline merges with the completion
// (tokenizers with "\n\n" pieces), we drop a bare leading "▁" piece instead, or keep sp(completion) as it is.
std::vector<int> completion_ids(const Tokenizer& tok, const std::string& prompt, const std::string& completion,
                                const std::vector<int>& prompt_ids) {
  std::vector<int> full = tok.encode(prompt + completion);
  if (full.size() >= prompt_ids.size() && std::equal(prompt_ids.begin(), prompt_ids.end(), full.begin()))
    return std::vector<int>(full.begin() + prompt_ids.size(), full.end());
  const std::vector<int> sentinel = tok.encode("\n");
  const std::vector<int> joined = tok.encode("\n" + completion);
  if (!sentinel.empty() && joined.size() > sentinel.size() &&
      std::equal(sentinel.begin(), sentinel.end(), joined.begin()))
    return std::vector<int>(joined.begin() + sentinel.size(), joined.end());
  std::vector<int> c = tok.encode(completion);
  if (!c.empty() && tok.id_to_piece(c[0]) == "\xE2\x96\x81") c.erase(c.begin());
  return c;
}

}  // namespace affinage
