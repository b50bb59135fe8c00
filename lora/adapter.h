// LoRA adapters on a CausalLM: injection by target names and PEFT patterns, and the files at the boundary:
// PEFT folders (adapter_config.json + adapter_model.safetensors) both ways, and mistral-finetune's
// lora.safetensors (fixed scale 2.0, Mistral names, interleaved-RoPE rows in q/k lora_B).
#pragma once
#include <map>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "core/model.h"
#include "core/recipe.h"

namespace affinage {

// The seven projection names LoRA can target; "all-linear" expands to all of them (never lm_head).
const std::vector<std::string>& lora_target_names();
std::vector<std::string> expand_lora_targets(const std::vector<std::string>& targets);

// PEFT's pattern rule: a rank/alpha pattern key k applies to module name m when m matches the regex
// "(.*\.)?(k)$"; the first matching key in the map's order wins. Returns nullptr when none applies.
const std::string* match_pattern(const std::vector<std::string>& keys, const std::string& module_name);

// Attaches fresh adapters (PEFT init) to every targeted Linear of `model` per the recipe's lora section.
// Returns the module names that got an adapter. Adapter weights in `dtype` (fp32 by default).
std::vector<std::string> inject_lora(CausalLMImpl& model, const LoraConfig& cfg, uint64_t seed,
                                     torch::ScalarType dtype = torch::kFloat32);

// Everything PEFT needs to rebuild the adapter, recovered from or written to adapter_config.json.
struct AdapterInfo {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  bool rslora = false;
  std::vector<std::string> target_modules;      // short names, e.g. ["q_proj","v_proj"]
  std::map<std::string, int64_t> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  std::string base_model;                       // base_model_name_or_path
  std::vector<std::string> modules_to_save;     // fully trained modules saved beside the adapter
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

// The LoRA parameters PEFT gives `module` (e.g. "model.layers.0.self_attn.q_proj") of an adapter whose
// lora_A there has `r` rows: alpha from alpha_pattern (PEFT's rule) or lora_alpha; spec.scale() is
// alpha/r, or alpha/sqrt(r) with rsLoRA. Shared by loading (attach) and merging (ΔW = scale · B@A).
LoraSpec peft_module_spec(const AdapterInfo& info, const std::string& module, int64_t r);

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
