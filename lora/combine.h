// Combining several adapters' weight deltas ΔW_i (fp32, one module at a time) into one: weighted sum, TIES and
// DARE with the definitions of PEFT's peft/utils/merge_utils.py. They act on the full ΔW_i = scale_i·B_i@A_i,
// as PEFT's `ties_svd`/`dare_*_svd` combinations do before their SVD step and as mergekit does on task
// vectors; PEFT's plain `ties`/`dare_*` prune lora_A and lora_B separately, which has no meaning once the
// result is folded into dense weights. See docs/merge_publish.md.
#pragma once
#include <ATen/ATen.h>
#include <cstdint>
#include <string>
#include <vector>

namespace affinage {

enum class MergeMethod { Linear, Ties, DareLinear, DareTies };
MergeMethod parse_merge_method(const std::string& s);  // "linear" | "ties" | "dare_linear" | "dare_ties"
const char* merge_method_name(MergeMethod m);
bool merge_method_uses_density(MergeMethod m);  // every method but linear

// PEFT magnitude_based_pruning: keeps the k = floor(density * numel) entries of largest |t| (torch.topk), zeros
// the rest. density >= 1 returns t unchanged (PEFT's prune()).
at::Tensor magnitude_prune(const at::Tensor& t, double density);
// PEFT random_pruning with rescale: each entry kept with probability `density` (Bernoulli draws from `gen`),
// kept entries divided by density, so the expectation is t. density >= 1 returns t unchanged.
at::Tensor random_prune(const at::Tensor& t, double density, at::Generator gen);
// PEFT calculate_majority_sign_mask("total") + disjoint_merge on already pruned tensors: the elected sign of an
// entry is that of Σ_i p_i (+ when the sum is 0); the result is Σ_i w_i·p_i over the i whose p_i has the elected
// sign, divided by how many there are (zeros agree with nothing; an entry nobody keeps stays 0). Weights are
// applied after the election, as in PEFT.
at::Tensor elect_and_disjoint_merge(const std::vector<at::Tensor>& pruned, const std::vector<double>& weights);

struct CombineOptions {
  MergeMethod method = MergeMethod::Linear;
  double density = 1.0;  // share of entries kept (ties, dare_*)
  uint64_t seed = 0;     // DARE's draws
};

// linear:      Σ w_i ΔW_i
// ties:        elect_and_disjoint_merge(magnitude_prune(ΔW_i))
// dare_linear: Σ w_i random_prune(ΔW_i)
// dare_ties:   elect_and_disjoint_merge(random_prune(ΔW_i))
// DARE's generator for ΔW_i is seeded from (seed, name, i) only, so a tensor's masks do not depend on the
// order tensors are processed in or on which other tensors exist. A missing ΔW_i (undefined tensor: the
// adapter does not touch this module) counts as zeros.
at::Tensor combine_deltas(const std::vector<at::Tensor>& deltas, const std::vector<double>& weights,
                          const CombineOptions& opts, const std::string& name);

}  // namespace affinage
