// The recipe as plain structs: what a run is told to do. Parsed strictly from a JSON file by config/recipe_file.h
// (every key declared once in a field table that drives parsing, defaults, `--set`, the resolved dump and
// docs/recipes.md). Choices among names are enums here; their recipe spellings are in enum_names<E>().
// This header includes nothing of ours: every layer may read a recipe.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace affinage {

// ---- choices, each spelled in recipes as enum_names<E>() says
enum class Stage { Sft, Dpo };                            // "sft" | "dpo"
enum class Truncation { Right, Drop };                    // "right" | "drop"
enum class Schedule { Constant, Linear, Cosine };         // "constant" | "linear" | "cosine"
enum class DpoLoss { Sigmoid, Hinge, Ipo, Simpo, Orpo };  // "sigmoid" | "hinge" | "ipo" | "simpo" | "orpo"
enum class Reference { Initial, Base };                   // "initial" | "base"

// The recipe spelling of every value of E, in declaration order (defined in config/recipe_file.cpp).
template <class E>
const std::vector<std::pair<E, std::string>>& enum_names();
template <>
const std::vector<std::pair<Stage, std::string>>& enum_names<Stage>();
template <>
const std::vector<std::pair<Truncation, std::string>>& enum_names<Truncation>();
template <>
const std::vector<std::pair<Schedule, std::string>>& enum_names<Schedule>();
template <>
const std::vector<std::pair<DpoLoss, std::string>>& enum_names<DpoLoss>();
template <>
const std::vector<std::pair<Reference, std::string>>& enum_names<Reference>();

template <class E>
const std::string& name_of(E v) {
  for (auto& [e, n] : enum_names<E>())
    if (e == v) return n;
  return enum_names<E>().front().second;  // unreachable for a declared value
}

struct DataSource {
  std::string path;             // JSONL file (relative paths resolve against the current directory)
  std::string format = "auto";  // "auto" | "text" | "messages" | "prompt_completion" | "alpaca" | "preference"
  double weight = 1.0;          // sampling weight among several training files
};

struct DataConfig {
  std::vector<DataSource> train;               // required, at least one
  std::optional<DataSource> eval;              // a held-out file...
  double eval_split = 0.0;                     // ...or this share of the training rows held out (seeded)
  int64_t seq_len = 2048;                      // tokens per row (packed) or max tokens per sample
  bool packing = false;                        // pack documents into rows, no attention across them
  Truncation truncation = Truncation::Right;   // cut the end, or skip the sample
  std::string chat_format = "auto";            // "auto" | "mistral_v1" | "mistral_v3"
  std::map<std::string, std::string> columns;  // column mapping, e.g. {"prompt":"question","chosen":"response_j"}
};

// What a LoRA adapter is, wherever it is described: a recipe's lora section or a PEFT adapter_config.json
// (r, lora_alpha, lora_dropout, target_modules, use_rslora, rank_pattern, alpha_pattern).
struct LoraSettings {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};  // or ["all-linear"] in a recipe
  bool rslora = false;                          // scale alpha/sqrt(r) instead of alpha/r
  std::map<std::string, int64_t> rank_pattern;  // PEFT semantics: key matched against module names
  std::map<std::string, double> alpha_pattern;
};

struct LoraConfig : LoraSettings {
  std::string init_from;  // a PEFT folder to continue from ("" = fresh)
  bool enabled = true;    // false: no adapter (full fine-tuning of `train_modules` only)
};

struct OptimConfig {
  double lr = 2e-4;
  double weight_decay = 0.0;  // decoupled (AdamW); never applied to biases and norms
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double grad_clip = 1.0;  // max global grad norm; 0 = off
};

struct ScheduleConfig {
  Schedule type = Schedule::Cosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;  // floor of linear/cosine decay as a share of lr
};

struct TrainConfig {
  int64_t batch_size = 1;  // rows per micro-batch
  int64_t grad_accum = 1;  // micro-batches per optimizer step
  int64_t max_steps = 0;   // optimizer steps; 0 = use epochs
  double epochs = 1.0;
  bool activation_checkpointing = false;
  std::vector<std::string> train_modules;  // fully trained modules by name fragment, e.g. ["norm"]
};

struct CheckpointConfig {
  int64_t every = 0;  // optimizer steps between checkpoints; 0 = only at the end
  int64_t keep = 2;   // newest K kept
};

struct EvalTask {
  std::string path;  // JSONL task file (eval/tasks.h: generation, choice, preference or loss rows)
  std::string type = "auto";
  int64_t max_new_tokens = 64;  // generation
  int64_t samples = 1;          // generation: answers per prompt
  double temperature = 0.0;     // generation: 0 = greedy
  std::string extract;          // generation: answer-extracting regex
};

struct EvalConfig {
  int64_t every = 0;            // optimizer steps between held-out evaluations; 0 = only at the end
  int64_t max_batches = 0;      // 0 = the whole eval set
  std::vector<EvalTask> tasks;  // task metrics before training and after (summary.json, model card)
};

// Steps after training (in a multi-stage recipe, after the last stage, from its resolved keys).
struct MergeStep {
  bool enabled = false;       // fold the final adapter into the base weights: <output_dir>/merged
  std::string dtype;          // "" = the base's | "bf16" | "f16" | "f32"
  std::string format = "hf";  // "hf" | "mistral"
};
struct PublishStep {
  bool enabled = false;          // a Hub-ready folder with a model card: <output_dir>/publish
  std::string what = "adapter";  // "adapter" | "merged" (needs merge.enabled)
  std::string name;              // Hub repo id; "" = the folder's name
  std::string license = "other";
};

struct DpoConfig {
  DpoLoss loss = DpoLoss::Sigmoid;  // dpo/losses.h
  double beta = 0.1;
  double label_smoothing = 0.0;              // conservative DPO (sigmoid) / SimPO
  double simpo_gamma = 0.5;                  // SimPO's target reward margin
  Reference reference = Reference::Initial;  // Initial: the model as the stage starts (a continued adapter stays
                                             // the reference); Base: the base weights with every adapter disabled
  bool precompute_reference = false;         // reference log-probs computed once before training and cached
  int64_t max_prompt_len = 0;                // prompt tokens kept when a pair is too long; 0 = seq_len / 2
};

struct Recipe {
  std::string name;  // required
  Stage stage = Stage::Sft;
  std::string model;       // required: base model folder
  std::string output_dir;  // required
  int64_t seed = 42;
  std::string device = "auto";  // "auto" | "cpu" | "cuda" | "cuda:N"
  std::string dtype = "bf16";   // base weights and activations: "bf16" | "f32"
  int64_t threads = 0;          // 0 = all cores
  int64_t log_every = 1;
  DataConfig data;
  LoraConfig lora;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainConfig train;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  DpoConfig dpo;
  MergeStep merge;
  PublishStep publish;
  std::vector<nlohmann::json> stages;  // multi-stage runs: partial recipes applied over this one, in order

  std::string source_path;  // the file it came from (not a key)
};

}  // namespace affinage
