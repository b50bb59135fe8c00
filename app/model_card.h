// The README.md model card of a published folder: YAML front matter the Hugging Face Hub reads (base_model,
// library_name, license, tags, datasets, pipeline_tag) and a body made from a run's own files.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>
#include "app/run_summary.h"

namespace affinage {

struct CardInputs {
  std::string name;              // repo id, e.g. "me/stories260k-shakespeare"
  bool adapter = true;           // a PEFT adapter (library_name peft) or a full model (transformers)
  std::string base_model;        // Hub id for the front matter; empty: left out
  std::string base_model_local;  // the base as the run named it (a folder), shown in the body
  std::string license = "other";
  std::vector<std::string> datasets;  // Hub dataset ids for the front matter
  std::vector<std::string> tags;      // besides "affinage": stage, "lora", "merge", ...
  nlohmann::json recipe;              // RUN_DIR/recipe.json (null: no run found)
  std::optional<RunSummary> summary;  // RUN_DIR/summary.json (absent: the run did not finish)
  nlohmann::json data_stats;          // RUN_DIR/data_stats.json (null when absent)
  nlohmann::json merge;               // affinage_merge.json of a merged model (null otherwise)
  std::string version;                // affinage version
};

// Markdown with YAML front matter. Every section whose source is missing says so instead of vanishing.
std::string render_model_card(const CardInputs& in);

// Every data source under the recipe's "data" section (objects with a "path": train, eval, preference files...)
// with its role ("train[0]", "eval"), training files first.
std::vector<std::pair<std::string, nlohmann::json>> recipe_data_sources(const nlohmann::json& recipe);

}  // namespace affinage
