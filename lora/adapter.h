// LoRA adapters on a CausalLM: injection by target names and PEFT patterns, and the files at the boundary:
// PEFT folders (adapter_config.json + adapter_model.safetensors) both ways, and mistral-finetune's
// lora.safetensors (fixed scale 2.0, Mistral names, interleaved-RoPE rows in q/k lora_B).
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "config/recipe.h"
#include "model/model.h"

namespace affinage {

// The seven projection names LoRA can target; "all-linear" expands to all of them (never lm_head).
const std::vector<std::string>& lora_target_names();
std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets);

// PEFT's pattern rule: a rank/alpha pattern key k applies to module name m when m matches the regex
// "(.*\.)?(k)$"; the first matching key in the map's order wins. Returns nullptr when none applies.
const std::string* match_pattern(const std::vector<std::string>& keys, const std::string& module_name);

// PEFT's per-module rules: the rank of `module` (rank_pattern, else r) and the scale of its B·A given the rank
// it has (alpha from alpha_pattern, else alpha; over r, or over sqrt(r) with rsLoRA). Shared by injection,
// loading and merging, so a module is scaled the same everywhere.
int64_t module_rank(const LoraSettings& s, const std::string& module);
double module_scale(const LoraSettings& s, const std::string& module, int64_t r);

// Attaches fresh adapters (PEFT init) to every targeted LoraLinear of `model` per `lora` (targets may say
// "all-linear"). Returns the module names that got an adapter. Adapter weights in `dtype` (fp32 by default).
std::vector<std::string> inject_lora(CausalLMImpl& model, const LoraSettings& lora, uint64_t seed,
                                     torch::ScalarType dtype = torch::kFloat32);

// An adapter folder's description: its LoRA settings (targets as short names, e.g. ["q_proj","v_proj"]) and
// what PEFT's adapter_config.json adds around them.
struct AdapterInfo {
  LoraSettings lora;
  std::string base_model;                    // base_model_name_or_path
  std::vector<std::string> modules_to_save;  // fully trained modules saved beside the adapter
  nlohmann::json to_peft_config() const;
};

// Writes `model`'s adapters as a PEFT folder (atomically: a temp folder renamed into place). Tensor names
// "base_model.model.<module>.lora_A.weight" [r, in] and "...lora_B.weight" [out, r], in fp32.
// `extra` are fully trained parameters (HF names) saved under "base_model.model.<name>".
void save_peft_adapter(CausalLMImpl& model, const AdapterInfo& info, const std::string& dir,
                       const std::map<std::string, at::Tensor>& extra = {});

// Reads adapter_config.json of a PEFT folder with the checks load_peft_adapter makes (LORA only, no DoRA,
// bias "none", no fan_in_fan_out; unknown keys noted on stderr). Errors name the file and key.
AdapterInfo read_peft_config(const std::string& dir);

// Loads a PEFT LoRA folder made here or elsewhere onto `model` (adapters attached to the named modules
// with ranks from the tensor shapes, scale from lora_alpha / alpha_pattern / use_rslora). Unknown config
// keys are ignored with a note on stderr; unsupported features (DoRA, non-LoRA types, bias != "none",
// fan_in_fan_out) are errors naming the key. Errors name the file and tensor.
AdapterInfo load_peft_adapter(CausalLMImpl& model, const std::string& dir);

// mistral-finetune's lora.safetensors (alpha = 2r, scale 2.0): names like "layers.0.attention.wq.lora_A.weight".
AdapterInfo load_mistral_lora(CausalLMImpl& model, const std::string& path);

// Either of the above, by what `path` is (a folder with adapter_config.json, or a .safetensors file).
AdapterInfo load_adapter(CausalLMImpl& model, const std::string& path);

}  // namespace affinage
