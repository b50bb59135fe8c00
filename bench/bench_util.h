// Shared by the benchmarks: arguments, the machine's measured matmul peak, Mistral-7B-shaped configs,
// random weights made on the device, timing, memory (host RSS, CUDA caching-allocator peaks), and a plain
// reference decoder for the "our step vs. the naive step" comparison.
#pragma once
#include <torch/torch.h>
#include <torch/version.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>
#include "base/error.h"
#include "base/files.h"
#include "base/runtime.h"
#include "io/model_config.h"
#include "model/model.h"

// Peak CUDA memory comes from LibTorch's caching allocator (2.x), whose pointer is looked up at run time so a
// CPU-only LibTorch links too; without its header (1.13, or -DAFFINAGE_BENCH_NO_CUDA_HEADERS) the benchmarks
// report the device memory in use after the run (cudaMemGetInfo, also looked up at run time), which is the
// allocator's peak reservation plus the CUDA context, since the caching allocator keeps what it reserved.
#include <dlfcn.h>
#if TORCH_VERSION_MAJOR >= 2 && defined(__has_include) && !defined(AFFINAGE_BENCH_NO_CUDA_HEADERS)
#if __has_include(<cuda_runtime_api.h>) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define AFFINAGE_BENCH_CUDA_MEMORY 1
#endif
#endif

namespace affinage::bench {

// A file of the repository the benchmark runs from: build/bench_x -> <repo>/<rel> (the benches run from build/).
inline std::string repo_file(const std::string& rel) { return executable_dir() + "/../" + rel; }

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline void sync(torch::Device dev) {
  if (dev.is_cuda()) torch::cuda::synchronize();
}

// Best seconds of `reps` runs of f after one warm-up run, each synchronized on a GPU.
inline double best_seconds(int64_t reps, torch::Device dev, const std::function<void()>& f) {
  f();
  sync(dev);
  double best = 1e30;
  for (int64_t i = 0; i < reps; ++i) {
    double t = now_s();
    f();
    sync(dev);
    best = std::min(best, now_s() - t);
  }
  return best;
}

// Benchmark arguments: key=value pairs, or bare values in the order of `keys` (the older positional form).
class Args {
 public:
  Args(int argc, char** argv, std::vector<std::string> keys) : keys_(std::move(keys)) {
    size_t next = 0;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto eq = a.find('=');
      if (eq == std::string::npos) {
        if (next >= keys_.size()) fail("too many arguments at '", a, "'");
        kv_[keys_[next++]] = a;
        continue;
      }
      std::string k = a.substr(0, eq);
      if (std::find(keys_.begin(), keys_.end(), k) == keys_.end()) fail("unknown argument '", k, "'");
      kv_[k] = a.substr(eq + 1);
    }
  }
  bool has(const std::string& k) const { return kv_.count(k) > 0; }
  int64_t num(const std::string& k, int64_t def) const { return has(k) ? std::atoll(kv_.at(k).c_str()) : def; }
  std::string str(const std::string& k, const std::string& def) const { return has(k) ? kv_.at(k) : def; }

 private:
  std::vector<std::string> keys_;
  std::map<std::string, std::string> kv_;
};

// GFLOP/s of an [m,k]x[k,n] matmul in `dtype` on `dev`, the peak MFU is measured against (base/runtime.h:
// 1024x2048x2048 on a CPU, 8192^3 on a GPU by default).
inline double matmul_peak_gflops(torch::ScalarType dtype, torch::Device dev) { return matmul_gflops(dev, dtype); }

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

// Random weights: init_random (CPU generator, reproducible everywhere) on a CPU; on a GPU drawn in place on
// the device (seconds for 7B, where init_random's CPU draws would take a minute).
inline void init_random_weights(CausalLMImpl& m, torch::Device dev, uint64_t seed = 0) {
  if (!dev.is_cuda()) return init_random(m, seed);
  torch::NoGradGuard ng;
  torch::manual_seed(seed);
  for (auto& p : m.named_parameters()) {
    if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
    else p.value().normal_(0.0, 0.02);
  }
}

// Peak resident memory of this process in MiB (VmHWM).
inline double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

#ifdef AFFINAGE_BENCH_CUDA_MEMORY
inline c10::cuda::CUDACachingAllocator::CUDAAllocator* cuda_allocator() {
  void* p = dlsym(RTLD_DEFAULT, "_ZN3c104cuda20CUDACachingAllocator9allocatorE");
  return p ? static_cast<std::atomic<c10::cuda::CUDACachingAllocator::CUDAAllocator*>*>(p)->load() : nullptr;
}
#endif

// Resets the device's peak-memory counters (CUDA caching allocator); a no-op elsewhere.
inline void reset_peak_device_memory(torch::Device dev) {
#ifdef AFFINAGE_BENCH_CUDA_MEMORY
  if (auto* a = dev.is_cuda() ? cuda_allocator() : nullptr) a->resetPeakStats(dev.has_index() ? dev.index() : 0);
#endif
}

// Peak allocated device memory since the last reset, in GiB; negative when unknown (CPU, LibTorch 1.x).
inline double peak_device_memory_gib(torch::Device dev) {
#ifdef AFFINAGE_BENCH_CUDA_MEMORY
  if (auto* a = dev.is_cuda() ? cuda_allocator() : nullptr)
    return a->getDeviceStats(dev.has_index() ? dev.index() : 0).allocated_bytes[0].peak / double(1 << 30);
#endif
  return -1;
}

// Device memory in use now (all processes), in GiB, from the CUDA runtime's cudaMemGetInfo; negative if unknown.
inline double device_memory_used_gib() {
  using MemGetInfo = int (*)(size_t*, size_t*);
  auto f = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
  size_t free_b = 0, total_b = 0;
  if (!f || f(&free_b, &total_b) != 0) return -1;
  return double(total_b - free_b) / double(1 << 30);
}

// "peak RSS 2747 MiB" on a CPU; on a GPU "peak GPU 41.3 GiB" (allocated, caching allocator) and the device's
// memory in use, which includes what the allocator keeps reserved.
inline std::string memory_note(torch::Device dev) {
  char buf[96];
  if (!dev.is_cuda()) {
    std::snprintf(buf, sizeof buf, "peak RSS %.0f MiB", peak_rss_mib());
    return buf;
  }
  double g = peak_device_memory_gib(dev), used = device_memory_used_gib();
  std::string peak = "n/a", in_use = "n/a";
  if (g >= 0) std::snprintf(buf, sizeof buf, "%.1f GiB", g), peak = buf;
  if (used >= 0) std::snprintf(buf, sizeof buf, "%.1f GiB", used), in_use = buf;
  return "peak GPU " + peak + " (device in use " + in_use + ")";
}

// ---- The plain reference: the same decoder written the naive way, for the side-by-side step.
// LoRA merged into a dense weight at every call (W + s·B·A: autograd then forms a full [out, in] weight
// gradient, 2·T·in·out more FLOPs than the factored path), attention as materialized [T, T] scores with GQA
// keys repeated, no packing masks (one document per row, no padding).
inline at::Tensor plain_linear(LoraLinearImpl& l, const at::Tensor& x) {
  if (!l.has_lora() || !l.adapter_enabled()) return at::linear(x, l.weight.to(x.scalar_type()));
  auto w = l.weight.to(at::kFloat) + at::matmul(l.lora_B->weight, l.lora_A->weight) * l.lora_scale();
  return at::linear(x, w.to(x.scalar_type()));
}

inline at::Tensor plain_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  auto f = x.to(at::kFloat);
  f = f * at::rsqrt(f.pow(2).mean(-1, true) + eps);
  return w.to(x.scalar_type()) * f.to(x.scalar_type());
}

// Final-normed hidden states [B, T, D] of ids [B, T].
inline at::Tensor plain_hidden_states(CausalLMImpl& m, const at::Tensor& ids) {
  const auto& c = m.config();
  const int64_t B = ids.size(0), T = ids.size(1), H = c.num_attention_heads, Hkv = c.num_key_value_heads,
                d = c.head_dim;
  auto h = at::embedding(m.model->embed_tokens->weight, ids).to(m.dtype());
  auto fo = at::TensorOptions().dtype(at::kFloat).device(ids.device());
  auto inv_freq = 1.0 / at::pow(c.rope_theta, at::arange(0, d, 2, fo) / double(d));
  auto freqs = at::arange(T, fo).unsqueeze(1) * inv_freq.unsqueeze(0);  // [T, d/2]
  auto emb = at::cat({freqs, freqs}, -1);
  auto cos = emb.cos().to(h.scalar_type()), sin = emb.sin().to(h.scalar_type());
  auto rope = [&](const at::Tensor& x) {
    auto x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d / 2);
    return x * cos + at::cat({-x2, x1}, -1) * sin;
  };
  auto future = at::ones({T, T}, fo.dtype(at::kBool)).triu(1);
  for (auto& mod : *m.model->layers) {
    auto& L = *mod->as<DecoderLayerImpl>();
    auto& a = *L.self_attn;
    auto x = plain_rms_norm(h, L.input_layernorm->weight, c.rms_norm_eps);
    auto q = rope(plain_linear(*a.q_proj, x).view({B, T, H, d}).transpose(1, 2));
    auto k = rope(plain_linear(*a.k_proj, x).view({B, T, Hkv, d}).transpose(1, 2)).repeat_interleave(H / Hkv, 1);
    auto v = plain_linear(*a.v_proj, x).view({B, T, Hkv, d}).transpose(1, 2).repeat_interleave(H / Hkv, 1);
    auto scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(d));
    auto p = at::softmax(scores.masked_fill(future, -INFINITY), -1, at::kFloat).to(q.scalar_type());
    h = h + plain_linear(*a.o_proj, at::matmul(p, v).transpose(1, 2).reshape({B, T, H * d}));
    x = plain_rms_norm(h, L.post_attention_layernorm->weight, c.rms_norm_eps);
    auto& f = *L.mlp;
    h = h + plain_linear(*f.down_proj, at::silu(plain_linear(*f.gate_proj, x)) * plain_linear(*f.up_proj, x));
  }
  return plain_rms_norm(h, m.model->norm->weight, c.rms_norm_eps);
}

// Full-vocabulary fp32 logits at every position [B, T, V].
inline at::Tensor plain_logits(CausalLMImpl& m, const at::Tensor& hidden) {
  return at::linear(hidden, m.head_weight().to(hidden.scalar_type())).to(at::kFloat);
}

// Sets every LoRA B to small random values, so a parity check exercises the adapters (fresh B is zero).
inline void randomize_lora_b(CausalLMImpl& m, double std = 1e-3) {
  torch::NoGradGuard ng;
  for (auto& [name, lin] : m.linears())
    if (lin->has_lora()) lin->lora_B->weight.normal_(0.0, std);
}

}  // namespace affinage::bench
