// The model's architecture, read from the checkpoint (HF config.json or Mistral params.json), never from a recipe.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <nlohmann/json.hpp>

namespace affinage {

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // or "MistralForCausalLM"
  std::string model_type = "llama";               // "llama" | "mistral"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // config.json "head_dim" when present, else hidden_size / num_attention_heads
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<int64_t> sliding_window;  // null = full causal attention
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  std::string torch_dtype = "float32";  // "float32" | "bfloat16" | "float16"
  nlohmann::json raw = nlohmann::json::object();  // the file as read; kept so a rewrite preserves unknown fields

  // Strict parse of a Hugging Face config.json. `where` names the file in error messages.
  // Unknown architectures, missing required fields and wrong types are errors naming the key.
  static ModelConfig from_hf_json(const nlohmann::json& j, const std::string& where);
  // Mistral's params.json (dim, n_layers, head_dim, hidden_dim, n_heads, n_kv_heads, norm_eps, vocab_size, ...).
  static ModelConfig from_mistral_params(const nlohmann::json& j, const std::string& where);
  // A config.json that transformers loads (raw fields kept, ours overwritten; torch_dtype as given).
  nlohmann::json to_hf_json() const;
  // Mistral params.json for the consolidated export.
  nlohmann::json to_mistral_params() const;
  // Parameter count of the matmuls (q,k,v,o,gate,up,down + head), the N of "6N / 4N FLOPs per token".
  int64_t matmul_params() const;
};

}  // namespace affinage
