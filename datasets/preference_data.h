// Preference data for DPO and its family (TRL's formats): explicit prompt {"prompt","chosen","rejected"} as
// strings or as message lists, implicit prompt (chosen/rejected full conversations or texts sharing a prefix,
// which becomes the prompt), other column names via data.columns ({"prompt":"question","chosen":"response_j",
// "rejected":"response_k"}). The prompt is tokenized once and both responses continue those exact ids.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "config/recipe.h"
#include "text/chat.h"
#include "text/tokenizer.h"

namespace affinage {

struct PreferencePair {
  std::vector<int> prompt;            // starts with one BOS
  std::vector<int> chosen, rejected;  // response ids after the prompt, each ending with EOS (unless cut)
  std::string file;
  int64_t line = 0;
};

struct PreferenceStats {
  int64_t pairs = 0;          // pairs read
  int64_t prompt_tokens = 0;  // after truncation
  int64_t chosen_tokens = 0;
  int64_t rejected_tokens = 0;
  int64_t truncated_prompts = 0;    // prompts cut from the left
  int64_t truncated_responses = 0;  // responses cut at the end
  int64_t dropped = 0;              // pairs skipped ("drop" policy, or identical responses)
  nlohmann::json to_json() const;
};

// Renders one row. Text rows: [BOS] + sp(prompt), responses tokenized as continuations of the prompt text
// (datasets/jsonl.h completion_ids) + EOS. Conversational rows: the prompt rendered with the chat template
// and a generation prompt, each response as what render_chat(prompt + response) adds after it (an error if
// the template does not continue the prompt's ids). A response given as a string with a conversational
// prompt is one assistant message. Errors name file:line and the field.
PreferencePair render_preference_row(const nlohmann::json& row, const Tokenizer& tok, ChatFormat chat,
                                     const std::map<std::string, std::string>& columns, const std::string& file,
                                     int64_t line);

std::vector<PreferencePair> load_preference_file(const DataSource& src, const Tokenizer& tok, ChatFormat chat,
                                                 const std::map<std::string, std::string>& columns);

// Length policy for prompt + the longer response > max_len. "right": the prompt is cut from the left (its
// BOS kept), only as far as needed and never below max_prompt_len tokens; then responses longer than what
// is left are cut at the end. "drop": the pair is skipped. Pairs with identical responses are dropped.
void truncate_pairs(std::vector<PreferencePair>& pairs, int64_t max_len, int64_t max_prompt_len, Truncation policy,
                    PreferenceStats& stats);

// The prompt floor truncate_pairs gets from a recipe: dpo.max_prompt_len, or data.seq_len / 2 when it is 0.
inline int64_t effective_max_prompt_len(const Recipe& r) {
  return r.dpo.max_prompt_len > 0 ? r.dpo.max_prompt_len : r.data.seq_len / 2;
}

struct PreferenceData {
  std::vector<PreferencePair> train, eval;
  PreferenceStats train_stats, eval_stats;
};
// The recipe's data section (files, weights, eval file or split: datasets/mixture.h), truncated.
PreferenceData build_preference_data(const DataConfig& cfg, int64_t max_prompt_len, const Tokenizer& tok,
                                     uint64_t seed);

}  // namespace affinage
