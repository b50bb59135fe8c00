// Weighted sum, TIES and DARE over full weight deltas (see lora/combine.h).
#include "lora/combine.h"
#include <ATen/CPUGeneratorImpl.h>
#include "base/error.h"

namespace affinage {

MergeMethod parse_merge_method(const std::string& s) {
  if (s == "linear") return MergeMethod::Linear;
  if (s == "ties") return MergeMethod::Ties;
  if (s == "dare_linear") return MergeMethod::DareLinear;
  if (s == "dare_ties") return MergeMethod::DareTies;
  fail("merge method '", s, "' is not one of linear, ties, dare_linear, dare_ties");
}

const char* merge_method_name(MergeMethod m) {
  switch (m) {
    case MergeMethod::Linear:
      return "linear";
    case MergeMethod::Ties:
      return "ties";
    case MergeMethod::DareLinear:
      return "dare_linear";
    case MergeMethod::DareTies:
      return "dare_ties";
  }
  return "?";
}

bool merge_method_uses_density(MergeMethod m) { return m != MergeMethod::Linear; }

static void check_density(double density) {
  if (!(density >= 0.0)) fail("density must be in [0, 1], got ", density);
}

at::Tensor magnitude_prune(const at::Tensor& t, double density) {
  check_density(density);
  if (density >= 1.0) return t;
  const int64_t k = static_cast<int64_t>(density * double(t.numel()));
  auto flat = t.reshape({-1});
  auto mask = at::zeros_like(flat);
  if (k > 0) mask.index_fill_(0, std::get<1>(at::topk(flat.abs(), k, /*dim=*/0, /*largest=*/true)), 1.0);
  return t * mask.view(t.sizes());
}

at::Tensor random_prune(const at::Tensor& t, double density, at::Generator gen) {
  check_density(density);
  if (density >= 1.0) return t;
  if (density == 0.0) return at::zeros_like(t);  // PEFT would divide 0 by 0
  auto mask = at::bernoulli(at::full_like(t, density), gen);
  return t * mask / density;
}

at::Tensor elect_and_disjoint_merge(const std::vector<at::Tensor>& pruned, const std::vector<double>& weights) {
  if (pruned.empty() || pruned.size() != weights.size()) fail("elect_and_disjoint_merge: need one weight per tensor");
  auto total = at::zeros_like(pruned[0]);
  for (auto& p : pruned) total += p;
  auto majority = at::where(total >= 0, 1.0, -1.0).to(pruned[0].scalar_type());
  auto sum = at::zeros_like(pruned[0]), count = at::zeros_like(pruned[0]);
  for (size_t i = 0; i < pruned.size(); ++i) {
    auto agree = (pruned[i].sign() == majority).to(pruned[i].scalar_type());
    sum += pruned[i] * weights[i] * agree;
    count += agree;
  }
  return sum / count.clamp_min(1.0);
}

// splitmix64 finalizer over (seed, FNV-1a of the name, index): well-spread, stable across platforms.
static uint64_t mix_seed(uint64_t seed, const std::string& name, size_t i) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (h ^ (uint64_t(i) + 1));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

at::Tensor combine_deltas(const std::vector<at::Tensor>& deltas, const std::vector<double>& weights,
                          const CombineOptions& o, const std::string& name) {
  if (deltas.size() != weights.size())
    fail("combine_deltas: ", deltas.size(), " deltas but ", weights.size(), " weights");
  at::Tensor like;
  for (auto& d : deltas)
    if (d.defined()) {
      like = d;
      break;
    }
  if (!like.defined()) fail("combine_deltas: no adapter has a delta for '", name, "'");
  std::vector<at::Tensor> ts;
  for (auto& d : deltas) ts.push_back(d.defined() ? d : at::zeros_like(like));
  if (o.method == MergeMethod::Ties || o.method == MergeMethod::DareTies || o.method == MergeMethod::DareLinear)
    for (size_t i = 0; i < ts.size(); ++i) {
      if (o.method == MergeMethod::Ties) {
        ts[i] = magnitude_prune(ts[i], o.density);
      } else {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(mix_seed(o.seed, name, i));
        ts[i] = random_prune(ts[i], o.density, gen);
      }
    }
  if (o.method == MergeMethod::Ties || o.method == MergeMethod::DareTies) return elect_and_disjoint_merge(ts, weights);
  auto out = ts[0] * weights[0];
  for (size_t i = 1; i < ts.size(); ++i) out += ts[i] * weights[i];
  return out;
}

}  // namespace affinage
