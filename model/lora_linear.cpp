// The linear layer with an optional LoRA adapter (see model/lora_linear.h).
#include "model/lora_linear.h"
#include <torch/nn/init.h>
#include <cmath>
#include "base/error.h"

namespace affinage {

LoraLinearImpl::LoraLinearImpl(int64_t in, int64_t out, const torch::TensorOptions& opts)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}, opts), /*requires_grad=*/false);
}

void LoraLinearImpl::attach_lora(int64_t r, double scale, double dropout, torch::ScalarType dtype) {
  if (r < 1) fail("LoRA rank must be >= 1, got ", r);
  remove_lora();
  rank_ = r, scale_ = scale, dropout_ = dropout;
  auto opts = torch::nn::LinearOptions(in_features, r).bias(false);
  lora_A = register_module("lora_A", torch::nn::Linear(opts));
  lora_B = register_module("lora_B", torch::nn::Linear(torch::nn::LinearOptions(r, out_features).bias(false)));
  lora_A->to(weight.device(), dtype);
  lora_B->to(weight.device(), dtype);
  torch::NoGradGuard ng;
  // PEFT: nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5)); nn.init.zeros_(lora_B.weight)
  torch::nn::init::kaiming_uniform_(lora_A->weight, std::sqrt(5.0));
  lora_B->weight.zero_();
  adapter_enabled_ = true;
}

void LoraLinearImpl::remove_lora() {
  if (!has_lora()) return;
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = nullptr;
  lora_B = nullptr;
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x) {
  // A fully trained layer keeps an fp32 master weight; compute in the activations' dtype.
  auto w = weight.scalar_type() == x.scalar_type() ? weight : weight.to(x.scalar_type());
  auto y = torch::nn::functional::linear(x, w);
  if (!has_lora() || !adapter_enabled_) return y;
  // The low-rank path adds no full-size temporary: the scale goes into the [..., r] intermediate and B's
  // product is accumulated into y in place (addmm_). With bf16/f16 activations it runs in their dtype, as
  // under autocast (the fp32 LoRA weights are cast; their gradients arrive in fp32); in f32 it is PEFT's sum.
  const auto dt = x.scalar_type();
  auto cast = [&](const torch::Tensor& t) { return t.scalar_type() == dt ? t : t.to(dt); };
  auto h = dropout_ > 0 && is_training() ? torch::dropout(x, dropout_, /*train=*/true) : x;
  auto a = torch::nn::functional::linear(h, cast(lora_A->weight)).mul_(scale_);
  y.view({-1, out_features}).addmm_(a.view({-1, rank_}), cast(lora_B->weight).t());
  return y;
}

torch::Tensor LoraLinearImpl::delta_weight() const {
  if (!has_lora()) fail("delta_weight: this layer has no LoRA adapter");
  return torch::matmul(lora_B->weight.to(torch::kFloat32), lora_A->weight.to(torch::kFloat32)) * scale_;
}

}  // namespace affinage
