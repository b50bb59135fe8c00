// Folding PEFT LoRA adapters into a base model's weights, tensor by tensor, into a new model folder
// (Hugging Face sharded safetensors, or Mistral consolidated). See docs/merge_publish.md.
#pragma once
#include <ATen/ATen.h>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>
#include "lora/combine.h"

namespace affinage {

struct AdapterInput {
  std::string dir;      // a PEFT folder: adapter_config.json + adapter_model.safetensors
  double weight = 1.0;  // w_i of the combination
};

struct MergeOptions {
  std::string model_dir;                 // base: hf, hf-sharded or mistral folder (WeightSource)
  std::vector<AdapterInput> adapters;    // at least one
  std::string out_dir;                   // must not exist, or be an empty folder
  CombineOptions combine;                // method, density, seed
  std::optional<at::ScalarType> dtype;   // output dtype of floating tensors; default: the base's torch_dtype
  uint64_t shard_bytes = 5000000000ull;  // HF output: max bytes per shard ("5GB" as transformers counts it)
  std::string format = "hf";             // "hf" | "mistral"
  std::function<void(size_t done, size_t total)> progress;  // called after each tensor
};

struct MergeSummary {
  size_t tensors = 0;       // tensors written
  size_t lora_modules = 0;  // tensors that received a ΔW
  size_t replaced = 0;      // tensors replaced by an adapter's modules_to_save weight
  uint64_t bytes = 0;       // tensor bytes written
  at::ScalarType dtype = at::kFloat;
  std::vector<std::string> files;  // file names in the output folder
};

// Reads every adapter first (config, tensor names, shapes against the base, ranks against r/rank_pattern)
// so a bad input fails before anything is written. Then for each base tensor: W' = W + combine(ΔW_i) in
// fp32, where ΔW_i = scale_i · B_i @ A_i with PEFT's scale (lora_alpha or alpha_pattern over r, or over
// sqrt(r) with use_rslora), cast to the output dtype and streamed out. A modules_to_save tensor
// ("base_model.model.<name>") replaces the base tensor (its weight does not apply; two adapters replacing
// the same tensor is an error). Memory stays near one output shard plus a few tensors: base tensors are
// read one at a time and their mapped pages released, and glibc's mmap threshold is fixed at 1 MB
// (process-wide) so freed tensors go back to the system. The folder is built under a temporary name and
// renamed into place. Also written: config.json (torch_dtype = output dtype) or params.json,
// generation_config.json, tokenizer and license files of the base, and affinage_merge.json (what was merged).
MergeSummary merge_adapters(const MergeOptions& opts);

// "5GB" (10^9, as transformers' max_shard_size), "500MB", "2GiB" (2^30), "1e9", "123" (bytes). `what`
// names the option in errors.
uint64_t parse_byte_size(const std::string& s, const std::string& what);

}  // namespace affinage
