// Preference losses on per-pair log-probabilities, with TRL's names for the logged rewards.
//  sigmoid: DPO, Rafailov et al. 2023 (arXiv:2305.18290); label smoothing = cDPO (Mitchell 2023, "A note on DPO
//           with noisy preferences"): -(1-eps)·logσ(βx) - eps·logσ(-βx), x = (πc-πr) - (refc-refr)
//  hinge:   SLiC-style, Zhao et al. 2023 (arXiv:2305.10425): relu(1 - βx)
//  ipo:     Azar et al. 2023 (arXiv:2310.12036): (x - 1/(2β))², log-probs averaged per token
//  simpo:   Meng et al. 2024 (arXiv:2405.14734), reference-free: -logσ(β·(avg πc - avg πr) - γ)
//  orpo:    Hong et al. 2024 (arXiv:2403.07691), reference-free: NLL(chosen) - β·logσ(log-odds(c) - log-odds(r)),
//           odds from per-token averaged log-probs
#pragma once
#include <ATen/ATen.h>
#include <string>
#include "config/recipe.h"

namespace affinage {

struct PreferenceLossConfig {
  DpoLoss type = DpoLoss::Sigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;  // sigmoid and simpo
  double simpo_gamma = 0.5;      // SimPO's target margin γ
};

// Inputs are [P] tensors for P pairs. *_sum: summed response log-probs; *_len: response token counts;
// ref_*: the reference's summed log-probs (ignored by simpo/orpo); chosen_nll_mean: for orpo, the mean
// per-token NLL of each chosen response [P].
struct PreferenceInputs {
  at::Tensor chosen_sum, rejected_sum, chosen_len, rejected_len, ref_chosen_sum, ref_rejected_sum;
};

struct PreferenceLoss {
  at::Tensor losses;            // [P], differentiable
  at::Tensor chosen_rewards;    // [P], detached: β(πc - refc) (β·avg πc for the reference-free losses)
  at::Tensor rejected_rewards;  // [P], detached
};

PreferenceLoss preference_loss(const PreferenceInputs& in, const PreferenceLossConfig& cfg);
bool preference_loss_needs_reference(DpoLoss type);

}  // namespace affinage
