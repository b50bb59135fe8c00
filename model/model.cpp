// The Llama/Mistral decoder (see model/model.h).
#include "model/model.h"
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/autograd.h>
#include <torch/nn/functional/activation.h>
#include "base/error.h"
#include "model/kernels/fused.h"

namespace affinage {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, const torch::TensorOptions& opts) : eps(eps_) {
  weight = register_parameter("weight", torch::empty({dim}, opts), false);
}

// RMSNorm, RoPE and SwiGLU run fused where that pays (model/kernels/fused.h: on CUDA with the kernels built, on
// CPU where bench/bench_kernels measured the twin faster), else as the ATen composites.
torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  if (use_fused(FusedOp::RMSNorm, x)) return fused_rms_norm(x, weight, eps);
  return rms_norm_composite(x, weight, eps);
}

static torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return use_fused(FusedOp::Rope, x) ? fused_apply_rope(x, cos, sin) : apply_rope(x, cos, sin);
}

SelfAttentionImpl::SelfAttentionImpl(const ModelConfig& c, const torch::TensorOptions& opts)
    : n_heads(c.num_attention_heads), n_kv_heads(c.num_key_value_heads), head_dim(c.head_dim) {
  q_proj = register_module("q_proj", LoraLinear(c.hidden_size, n_heads * head_dim, opts));
  k_proj = register_module("k_proj", LoraLinear(c.hidden_size, n_kv_heads * head_dim, opts));
  v_proj = register_module("v_proj", LoraLinear(c.hidden_size, n_kv_heads * head_dim, opts));
  o_proj = register_module("o_proj", LoraLinear(n_heads * head_dim, c.hidden_size, opts));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache) {
  int64_t B = x.size(0), T = x.size(1);
  auto q = q_proj(x).view({B, T, n_heads, head_dim}).transpose(1, 2);     // [B, H, T, d]
  auto k = k_proj(x).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);  // [B, Hkv, T, d]
  auto v = v_proj(x).view({B, T, n_kv_heads, head_dim}).transpose(1, 2);
  q = rope(q, ctx.cos, ctx.sin);
  k = rope(k, ctx.cos, ctx.sin);
  if (cache) {
    cache->k.narrow(2, ctx.cache_start, T).copy_(k);
    cache->v.narrow(2, ctx.cache_start, T).copy_(v);
    k = cache->k.narrow(2, 0, ctx.cache_start + T);
    v = cache->v.narrow(2, 0, ctx.cache_start + T);
  }
  auto out = attention(q, k, v, ctx.mask, ctx.impl);  // [B, H, T, d]
  return o_proj(out.transpose(1, 2).reshape({B, T, n_heads * head_dim}));
}

MLPImpl::MLPImpl(const ModelConfig& c, const torch::TensorOptions& opts) {
  gate_proj = register_module("gate_proj", LoraLinear(c.hidden_size, c.intermediate_size, opts));
  up_proj = register_module("up_proj", LoraLinear(c.hidden_size, c.intermediate_size, opts));
  down_proj = register_module("down_proj", LoraLinear(c.intermediate_size, c.hidden_size, opts));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  auto gate = gate_proj(x), up = up_proj(x);
  return down_proj(use_fused(FusedOp::SwiGLU, gate) ? fused_swiglu(gate, up) : swiglu_composite(gate, up));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, const torch::TensorOptions& opts) {
  self_attn = register_module("self_attn", SelfAttention(c, opts));
  mlp = register_module("mlp", MLP(c, opts));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, opts));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, opts));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, LayerCache* cache) {
  auto h = x + self_attn->forward(input_layernorm(x), ctx, cache);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& c, const torch::TensorOptions& opts) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  embed_tokens->weight.set_requires_grad(false);
  {
    torch::NoGradGuard ng;
    embed_tokens->weight.set_data(torch::empty({c.vocab_size, c.hidden_size}, opts));
  }
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c, opts));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, opts));
}

// Activation checkpointing of one decoder layer (reentrant, like torch.utils.checkpoint's original form):
// forward runs without saving activations; backward re-runs the layer with grad enabled from the saved
// input, with the RNG state of the first run (LoRA dropout draws the same mask), and back-propagates
// through the recomputed graph, which accumulates the parameter gradients directly.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  // Only defined tensors may be Function inputs, so the layer and its AttentionContext travel as pointers
  // (both outlive the call) and the context's tensors are kept in saved_data for backward.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, int64_t layer_ptr,
                               int64_t actx_ptr) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(layer_ptr);
    const auto& actx = *reinterpret_cast<const AttentionContext*>(actx_ptr);
    auto gen = at::globalContext().defaultGenerator(x.device());
    ctx->saved_data["rng"] = gen.get_state();
    ctx->saved_data["layer"] = layer_ptr;
    ctx->saved_data["cos"] = actx.cos;
    ctx->saved_data["sin"] = actx.sin;
    ctx->saved_data["has_mask"] = actx.mask.defined();
    if (actx.mask.defined()) ctx->saved_data["mask"] = actx.mask;
    ctx->saved_data["impl"] = static_cast<int64_t>(actx.impl);
    ctx->save_for_backward({x});
    return layer->forward(x, actx);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    AttentionContext actx{ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor(),
                          ctx->saved_data["has_mask"].toBool() ? ctx->saved_data["mask"].toTensor() : torch::Tensor(),
                          -1, static_cast<AttnBackend>(ctx->saved_data["impl"].toInt())};
    auto gen = at::globalContext().defaultGenerator(x.device());
    auto now = gen.get_state();
    gen.set_state(ctx->saved_data["rng"].toTensor());
    torch::Tensor y;
    {
      torch::AutoGradMode on(true);
      y = layer->forward(x, actx);
    }
    gen.set_state(now);
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor()};
  }
};

CausalLMImpl::CausalLMImpl(const ModelConfig& c, const torch::TensorOptions& opts)
    : config_(c), dtype_(c10::typeMetaToScalarType(opts.dtype())) {
  if (c.hidden_size <= 0 || c.num_hidden_layers <= 0 || c.num_attention_heads <= 0 || c.head_dim <= 0 ||
      c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0 || c.head_dim % 2 != 0)
    fail("model config: inconsistent sizes (hidden ", c.hidden_size, ", heads ", c.num_attention_heads, ", kv heads ",
         c.num_key_value_heads, ", head_dim ", c.head_dim, ")");
  model = register_module("model", LlamaModel(c, opts));
  if (!c.tie_word_embeddings) lm_head = register_module("lm_head", LoraLinear(c.hidden_size, c.vocab_size, opts));
}

torch::Tensor CausalLMImpl::head_weight() { return lm_head.is_empty() ? model->embed_tokens->weight : lm_head->weight; }

torch::Tensor CausalLMImpl::logits(const torch::Tensor& hidden) {
  if (!lm_head.is_empty()) return lm_head(hidden);
  return torch::nn::functional::linear(hidden, model->embed_tokens->weight.to(hidden.scalar_type()));
}

torch::Tensor CausalLMImpl::hidden_states(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                                          const torch::Tensor& doc_ids) {
  int64_t B = input_ids.size(0), T = input_ids.size(1);
  auto pos = position_ids.defined()
                 ? position_ids
                 : torch::arange(T, input_ids.options().dtype(torch::kLong)).unsqueeze(0).expand({B, T});
  auto h = model->embed_tokens(input_ids).to(dtype_);
  auto [cos, sin] = rope_cos_sin(pos, config_.head_dim, config_.rope_theta, h.scalar_type());
  AttentionContext ctx{cos, sin, {}, -1, attn_impl_};
  if (doc_ids.defined() || config_.sliding_window) {
    auto slots = torch::arange(T, input_ids.options().dtype(torch::kLong)).unsqueeze(0).expand({B, T});
    ctx.mask = attention_mask(slots, T, doc_ids, doc_ids, {}, config_.sliding_window);
  }
  bool ckpt = recompute_layers_ && torch::GradMode::is_enabled();
  // A checkpointed block's output needs grad only if an input does; the frozen embedding output does not,
  // so make it a leaf that asks for one (a [B, T, D] gradient, small next to the activations saved).
  if (ckpt && !h.requires_grad()) h = h.detach().requires_grad_(true);
  for (auto& m : *model->layers) {
    auto* layer = m->as<DecoderLayerImpl>();
    if (ckpt) h = CheckpointedLayer::apply(h, reinterpret_cast<int64_t>(layer), reinterpret_cast<int64_t>(&ctx));
    else h = layer->forward(h, ctx);
  }
  return model->norm(h);
}

KVCache CausalLMImpl::new_cache(int64_t batch, int64_t capacity) {
  KVCache c;
  auto opts = model->embed_tokens->weight.options().dtype(dtype_);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i)
    c.layers.push_back({torch::zeros({batch, config_.num_key_value_heads, capacity, config_.head_dim}, opts),
                        torch::zeros({batch, config_.num_key_value_heads, capacity, config_.head_dim}, opts)});
  c.valid = torch::zeros({batch, capacity}, opts.dtype(torch::kBool));
  c.capacity = capacity;
  return c;
}

torch::Tensor CausalLMImpl::forward_cached(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                                           KVCache& cache, const torch::Tensor& valid) {
  int64_t B = input_ids.size(0), T = input_ids.size(1);
  if (cache.length + T > cache.capacity)
    fail("KV cache full: ", cache.length, " + ", T, " tokens > capacity ", cache.capacity);
  cache.valid.narrow(1, cache.length, T).copy_(valid.defined() ? valid : torch::ones({B, T}, cache.valid.options()));
  auto h = model->embed_tokens(input_ids).to(dtype_);
  auto [cos, sin] = rope_cos_sin(position_ids, config_.head_dim, config_.rope_theta, h.scalar_type());
  auto slots = torch::arange(cache.length, cache.length + T, input_ids.options().dtype(torch::kLong))
                   .unsqueeze(0)
                   .expand({B, T});
  auto kvalid = cache.valid.narrow(1, 0, cache.length + T);
  AttentionContext ctx{cos, sin, attention_mask(slots, cache.length + T, {}, {}, kvalid, config_.sliding_window),
                       cache.length, attn_impl_};
  int64_t i = 0;
  for (auto& m : *model->layers) h = m->as<DecoderLayerImpl>()->forward(h, ctx, &cache.layers[i++]);
  cache.length += T;
  return logits(model->norm(h.narrow(1, T - 1, 1))).squeeze(1).to(torch::kFloat32);
}

std::vector<std::pair<std::string, LoraLinear>> CausalLMImpl::linears() {
  std::vector<std::pair<std::string, LoraLinear>> out;
  for (auto& item : named_modules("", /*include_self=*/false)) {
    if (item.value()->as<LoraLinearImpl>())
      out.emplace_back(item.key(), LoraLinear(std::dynamic_pointer_cast<LoraLinearImpl>(item.value())));
  }
  return out;
}

void CausalLMImpl::set_adapters_enabled(bool on) {
  for (auto& [name, lin] : linears()) lin->set_adapter_enabled(on);
}

void init_random(CausalLMImpl& m, uint64_t seed) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : m.named_parameters()) {
    auto t = torch::empty(p.value().sizes(), torch::kFloat32);
    if (p.key().find("norm") != std::string::npos) t.fill_(1.0);
    else t.normal_(0.0, 0.02, gen);
    p.value().copy_(t);
  }
}

}  // namespace affinage
