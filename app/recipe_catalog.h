// The shipped recipes: found in $AFFINAGE_RECIPES, else recipes/ next to the executable or one folder above it
// (build/affinage -> recipes/), else ../share/affinage/recipes; listed with their comment headers, shown, copied.
#pragma once
#include <string>

namespace affinage {

std::string recipes_dir();
std::string list_recipes();                 // a line per recipe: name, summary, Hardware:, Time:
std::string find_recipe(std::string name);  // "name" or "name.json" -> its path; error when absent
// Copies recipe `name` to `dest` (a file, or a folder to copy into; never overwrites). Returns the new path.
std::string copy_recipe(const std::string& name, const std::string& dest);

}  // namespace affinage
