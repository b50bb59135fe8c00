// Preference losses (see dpo/losses.h for the formulas and the papers).
#include "dpo/losses.h"

namespace affinage {

bool preference_loss_needs_reference(DpoLoss t) {
  return t == DpoLoss::Sigmoid || t == DpoLoss::Hinge || t == DpoLoss::Ipo;
}

static at::Tensor logsig(const at::Tensor& x) { return at::log_sigmoid(x); }

PreferenceLoss preference_loss(const PreferenceInputs& in, const PreferenceLossConfig& c) {
  const double b = c.beta, eps = c.label_smoothing;
  PreferenceLoss out;
  if (preference_loss_needs_reference(c.type)) {
    at::Tensor pc = in.chosen_sum, pr = in.rejected_sum, rc = in.ref_chosen_sum, rr = in.ref_rejected_sum;
    if (c.type == DpoLoss::Ipo) {  // IPO compares per-token averages
      pc = pc / in.chosen_len;
      pr = pr / in.rejected_len;
      rc = rc / in.chosen_len;
      rr = rr / in.rejected_len;
    }
    auto x = (pc - pr) - (rc - rr);
    if (c.type == DpoLoss::Sigmoid) out.losses = -(1 - eps) * logsig(b * x) - eps * logsig(-b * x);
    else if (c.type == DpoLoss::Hinge) out.losses = at::relu(1 - b * x);
    else out.losses = (x - 1 / (2 * b)).pow(2);
    out.chosen_rewards = (b * (in.chosen_sum - in.ref_chosen_sum)).detach();
    out.rejected_rewards = (b * (in.rejected_sum - in.ref_rejected_sum)).detach();
    return out;
  }
  auto ac = in.chosen_sum / in.chosen_len, ar = in.rejected_sum / in.rejected_len;
  if (c.type == DpoLoss::Simpo) {
    auto z = b * (ac - ar) - c.simpo_gamma;
    out.losses = -(1 - eps) * logsig(z) - eps * logsig(-z);
  } else {  // orpo. log odds(p) = log p - log(1 - p), with log p the averaged log-prob (always < 0)
    auto log_odds = (ac - ar) - (at::log1p(-at::exp(ac)) - at::log1p(-at::exp(ar)));
    out.losses = -ac - b * logsig(log_odds);
  }
  out.chosen_rewards = (b * ac).detach();
  out.rejected_rewards = (b * ar).detach();
  return out;
}

}  // namespace affinage
