// Task metrics beyond loss, on JSONL files whose rows say what kind of task they are:
//  generation   {"prompt": text | messages, "reference": "..." | [...]}: greedy (or sampled) continuations,
//               scored by exact match, substring, whole word (case-insensitive, plural allowed) and, with
//               an extractor regex, the extracted answer's exact match
//  choice       {"prompt", "choices": [...], "answer": index | text}: each choice scored by the summed
//               log-likelihood of " choice" after the prompt; acc and acc_norm (log-likelihood per byte of
//               the choice, as lm-evaluation-harness)
//  preference   {"prompt", "chosen", "rejected"} (any TRL form): share of pairs whose chosen response the model
//               gives the higher summed log-probability (and per token)
//  loss         anything else: eval/perplexity.h
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include "config/recipe.h"
#include "model/generate.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace affinage {

struct TaskOptions {
  std::string type = "auto";  // auto | generation | choice | preference | loss
  int64_t batch = 8;
  int64_t max_new_tokens = 64;
  int64_t samples = 1;  // continuations per generation prompt (sampled when temperature > 0)
  double temperature = 0.0;
  uint64_t seed = 0;
  std::string extract;  // regex: the answer is its first capture group (or the whole match)
  int64_t seq_len = 0;  // loss tasks: context (0 = model maximum)
};

// The task type of a file from its first row (file:line error when it fits none).
std::string detect_task_type(const std::string& file);

// Runs the task; returns {"task": type, "rows": n, metric: value, ...} (all metrics in [0, 1] except loss).
nlohmann::json evaluate_task(CausalLMImpl& m, const Tokenizer& tok, const std::string& file, const TaskOptions& o);

// The recipe's eval.tasks on the model as it is (eval mode, no grad): {path: result, ...}; prints a line each.
nlohmann::json run_eval_tasks(const std::vector<EvalTask>& tasks, CausalLMImpl& m, const Tokenizer& tok, int64_t batch,
                              const std::string& label);

// Generation scoring rules, exposed for tests.
bool answer_exact(const std::string& output, const std::string& reference);       // equal after trimming
bool answer_contains(const std::string& output, const std::string& reference);    // case-insensitive substring
std::string extract_answer(const std::string& output, const std::string& regex);  // "" when no match

}  // namespace affinage
