// `affinage data check` for an SFT stage: every file read with the SFT loaders, truncated and made into rows
// exactly as build_sft_data does, with the statistics, row costs and shown samples (train/stage_check.h).
#pragma once
#include "train/stage_check.h"

namespace affinage {

void check_sft_data(const Recipe& r, const Tokenizer& tok, const CheckOptions& o, StageReport& rep);

}  // namespace affinage
