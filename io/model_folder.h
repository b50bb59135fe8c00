// Model folders: Hugging Face (single or sharded safetensors + index) and Mistral consolidated, both ways.
#pragma once
#include <ATen/ATen.h>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "io/model_config.h"
#include "io/safetensors.h"

namespace affinage {

// Reads config.json or params.json from a model folder.
ModelConfig load_model_config(const std::string& dir);

// The weights of a model folder under Hugging Face names, read one tensor at a time.
// Formats: "hf" (model.safetensors), "hf-sharded" (model.safetensors.index.json + shards),
// "mistral" (consolidated.safetensors + params.json: names mapped to HF, wq/wk (and their LoRA B)
// permuted from interleaved to rotate-half RoPE).
class WeightSource {
 public:
  explicit WeightSource(const std::string& dir);
  const std::string& dir() const { return dir_; }
  const std::string& format() const { return format_; }
  const ModelConfig& config() const { return config_; }
  std::vector<std::string> names() const;  // HF names, sorted
  bool has(const std::string& hf_name) const;
  // Owned CPU tensor in the checkpoint's dtype or `dtype`. Error names the tensor and the folder.
  at::Tensor load(const std::string& hf_name, std::optional<at::ScalarType> dtype = std::nullopt) const;
  std::vector<int64_t> shape(const std::string& hf_name) const;
  // Drops the tensor's mapped pages from resident memory after load() (see SafetensorsFile::release).
  void release(const std::string& hf_name) const;
  std::string dtype_name(const std::string& hf_name) const;  // "BF16", ...

 private:
  std::string dir_, format_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  struct Entry {
    size_t file;
    std::string stored_name;
    bool permute_rope_rows = false;
    int64_t heads = 0;
  };
  std::map<std::string, Entry> entries_;
};

// Streams tensors into a Hugging Face folder: model.safetensors when everything fits one shard, else
// model-0000i-of-0000N.safetensors + model.safetensors.index.json. A shard is written when it is full,
// so memory stays near one shard. Files go to temporary names and are renamed by finish(); an
// unfinished writer (exception, crash) leaves no file under a final name.
class ShardedWriter {
 public:
  ShardedWriter(const std::string& dir, uint64_t max_shard_bytes = 5ull << 30);
  ~ShardedWriter();
  void add(const std::string& name, const at::Tensor& t);
  void finish();  // writes the last shard, the index when sharded, and renames everything into place
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Mistral consolidated export: HF names → Mistral names, q/k rows permuted back to interleaved.
std::string hf_to_mistral_name(const std::string& hf_name);  // throws for names without a mapping
std::string mistral_to_hf_name(const std::string& m_name);
at::Tensor permute_rotate_half_to_interleaved(const at::Tensor& w, int64_t n_heads);  // rows of q/k (HF → Mistral)
at::Tensor permute_interleaved_to_rotate_half(const at::Tensor& w, int64_t n_heads);  // Mistral → HF

}  // namespace affinage
