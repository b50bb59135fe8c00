// Supervised fine-tuning: a recipe with stage "sft" → a trained adapter under <output_dir>/adapter.
#pragma once
#include "core/recipe.h"
#include "core/trainer.h"

namespace affinage {

struct SftResult {
  TrainSummary summary;
  nlohmann::json data_stats;  // train/eval DataStats
  nlohmann::json tasks = nlohmann::json::object();  // eval.tasks results: {"before": {...}, "after": {...}}
};

SftResult run_sft(const Recipe& r, bool resume);

}  // namespace affinage
