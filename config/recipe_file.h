// Recipe files: strict parsing into config/recipe.h, `--set` overrides, the resolved dump, multi-stage expansion
// and the generated reference (docs/recipes.md). Errors name the key path ("lora.r") and the file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "base/error.h"
#include "config/recipe.h"

namespace affinage {

// Parses a recipe file: comments (// and /* */) allowed; `overrides` are "a.b=value" strings applied after
// the file (value parsed as JSON when it parses, else taken as a string). Errors name the key path and file.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
Recipe parse_recipe(const nlohmann::json& j, const std::string& where);
nlohmann::json recipe_to_json(const Recipe& r);  // the fully resolved recipe, every key present
// The runs a recipe describes: itself when `stages` is empty; else one recipe per stage: this recipe's keys
// with the stage's keys merged over them (JSON merge patch), output_dir `<output_dir>/<k>-<stage>` unless
// the stage sets one, and, for every stage after the first that does not set `lora.init_from` itself, the
// previous stage's adapter as `lora.init_from` (SFT then DPO on the SFT adapter). Errors name the stage.
std::vector<Recipe> expand_stages(const Recipe& r);
// Markdown reference of every key (type, default, required, meaning), generated from the field tables.
std::string recipe_reference_markdown();

// `name` as a value of E (its recipe spelling), or an error that lists the allowed names after `what`.
template <class E>
E parse_enum(const std::string& name, const std::string& what) {
  std::string allowed;
  for (auto& [e, n] : enum_names<E>()) {
    if (n == name) return e;
    allowed += (allowed.empty() ? "" : ", ") + n;
  }
  fail(what, ": '", name, "' is not one of ", allowed);
}

}  // namespace affinage
