// What every data format shares: reading a JSONL file with errors that name file:line (all broken lines
// reported at once), typed field access with messages that name the field, the recipe's column mapping,
// chat message lists, and the prompt/completion token boundary.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "text/chat.h"
#include "text/tokenizer.h"

namespace affinage {

// "a string", "an array", ... for error messages.
std::string json_type_name(const nlohmann::json& v);

// A required string field; `what` names it in the error ("messages[2].content"), `where` is "file:line".
const std::string& get_string(const nlohmann::json& obj, const std::string& key, const std::string& what,
                              const std::string& where, bool allow_empty);

// Renames the file's column names to the canonical ones ({"prompt":"question"}: "question" becomes "prompt").
nlohmann::json apply_columns(const nlohmann::json& row, const std::map<std::string, std::string>& columns);

// A list of {"role", "content"[, "weight"]} objects; errors name `field[i].role` etc.
std::vector<Message> parse_messages(const nlohmann::json& list, const std::string& field, const std::string& where);

// Calls `fn(row, line)` for every non-blank line of a JSONL file (1-based line numbers; a UTF-8 BOM and CRLF
// are accepted). An Error thrown by `fn` or a JSON syntax error is collected; after the whole file is read,
// one Error lists every broken line (up to 20), so one run shows everything to fix. `what` names the
// recipe key that gave the path, for the cannot-open message.
void read_jsonl(const std::string& path, const std::string& what,
                const std::function<void(const nlohmann::json& row, int64_t line)>& fn);

// The first row of a JSONL file and its line number, read like read_jsonl reads rows. Errors name the file (cannot
// open, no rows) or file:line (not a JSON object).
std::pair<nlohmann::json, int64_t> first_jsonl_row(const std::string& path, const std::string& what);

// The ids of `completion` as it continues `prompt` whose ids are `prompt_ids` (= tok.encode(prompt)), so that
// prompt_ids + completion_ids decode to prompt + completion (see the comment in the .cpp on the boundary).
std::vector<int> completion_ids(const Tokenizer& tok, const std::string& prompt, const std::string& completion,
                                const std::vector<int>& prompt_ids);

}  // namespace affinage
