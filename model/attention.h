// Attention pieces shared by training and generation: RoPE (rotate-half), the allowed-position mask
// (causal, per-document for packing, sliding window), and scaled-dot-product attention with GQA, in a
// plain path (works on every LibTorch) and a fused path (LibTorch's SDPA kernel where it exists).
#pragma once
#include <ATen/ATen.h>
#include <optional>

namespace affinage {

enum class AttnBackend { Auto, Plain, Fused };
// Whether this LibTorch has a fused SDPA kernel we can call (2.x: at::scaled_dot_product_attention;
// 1.13: at::_scaled_dot_product_attention, a composite).
bool fused_attention_available();

// cos/sin for rotate-half RoPE: positions [B, T] (int64) → two [B, T, head_dim] tensors in `dtype`
// (computed in fp32 as transformers does, then cast).
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& positions, int64_t head_dim, double theta,
                                               at::ScalarType dtype);
// x: [B, H, T, head_dim]; cos/sin: [B, T, head_dim]. Returns x·cos + rotate_half(x)·sin.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Allowed-attention mask [B, 1, Tq, Tk] (true = may attend) for queries at slots q_slots [B, Tq] over keys
// at slots 0..Tk-1: key slot <= query slot, same document when docs are given (q_docs [B,Tq], k_docs [B,Tk];
// undefined = one document), key valid when k_valid [B,Tk] is given, and query slot - key slot < window
// when a sliding window is set.
at::Tensor attention_mask(const at::Tensor& q_slots, int64_t tk, const at::Tensor& q_docs, const at::Tensor& k_docs,
                          const at::Tensor& k_valid, std::optional<int64_t> window);

// q: [B, H, Tq, D]; k, v: [B, Hkv, Tk, D] with H % Hkv == 0 (GQA: query head h uses kv head h / (H/Hkv)).
// mask: [B, 1, Tq, Tk] bool, or undefined for plain causal with Tq == Tk. Returns [B, H, Tq, D].
// Softmax in fp32 in both paths.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     AttnBackend impl = AttnBackend::Auto);

}  // namespace affinage
