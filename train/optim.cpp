// AdamW, gradient clipping and learning-rate schedules (see train/optim.h).
#include "train/optim.h"
#include <cmath>
#include "base/error.h"

namespace affinage {

bool wants_weight_decay(const std::string& name, const at::Tensor& p) {
  if (p.dim() < 2) return false;
  if (name.find("norm") != std::string::npos || name.find("bias") != std::string::npos) return false;
  return true;
}

AdamW::AdamW(std::vector<NamedParam> params, const OptimConfig& cfg) : params_(std::move(params)), cfg_(cfg) {
  for (auto& p : params_) {
    m_.push_back(at::zeros_like(p.param, at::MemoryFormat::Contiguous));
    v_.push_back(at::zeros_like(p.param, at::MemoryFormat::Contiguous));
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard ng;
  ++t_;
  double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_));
  double bc2 = 1.0 - std::pow(cfg_.beta2, double(t_));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].param;
    auto g = p.grad();
    if (!g.defined()) g = at::zeros_like(p);
    if (params_[i].decay && cfg_.weight_decay > 0) p.mul_(1.0 - lr * cfg_.weight_decay);
    m_[i].mul_(cfg_.beta1).add_(g, 1.0 - cfg_.beta1);
    v_[i].mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
    // p -= lr * (m / bc1) / (sqrt(v / bc2) + eps), in torch's operation order
    auto denom = (v_[i].sqrt() / std::sqrt(bc2)).add_(cfg_.eps);
    p.addcdiv_(m_[i], denom, -lr / bc1);
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].name, m_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].name, v_[i]);
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& tensors, int64_t steps, const std::string& where) {
  at::NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [prefix, dst] : {std::pair{"exp_avg.", &m_[i]}, std::pair{"exp_avg_sq.", &v_[i]}}) {
      auto it = tensors.find(prefix + params_[i].name);
      if (it == tensors.end())
        fail(where, ": optimizer state lacks '", prefix, params_[i].name,
             "' (the checkpoint was made with other trainable parameters; resume with the same recipe)");
      if (it->second.sizes() != dst->sizes()) fail(where, ": optimizer state '", it->first, "' has the wrong shape");
      dst->copy_(it->second);
    }
  }
  t_ = steps;
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  at::NoGradGuard ng;
  at::Tensor sq;
  for (auto& p : params) {
    if (!p.param.grad().defined()) continue;
    auto s = p.param.grad().to(at::kFloat).pow(2).sum();
    sq = sq.defined() ? sq + s : s;
  }
  if (!sq.defined()) return 0.0;
  double norm = std::sqrt(sq.item<double>());
  if (max_norm > 0 && norm > max_norm) {
    double coef = max_norm / (norm + 1e-6);
    for (auto& p : params)
      if (p.param.grad().defined()) p.param.grad().mul_(coef);
  }
  return norm;
}

double lr_at(const ScheduleConfig& s, double lr, int64_t step, int64_t total) {
  if (step < s.warmup_steps) return lr * double(step) / double(std::max<int64_t>(1, s.warmup_steps));
  if (s.type == Schedule::Constant) return lr;
  double progress = double(step - s.warmup_steps) / double(std::max<int64_t>(1, total - s.warmup_steps));
  progress = std::min(1.0, std::max(0.0, progress));
  double floor = s.min_lr_ratio;
  if (s.type == Schedule::Linear) return lr * (floor + (1.0 - floor) * (1.0 - progress));
  return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + std::cos(M_PI * progress)));  // cosine
}

}  // namespace affinage
