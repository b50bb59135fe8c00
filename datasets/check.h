// `affinage data check` as a library: every row of every data file of a recipe stage validated with the
// loaders training uses, per-split statistics, an estimate of optimizer steps and time, and samples rendered
// with their trained tokens marked, so a user sees the data and the loss mask before spending GPU hours.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "core/recipe.h"
#include "core/tokenizer.h"
#include "datasets/preference_data.h"
#include "datasets/sft_data.h"

namespace affinage {

struct CheckOptions {
  int64_t show = 0;          // training samples rendered per stage, with their trained tokens marked
  double tokens_per_s = 0;   // > 0: the time estimate uses this training throughput (tokens_per_s of metrics.jsonl)
  double mfu = 0.4;          // else: assumed share of the measured matmul peak that the run reaches
  bool measure = true;       // false: no matmul measurement, so no time estimate unless tokens_per_s is given
  std::string tokenizer;     // a tokenizer.model to use instead of the model folder's ("" = the model's)
};

// A stretch of a rendered sample: decoded text (control tokens as their piece, e.g. "</s>") and whether its
// tokens are training targets.
struct MarkedSpan {
  std::string text;
  bool trained = false;
  bool control = false;
};

// ids[from:] as spans of equal `trainable` flag; ids[:from] only give the text its context (the leading
// space SentencePiece strips at the start of a decode).
std::vector<MarkedSpan> mark_tokens(const Tokenizer& tok, const std::vector<int>& ids,
                                    const std::vector<uint8_t>& trainable, size_t from = 0);

// One rendered training sample as it will be trained (after truncation). SFT: one part "text"; DPO: parts
// "prompt", "chosen", "rejected".
struct ShownSample {
  std::string file;
  int64_t line = 0;
  int64_t tokens = 0, trained = 0;  // after truncation (DPO: prompt + chosen + rejected, chosen + rejected)
  std::string note;                 // "cut: 12 tokens", "dropped: ...", "" when used whole
  std::vector<std::pair<std::string, std::vector<MarkedSpan>>> parts;
};

struct Longest {
  int64_t tokens = 0;  // before truncation (DPO: prompt + the longer response)
  std::string file;
  int64_t line = 0;
};

struct SplitReport {
  DataStats sft;              // stage sft: the loaders' own statistics
  PreferenceStats dpo;        // stage dpo
  int64_t tokens_before = 0;  // every token of the split before truncation
  int64_t dropped_tokens = 0; // tokens of the dropped rows / pairs
  int64_t cut_tokens = 0;     // tokens cut away from kept rows / pairs
  int64_t identical = 0;      // dpo: pairs dropped because chosen == rejected
  Longest longest;
};

// Optimizer steps (core/trainer.h total_steps) and an estimate of the run's time from its FLOPs.
struct Estimate {
  int64_t steps = 0, items_per_step = 0, train_items = 0;
  double epochs = 0;
  std::string steps_rule;          // "train.max_steps" or "train.epochs"
  int64_t evaluations = 0;         // held-out passes (step 0, every eval.every, the end)
  double train_tokens = 0;         // tokens computed by training micro-batches, padding included
  double train_real_tokens = 0;    // the same without padding (what metrics.jsonl's tokens_per_s counts)
  double flops = 0, train_flops = 0;  // whole run (training, reference, evaluations); training steps only
  int64_t matmul_params = 0;       // N, from the model's config.json
  // Throughput: measured matmul peak x mfu, or the user's tokens/s. seconds < 0: unknown.
  std::string device, dtype, shape;
  double peak_gflops = 0, mfu = 0, tokens_per_s = 0;
  double seconds = -1;
  std::vector<std::string> notes;  // what the estimate leaves out, why it may be off
};

struct StageReport {
  std::string name, stage, tokenizer, chat_format, truncation;
  int64_t seq_len = 0, max_prompt_len = 0;
  bool packing = false;
  struct File { std::string path, split; int64_t rows = -1; };  // rows -1: not read (broken or missing)
  std::vector<File> files;
  std::vector<std::string> errors;  // each names the file, line and field; empty = every row is valid
  bool has_stats = false;           // statistics need every file valid
  SplitReport train, eval;
  std::optional<Estimate> estimate;
  std::string no_estimate;          // why there is no estimate
  std::vector<ShownSample> samples;
  nlohmann::json to_json() const;
};

// Checks one stage recipe (no `stages`): files, rows, statistics, estimate and shown samples. Errors in the
// data are collected into the report, never thrown.
StageReport check_stage(const Recipe& r, const CheckOptions& o);

// Best-of-3 GFLOP/s of an [m,k]x[k,n] matmul on `device` in `dtype` (one run when it is slow).
double measure_matmul_gflops(const std::string& device, const std::string& dtype, int64_t m, int64_t k, int64_t n);

}  // namespace affinage
