// `affinage data check` for a DPO stage: every file read with the preference loaders, truncated exactly as
// build_preference_data does, with the statistics, pair costs (and the reference's) and shown pairs.
#pragma once
#include "train/stage_check.h"

namespace affinage {

void check_dpo_data(const Recipe& r, const Tokenizer& tok, const CheckOptions& o, StageReport& rep);

}  // namespace affinage
