// The stage table (see app/stages.h): one line per stage.
#include "app/stages.h"
#include "dpo/check.h"
#include "dpo/dpo.h"
#include "sft/check.h"
#include "sft/sft.h"

namespace affinage {

const std::vector<StageDef>& stage_table() {
  static const std::vector<StageDef> table = {
      {Stage::Sft, "supervised fine-tuning on text, chats, prompt/completion or alpaca rows", run_sft, check_sft_data},
      {Stage::Dpo, "preference optimization (DPO, IPO, hinge, SimPO, ORPO) on chosen/rejected pairs", run_dpo,
       check_dpo_data},
  };
  return table;
}

const StageDef& stage_def(Stage s) {
  for (const StageDef& d : stage_table())
    if (d.stage == s) return d;
  fail("stage '", name_of(s), "' is declared in config/recipe.h but missing from the stage table (app/stages.cpp)");
}

}  // namespace affinage
