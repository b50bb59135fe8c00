// Seeded orders that are the same with every standard library (std::shuffle and std::uniform_int_distribution
// differ between them, and a seed must give the same data split and item order everywhere).
#pragma once
#include <cstddef>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

namespace affinage {

// Fisher-Yates with our own index draw: a permutation of 0..n-1.
inline std::vector<size_t> seeded_permutation(size_t n, std::mt19937_64& rng) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  for (size_t i = n; i > 1; --i) std::swap(idx[i - 1], idx[rng() % i]);
  return idx;
}

}  // namespace affinage
