// The Llama/Mistral decoder (LlamaForCausalLM / MistralForCausalLM) with module names equal to the Hugging
// Face tensor names, so loading is a name lookup: model.embed_tokens, model.layers.{i}.self_attn.{q,k,v,o}_proj,
// model.layers.{i}.mlp.{gate,up,down}_proj, model.layers.{i}.{input,post_attention}_layernorm, model.norm,
// lm_head (absent when tied). Shapes: B batch, T tokens, D hidden, H heads, Hkv kv heads, d head_dim.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include "io/model_config.h"
#include "model/attention.h"
#include "model/lora_linear.h"

namespace affinage {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& opts);
  // transformers' LlamaRMSNorm: normalize in fp32, cast back, then multiply by the weight.
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// The per-layer slice of a KV cache: slots [0, length) filled.
struct LayerCache {
  torch::Tensor k, v;  // [B, Hkv, capacity, d]
};

// Everything a forward pass needs besides the tokens, computed once per forward and shared by all layers.
struct AttentionContext {
  torch::Tensor cos, sin;    // [B, T, d]
  torch::Tensor mask;        // [B, 1, Tq, Tk] bool, or undefined = plain causal (Tq == Tk, no cache)
  int64_t cache_start = -1;  // with a cache: slot of the first query token
  AttnBackend impl = AttnBackend::Auto;
};

class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(const ModelConfig& c, const torch::TensorOptions& opts);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache);
  LoraLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t n_heads, n_kv_heads, head_dim;
};
TORCH_MODULE(SelfAttention);

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const ModelConfig& c, const torch::TensorOptions& opts);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  LoraLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& c, const torch::TensorOptions& opts);
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache = nullptr);
  SelfAttention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const ModelConfig& c, const torch::TensorOptions& opts);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

struct KVCache {
  std::vector<LayerCache> layers;
  torch::Tensor valid;  // [B, capacity] bool: slot holds a real token (false for left padding)
  int64_t length = 0;   // slots filled
  int64_t capacity = 0;
};

class CausalLMImpl : public torch::nn::Module {
 public:
  // Parameters are allocated uninitialized in opts' dtype/device; load weights or call init_random().
  CausalLMImpl(const ModelConfig& c, const torch::TensorOptions& opts);

  // Training/scoring forward over full rows. input_ids [B, T]; position_ids [B, T] (undefined = 0..T-1);
  // doc_ids [B, T] (undefined = one document per row): tokens attend only within their document (packing).
  // Returns the final-normed hidden states [B, T, D].
  torch::Tensor hidden_states(const torch::Tensor& input_ids, const torch::Tensor& position_ids = {},
                              const torch::Tensor& doc_ids = {});
  // Logits for hidden states [..., D] → [..., vocab] in the model dtype.
  torch::Tensor logits(const torch::Tensor& hidden);
  torch::Tensor forward(const torch::Tensor& input_ids) { return logits(hidden_states(input_ids)); }

  // Generation: a cache for B rows of up to `capacity` tokens.
  KVCache new_cache(int64_t batch, int64_t capacity);
  // Appends input_ids [B, t] at slots [cache.length, +t) with position_ids [B, t] and valid [B, t] (undefined
  // = all valid). Returns logits of the last position [B, vocab] in fp32.
  torch::Tensor forward_cached(const torch::Tensor& input_ids, const torch::Tensor& position_ids, KVCache& cache,
                               const torch::Tensor& valid = {});

  // The head's weight (lm_head.weight, or embed_tokens.weight when tied) [vocab, D].
  torch::Tensor head_weight();
  // Every LoraLinear in the model by its HF module name (e.g. "model.layers.0.self_attn.q_proj"), in order.
  std::vector<std::pair<std::string, LoraLinear>> linears();
  void set_attention_impl(AttnBackend impl) { attn_impl_ = impl; }
  // Activation checkpointing (recipe: train.activation_checkpointing): each decoder layer is run again in the
  // backward pass instead of keeping its activations.
  void set_recompute_layers(bool on) { recompute_layers_ = on; }
  void set_adapters_enabled(bool on);  // every LoRA adapter on or off at once

  const ModelConfig& config() const { return config_; }
  c10::ScalarType dtype() const { return dtype_; }
  LlamaModel model{nullptr};
  LoraLinear lm_head{nullptr};  // nullptr when tie_word_embeddings

 private:
  ModelConfig config_;
  c10::ScalarType dtype_;  // compute dtype of activations (the base weights' dtype)
  AttnBackend attn_impl_ = AttnBackend::Auto;
  bool recompute_layers_ = false;
};
TORCH_MODULE(CausalLM);

// Normal(0, 0.02) for matrices and embeddings, ones for norms (benchmarks and tests), seeded.
void init_random(CausalLMImpl& m, uint64_t seed);

}  // namespace affinage
