// The linear layer of every projection (q/k/v/o, gate/up/down, lm_head): a frozen base weight plus an
// optional LoRA adapter whose submodules are named lora_A / lora_B, so parameter names equal PEFT's
// ("...q_proj.lora_A.weight"). ΔW = B·A · scale; y = x·Wᵀ + scale · B(A(dropout(x))).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

namespace affinage {

class LoraLinearImpl : public torch::nn::Module {
 public:
  LoraLinearImpl(int64_t in_features, int64_t out_features, const torch::TensorOptions& opts);
  // x: [..., in] in the base dtype → [..., out] in the base dtype.
  torch::Tensor forward(const torch::Tensor& x);

  // Adds a fresh adapter of rank r with PEFT's initialization: A Kaiming-uniform (a = sqrt(5)), B zero, both
  // fp32 (or `dtype`). `scale` multiplies B·A (alpha/r, or alpha/sqrt(r) with rsLoRA: lora/adapter.h decides);
  // `dropout` applies to the adapter's input in training. Replaces an existing adapter.
  void attach_lora(int64_t r, double scale, double dropout = 0.0, torch::ScalarType dtype = torch::kFloat32);
  void remove_lora();
  bool has_lora() const { return !lora_A.is_empty(); }
  // A disabled adapter is skipped in forward: the base output comes back exactly (DPO's reference).
  void set_adapter_enabled(bool on) { adapter_enabled_ = on; }
  bool adapter_enabled() const { return adapter_enabled_; }
  int64_t lora_rank() const { return rank_; }
  double lora_scale() const { return scale_; }
  double lora_dropout() const { return dropout_; }
  // ΔW = (B @ A) * scale in fp32, [out, in].
  torch::Tensor delta_weight() const;

  int64_t in_features, out_features;
  torch::Tensor weight;               // [out, in]
  torch::nn::Linear lora_A{nullptr};  // weight [r, in]
  torch::nn::Linear lora_B{nullptr};  // weight [out, r]

 private:
  int64_t rank_ = 0;
  double scale_ = 0.0, dropout_ = 0.0;
  bool adapter_enabled_ = true;
};
TORCH_MODULE(LoraLinear);

}  // namespace affinage
