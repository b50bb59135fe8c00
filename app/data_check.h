// `affinage data check` as a library: every row of every data file of a recipe stage validated with the
// loaders training uses (the stage's own check, app/stages.h), per-split statistics, an estimate of optimizer
// steps and time, and samples rendered with their trained tokens marked, so a user sees the data and the loss
// mask before spending GPU hours.
#pragma once
#include <string>
#include <vector>
#include "config/recipe.h"
#include "train/stage_check.h"

namespace affinage {

// Checks one stage recipe (no `stages`): files, rows, statistics, estimate and shown samples. Errors in the
// data are collected into the report, never thrown.
StageReport check_stage(const Recipe& r, const CheckOptions& o);

// The reports for people (`color`: ANSI colors for a terminal) or as one JSON document; `source` names what
// was checked. Returns the text to print.
std::string format_data_check(const std::vector<StageReport>& reports, const std::string& source, bool color);
std::string data_check_json(const std::vector<StageReport>& reports, const std::string& source);

}  // namespace affinage
