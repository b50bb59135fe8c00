// The stage table: every training stage declared once, by its recipe name. A new stage is its own folder (its
// run function and its data check), its recipe section (config/recipe.h: a Stage value, its settings), and one
// line in app/stages.cpp; `affinage run`, multi-stage recipes, `data check`, summary.json, the report and the
// model card then know it.
#pragma once
#include <string>
#include <vector>
#include "config/recipe.h"
#include "train/stage.h"
#include "train/stage_check.h"

namespace affinage {

struct StageDef {
  Stage stage;
  std::string summary;  // one line for `affinage --help` and docs
  StageResult (*run)(const Recipe& r, bool resume);
  void (*check_data)(const Recipe& r, const Tokenizer& tok, const CheckOptions& o, StageReport& rep);
};

const std::vector<StageDef>& stage_table();
const StageDef& stage_def(Stage s);

}  // namespace affinage
