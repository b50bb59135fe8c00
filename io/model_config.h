// The model's architecture, read from the checkpoint (HF config.json or Mistral params.json), never from a recipe.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

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
  std::string torch_dtype = "float32";            // "float32" | "bfloat16" | "float16"
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
  // FLOPs, the one formula for benchmarks (MFU) and the data check (time estimate), in the LoRA convention:
  // N = matmul parameters (q,k,v,o,gate,up,down in every layer + the head, shared with the embedding or not);
  // a forward token costs 2N plus causal attention, QK^T and AV over T/2 keys on average: 2·L·T·(H·d); a trained
  // token costs twice the matmuls (forward + input gradients: the frozen base has no weight gradients; LoRA's own
  // matmuls are left out) and three times the attention. T is the sequence's length, padding included.
  int64_t layer_matmul_params() const;  // the decoder layers' share of N
  int64_t head_matmul_params() const;   // vocab x hidden
  int64_t matmul_params() const { return layer_matmul_params() + head_matmul_params(); }
  double attention_flops_per_token(int64_t T) const;  // forward: 2·L·T·(H·d)
  double forward_flops(int64_t T) const;              // a whole sequence of T tokens: T·(2N + attention)
  double train_flops(int64_t T) const;                // T·(4N + 3·attention)
};

}  // namespace affinage
