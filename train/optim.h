// AdamW with decoupled weight decay (no decay on biases and norms), global-norm gradient clipping and the
// learning-rate schedules. Written out rather than torch::optim::AdamW so its state is plain named
// tensors that checkpoints save and resume bit-exactly (tested against torch::optim::AdamW).
#pragma once
#include <ATen/ATen.h>
#include <map>
#include <string>
#include <vector>
#include "config/recipe.h"

namespace affinage {

struct NamedParam {
  std::string name;
  at::Tensor param;  // fp32 trainable tensor (requires_grad)
  bool decay = true;
};

// Norm weights, biases and 1-D tensors get no weight decay.
bool wants_weight_decay(const std::string& name, const at::Tensor& p);

class AdamW {
 public:
  AdamW(std::vector<NamedParam> params, const OptimConfig& cfg);
  // One update with learning rate `lr` from the params' current .grad (undefined grads count as zero).
  void step(double lr);
  int64_t steps() const { return t_; }
  const std::vector<NamedParam>& params() const { return params_; }
  // State as named tensors ("exp_avg.<name>", "exp_avg_sq.<name>") plus the step count.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::map<std::string, at::Tensor>& tensors, int64_t steps, const std::string& where);

 private:
  std::vector<NamedParam> params_;
  std::vector<at::Tensor> m_, v_;
  OptimConfig cfg_;
  int64_t t_ = 0;
};

// Global L2 norm of all grads (fp32); when max_norm > 0 and the norm exceeds it, grads are scaled by
// max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_ does. Returns the norm before clipping.
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);

// The learning rate for optimizer step `step` (0-based) of `total`, transformers' schedule semantics:
// warmup lr*step/warmup, then constant, linear to min_lr_ratio*lr, or half-cosine to min_lr_ratio*lr.
double lr_at(const ScheduleConfig& s, double lr, int64_t step, int64_t total);

}  // namespace affinage
