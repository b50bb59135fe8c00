// Recipe files: the field tables (one per struct, the single declaration of every key), strict parsing,
// `--set` overrides, the resolved dump and the generated markdown reference (docs/recipes.md).
#include "config/recipe_file.h"
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include "base/error.h"
#include "config/schema.h"

namespace affinage {

template <>
const std::vector<std::pair<Stage, std::string>>& enum_names<Stage>() {
  static const std::vector<std::pair<Stage, std::string>> v = {{Stage::Sft, "sft"}, {Stage::Dpo, "dpo"}};
  return v;
}
template <>
const std::vector<std::pair<Truncation, std::string>>& enum_names<Truncation>() {
  static const std::vector<std::pair<Truncation, std::string>> v = {{Truncation::Right, "right"},
                                                                    {Truncation::Drop, "drop"}};
  return v;
}
template <>
const std::vector<std::pair<Schedule, std::string>>& enum_names<Schedule>() {
  static const std::vector<std::pair<Schedule, std::string>> v = {
      {Schedule::Constant, "constant"}, {Schedule::Linear, "linear"}, {Schedule::Cosine, "cosine"}};
  return v;
}
template <>
const std::vector<std::pair<DpoLoss, std::string>>& enum_names<DpoLoss>() {
  static const std::vector<std::pair<DpoLoss, std::string>> v = {{DpoLoss::Sigmoid, "sigmoid"},
                                                                 {DpoLoss::Hinge, "hinge"},
                                                                 {DpoLoss::Ipo, "ipo"},
                                                                 {DpoLoss::Simpo, "simpo"},
                                                                 {DpoLoss::Orpo, "orpo"}};
  return v;
}
template <>
const std::vector<std::pair<Reference, std::string>>& enum_names<Reference>() {
  static const std::vector<std::pair<Reference, std::string>> v = {{Reference::Initial, "initial"},
                                                                   {Reference::Base, "base"}};
  return v;
}

using namespace recipe_schema;

// ---------------------------------------------------------------- the field tables

static const Table<DataSource>& source_table() {
  static const Table<DataSource> t = [] {
    Table<DataSource> t;
    t.list = {
        required(
            str_field("path", &DataSource::path, "JSONL file; relative paths resolve against the current directory")),
        str_field("format", &DataSource::format, "row layout; `auto` decides from the keys of the rows",
                  {"auto", "text", "messages", "prompt_completion", "alpaca", "preference"}),
        num_field("weight", &DataSource::weight, "sampling weight among several training files", gt(0)),
    };
    t.check = [](const DataSource& s, const std::string& p, const Ctx& c) {
      if (s.path.empty()) fail("recipe ", c.where, ": key '", p, ".path' must not be empty; give a JSONL file");
    };
    return t;
  }();
  return t;
}

// An entry written as an object, or as its path alone ("a.jsonl" is short for {"path": "a.jsonl"}).
template <class T>
static T read_path_or_object(const Table<T>& table, const json& j, const std::string& p, const Ctx& c,
                             const std::string& what) {
  if (!j.is_string() && !j.is_object()) type_error(c, p, what + " (an object with \"path\", or a path string)", j);
  T x;
  read_table(table, x, j.is_string() ? json{{"path", j}} : j, p, c);
  return x;
}

static DataSource read_source(const json& j, const std::string& p, const Ctx& c) {
  return read_path_or_object(source_table(), j, p, c, "a data source");
}

static Field<DataConfig> train_field() {
  Field<DataConfig> f;
  f.key = "train", f.type = "array of data sources, or a path string", f.nav = Nav::ObjectArray,
  f.child = &source_table();
  f.doc = "training files; `\"a.jsonl\"` is short for `[{\"path\": \"a.jsonl\"}]`";
  f.required = true;
  f.read = [](DataConfig& d, const json& j, const std::string& p, const Ctx& c) {
    d.train.clear();
    if (j.is_string()) return d.train.push_back(read_source(j, p + ".0", c));
    if (!j.is_array()) type_error(c, p, "an array of data sources or a path string", j);
    if (j.empty()) fail("recipe ", c.where, ": key '", p, "' must list at least one training file");
    for (size_t i = 0; i < j.size(); ++i) d.train.push_back(read_source(j[i], p + "." + std::to_string(i), c));
  };
  f.write = [](const DataConfig& d) {
    json a = json::array();
    for (auto& s : d.train) a.push_back(write_table(source_table(), s));
    return a;
  };
  return f;
}

static Field<DataConfig> eval_source_field() {
  Field<DataConfig> f;
  f.key = "eval", f.type = "data source, path string or null", f.nav = Nav::OptObject, f.child = &source_table();
  f.doc = "held-out file, same form as an entry of `data.train`; null = none (see `eval_split`)";
  f.read = [](DataConfig& d, const json& j, const std::string& p, const Ctx& c) {
    if (j.is_null()) d.eval.reset();
    else d.eval = read_source(j, p, c);
  };
  f.write = [](const DataConfig& d) { return d.eval ? write_table(source_table(), *d.eval) : json(nullptr); };
  return f;
}

static const Table<DataConfig>& data_table() {
  static const Table<DataConfig> t = [] {
    Table<DataConfig> t;
    t.list = {
        train_field(),
        eval_source_field(),
        num_field("eval_split", &DataConfig::eval_split,
                  "share of the training rows held out for evaluation (seeded by `seed`)", between(0, 1, true)),
        int_field("seq_len", &DataConfig::seq_len, "tokens per row when packing, else the most tokens of one sample",
                  ge(8)),
        bool_field("packing", &DataConfig::packing,
                   "pack several samples into each row, with no attention across them (SFT; DPO pads each batch to its "
                   "longest pair)"),
        enum_field("truncation", &DataConfig::truncation,
                   "a sample longer than `seq_len`: `right` cuts its end, `drop` skips it; for DPO pairs `right` first "
                   "cuts the prompt's start (down to `dpo.max_prompt_len`), then the responses' ends"),
        str_field("chat_format", &DataConfig::chat_format,
                  "chat template for `messages` rows; `auto`: `mistral_v3` when the tokenizer has `[INST]` as a "
                  "control token, else `mistral_v1`",
                  {"auto", "mistral_v1", "mistral_v3"}),
        map_field("columns", &DataConfig::columns,
                  "renames source columns to the names a format expects, e.g. `{\"prompt\": \"question\"}`"),
    };
    t.check = [](const DataConfig& d, const std::string& p, const Ctx& c) {
      if (d.eval && d.eval_split > 0)
        fail("recipe ", c.where, ": keys '", p, ".eval' and '", p,
             ".eval_split' are both set; hold out either a file or a share of the training rows, not both");
    };
    return t;
  }();
  return t;
}

static const std::vector<std::string> kLoraModules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"};

static Field<LoraConfig> targets_field() {
  Field<LoraConfig> f;
  f.key = "targets", f.type = "array of strings, or `\"all-linear\"`", f.nav = Nav::List;
  f.doc = "projections that get an adapter; `\"all-linear\"` = all seven";
  f.allowed = allowed_text(kLoraModules) + "; or `all-linear` alone";
  f.read = [](LoraConfig& l, const json& j, const std::string& p, const Ctx& c) {
    l.targets.clear();
    if (j.is_string()) {
      if (j.get<std::string>() != "all-linear")
        fail("recipe ", c.where, ": key '", p,
             "' must be an array of module names or the string \"all-linear\", found ", describe(j), "; write [",
             json(j).dump(), "] for a single module");
      l.targets = {"all-linear"};
      return;
    }
    if (!j.is_array()) type_error(c, p, "an array of module names or the string \"all-linear\"", j);
    for (size_t i = 0; i < j.size(); ++i) l.targets.push_back(get_str(j[i], p + "." + std::to_string(i), c));
    bool all = std::count(l.targets.begin(), l.targets.end(), "all-linear") > 0;
    if (all && l.targets.size() != 1)
      fail("recipe ", c.where, ": key '", p,
           "' lists \"all-linear\" with other modules; use [\"all-linear\"] alone or name the modules");
    for (size_t i = 0; !all && i < l.targets.size(); ++i) {
      check_allowed(l.targets[i], kLoraModules, p + "." + std::to_string(i), c);
      if (std::count(l.targets.begin(), l.targets.end(), l.targets[i]) > 1)
        fail("recipe ", c.where, ": key '", p, "' names '", l.targets[i], "' twice");
    }
  };
  f.write = [](const LoraConfig& l) { return json(l.targets); };
  return f;
}

static const Table<LoraConfig>& lora_table() {
  static const Table<LoraConfig> t = [] {
    Table<LoraConfig> t;
    t.list = {
        int_field<LoraConfig>("r", &LoraConfig::r, "adapter rank", ge(1)),
        num_field<LoraConfig>("alpha", &LoraConfig::alpha,
                              "scale numerator: the update is scaled by alpha/r (alpha/sqrt(r) with `rslora`)", gt(0)),
        num_field<LoraConfig>("dropout", &LoraConfig::dropout, "dropout on the adapter input during training",
                              between(0, 1, true)),
        targets_field(),
        bool_field<LoraConfig>("rslora", &LoraConfig::rslora, "rank-stabilised scaling alpha/sqrt(r)"),
        map_field<LoraConfig, int64_t>("rank_pattern", &LoraConfig::rank_pattern,
                                       "per-module rank, PEFT semantics (key matched against module names)", ge(1)),
        map_field<LoraConfig, double>("alpha_pattern", &LoraConfig::alpha_pattern, "per-module alpha, PEFT semantics",
                                      gt(0)),
        str_field("init_from", &LoraConfig::init_from, "PEFT adapter folder to continue from; empty = fresh adapter"),
        bool_field("enabled", &LoraConfig::enabled, "false: no adapter; only `train.train_modules` are trained"),
    };
    t.check = [](const LoraConfig& l, const std::string& p, const Ctx& c) {
      if (l.enabled && l.targets.empty())
        fail("recipe ", c.where, ": key '", p, ".targets' is empty; name at least one module, or set ", p,
             ".enabled to false");
    };
    return t;
  }();
  return t;
}

static const Table<OptimConfig>& optim_table() {
  static const Table<OptimConfig> t = [] {
    Table<OptimConfig> t;
    t.list = {
        num_field("lr", &OptimConfig::lr, "peak learning rate (AdamW)", gt(0)),
        num_field("weight_decay", &OptimConfig::weight_decay,
                  "decoupled weight decay; never applied to biases and norms", ge(0)),
        num_field("beta1", &OptimConfig::beta1, "AdamW first-moment decay", between(0, 1, true)),
        num_field("beta2", &OptimConfig::beta2, "AdamW second-moment decay", between(0, 1, true)),
        num_field("eps", &OptimConfig::eps, "AdamW denominator epsilon", gt(0)),
        num_field("grad_clip", &OptimConfig::grad_clip, "largest global gradient norm; 0 = no clipping", ge(0)),
    };
    return t;
  }();
  return t;
}

static const Table<ScheduleConfig>& schedule_table() {
  static const Table<ScheduleConfig> t = [] {
    Table<ScheduleConfig> t;
    t.list = {
        enum_field("type", &ScheduleConfig::type, "learning-rate shape after warmup"),
        int_field("warmup_steps", &ScheduleConfig::warmup_steps,
                  "optimizer steps of linear warmup from 0 to `optim.lr`", ge(0)),
        num_field("min_lr_ratio", &ScheduleConfig::min_lr_ratio,
                  "floor of the linear/cosine decay, as a share of `optim.lr`", between(0, 1, false)),
    };
    return t;
  }();
  return t;
}

static const Table<TrainConfig>& train_table() {
  static const Table<TrainConfig> t = [] {
    Table<TrainConfig> t;
    t.list = {
        int_field("batch_size", &TrainConfig::batch_size, "rows per micro-batch", ge(1)),
        int_field("grad_accum", &TrainConfig::grad_accum, "micro-batches per optimizer step", ge(1)),
        int_field("max_steps", &TrainConfig::max_steps, "optimizer steps to run; 0 = run `epochs` passes", ge(0)),
        num_field("epochs", &TrainConfig::epochs,
                  "passes over the training data when `max_steps` is 0 (fractions allowed)", ge(0)),
        bool_field("activation_checkpointing", &TrainConfig::activation_checkpointing,
                   "recompute layer activations in the backward pass to save memory"),
        strings_field("train_modules", &TrainConfig::train_modules,
                      "modules trained in full, by name fragment, e.g. `[\"norm\"]`"),
    };
    t.check = [](const TrainConfig& tr, const std::string& p, const Ctx& c) {
      if (tr.max_steps == 0 && !(tr.epochs > 0))
        fail("recipe ", c.where, ": key '", p, ".epochs' must be > 0 when '", p, ".max_steps' is 0, found ",
             json(tr.epochs).dump());
    };
    return t;
  }();
  return t;
}

static const Table<CheckpointConfig>& checkpoint_table() {
  static const Table<CheckpointConfig> t = [] {
    Table<CheckpointConfig> t;
    t.list = {
        int_field("every", &CheckpointConfig::every, "optimizer steps between checkpoints; 0 = only at the end", ge(0)),
        int_field("keep", &CheckpointConfig::keep, "newest checkpoints kept on disk", ge(1)),
    };
    return t;
  }();
  return t;
}

static const Table<EvalTask>& task_table() {
  static const Table<EvalTask> t = [] {
    Table<EvalTask> t;
    t.list = {
        required(str_field("path", &EvalTask::path,
                           "JSONL task file: `{prompt, reference}` (generation), `{prompt, choices, answer}` (choice), "
                           "`{prompt, chosen, rejected}` (preference), or documents (loss)")),
        str_field("type", &EvalTask::type, "task kind; `auto` decides from the first row",
                  {"auto", "generation", "choice", "preference", "loss"}),
        int_field("max_new_tokens", &EvalTask::max_new_tokens, "generation: tokens per answer", ge(1)),
        int_field("samples", &EvalTask::samples, "generation: answers per prompt", ge(1)),
        num_field("temperature", &EvalTask::temperature, "generation: sampling temperature; 0 = greedy", ge(0)),
        str_field("extract", &EvalTask::extract,
                  "generation: regex whose first group is the answer (`extracted_match`)"),
    };
    return t;
  }();
  return t;
}

static Field<EvalConfig> tasks_field() {
  Field<EvalConfig> f;
  f.key = "tasks", f.type = "array of tasks, or path strings", f.nav = Nav::ObjectArray, f.child = &task_table();
  f.doc = "task metrics (eval/tasks.h) computed before training and after it, into `summary.json` and the model card";
  f.read = [](EvalConfig& e, const json& j, const std::string& p, const Ctx& c) {
    if (!j.is_array()) type_error(c, p, "an array of tasks", j);
    e.tasks.clear();
    for (size_t i = 0; i < j.size(); ++i)
      e.tasks.push_back(read_path_or_object(task_table(), j[i], p + "." + std::to_string(i), c, "a task"));
  };
  f.write = [](const EvalConfig& e) {
    json a = json::array();
    for (auto& t : e.tasks) a.push_back(write_table(task_table(), t));
    return a;
  };
  return f;
}

static const Table<EvalConfig>& eval_table() {
  static const Table<EvalConfig> t = [] {
    Table<EvalConfig> t;
    t.list = {
        int_field("every", &EvalConfig::every, "optimizer steps between held-out evaluations; 0 = only at the end",
                  ge(0)),
        int_field("max_batches", &EvalConfig::max_batches, "batches per evaluation; 0 = the whole eval set", ge(0)),
        tasks_field(),
    };
    return t;
  }();
  return t;
}

static const Table<DpoConfig>& dpo_table() {
  static const Table<DpoConfig> t = [] {
    Table<DpoConfig> t;
    t.list = {
        enum_field("loss", &DpoConfig::loss,
                   "preference loss: `sigmoid` (DPO), `hinge` (SLiC), `ipo`, and the reference-free `simpo` and `orpo` "
                   "(formulas in dpo/losses.h)"),
        num_field(
            "beta", &DpoConfig::beta,
            "inverse temperature of the implicit reward (DPO's beta; ORPO's lambda; SimPO's beta, where 2.0 is usual)",
            gt(0)),
        num_field("label_smoothing", &DpoConfig::label_smoothing,
                  "assumed share of flipped labels (conservative DPO) for `sigmoid` and `simpo`",
                  between(0, 0.5, true)),
        num_field("simpo_gamma", &DpoConfig::simpo_gamma, "SimPO's target reward margin gamma", ge(0)),
        enum_field("reference", &DpoConfig::reference,
                   "reference model: `initial` = the model as the stage starts (the continued `lora.init_from` adapter "
                   "when set, else the base); `base` = base weights with adapters disabled"),
        bool_field("precompute_reference", &DpoConfig::precompute_reference,
                   "compute the reference log-probs of every pair once before training (cached in `output_dir`) so the "
                   "reference never runs again"),
        int_field("max_prompt_len", &DpoConfig::max_prompt_len,
                  "a pair longer than `data.seq_len` keeps at least this many prompt tokens (its start is cut first); "
                  "0 = `data.seq_len` / 2",
                  ge(0)),
    };
    return t;
  }();
  return t;
}

static const Table<MergeStep>& merge_table() {
  static const Table<MergeStep> t = [] {
    Table<MergeStep> t;
    t.list = {
        bool_field("enabled", &MergeStep::enabled,
                   "after training, fold the final adapter into the base weights: `<output_dir>/merged` (see `affinage "
                   "merge`)"),
        str_field("dtype", &MergeStep::dtype, "dtype of the merged weights; empty = the base's",
                  {"", "bf16", "f16", "f32"}),
        str_field("format", &MergeStep::format, "`hf` (config.json + sharded safetensors) or `mistral` (consolidated)",
                  {"hf", "mistral"}),
    };
    return t;
  }();
  return t;
}

static const Table<PublishStep>& publish_table() {
  static const Table<PublishStep> t = [] {
    Table<PublishStep> t;
    t.list = {
        bool_field("enabled", &PublishStep::enabled,
                   "after training (and merging), write a Hub-ready folder with a model card: `<output_dir>/publish` "
                   "(see `affinage publish`); nothing is uploaded"),
        str_field("what", &PublishStep::what, "publish the `adapter` or the `merged` model (needs `merge.enabled`)",
                  {"adapter", "merged"}),
        str_field("name", &PublishStep::name, "Hub repo id, e.g. `me/my-model`; empty = the folder's name"),
        str_field("license", &PublishStep::license, "Hub license id, e.g. `apache-2.0`"),
    };
    t.check = [](const PublishStep& ps, const std::string& p, const Ctx& c) {
      if (ps.license.empty()) fail("recipe ", c.where, ": key '", p, ".license' must not be empty; use e.g. \"other\"");
    };
    return t;
  }();
  return t;
}

// Stages are kept as raw objects here and validated as whole recipes by expand_stages (at load time).
static Field<Recipe> stages_field() {
  Field<Recipe> f;
  f.key = "stages", f.type = "array of objects";
  f.doc =
      "a multi-stage run: each entry holds recipe keys merged over this recipe (e.g. `{\"stage\": \"dpo\", \"data\": "
      "{...}}`); stage k writes to `<output_dir>/<k>-<stage>` and continues from the previous stage's adapter unless "
      "it sets `lora.init_from`; empty = one stage";
  f.read = [](Recipe& r, const json& j, const std::string& p, const Ctx& c) {
    if (!j.is_array()) type_error(c, p, "an array of objects (partial recipes)", j);
    r.stages.clear();
    for (size_t i = 0; i < j.size(); ++i) {
      std::string ip = p + "." + std::to_string(i);
      if (!j[i].is_object()) type_error(c, ip, "an object (a partial recipe)", j[i]);
      if (j[i].contains("stages")) fail("recipe ", c.where, ": key '", ip, ".stages': stages cannot be nested");
      r.stages.push_back(j[i]);
    }
  };
  f.write = [](const Recipe& r) { return json(r.stages); };
  return f;
}

static const Table<Recipe>& recipe_table() {
  static const Table<Recipe> t = [] {
    Table<Recipe> t;
    auto nonempty = [](const std::string& v, const char* key, const Ctx& c) {
      if (v.empty()) fail("recipe ", c.where, ": key '", key, "' must not be empty");
    };
    t.list = {
        required(str_field("name", &Recipe::name, "run name, shown in logs and stored in checkpoints")),
        enum_field("stage", &Recipe::stage, "training stage"),
        required(str_field("model", &Recipe::model, "base model folder (config.json, *.safetensors, tokenizer.model)")),
        required(str_field("output_dir", &Recipe::output_dir,
                           "folder for checkpoints, logs, the adapter and the resolved recipe")),
        int_field("seed", &Recipe::seed, "seed for initialisation, shuffling, dropout and `data.eval_split`", ge(0)),
        str_field("device", &Recipe::device,
                  "where to train; `auto`: `cuda` when LibTorch has CUDA and a GPU is present, else `cpu`",
                  {"auto", "cpu", "cuda", "cuda:N"}),
        str_field("dtype", &Recipe::dtype,
                  "base weights and activations (adapter weights and optimizer state stay f32)", {"bf16", "f32"}),
        int_field("threads", &Recipe::threads, "CPU threads; 0 = all cores", ge(0)),
        int_field("log_every", &Recipe::log_every, "optimizer steps between log lines", ge(1)),
        table_field("data", &Recipe::data, data_table(), "training and evaluation data"),
        table_field("lora", &Recipe::lora, lora_table(), "the LoRA adapter"),
        table_field("optim", &Recipe::optim, optim_table(), "the AdamW optimizer"),
        table_field("schedule", &Recipe::schedule, schedule_table(), "the learning-rate schedule"),
        table_field("train", &Recipe::train, train_table(), "batching and run length"),
        table_field("checkpoint", &Recipe::checkpoint, checkpoint_table(), "checkpoints under `output_dir`"),
        table_field("eval", &Recipe::eval, eval_table(), "held-out evaluation during training"),
        table_field("dpo", &Recipe::dpo, dpo_table(), "preference optimization (stage `dpo`)"),
        table_field("merge", &Recipe::merge, merge_table(), "merge step after training"),
        table_field("publish", &Recipe::publish, publish_table(), "publish step after training (and merging)"),
        stages_field(),
    };
    t.check = [nonempty](const Recipe& r, const std::string&, const Ctx& c) {
      if (r.publish.enabled && r.publish.what == "merged" && !r.merge.enabled)
        fail("recipe ", c.where,
             ": key 'publish.what' is \"merged\" but 'merge.enabled' is false; enable the merge step or publish the "
             "adapter");
      if (c.partial) return;  // each stage is checked whole
      nonempty(r.name, "name", c), nonempty(r.model, "model", c), nonempty(r.output_dir, "output_dir", c);
    };
    return t;
  }();
  return t;
}

// ---------------------------------------------------------------- parse, dump, overrides

Recipe parse_recipe(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail("recipe ", where, ": the top level must be a JSON object, found ", describe(j));
  // With stages, a key like data.train may be given per stage: each stage is checked in full by expand_stages.
  auto st = j.find("stages");
  Ctx c{where, &recipe_table(), st != j.end() && st->is_array() && !st->empty()};
  Recipe r;
  read_table(recipe_table(), r, j, "", c);
  r.source_path = where;
  return r;
}

nlohmann::json recipe_to_json(const Recipe& r) { return write_table(recipe_table(), r); }

std::vector<Recipe> expand_stages(const Recipe& r) {
  if (r.stages.empty()) return {r};
  if (r.output_dir.empty())
    fail("recipe ", r.source_path,
         ": a multi-stage recipe needs 'output_dir' at the top level (stage k writes to <output_dir>/<k>-<stage>)");
  json base = recipe_to_json(r);
  base.erase("stages");
  std::vector<Recipe> out;
  for (size_t k = 0; k < r.stages.size(); ++k) {
    const json& patch = r.stages[k];
    json j = base;
    j.merge_patch(patch);
    const std::string stage = j.value("stage", std::string("sft"));
    if (!patch.contains("output_dir")) j["output_dir"] = r.output_dir + "/" + std::to_string(k + 1) + "-" + stage;
    if (!patch.contains("name")) j["name"] = r.name + "/" + std::to_string(k + 1) + "-" + stage;
    bool own_init = patch.contains("lora") && patch["lora"].is_object() && patch["lora"].contains("init_from");
    if (k > 0 && !own_init) j["lora"]["init_from"] = out.back().output_dir + "/adapter";
    Recipe s = parse_recipe(j, r.source_path + " (stages." + std::to_string(k) + ")");
    s.source_path = r.source_path;
    out.push_back(std::move(s));
  }
  return out;
}

static bool parse_index(const std::string& s, size_t* out) {
  if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  *out = std::stoul(s);
  return true;
}

[[noreturn]] static void bad_override(const std::string& ov, const std::string& file, const std::string& why) {
  fail("--set ", ov, ": ", why, " (recipe ", file, ")");
}

// Applies "a.b.c=value" to the JSON tree, walking the field tables so that a wrong key fails here, naming
// the override. Shorthands met on the way (a path string for a data source, "all-linear") are expanded.
static void apply_override(json& root, const std::string& ov, const std::string& file) {
  auto eq = ov.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--set ", ov, ": expected KEY=VALUE, e.g. --set optim.lr=1e-4 (recipe ", file, ")");
  std::string key = ov.substr(0, eq), text = ov.substr(eq + 1);
  json value = json::parse(text, nullptr, false);
  if (value.is_discarded()) value = text;  // not JSON: a plain string (--set output_dir=runs/b)
  std::vector<std::string> segs;
  for (size_t a = 0, b;; a = b + 1) {
    b = key.find('.', a);
    segs.push_back(key.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
  }
  auto bad = [&](const std::string& why) { bad_override(ov, file, why); };
  if (!root.is_object()) bad("the recipe's top level is not a JSON object");
  if (segs[0] == "stages" && segs.size() > 2) {
    // stages.K.a.b=v: set inside the stage's partial recipe; expand_stages checks the keys when it loads
    size_t k = 0;
    json& st = root["stages"];
    if (!st.is_array() || !parse_index(segs[1], &k) || k >= st.size())
      bad("'stages' has no entry '" + segs[1] + "' (the recipe has " + std::to_string(st.is_array() ? st.size() : 0) +
          " stages)");
    json* node = &st[k];
    for (size_t i = 2; i + 1 < segs.size(); ++i) {
      if (!node->is_object()) bad("'" + key.substr(0, key.find(segs[i])) + "' is not an object");
      node = &(*node)[segs[i]];
      if (node->is_null()) *node = json::object();
    }
    if (!node->is_object()) bad("the parent of '" + segs.back() + "' is not an object");
    (*node)[segs.back()] = value;
    return;
  }
  json* node = &root;
  const Section* sec = &recipe_table();
  std::string path;
  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].empty()) bad("empty key segment in '" + key + "'");
    const FieldBase* f = sec->find(segs[i]);
    if (!f) fail("--set ", ov, ": ", unknown_key_text(*sec, path, segs[i], &recipe_table()));
    path = join_key(path, segs[i]);
    json& slot = (*node)[segs[i]];
    if (i + 1 == segs.size()) {
      slot = value;
      return;
    }
    const std::string& next = segs[i + 1];
    size_t idx = 0;
    auto as_source = [](json& s) {
      if (s.is_string()) s = json{{"path", s}};
      else if (s.is_null()) s = json::object();
    };
    switch (f->nav) {
      case Nav::Leaf:
        bad_override(ov, file, "'" + path + "' is a " + f->type + ", it has no key '" + next + "'");
      case Nav::Object:
      case Nav::OptObject:
        if (f->nav == Nav::OptObject) as_source(slot);
        if (slot.is_null()) slot = json::object();
        if (!slot.is_object()) bad("'" + path + "' in the recipe is " + describe(slot) + ", not an object");
        node = &slot, sec = f->child;
        break;
      case Nav::Map:
        if (slot.is_null()) slot = json::object();
        if (!slot.is_object() || i + 2 != segs.size())
          bad("'" + path + "' is a map; set one entry as " + path + ".NAME=VALUE");
        slot[next] = value;
        return;
      case Nav::List:
      case Nav::ObjectArray: {
        if (slot.is_string()) slot = json::array({slot});  // "a.jsonl" / "all-linear" shorthand
        if (slot.is_null()) slot = json::array();
        if (!slot.is_array()) bad("'" + path + "' in the recipe is " + describe(slot) + ", not an array");
        if (!parse_index(next, &idx) || idx > slot.size())
          bad("'" + path + "' is an array; address an entry by index 0.." + std::to_string(slot.size()) + ", found '" +
              next + "'");
        if (idx == slot.size()) slot.push_back(nullptr);  // one past the end appends
        path += "." + next;
        if (i + 2 == segs.size()) {
          slot[idx] = value;
          return;
        }
        if (f->nav == Nav::List) bad("'" + path + "' is a string, it has no key '" + segs[i + 2] + "'");
        as_source(slot[idx]);
        if (!slot[idx].is_object()) bad("'" + path + "' in the recipe is " + describe(slot[idx]) + ", not an object");
        node = &slot[idx], sec = f->child;
        ++i;
        break;
      }
    }
  }
}

// 1-based line and column of a byte offset (nlohmann reports the count of bytes read at the error).
static std::pair<size_t, size_t> line_column(const std::string& text, size_t byte) {
  size_t off = std::min(byte > 0 ? byte - 1 : 0, text.size());
  size_t line = 1 + std::count(text.begin(), text.begin() + off, '\n');
  size_t nl = off == 0 ? std::string::npos : text.rfind('\n', off - 1);
  return {line, nl == std::string::npos ? off + 1 : off - nl};
}

// nlohmann keeps the last of two equal keys; in a recipe that silently drops a value, so it is an error.
// The callback sees the parse events in order; a stack of open objects/arrays gives the key path.
static json::parser_callback_t duplicate_key_guard(const std::string& file) {
  struct Frame {
    bool array;
    std::set<std::string> keys;
    std::string key;
    size_t index = 0;
  };
  auto stack = std::make_shared<std::vector<Frame>>();
  auto path = [stack] {
    std::string p;
    for (size_t i = 0; i + 1 < stack->size(); ++i)
      p = join_key(p, (*stack)[i].array ? std::to_string((*stack)[i].index) : (*stack)[i].key);
    return p;
  };
  auto element_done = [stack] {
    if (!stack->empty() && stack->back().array) ++stack->back().index;
  };
  return [=](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start:
        stack->push_back({false, {}, "", 0});
        break;
      case json::parse_event_t::array_start:
        stack->push_back({true, {}, "", 0});
        break;
      case json::parse_event_t::key: {
        std::string k = parsed.get<std::string>();
        if (!stack->back().keys.insert(k).second) {
          stack->back().key = k;
          stack->push_back({false, {}, "", 0});  // so that path() includes the key itself
          fail("recipe ", file, ": key '", path(), "' appears twice; keep one");
        }
        stack->back().key = k;
        break;
      }
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        stack->pop_back();
        element_done();
        break;
      case json::parse_event_t::value:
        element_done();
        break;
    }
    return true;
  };
}

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    fail("recipe ", path, ": cannot open the file (", std::strerror(errno),
         "); give the path of a JSON recipe, e.g. recipes/stories260k_sft.json");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  json j;
  try {
    j = json::parse(text, duplicate_key_guard(path), true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    auto colon = what.find(": ");  // drop nlohmann's "[json.exception.parse_error.101] parse error at ...: "
    if (what.rfind("[json.exception", 0) == 0 && colon != std::string::npos) what = what.substr(colon + 2);
    if (e.byte == 0) fail("recipe ", path, ": JSON syntax error: ", what);
    auto [line, col] = line_column(text, e.byte);
    fail("recipe ", path, ":", line, ":", col, ": JSON syntax error: ", what);
  }
  std::string where = path;
  for (auto& ov : overrides) {
    apply_override(j, ov, path);
    where += (where == path ? " (with --set " : ", --set ") + ov;
  }
  if (!overrides.empty()) where += ")";
  Recipe r = parse_recipe(j, where);
  r.source_path = path;
  expand_stages(r);  // a broken stage fails now, not after the stages before it have trained
  return r;
}

// ---------------------------------------------------------------- docs/recipes.md

static std::string cell(std::string s) {
  for (size_t p = 0; (p = s.find('|', p)) != std::string::npos; p += 2) s.replace(p, 1, "\\|");
  return s;
}

// One markdown table for `sec`, then (depth first) one for each nested table it introduces.
static void emit_section(std::ostringstream& md, const Section& sec, const std::string& prefix,
                         const std::string& title, std::set<const Section*>& documented) {
  documented.insert(&sec);
  md << "\n## " << title << "\n\n"
     << "| Key | Type | Default | Required | Allowed values | Meaning |\n"
     << "|---|---|---|---|---|---|\n";
  json defs = sec.defaults();
  std::vector<std::pair<const FieldBase*, std::string>> nested;
  std::map<const Section*, std::string> where;  // nested table -> the key path it is documented under
  for (auto* f : sec.fields()) {
    std::string path = join_key(prefix, f->key), doc = f->doc;
    std::string def = f->required ? "-" : "`" + defs[f->key].dump() + "`";
    if (f->child) {
      std::string sub = f->nav == Nav::ObjectArray ? path + "[]" : path;
      if (!documented.count(f->child) && !where.count(f->child)) where[f->child] = sub, nested.push_back({f, sub});
      if (f->nav == Nav::Object) def = "see `" + sub + "`";
      doc += "; keys in `" + (where.count(f->child) ? where[f->child] : sub) + "` below";
    }
    md << "| `" << path << "` | " << cell(f->type) << " | " << cell(def) << " | " << (f->required ? "yes" : "no")
       << " | " << cell(f->allowed) << " | " << cell(doc) << " |\n";
  }
  for (auto& [f, sub] : nested)
    emit_section(md, *f->child, sub, f->nav == Nav::ObjectArray ? "`" + sub + "` (each entry)" : "`" + sub + "`",
                 documented);
}

std::string recipe_reference_markdown() {
  std::ostringstream md;
  md << "# Recipe reference\n\n"
     << "<!-- Generated by recipe_reference_markdown() from the field tables in config/recipe_file.cpp; "
     << "tests/test_recipe.cpp fails when this file differs. Do not edit by hand. -->\n\n"
     << "A recipe is one JSON file that describes a training run; `//` and `/* */` comments are allowed. "
     << "Keys are checked strictly: an unknown key, a value of the wrong type or out of range, or a missing "
     << "required key is an error that names the key path and the file. Integers may be written `3.0` but not "
        "`3.5`.\n\n"
     << "Shorthands: `data.train` and `data.eval` take a path string in place of `{\"path\": ...}`; "
     << "`lora.targets` takes the string `\"all-linear\"`.\n\n"
     << "Overrides: `--set KEY=VALUE` (repeatable) changes a key after the file is read. VALUE is parsed as "
     << "JSON when it parses (`--set optim.lr=3e-4`, `--set train.activation_checkpointing=true`) and taken as "
     << "a string otherwise (`--set output_dir=runs/try2`). Array entries are addressed by index "
     << "(`--set data.train.0.path=other.jsonl`; the index one past the end appends).\n\n"
     << "Examples: `recipes/stories260k_sft.json` (CPU, under a minute), `recipes/mistral7b_v03_lora_sft.json` "
        "(GPU).\n";
  std::set<const Section*> documented;  // a table shared by two keys (data.train[], data.eval) is shown once
  emit_section(md, recipe_table(), "", "Top level", documented);
  return md.str();
}

}  // namespace affinage
