// Fused RMSNorm, RoPE and SwiGLU (core/kernels/) against the ATen composites the model uses otherwise, at
// Mistral-7B shapes (hidden 4096, MLP 14336, 32 query heads x 128): forward, and forward + backward, best of N.
// On a CPU the fused op is the CPU twin, on a GPU the CUDA kernel. This is the measurement behind use_fused()'s
// CPU table (model/kernels/fused.cpp) and the figures in bench/RESULTS.md.
// As in training with LoRA: the RMSNorm weight is frozen (no weight gradient); q, gate and up need gradients.
// Usage: build/bench_kernels [tokens] [threads] [device] [dtypes]; device defaults to cuda when a GPU is visible.
// Defaults: CPU 2048 tokens, all cores, f32,bf16; CUDA 16384 tokens, bf16,f32.
#include <functional>
#include <sstream>
#include <thread>
#include "base/runtime.h"
#include "bench/bench_util.h"
#include "model/attention.h"
#include "model/kernels/fused.h"

using namespace affinage;
using namespace affinage::bench;

namespace {

struct Case {
  std::string name;
  std::vector<at::Tensor> inputs;  // leaves; requires_grad as in training
  at::Tensor grad;                 // upstream gradient, the output's shape
  std::function<at::Tensor(const std::vector<at::Tensor>&)> composite, fused;
};

void bench_case(Case& c, int reps, const torch::Device& dev) {
  auto fwd = [&](auto& fn) {
    return best_seconds(reps, dev, [&] {
      torch::NoGradGuard ng;
      fn(c.inputs);
    });
  };
  auto fwd_bwd = [&](auto& fn) {
    return best_seconds(reps, dev, [&] {
      for (auto& t : c.inputs) t.mutable_grad() = at::Tensor();
      fn(c.inputs).backward(c.grad);
    });
  };
  double cf = fwd(c.composite), ff = fwd(c.fused), cb = fwd_bwd(c.composite), fb = fwd_bwd(c.fused);
  std::printf("  %-34s forward %9.3f ms -> %9.3f ms (%5.2fx) | fwd+bwd %9.3f ms -> %9.3f ms (%5.2fx)\n", c.name.c_str(),
              cf * 1e3, ff * 1e3, cf / ff, cb * 1e3, fb * 1e3, cb / fb);
}

}  // namespace

int main(int argc, char** argv) {
  affinage::prefer_passive_omp_wait(argv);  // OpenMP threads sleep instead of spinning (base/runtime.h)
  torch::Device dev(argc > 3 ? argv[3] : (torch::cuda::is_available() ? "cuda" : "cpu"));
  const bool cuda = dev.is_cuda();
  const int64_t T = argc > 1 ? std::stoll(argv[1]) : (cuda ? 16384 : 2048);
  const int threads = argc > 2 ? std::stoi(argv[2]) : int(std::thread::hardware_concurrency());
  std::string dtypes = argc > 4 ? argv[4] : (cuda ? "bf16,f32" : "f32,bf16");
  at::set_num_threads(threads);
  const int reps = cuda ? 20 : 5;
  const int64_t D = 4096, F = 14336, H = 32, d = 128;
  if (cuda && !fused_cuda_kernels_compiled())
    std::printf("note: built without the CUDA kernels; 'fused' on a CUDA tensor will fail\n");
  std::printf("bench_kernels: composite -> fused, %lld tokens, %d threads, %s (%s)\n", (long long)T, threads,
              dev.str().c_str(), cuda ? "CUDA kernels" : "CPU twins");
  torch::manual_seed(0);
  std::stringstream ss(dtypes);
  for (std::string dt; std::getline(ss, dt, ',');) {
    auto st = dt == "bf16" ? at::kBFloat16 : dt == "f16" ? at::kHalf : at::kFloat;
    auto opts = torch::TensorOptions().device(dev).dtype(st);
    auto leaf = [&](at::IntArrayRef shape, bool grad) { return torch::randn(shape, opts).requires_grad_(grad); };
    auto pos = torch::arange(T, torch::TensorOptions().device(dev).dtype(torch::kLong)).unsqueeze(0);
    auto [cos, sin] = rope_cos_sin(pos, d, 1e6, st);
    std::vector<Case> cases;
    cases.push_back({"rms_norm [" + std::to_string(T) + ", 4096] " + dt,
                     {leaf({T, D}, true), (1 + 0.1 * torch::randn({D}, opts)).requires_grad_(false)},
                     torch::randn({T, D}, opts),
                     [](const std::vector<at::Tensor>& v) { return rms_norm_composite(v[0], v[1], 1e-5); },
                     [](const std::vector<at::Tensor>& v) { return fused_rms_norm(v[0], v[1], 1e-5); }});
    // q as attention makes it: [1, T, 32, 128] memory seen as [1, 32, T, 128]
    auto q = torch::randn({1, T, H, d}, opts).transpose(1, 2).requires_grad_(true);
    cases.push_back({"rope q [1, 32, " + std::to_string(T) + ", 128] " + dt,
                     {q, cos, sin},
                     torch::randn({1, H, T, d}, opts),
                     [](const std::vector<at::Tensor>& v) { return apply_rope(v[0], v[1], v[2]); },
                     [](const std::vector<at::Tensor>& v) { return fused_apply_rope(v[0], v[1], v[2]); }});
    cases.push_back({"swiglu [" + std::to_string(T) + ", 14336] " + dt,
                     {leaf({T, F}, true), leaf({T, F}, true)},
                     torch::randn({T, F}, opts),
                     [](const std::vector<at::Tensor>& v) { return swiglu_composite(v[0], v[1]); },
                     [](const std::vector<at::Tensor>& v) { return fused_swiglu(v[0], v[1]); }});
    for (auto& c : cases) bench_case(c, reps, dev);
  }
  return 0;
}
