// The linear layer of every projection (q/k/v/o, gate/up/down, lm_head): a frozen base weight plus an
// optional LoRA adapter whose submodules are named lora_A / lora_B, so parameter names equal PEFT's
// ("...q_proj.lora_A.weight"). ΔW = B·A · scale; y = x·Wᵀ + scale · B(A(dropout(x))).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/dropout.h>

namespace affinage {

struct LoraSpec {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  bool rslora = false;  // scale alpha/sqrt(r) (rsLoRA) instead of alpha/r
  double scale() const;
};

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, const torch::TensorOptions& opts);
  // x: [..., in] in the base dtype → [..., out] in the base dtype.
  torch::Tensor forward(const torch::Tensor& x);

  // Adds a fresh adapter with PEFT's initialization: A Kaiming-uniform (a = sqrt(5)), B zero, both fp32
  // (or `dtype`). Replaces an existing one.
  void attach_lora(const LoraSpec& spec, torch::ScalarType dtype = torch::kFloat32);
  void remove_lora();
  bool has_lora() const { return !lora_A.is_empty(); }
  // A disabled adapter is skipped in forward: the base output comes back exactly (DPO's reference).
  void set_adapter_enabled(bool on) { adapter_enabled_ = on; }
  bool adapter_enabled() const { return adapter_enabled_; }
  const LoraSpec& lora_spec() const { return spec_; }
  double lora_scale() const { return scale_; }
  // ΔW = (B @ A) * scale in fp32, [out, in].
  torch::Tensor delta_weight() const;

  int64_t in_features, out_features;
  torch::Tensor weight;  // [out, in]
  torch::nn::Linear lora_A{nullptr};  // weight [r, in]
  torch::nn::Linear lora_B{nullptr};  // weight [out, r]

 private:
  LoraSpec spec_;
  double scale_ = 0.0;
  bool adapter_enabled_ = true;
};
TORCH_MODULE(Linear);

}  // namespace affinage
