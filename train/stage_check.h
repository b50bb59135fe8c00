// What a stage tells `affinage data check` about its data: each stage's check function (sft/check.cpp,
// dpo/check.cpp) reads every file with the loaders its training uses and fills a StageReport (files, errors,
// per-split statistics, the cost of each training item, samples with their trained tokens marked); the data
// check (app/data_check.h) adds the estimate of steps and time and prints it.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include "base/error.h"
#include "config/recipe.h"
#include "text/tokenizer.h"

namespace affinage {

struct CheckOptions {
  int64_t show = 0;         // training samples rendered per stage, with their trained tokens marked
  double tokens_per_s = 0;  // > 0: the time estimate uses this training throughput (tokens_per_s of metrics.jsonl)
  double mfu = 0.4;         // else: assumed share of the measured matmul peak that the run reaches
  bool measure = true;      // false: no matmul measurement, so no time estimate unless tokens_per_s is given
  std::string tokenizer;    // a tokenizer to use instead of the model folder's ("" = the model's)
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

// One rendered training sample as it will be trained (after truncation), in named parts (SFT: "text"; DPO:
// "prompt", "chosen", "rejected").
struct ShownSample {
  std::string file;
  int64_t line = 0;
  int64_t tokens = 0, trained = 0;  // after truncation
  std::string note;                 // "cut: 12 tokens", "dropped: ...", "" when used whole
  std::vector<std::pair<std::string, std::vector<MarkedSpan>>> parts;
};

struct Longest {
  int64_t tokens = 0;  // before truncation
  std::string file;
  int64_t line = 0;
  void note(int64_t n, const std::string& f, int64_t l) {
    if (n > tokens) tokens = n, file = f, line = l;
  }
};

// What one training item costs: its `seqs` sequences are padded to the longest `len` of their micro-batch;
// `real` tokens are not padding.
struct ItemCost {
  int64_t len = 0, seqs = 1, real = 0;
};

struct SplitReport {
  nlohmann::json stats = nlohmann::json::object();  // the stage's loader statistics (DataStats, PreferenceStats...)
  nlohmann::json extra = nlohmann::json::object();  // further per-split counts the stage reports
  int64_t tokens_before = 0;                        // every token of the split before truncation
  int64_t dropped_tokens = 0;                       // tokens of the dropped items
  int64_t cut_tokens = 0;                           // tokens cut away from kept items
  Longest longest;
  std::vector<ItemCost> cost;  // one per item, in the split's order
};

// Optimizer steps (train/loop.h total_steps) and an estimate of the run's time from its FLOPs.
struct Estimate {
  int64_t steps = 0, items_per_step = 0, train_items = 0;
  double epochs = 0;
  std::string steps_rule;             // "train.max_steps" or "train.epochs"
  int64_t evaluations = 0;            // held-out passes (step 0, every eval.every, the end)
  double train_tokens = 0;            // tokens computed by training micro-batches, padding included
  double train_real_tokens = 0;       // the same without padding (what metrics.jsonl's tokens_per_s counts)
  double flops = 0, train_flops = 0;  // whole run (training, reference, evaluations); training steps only
  int64_t matmul_params = 0;          // N, from the model's config.json
  // Throughput: measured matmul peak x mfu, or the user's tokens/s. seconds < 0: unknown.
  std::string device, dtype, shape;
  double peak_gflops = 0, mfu = 0, tokens_per_s = 0;
  double seconds = -1;
  std::vector<std::string> notes;  // what the estimate leaves out, why it may be off
};

struct StageReport {
  std::string name, stage, tokenizer, chat_format;
  Truncation truncation = Truncation::Right;
  int64_t seq_len = 0;
  bool packing = false;
  std::string item = "row";   // what one training item is ("row", "pair"), for people
  std::string settings_note;  // the stage's own settings worth a mention, e.g. ", prompts kept to 32 tokens"
  struct File {
    std::string path, split;
    int64_t rows = -1;
  };  // rows -1: not read (broken or missing)
  std::vector<File> files;
  std::vector<std::string> errors;  // each names the file, line and field; empty = every row is valid
  bool has_stats = false;           // statistics need every file valid
  SplitReport train, eval;
  std::vector<std::string> table;                   // the stage's statistics as lines for people
  nlohmann::json extra = nlohmann::json::object();  // the stage's own keys for --json
  int reference_forwards = 0;          // forward passes of a reference model per trained sequence, run live
  bool precomputed_reference = false;  // ...or once over every item before training
  std::optional<Estimate> estimate;
  std::string no_estimate;  // why there is no estimate
  std::vector<ShownSample> samples;
  nlohmann::json to_json() const;
};

// Every file of the data section read once with `load` (one per path and format); every broken file is
// reported in rep.errors, not only the first; rep.files lists them with their split. The result maps
// {path, format} to the file's items.
template <class T>
std::map<std::pair<std::string, std::string>, std::vector<T>> load_data_files(
    const DataConfig& cfg, const std::function<std::vector<T>(const DataSource&)>& load, StageReport& rep) {
  std::map<std::pair<std::string, std::string>, std::vector<T>> out;
  std::map<std::pair<std::string, std::string>, bool> broken;
  auto one = [&](const DataSource& s, const std::string& split) {
    const auto key = std::make_pair(s.path, s.format);
    if (!out.count(key) && !broken.count(key)) {
      try {
        out[key] = load(s);
      } catch (const Error& e) {
        broken[key] = true;
        rep.errors.push_back(e.what());
      }
    }
    rep.files.push_back({s.path, split, out.count(key) ? static_cast<int64_t>(out[key].size()) : -1});
  };
  for (const DataSource& s : cfg.train) one(s, "train");
  if (cfg.eval) one(*cfg.eval, "eval");
  return out;
}

}  // namespace affinage
