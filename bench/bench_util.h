// Shared by the benchmarks: the machine's measured matmul peak, Mistral-7B-shaped configs, timing, memory.
#pragma once
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <torch/torch.h>
#include "core/config.h"

namespace affinage::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best-of-N GFLOP/s of an [m,k]x[k,n] matmul in `dtype` on `dev` (the peak MFU is measured against).
inline double matmul_peak_gflops(torch::ScalarType dtype, torch::Device dev, int64_t m = 1024, int64_t k = 2048,
                                 int64_t n = 2048, int reps = 3) {
  auto a = torch::randn({m, k}, torch::TensorOptions().device(dev)).to(dtype);
  auto b = torch::randn({k, n}, torch::TensorOptions().device(dev)).to(dtype);
  torch::matmul(a, b);  // warm-up (oneDNN picks its kernel here)
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    if (dev.is_cuda()) torch::cuda::synchronize();
    double t = now_s();
    auto c = torch::matmul(a, b);
    if (dev.is_cuda()) torch::cuda::synchronize();
    else c.sum().item<float>();
    best = std::min(best, now_s() - t);
  }
  return 2.0 * m * k * n / best / 1e9;
}

// Mistral-7B-v0.3's shape with `layers` decoder layers (random weights).
inline ModelConfig mistral7b_shape(int64_t layers, int64_t vocab = 32768) {
  ModelConfig c;
  c.architecture = "MistralForCausalLM";
  c.model_type = "mistral";
  c.vocab_size = vocab;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.rope_theta = 1e6;
  c.max_position_embeddings = 32768;
  return c;
}

// Matmul parameters of the decoder layers only (q,k,v,o,gate,up,down), and of the head.
inline double layer_matmul_params(const ModelConfig& c) {
  double d = c.hidden_size, h = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  return c.num_hidden_layers * (d * h + 2 * d * kv + h * d + 3 * d * c.intermediate_size);
}

// Peak resident memory of this process in MiB (VmHWM).
inline double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

}  // namespace affinage::bench
