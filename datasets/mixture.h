// The data section's mixing rules, shared by every stage whatever its item (SFT sample, preference pair):
// every training file read (weight w keeps round(w * n) items per file: whole copies for the integer part,
// a seeded subset in file order for the rest), the eval file or a seeded `eval_split` of the training items
// held out before weighting (so no copy of an eval item is trained on).
#pragma once
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>
#include <vector>
#include "base/error.h"
#include "base/random.h"
#include "config/recipe.h"

namespace affinage {

template <class T>
std::vector<T> apply_weight(const std::vector<T>& items, double w, std::mt19937_64& rng) {
  const size_t n = items.size();
  const size_t keep = static_cast<size_t>(std::llround(w * static_cast<double>(n)));
  std::vector<T> out;
  if (n == 0) return out;
  out.reserve(keep);
  for (size_t c = 0; c < keep / n; ++c) out.insert(out.end(), items.begin(), items.end());
  const size_t rest = keep % n;
  if (rest > 0) {
    std::vector<size_t> pick = seeded_permutation(n, rng);
    pick.resize(rest);
    std::sort(pick.begin(), pick.end());
    for (size_t i : pick) out.push_back(items[i]);
  }
  return out;
}

// load(const DataSource&) -> std::vector<T>. Returns {train, eval}. One generator drives every random
// choice in a fixed order (eval split, then each file's weight subset), so a seed fixes the whole data set.
template <class T, class Load>
std::pair<std::vector<T>, std::vector<T>> mix_sources(const DataConfig& cfg, uint64_t seed, Load load) {
  if (cfg.train.empty()) fail("data.train: no training files; give at least one {\"path\": ...}");
  if (cfg.eval && cfg.eval_split > 0)
    fail("data.eval and data.eval_split are both set; hold out either a file or a share of the training rows");
  if (!(cfg.eval_split >= 0 && cfg.eval_split < 1)) fail("data.eval_split: ", cfg.eval_split, " must be in [0, 1)");
  std::mt19937_64 rng(seed);
  std::vector<std::vector<T>> files;
  size_t total = 0;
  for (size_t i = 0; i < cfg.train.size(); ++i) {
    const DataSource& src = cfg.train[i];
    if (!(src.weight > 0) || !std::isfinite(src.weight))
      fail("data.train[", i, "].weight: ", src.weight, " for ", src.path, " must be a positive number");
    files.push_back(load(src));
    total += files.back().size();
  }
  std::pair<std::vector<T>, std::vector<T>> out;
  std::vector<T>& eval = out.second;
  if (cfg.eval) {
    eval = load(*cfg.eval);
  } else if (cfg.eval_split > 0) {
    size_t n_eval = std::max<size_t>(1, static_cast<size_t>(std::llround(cfg.eval_split * total)));
    if (n_eval >= total)
      fail("data.eval_split: ", cfg.eval_split, " of ", total, " training samples leaves nothing to train on");
    std::vector<size_t> perm = seeded_permutation(total, rng);
    std::vector<uint8_t> held(total, 0);
    for (size_t k = 0; k < n_eval; ++k) held[perm[k]] = 1;
    size_t g = 0;
    for (auto& f : files) {
      std::vector<T> kept;
      for (T& s : f) (held[g++] ? eval : kept).push_back(std::move(s));
      f = std::move(kept);
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    std::vector<T> w = apply_weight(files[i], cfg.train[i].weight, rng);
    out.first.insert(out.first.end(), std::make_move_iterator(w.begin()), std::make_move_iterator(w.end()));
  }
  return out;
}

}  // namespace affinage
