// RoPE, attention masks and scaled-dot-product attention (see model/attention.h).
#include "model/attention.h"
#include <torch/version.h>
#include <cmath>
#include "base/error.h"

namespace affinage {

bool fused_attention_available() { return true; }  // 2.x: SDPA; 1.13: the private composite op

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& positions, int64_t head_dim, double theta,
                                               at::ScalarType dtype) {
  auto fopts = at::TensorOptions().dtype(at::kFloat).device(positions.device());
  // inv_freq = 1 / theta^(2i/d), i = 0..d/2-1 (transformers' default rope)
  auto inv_freq =
      1.0 / at::pow(theta, at::arange(0, head_dim, 2, fopts.dtype(at::kLong)).to(at::kFloat) / double(head_dim));
  auto freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, d/2]
  auto emb = at::cat({freqs, freqs}, -1);                          // [B, T, d]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // broadcast over heads
  return x * c + rotated * s;
}

at::Tensor attention_mask(const at::Tensor& q_slots, int64_t tk, const at::Tensor& q_docs, const at::Tensor& k_docs,
                          const at::Tensor& k_valid, std::optional<int64_t> window) {
  auto k_slots = at::arange(tk, q_slots.options().dtype(at::kLong));  // [Tk]
  auto qs = q_slots.unsqueeze(-1);                                    // [B, Tq, 1]
  auto mask = k_slots.view({1, 1, tk}) <= qs;                         // causal
  if (window) mask = mask & ((qs - k_slots.view({1, 1, tk})) < *window);
  if (q_docs.defined()) mask = mask & (q_docs.unsqueeze(-1) == k_docs.unsqueeze(1));
  // A padding query still sees itself, so no softmax row is empty (an all -inf row gives NaN, and NaN
  // values times zero weights would leak into real tokens).
  if (k_valid.defined()) mask = mask & (k_valid.unsqueeze(1) | (k_slots.view({1, 1, tk}) == qs));
  return mask.unsqueeze(1);  // [B, 1, Tq, Tk]
}

static at::Tensor repeat_kv(const at::Tensor& x, int64_t rep) {
  if (rep == 1) return x;
  auto s = x.sizes();  // [B, Hkv, T, D]
  return x.unsqueeze(2).expand({s[0], s[1], rep, s[2], s[3]}).reshape({s[0], s[1] * rep, s[2], s[3]});
}

static at::Tensor plain_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& mask) {
  double scale = 1.0 / std::sqrt(double(q.size(-1)));
  auto scores = at::matmul(q, k.transpose(-2, -1)) * scale;  // [B, H, Tq, Tk]
  at::Tensor m = mask;
  if (!m.defined()) {
    int64_t t = q.size(2);
    m = at::ones({t, t}, q.options().dtype(at::kBool)).tril().view({1, 1, t, t});
  }
  scores = scores.masked_fill(m.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, v);
}

static at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& mask) {
#if TORCH_VERSION_MAJOR >= 2
  if (!mask.defined()) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  return at::scaled_dot_product_attention(q, k, v, mask, 0.0, false);
#else
  // 1.13's private composite: an additive float mask is the form it documents.
  at::Tensor add;
  if (mask.defined()) {
    add = at::zeros(mask.sizes(), q.options()).masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
    return std::get<0>(at::_scaled_dot_product_attention(q, k, v, add, 0.0, false, false));
  }
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v, {}, 0.0, false, /*is_causal=*/true));
#endif
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     AttnBackend impl) {
  if (q.size(1) % k.size(1) != 0)
    fail("attention: ", q.size(1), " query heads is not a multiple of ", k.size(1), " key/value heads");
  int64_t rep = q.size(1) / k.size(1);
  auto kk = repeat_kv(k, rep), vv = repeat_kv(v, rep);
  if (impl == AttnBackend::Auto) impl = (TORCH_VERSION_MAJOR >= 2) ? AttnBackend::Fused : AttnBackend::Plain;
  return impl == AttnBackend::Fused ? fused_attention(q, kk, vv, mask) : plain_attention(q, kk, vv, mask);
}

}  // namespace affinage
