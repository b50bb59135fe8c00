// `affinage inspect`: what a safetensors file, a model folder or a PEFT adapter folder holds, as JSON (fields
// in the order a reader expects) and as text.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace affinage {

// The description of `path` ("kind": "safetensors" | "model" | "adapter"). Errors name the path.
nlohmann::ordered_json inspect_path(const std::string& path);
std::string format_inspect(const nlohmann::ordered_json& description);

}  // namespace affinage
