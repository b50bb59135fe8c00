// Supervised fine-tuning: a recipe with stage "sft" → a trained adapter under <output_dir>/adapter.
#pragma once
#include "config/recipe.h"
#include "train/stage.h"

namespace affinage {

StageResult run_sft(const Recipe& r, bool resume);

}  // namespace affinage
