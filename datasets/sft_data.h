// SFT data: JSONL rows (text, messages, prompt/completion, alpaca) → token ids with trainable flags,
// truncation, eval split, sampling weights, and packing into fixed-length rows without cross-document attention.
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

struct Sample {
  std::vector<int> ids;            // starts with one BOS
  std::vector<uint8_t> trainable;  // 1 where the token is a training target
  std::string file;                // where it came from (for messages)
  int64_t line = 0;                // 1-based JSONL line
};

struct DataStats {
  int64_t rows = 0;               // samples read
  int64_t tokens = 0;             // tokens after truncation
  int64_t trained_tokens = 0;     // trainable tokens after truncation
  int64_t truncated = 0;          // samples cut by the "right" policy
  int64_t truncated_tokens = 0;   // tokens cut away
  int64_t dropped = 0;            // samples skipped by the "drop" policy (or with nothing left to train)
  int64_t packed_rows = 0;        // rows after packing (or padding)
  double packing_efficiency = 0;  // real tokens / (rows * seq_len)
  nlohmann::json to_json() const;
};

// "text" | "messages" | "prompt_completion" | "alpaca" | "preference", from the keys of one row
// (after the column mapping). Error names file:line when the keys fit no format.
std::string detect_format(const nlohmann::json& row, const std::string& where);

// Renders one JSON row into a Sample (format as given or "auto"). Errors name `file:line` and the field.
//  text:               [BOS] + sp(text) + [EOS], every token but BOS trained
//  messages:           render_chat (assistant turns + their EOS trained; "weight": 0 not trained)
//  prompt_completion:  [BOS] + ids(prompt) + ids(completion) + [EOS]; completion + EOS trained
//  alpaca:             instruction (+ "\n\n" + input when non-empty) as prompt, output as completion
Sample render_sft_row(const nlohmann::json& row, const std::string& format, const Tokenizer& tok, ChatFormat chat,
                      const std::map<std::string, std::string>& columns, const std::string& file, int64_t line);

// Reads and validates a whole JSONL file before returning anything (nothing trains on a half-read file).
// Empty lines are skipped; a broken line is an error naming file:line and what is wrong.
std::vector<Sample> load_sft_file(const DataSource& src, const Tokenizer& tok, ChatFormat chat,
                                  const std::map<std::string, std::string>& columns);

// Applies the truncation policy ("right": keep the first max_len tokens; "drop": skip the sample) and drops
// samples with no trained token left; updates stats.
void truncate_samples(std::vector<Sample>& samples, int64_t max_len, Truncation policy, DataStats& stats);

// A fixed-length training row. targets are pre-shifted: targets[t] is the id to predict from position t
// (ids[t+1] when that token is trainable and belongs to the same document), else kIgnoreIndex (model/loss.h).
// Padding uses id 0, doc id -1, targets kIgnoreIndex. position_ids restart at 0 for each document.
struct Row {
  std::vector<int64_t> input_ids, targets, position_ids, doc_ids;
};

// packing=true: documents placed greedily in order into rows of seq_len (a document that does not fit the
// rest of a row starts the next row; documents are never split); packing=false: one sample per row, padded.
std::vector<Row> make_rows(const std::vector<Sample>& samples, int64_t seq_len, bool packing, DataStats& stats);

// Everything a run needs from the recipe's data section: every training file read (weights applied:
// weight w keeps round(w * n) samples per file — repeated for w > 1, a seeded subset for w < 1), the eval
// file or a seeded eval_split of the training samples held out, truncation to seq_len, rows built.
struct SftData {
  std::vector<Row> train, eval;
  DataStats train_stats, eval_stats;
};
SftData build_sft_data(const DataConfig& cfg, const Tokenizer& tok, uint64_t seed);

}  // namespace affinage
