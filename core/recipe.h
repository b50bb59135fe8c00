// Recipes: a JSON file (comments allowed) parsed strictly into these structs. Every key is declared once in
// a field table (core/recipe.cpp) that drives parsing, defaults, `--set` overrides, the resolved-recipe
// dump and docs/recipes.md, so code and docs cannot drift. Unknown keys, wrong types and missing required
// keys are errors naming the key path ("lora.r") and the file.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

namespace affinage {

struct DataSource {
  std::string path;            // JSONL file (relative paths resolve against the current directory)
  std::string format = "auto";  // "auto" | "text" | "messages" | "prompt_completion" | "alpaca" | "preference"
  double weight = 1.0;          // sampling weight among several training files
};

struct DataConfig {
  std::vector<DataSource> train;                 // required, at least one
  std::optional<DataSource> eval;                // a held-out file...
  double eval_split = 0.0;                       // ...or this share of the training rows held out (seeded)
  int64_t seq_len = 2048;                        // tokens per row (packed) or max tokens per sample
  bool packing = false;                          // pack documents into rows, no attention across them
  std::string truncation = "right";              // "right" (cut the end) | "drop" (skip the sample)
  std::string chat_format = "auto";              // "auto" | "mistral_v1" | "mistral_v3"
  std::map<std::string, std::string> columns;    // column mapping, e.g. {"prompt":"question","chosen":"response_j"}
};

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};  // or ["all-linear"]
  bool rslora = false;                           // scale alpha/sqrt(r) instead of alpha/r
  std::map<std::string, int64_t> rank_pattern;   // PEFT semantics: key matched against module names
  std::map<std::string, double> alpha_pattern;
  std::string init_from;                         // a PEFT folder to continue from ("" = fresh)
  bool enabled = true;                           // false: no adapter (full fine-tuning of `train_modules` only)
};

struct OptimConfig {
  double lr = 2e-4;
  double weight_decay = 0.0;   // decoupled (AdamW); never applied to biases and norms
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double grad_clip = 1.0;      // max global grad norm; 0 = off
};

struct ScheduleConfig {
  std::string type = "cosine";  // "constant" | "linear" | "cosine"
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;    // floor of linear/cosine decay as a share of lr
};

struct TrainConfig {
  int64_t batch_size = 1;         // rows per micro-batch
  int64_t grad_accum = 1;         // micro-batches per optimizer step
  int64_t max_steps = 0;          // optimizer steps; 0 = use epochs
  double epochs = 1.0;
  bool activation_checkpointing = false;
  std::vector<std::string> train_modules;  // fully trained modules by name fragment, e.g. ["norm"]
};

struct CheckpointConfig {
  int64_t every = 0;  // optimizer steps between checkpoints; 0 = only at the end
  int64_t keep = 2;   // newest K kept
};

struct EvalTask {
  std::string path;               // JSONL task file (eval/tasks.h: generation, choice, preference or loss rows)
  std::string type = "auto";
  int64_t max_new_tokens = 64;    // generation
  int64_t samples = 1;            // generation: answers per prompt
  double temperature = 0.0;       // generation: 0 = greedy
  std::string extract;            // generation: answer-extracting regex
};

struct EvalConfig {
  int64_t every = 0;        // optimizer steps between held-out evaluations; 0 = only at the end
  int64_t max_batches = 0;  // 0 = the whole eval set
  std::vector<EvalTask> tasks;  // task metrics before training and after (summary.json, model card)
};

// Steps after training (in a multi-stage recipe, after the last stage, from its resolved keys).
struct MergeStep {
  bool enabled = false;       // fold the final adapter into the base weights: <output_dir>/merged
  std::string dtype;          // "" = the base's | "bf16" | "f16" | "f32"
  std::string format = "hf";  // "hf" | "mistral"
};
struct PublishStep {
  bool enabled = false;        // a Hub-ready folder with a model card: <output_dir>/publish
  std::string what = "adapter"; // "adapter" | "merged" (needs merge.enabled)
  std::string name;            // Hub repo id; "" = the folder's name
  std::string license = "other";
};

struct DpoConfig {
  std::string loss = "sigmoid";      // "sigmoid" | "hinge" | "ipo" | "simpo" | "orpo" (dpo/losses.h)
  double beta = 0.1;
  double label_smoothing = 0.0;      // conservative DPO (sigmoid) / SimPO
  double simpo_gamma = 0.5;          // SimPO's target reward margin
  std::string reference = "initial"; // "initial": the model as the stage starts (a continued adapter stays the
                                     // reference); "base": the base weights with every adapter disabled
  bool precompute_reference = false; // reference log-probs computed once before training and cached
  int64_t max_prompt_len = 0;        // prompt tokens kept when a pair is too long; 0 = seq_len / 2
};

struct Recipe {
  std::string name;             // required
  std::string stage = "sft";    // "sft" | "dpo"
  std::string model;            // required: base model folder
  std::string output_dir;       // required
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

// Parses a recipe file: comments (// and /* */) allowed; `overrides` are "a.b=value" strings applied after
// the file (value parsed as JSON when it parses, else taken as a string). Errors name the key path and file.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
Recipe parse_recipe(const nlohmann::json& j, const std::string& where);
nlohmann::json recipe_to_json(const Recipe& r);  // the fully resolved recipe, every key present
// The runs a recipe describes: itself when `stages` is empty; else one recipe per stage: this recipe's keys
// with the stage's keys merged over them (JSON merge patch), output_dir `<output_dir>/<k>-<stage>` unless
// the stage sets one, and, for every stage after the first that does not set `lora.init_from` itself, the
// previous stage's adapter as `lora.init_from` (SFT then DPO on the SFT adapter). Errors name the stage.
std::vector<Recipe> expand_stages(const Recipe& r);
// Markdown reference of every key (type, default, required, meaning), generated from the field table.
std::string recipe_reference_markdown();

}  // namespace affinage
