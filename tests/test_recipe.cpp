// Recipe parsing: values and defaults land in the structs, every kind of mistake is an error naming the key
// path and the file, `--set` overrides, the resolved-dump round trip, and docs/recipes.md cannot drift.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include "base/error.h"
#include "config/recipe_file.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace affinage;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

std::string write_recipe(const std::string& text, const std::string& name = "recipe.json") {
  static std::string dir = test::temp_dir("recipe");
  std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

Recipe load_text(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return load_recipe(write_recipe(text), overrides);
}

// The error message of loading `text`; fails the test when it loads.
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {},
                     const std::string& name = "recipe.json") {
  try {
    load_recipe(write_recipe(text, name), overrides);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error for: " << text;
  return "";
}

const char* kMinimal = R"({"name": "t", "model": "m", "output_dir": "o", "data": {"train": "d.jsonl"}})";

// kMinimal with `extra` (top-level members, e.g. `"lora": {"r": 0}`) added; `extra` may bring its own "data".
std::string minimal_with(const std::string& extra) {
  bool has_data = extra.find("\"data\"") != std::string::npos;
  return std::string(R"({"name": "t", "model": "m", "output_dir": "o", )") +
         (has_data ? "" : R"("data": {"train": "d.jsonl"}, )") + extra + "}";
}

const char* kFull = R"({
  "name": "full", "stage": "dpo", "model": "models/x", "output_dir": "runs/full",
  "seed": 7, "device": "cuda:1", "dtype": "f32", "threads": 3, "log_every": 5,
  "data": {
    "train": [{"path": "a.jsonl", "format": "messages", "weight": 2.5}, {"path": "b.jsonl"}],
    "eval": {"path": "e.jsonl", "format": "text"},
    "eval_split": 0.0, "seq_len": 512, "packing": true, "truncation": "drop", "chat_format": "mistral_v3",
    "columns": {"prompt": "question", "chosen": "response_j"}
  },
  "lora": {"r": 4, "alpha": 8.5, "dropout": 0.1, "targets": ["q_proj", "v_proj"], "rslora": true,
           "rank_pattern": {"layers.0.": 2}, "alpha_pattern": {"mlp": 3.5}, "init_from": "adapters/a", "enabled": true},
  "optim": {"lr": 1e-4, "weight_decay": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, "grad_clip": 0.5},
  "schedule": {"type": "linear", "warmup_steps": 20, "min_lr_ratio": 0.1},
  "train": {"batch_size": 4, "grad_accum": 2, "max_steps": 300, "epochs": 2.0,
            "activation_checkpointing": true, "train_modules": ["norm"]},
  "checkpoint": {"every": 100, "keep": 3},
  "eval": {"every": 50, "max_batches": 10}
})";

void expect_same_source(const DataSource& a, const DataSource& b) {
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.format, b.format);
  EXPECT_EQ(a.weight, b.weight);
}

// Member-by-member comparison written independently of the field tables (a table missing a key shows here).
void expect_same_recipe(const Recipe& a, const Recipe& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.stage, b.stage);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.output_dir, b.output_dir);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.threads, b.threads);
  EXPECT_EQ(a.log_every, b.log_every);
  ASSERT_EQ(a.data.train.size(), b.data.train.size());
  for (size_t i = 0; i < a.data.train.size(); ++i) expect_same_source(a.data.train[i], b.data.train[i]);
  ASSERT_EQ(a.data.eval.has_value(), b.data.eval.has_value());
  if (a.data.eval) expect_same_source(*a.data.eval, *b.data.eval);
  EXPECT_EQ(a.data.eval_split, b.data.eval_split);
  EXPECT_EQ(a.data.seq_len, b.data.seq_len);
  EXPECT_EQ(a.data.packing, b.data.packing);
  EXPECT_EQ(a.data.truncation, b.data.truncation);
  EXPECT_EQ(a.data.chat_format, b.data.chat_format);
  EXPECT_EQ(a.data.columns, b.data.columns);
  EXPECT_EQ(a.lora.r, b.lora.r);
  EXPECT_EQ(a.lora.alpha, b.lora.alpha);
  EXPECT_EQ(a.lora.dropout, b.lora.dropout);
  EXPECT_EQ(a.lora.targets, b.lora.targets);
  EXPECT_EQ(a.lora.rslora, b.lora.rslora);
  EXPECT_EQ(a.lora.rank_pattern, b.lora.rank_pattern);
  EXPECT_EQ(a.lora.alpha_pattern, b.lora.alpha_pattern);
  EXPECT_EQ(a.lora.init_from, b.lora.init_from);
  EXPECT_EQ(a.lora.enabled, b.lora.enabled);
  EXPECT_EQ(a.optim.lr, b.optim.lr);
  EXPECT_EQ(a.optim.weight_decay, b.optim.weight_decay);
  EXPECT_EQ(a.optim.beta1, b.optim.beta1);
  EXPECT_EQ(a.optim.beta2, b.optim.beta2);
  EXPECT_EQ(a.optim.eps, b.optim.eps);
  EXPECT_EQ(a.optim.grad_clip, b.optim.grad_clip);
  EXPECT_EQ(a.schedule.type, b.schedule.type);
  EXPECT_EQ(a.schedule.warmup_steps, b.schedule.warmup_steps);
  EXPECT_EQ(a.schedule.min_lr_ratio, b.schedule.min_lr_ratio);
  EXPECT_EQ(a.train.batch_size, b.train.batch_size);
  EXPECT_EQ(a.train.grad_accum, b.train.grad_accum);
  EXPECT_EQ(a.train.max_steps, b.train.max_steps);
  EXPECT_EQ(a.train.epochs, b.train.epochs);
  EXPECT_EQ(a.train.activation_checkpointing, b.train.activation_checkpointing);
  EXPECT_EQ(a.train.train_modules, b.train.train_modules);
  EXPECT_EQ(a.checkpoint.every, b.checkpoint.every);
  EXPECT_EQ(a.checkpoint.keep, b.checkpoint.keep);
  EXPECT_EQ(a.eval.every, b.eval.every);
  EXPECT_EQ(a.eval.max_batches, b.eval.max_batches);
}

}  // namespace

TEST(Recipe, FullRecipeParsesToTheWrittenValues) {
  Recipe r = load_text(kFull);
  EXPECT_EQ(r.name, "full");
  EXPECT_EQ(r.stage, Stage::Dpo);
  EXPECT_EQ(r.model, "models/x");
  EXPECT_EQ(r.output_dir, "runs/full");
  EXPECT_EQ(r.seed, 7);
  EXPECT_EQ(r.device, "cuda:1");
  EXPECT_EQ(r.dtype, "f32");
  EXPECT_EQ(r.threads, 3);
  EXPECT_EQ(r.log_every, 5);
  ASSERT_EQ(r.data.train.size(), 2u);
  EXPECT_EQ(r.data.train[0].path, "a.jsonl");
  EXPECT_EQ(r.data.train[0].format, "messages");
  EXPECT_EQ(r.data.train[0].weight, 2.5);
  EXPECT_EQ(r.data.train[1].path, "b.jsonl");
  EXPECT_EQ(r.data.train[1].format, "auto");
  EXPECT_EQ(r.data.train[1].weight, 1.0);
  ASSERT_TRUE(r.data.eval.has_value());
  EXPECT_EQ(r.data.eval->path, "e.jsonl");
  EXPECT_EQ(r.data.eval->format, "text");
  EXPECT_EQ(r.data.seq_len, 512);
  EXPECT_TRUE(r.data.packing);
  EXPECT_EQ(r.data.truncation, Truncation::Drop);
  EXPECT_EQ(r.data.chat_format, "mistral_v3");
  EXPECT_EQ(r.data.columns, (std::map<std::string, std::string>{{"prompt", "question"}, {"chosen", "response_j"}}));
  EXPECT_EQ(r.lora.r, 4);
  EXPECT_EQ(r.lora.alpha, 8.5);
  EXPECT_EQ(r.lora.dropout, 0.1);
  EXPECT_EQ(r.lora.targets, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_TRUE(r.lora.rslora);
  EXPECT_EQ(r.lora.rank_pattern, (std::map<std::string, int64_t>{{"layers.0.", 2}}));
  EXPECT_EQ(r.lora.alpha_pattern, (std::map<std::string, double>{{"mlp", 3.5}}));
  EXPECT_EQ(r.lora.init_from, "adapters/a");
  EXPECT_EQ(r.optim.lr, 1e-4);
  EXPECT_EQ(r.optim.weight_decay, 0.01);
  EXPECT_EQ(r.optim.beta1, 0.8);
  EXPECT_EQ(r.optim.beta2, 0.95);
  EXPECT_EQ(r.optim.eps, 1e-6);
  EXPECT_EQ(r.optim.grad_clip, 0.5);
  EXPECT_EQ(r.schedule.type, Schedule::Linear);
  EXPECT_EQ(r.schedule.warmup_steps, 20);
  EXPECT_EQ(r.schedule.min_lr_ratio, 0.1);
  EXPECT_EQ(r.train.batch_size, 4);
  EXPECT_EQ(r.train.grad_accum, 2);
  EXPECT_EQ(r.train.max_steps, 300);
  EXPECT_EQ(r.train.epochs, 2.0);
  EXPECT_TRUE(r.train.activation_checkpointing);
  EXPECT_EQ(r.train.train_modules, (std::vector<std::string>{"norm"}));
  EXPECT_EQ(r.checkpoint.every, 100);
  EXPECT_EQ(r.checkpoint.keep, 3);
  EXPECT_EQ(r.eval.every, 50);
  EXPECT_EQ(r.eval.max_batches, 10);
  EXPECT_THAT(r.source_path, HasSubstr("recipe.json"));
}

TEST(Recipe, DefaultsFillEveryKeyNotWritten) {
  Recipe r = load_text(kMinimal);
  // The values documented in config/recipe.h, written out by hand.
  EXPECT_EQ(r.stage, Stage::Sft);
  EXPECT_EQ(r.seed, 42);
  EXPECT_EQ(r.device, "auto");
  EXPECT_EQ(r.dtype, "bf16");
  EXPECT_EQ(r.threads, 0);
  EXPECT_EQ(r.log_every, 1);
  ASSERT_EQ(r.data.train.size(), 1u);
  EXPECT_EQ(r.data.train[0].path, "d.jsonl");  // the string shorthand
  EXPECT_EQ(r.data.train[0].format, "auto");
  EXPECT_EQ(r.data.train[0].weight, 1.0);
  EXPECT_FALSE(r.data.eval.has_value());
  EXPECT_EQ(r.data.eval_split, 0.0);
  EXPECT_EQ(r.data.seq_len, 2048);
  EXPECT_FALSE(r.data.packing);
  EXPECT_EQ(r.data.truncation, Truncation::Right);
  EXPECT_EQ(r.data.chat_format, "auto");
  EXPECT_TRUE(r.data.columns.empty());
  EXPECT_EQ(r.lora.r, 8);
  EXPECT_EQ(r.lora.alpha, 16.0);
  EXPECT_EQ(r.lora.dropout, 0.0);
  EXPECT_EQ(r.lora.targets, (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"}));
  EXPECT_FALSE(r.lora.rslora);
  EXPECT_TRUE(r.lora.enabled);
  EXPECT_TRUE(r.lora.init_from.empty());
  EXPECT_EQ(r.optim.lr, 2e-4);
  EXPECT_EQ(r.optim.weight_decay, 0.0);
  EXPECT_EQ(r.optim.beta1, 0.9);
  EXPECT_EQ(r.optim.beta2, 0.999);
  EXPECT_EQ(r.optim.eps, 1e-8);
  EXPECT_EQ(r.optim.grad_clip, 1.0);
  EXPECT_EQ(r.schedule.type, Schedule::Cosine);
  EXPECT_EQ(r.schedule.warmup_steps, 0);
  EXPECT_EQ(r.schedule.min_lr_ratio, 0.0);
  EXPECT_EQ(r.train.batch_size, 1);
  EXPECT_EQ(r.train.grad_accum, 1);
  EXPECT_EQ(r.train.max_steps, 0);
  EXPECT_EQ(r.train.epochs, 1.0);
  EXPECT_FALSE(r.train.activation_checkpointing);
  EXPECT_TRUE(r.train.train_modules.empty());
  EXPECT_EQ(r.checkpoint.every, 0);
  EXPECT_EQ(r.checkpoint.keep, 2);
  EXPECT_EQ(r.eval.every, 0);
  EXPECT_EQ(r.eval.max_batches, 0);
}

TEST(Recipe, CommentsAreAllowed) {
  Recipe r = load_text(R"(// a line comment
{
  /* a block
     comment */
  "name": "c", // after a value
  "model": "m", "output_dir": "o",
  "data": {"train": "d.jsonl"},
  "lora": {"r": 32 /* inline */}
})");
  EXPECT_EQ(r.name, "c");
  EXPECT_EQ(r.lora.r, 32);
}

TEST(Recipe, UnknownKeyNamesPathFileAndSuggestion) {
  std::string e = error_of(minimal_with(R"("lora": {"rnak": 8})"), {}, "typo.json");
  EXPECT_THAT(e, HasSubstr("typo.json"));
  EXPECT_THAT(e, HasSubstr("unknown key 'lora.rnak' (did you mean 'lora.r'?"));
  EXPECT_THAT(e, HasSubstr("alpha"));  // lists the keys that are allowed there

  EXPECT_THAT(error_of(minimal_with(R"("optim": {"bata1": 0.9})")),
              HasSubstr("unknown key 'optim.bata1' (did you mean 'optim.beta1'?"));
  EXPECT_THAT(error_of(minimal_with(R"("schedule": {"warmup_step": 3})")),
              HasSubstr("unknown key 'schedule.warmup_step' (did you mean 'schedule.warmup_steps'?"));
  // A key of another section written at the top level, and a PEFT/transformers name.
  EXPECT_THAT(error_of(minimal_with(R"("lr": 0.1)")), HasSubstr("unknown key 'lr' (did you mean 'optim.lr'?"));
  EXPECT_THAT(error_of(minimal_with(R"("optim": {"learning_rate": 0.1})")),
              HasSubstr("unknown key 'optim.learning_rate' (did you mean 'optim.lr'?"));
  EXPECT_THAT(
      error_of(
          R"({"name": "t", "model": "m", "output_dir": "o", "data": {"train": [{"path": "d", "fromat": "text"}]}})"),
      HasSubstr("unknown key 'data.train.0.fromat' (did you mean 'data.train.0.format'?"));
  // Nothing close: no suggestion, but still the path.
  std::string far = error_of(minimal_with(R"("zzzzzzzz": 1)"));
  EXPECT_THAT(far, HasSubstr("unknown key 'zzzzzzzz'"));
  EXPECT_THAT(far, Not(HasSubstr("did you mean")));
}

TEST(Recipe, WrongTypeNamesPathExpectedAndFound) {
  std::string e = error_of(minimal_with(R"("lora": {"r": "eight"})"), {}, "types.json");
  EXPECT_THAT(e, HasSubstr("types.json"));
  EXPECT_THAT(e, HasSubstr("'lora.r'"));
  EXPECT_THAT(e, HasSubstr("integer"));
  EXPECT_THAT(e, HasSubstr("string \"eight\""));
  e = error_of(minimal_with(R"("data": {"train": "d.jsonl", "packing": "yes"})"));
  EXPECT_THAT(e, HasSubstr("'data.packing' must be a boolean"));
  e = error_of(minimal_with(R"("optim": {"lr": true})"));
  EXPECT_THAT(e, HasSubstr("'optim.lr' must be a number, found boolean true"));
  e = error_of(minimal_with(R"("lora": [1, 2])"));
  EXPECT_THAT(e, HasSubstr("'lora' must be an object, found an array"));
  e = error_of(minimal_with(R"("data": {"train": 5})"));
  EXPECT_THAT(e, HasSubstr("'data.train' must be an array"));
  e = error_of(minimal_with(R"("data": {"train": "d", "columns": {"prompt": 3}})"));
  EXPECT_THAT(e, HasSubstr("'data.columns.prompt' must be a string, found number 3"));
  e = error_of(minimal_with(R"("lora": {"r": 4, "alpha": 8, "r": 16})"));  // the second would silently win
  EXPECT_THAT(e, HasSubstr("key 'lora.r' appears twice"));
  e = error_of(
      R"({"name": "t", "model": "m", "output_dir": "o", "data": {"train": [{"path": "a"}, {"path": "b", "path": "c"}]}})");
  EXPECT_THAT(e, HasSubstr("key 'data.train.1.path' appears twice"));
  EXPECT_THAT(error_of(R"([1, 2])"), HasSubstr("top level must be a JSON object"));
}

TEST(Recipe, IntegersAcceptWholeFloatsOnly) {
  EXPECT_EQ(load_text(minimal_with(R"("lora": {"r": 3.0})")).lora.r, 3);
  std::string e = error_of(minimal_with(R"("lora": {"r": 3.5})"));
  EXPECT_THAT(e, HasSubstr("'lora.r' must be an integer"));
  EXPECT_THAT(e, HasSubstr("3.5"));
  // And a number key takes an integer literal.
  EXPECT_EQ(load_text(minimal_with(R"("lora": {"alpha": 32})")).lora.alpha, 32.0);
}

TEST(Recipe, MissingRequiredKeysAreNamed) {
  std::string e = error_of(R"({"name": "t", "output_dir": "o", "data": {"train": "d"}})", {}, "missing.json");
  EXPECT_THAT(e, HasSubstr("missing.json"));
  EXPECT_THAT(e, HasSubstr("missing required key 'model'"));
  EXPECT_THAT(error_of(R"({"model": "m", "output_dir": "o", "data": {"train": "d"}})"),
              HasSubstr("missing required key 'name'"));
  EXPECT_THAT(error_of(R"({"name": "t", "model": "m", "data": {"train": "d"}})"),
              HasSubstr("missing required key 'output_dir'"));
  EXPECT_THAT(error_of(R"({"name": "t", "model": "m", "output_dir": "o"})"),
              HasSubstr("missing required key 'data.train'"));
  EXPECT_THAT(error_of(R"({"name": "t", "model": "m", "output_dir": "o", "data": {}})"),
              HasSubstr("missing required key 'data.train'"));
  EXPECT_THAT(error_of(R"({"name": "t", "model": "m", "output_dir": "o", "data": {"train": [{"format": "text"}]}})"),
              HasSubstr("missing required key 'data.train.0.path'"));
  EXPECT_THAT(error_of(R"({"name": "t", "model": "m", "output_dir": "o", "data": {"train": []}})"),
              HasSubstr("'data.train' must list at least one"));
  EXPECT_THAT(error_of(R"({"name": "", "model": "m", "output_dir": "o", "data": {"train": "d"}})"),
              HasSubstr("'name' must not be empty"));
}

TEST(Recipe, OutOfRangeValuesAreErrors) {
  struct Case {
    const char* extra;
    const char* key;
  };
  const Case cases[] = {
      {R"("lora": {"r": 0})", "'lora.r' must be >= 1"},
      {R"("lora": {"alpha": 0})", "'lora.alpha' must be > 0"},
      {R"("lora": {"dropout": 1.0})", "'lora.dropout' must be in [0, 1)"},
      {R"("lora": {"dropout": -0.1})", "'lora.dropout' must be in [0, 1)"},
      {R"("optim": {"lr": 0})", "'optim.lr' must be > 0"},
      {R"("train": {"batch_size": 0})", "'train.batch_size' must be >= 1"},
      {R"("train": {"grad_accum": 0})", "'train.grad_accum' must be >= 1"},
      {R"("data": {"train": "d", "seq_len": 7})", "'data.seq_len' must be >= 8"},
      {R"("data": {"train": "d", "eval_split": 1.0})", "'data.eval_split' must be in [0, 1)"},
      {R"("checkpoint": {"keep": 0})", "'checkpoint.keep' must be >= 1"},
      {R"("train": {"max_steps": -1})", "'train.max_steps' must be >= 0"},
      {R"("train": {"epochs": 0})", "'train.epochs' must be > 0 when 'train.max_steps' is 0"},
      {R"("schedule": {"warmup_steps": -5})", "'schedule.warmup_steps' must be >= 0"},
      {R"("lora": {"rank_pattern": {"q_proj": 0}})", "'lora.rank_pattern.q_proj' must be >= 1"},
      {R"("lora": {"targets": ["q_proj", "qkv"]})", "'lora.targets.1' must be one of q_proj, k_proj"},
      {R"("lora": {"targets": ["all-linear", "q_proj"]})", "'lora.targets' lists \"all-linear\" with other modules"},
      {R"("lora": {"targets": "q_proj"})",
       "'lora.targets' must be an array of module names or the string \"all-linear\""},
      {R"("lora": {"targets": []})", "'lora.targets' is empty"},
      {R"("schedule": {"type": "cosin"})",
       "'schedule.type' must be one of constant, linear, cosine; found \"cosin\" (did you mean 'cosine'?)"},
      {R"("device": "gpu")", "'device' must be one of auto, cpu, cuda, cuda:N"},
      {R"("device": "cuda:x")", "'device' must be one of"},
      {R"("dtype": "fp16")", "'dtype' must be one of bf16, f32"},
      {R"("stage": "ppo")", "'stage' must be one of sft, dpo"},
      {R"("data": {"train": [{"path": "d", "format": "chat"}]})",
       "'data.train.0.format' must be one of auto, text, messages"},
      {R"("data": {"train": "d", "truncation": "left"})", "'data.truncation' must be one of right, drop"},
      {R"("data": {"train": "d", "chat_format": "llama3"})",
       "'data.chat_format' must be one of auto, mistral_v1, mistral_v3"},
      {R"("data": {"train": "d", "eval": "e", "eval_split": 0.1})", "'data.eval' and 'data.eval_split' are both set"},
  };
  for (auto& c : cases) {
    std::string e = error_of(minimal_with(c.extra), {}, "range.json");
    EXPECT_THAT(e, HasSubstr(c.key)) << c.extra;
    EXPECT_THAT(e, HasSubstr("range.json")) << c.extra;
  }
  // The edges that are allowed.
  Recipe ok = load_text(minimal_with(
      R"("train": {"max_steps": 10, "epochs": 0}, "lora": {"r": 1, "dropout": 0.0}, "device": "cuda:12", "data": {"train": "d", "seq_len": 8, "eval_split": 0.5})"));
  EXPECT_EQ(ok.train.epochs, 0.0);
  EXPECT_EQ(ok.device, "cuda:12");
  EXPECT_EQ(ok.data.seq_len, 8);
}

TEST(Recipe, AllLinearAndShorthands) {
  Recipe r = load_text(minimal_with(R"("lora": {"targets": "all-linear"})"));
  EXPECT_EQ(r.lora.targets, (std::vector<std::string>{"all-linear"}));
  r = load_text(minimal_with(R"("lora": {"targets": ["all-linear"]})"));
  EXPECT_EQ(r.lora.targets, (std::vector<std::string>{"all-linear"}));
  r = load_text(
      R"({"name": "t", "model": "m", "output_dir": "o", "data": {"train": ["a.jsonl", {"path": "b.jsonl", "weight": 3}], "eval": "e.jsonl"}})");
  ASSERT_EQ(r.data.train.size(), 2u);
  EXPECT_EQ(r.data.train[0].path, "a.jsonl");
  EXPECT_EQ(r.data.train[1].path, "b.jsonl");
  EXPECT_EQ(r.data.train[1].weight, 3.0);
  ASSERT_TRUE(r.data.eval.has_value());
  EXPECT_EQ(r.data.eval->path, "e.jsonl");
  EXPECT_EQ(r.data.eval->format, "auto");
  r = load_text(R"({"name": "t", "model": "m", "output_dir": "o", "data": {"train": "a", "eval": null}})");
  EXPECT_FALSE(r.data.eval.has_value());
}

TEST(Recipe, SetOverrides) {
  Recipe r =
      load_text(kMinimal, {"optim.lr=1e-3", "output_dir=runs/b", "data.packing=true", "lora.targets=[\"q_proj\"]",
                           "data.train.0.path=x.jsonl", "data.train.1.path=y.jsonl", "data.columns.prompt=question",
                           "lora.rank_pattern.q_proj=4", "train.train_modules.0=norm"});
  EXPECT_EQ(r.optim.lr, 1e-3);                                      // number
  EXPECT_EQ(r.output_dir, "runs/b");                                // not JSON: a plain string
  EXPECT_TRUE(r.data.packing);                                      // bool
  EXPECT_EQ(r.lora.targets, (std::vector<std::string>{"q_proj"}));  // a JSON array
  ASSERT_EQ(r.data.train.size(), 2u);  // the shorthand "d.jsonl" expanded, then one appended
  EXPECT_EQ(r.data.train[0].path, "x.jsonl");
  EXPECT_EQ(r.data.train[1].path, "y.jsonl");
  EXPECT_EQ(r.data.columns.at("prompt"), "question");
  EXPECT_EQ(r.lora.rank_pattern.at("q_proj"), 4);
  EXPECT_EQ(r.train.train_modules, (std::vector<std::string>{"norm"}));
  // "42" parses as a number, so a string key rejects it and the message points at the override.
  std::string e = error_of(kMinimal, {"name=42"});
  EXPECT_THAT(e, HasSubstr("'name' must be a string, found number 42"));
  EXPECT_THAT(e, HasSubstr("--set name=42"));
  // Nested keys of a file that does not have the section yet, and replacing a whole section.
  r = load_text(kMinimal, {"schedule.warmup_steps=7", "eval={\"every\": 3}", "data.eval.path=e.jsonl"});
  EXPECT_EQ(r.schedule.warmup_steps, 7);
  EXPECT_EQ(r.eval.every, 3);
  ASSERT_TRUE(r.data.eval.has_value());
  EXPECT_EQ(r.data.eval->path, "e.jsonl");
  // Overrides apply after the file: the file's value is replaced.
  EXPECT_EQ(load_text(kFull, {"lora.r=64"}).lora.r, 64);
}

TEST(Recipe, SetOverrideErrorsNameTheOverride) {
  std::string e = error_of(kMinimal, {"lora.rnak=8"});
  EXPECT_THAT(e, HasSubstr("--set lora.rnak=8: unknown key 'lora.rnak' (did you mean 'lora.r'?"));
  EXPECT_THAT(error_of(kMinimal, {"optim.lr"}), HasSubstr("--set optim.lr: expected KEY=VALUE"));
  EXPECT_THAT(error_of(kMinimal, {"optim.lr.x=1"}), HasSubstr("'optim.lr' is a number, it has no key 'x'"));
  EXPECT_THAT(error_of(kMinimal, {"data.train.5.path=x"}),
              HasSubstr("'data.train' is an array; address an entry by index"));
  EXPECT_THAT(error_of(kMinimal, {"data.train.first.path=x"}), HasSubstr("'data.train' is an array"));
  EXPECT_THAT(error_of(kMinimal, {"data.train.0.nope=x"}),
              HasSubstr("--set data.train.0.nope=x: unknown key 'data.train.0.nope'"));
  EXPECT_THAT(error_of(kMinimal, {"lora.r=0"}), HasSubstr("'lora.r' must be >= 1"));
}

TEST(Recipe, ResolvedJsonRoundTrips) {
  for (const char* text : {kFull, kMinimal}) {
    Recipe r = load_text(text);
    nlohmann::json j = recipe_to_json(r);
    Recipe back = parse_recipe(j, "round-trip");
    expect_same_recipe(r, back);
    // Every key is present in the dump, defaults included.
    EXPECT_TRUE(j.at("optim").contains("eps"));
    EXPECT_TRUE(j.at("data").contains("eval"));
    EXPECT_TRUE(j.at("data").at("train").at(0).contains("weight"));
    EXPECT_EQ(recipe_to_json(back), j);
  }
  // Doubles survive the trip bit for bit.
  Recipe r = load_text(minimal_with(
      R"("optim": {"lr": 0.1, "eps": 1.2345678901234567e-9}, "data": {"train": "d", "eval_split": 0.3333333333333333})"));
  Recipe back = parse_recipe(nlohmann::json::parse(recipe_to_json(r).dump()), "text round-trip");
  expect_same_recipe(r, back);
}

TEST(Recipe, SyntaxErrorsGiveLineAndColumn) {
  // Trailing comma: the offending '}' is the first character of line 3.
  std::string e = error_of("{\n  \"name\": \"x\",\n}", {}, "syntax.json");
  EXPECT_THAT(e, HasSubstr("syntax.json:3:1:"));
  EXPECT_THAT(e, HasSubstr("JSON syntax error"));
  // After a comment line: `  "model": ]` has the ']' in column 12 of line 3.
  e = error_of("// header\n{\"name\": \"x\",\n  \"model\": ]\n}", {}, "syntax2.json");
  EXPECT_THAT(e, HasSubstr("syntax2.json:3:12:"));
  EXPECT_THAT(error_of("", {}, "empty.json"), HasSubstr("empty.json"));
  EXPECT_THAT(error_of("{}", {}, "missing.json") + "", HasSubstr("missing required key"));
  try {
    load_recipe("/nonexistent/dir/r.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& err) {
    EXPECT_THAT(err.what(), HasSubstr("/nonexistent/dir/r.json: cannot open"));
  }
}

TEST(Recipe, DocsMatchTheFieldTables) {
  std::string want = recipe_reference_markdown();
  // Spot checks written by hand: a row's cells, and a section per struct.
  EXPECT_THAT(want, HasSubstr("| `lora.r` | integer | `8` | no | >= 1 | adapter rank |"));
  EXPECT_THAT(want, HasSubstr("| `name` | string | - | yes |"));
  EXPECT_THAT(want, HasSubstr("| `schedule.type` | string | `\"cosine\"` | no | `constant`, `linear`, `cosine` |"));
  EXPECT_THAT(want, HasSubstr("| `data.train[].path` | string | - | yes |"));
  for (const char* s : {"## Top level", "## `data`", "## `data.train[]` (each entry)", "## `lora`", "## `optim`",
                        "## `schedule`", "## `train`", "## `checkpoint`", "## `eval`"})
    EXPECT_THAT(want, HasSubstr(s));

  std::ifstream in(test::repo_path("docs/recipes.md"), std::ios::binary);
  std::stringstream have;
  have << in.rdbuf();
  if (have.str() != want) {
    std::string fresh = fs::path(AFFINAGE_CLI_PATH).parent_path().string() + "/recipes.md";
    std::ofstream(fresh, std::ios::binary) << want;
    ADD_FAILURE() << "docs/recipes.md is out of date with the field tables in config/recipe_file.cpp; the current text "
                  << "was written to " << fresh << " - copy it over docs/recipes.md";
  }
}

TEST(Recipe, EveryBundledRecipeParses) {
  int n = 0;
  for (auto& entry : fs::directory_iterator(test::repo_path("recipes"))) {
    if (entry.path().extension() != ".json") continue;
    ++n;
    EXPECT_NO_THROW({
      try {
        load_recipe(entry.path().string());
      } catch (const Error& e) {
        ADD_FAILURE() << e.what();
        throw;
      }
    }) << entry.path();
  }
  EXPECT_GE(n, 3);

  Recipe s = load_recipe(test::repo_path("recipes/stories260k_sft.json"));
  EXPECT_EQ(s.model, "models/stories260K");
  EXPECT_TRUE(fs::exists(test::repo_path(s.model) + "/config.json"));
  // the files it names ship with the repo (paths resolve against the repository root, where it is run)
  for (auto& d : s.data.train) EXPECT_TRUE(fs::exists(test::repo_path(d.path))) << d.path;
  ASSERT_TRUE(s.data.eval.has_value());
  EXPECT_TRUE(fs::exists(test::repo_path(s.data.eval->path))) << s.data.eval->path;
  EXPECT_TRUE(s.data.packing);
  EXPECT_EQ(s.lora.targets, (std::vector<std::string>{"all-linear"}));
  EXPECT_EQ(s.dtype, "f32");
  EXPECT_EQ(s.output_dir, "runs/stories260k_sft");

  for (const char* name : {"recipes/mistral7b_v03_lora_sft.json", "recipes/mistral7b_v01_lora_sft.json"}) {
    Recipe m = load_recipe(test::repo_path(name));
    EXPECT_EQ(m.dtype, "bf16") << name;
    EXPECT_EQ(m.lora.r, 16) << name;
    EXPECT_EQ(m.lora.alpha, 32.0) << name;
    EXPECT_EQ(m.data.seq_len, 4096) << name;
    EXPECT_EQ(m.train.grad_accum, 8) << name;
    EXPECT_TRUE(m.train.activation_checkpointing) << name;
    EXPECT_EQ(m.data.train.at(0).format, "messages") << name;
    EXPECT_EQ(m.data.eval_split, 0.02) << name;
  }
}
