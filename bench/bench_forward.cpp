// Forward throughput of a Mistral-7B-shaped layer stack (random weights) at bf16 and fp32, against the
// machine's measured matmul peak. Usage: build/bench_forward [layers=1] [seq=256] [threads=0] [device=auto]
// On a CPU without AVX-512 (bf16 matmul then has no fast kernel in LibTorch 1.13) bf16 runs 32 tokens.
#include <cstdlib>
#include <iostream>
#include "base/runtime.h"
#include "bench/bench_util.h"
#include "model/model.h"

using namespace affinage;
using namespace affinage::bench;

int main(int argc, char** argv) {
  affinage::prefer_passive_omp_wait(argv);  // OpenMP threads sleep instead of spinning (base/runtime.h)
  int64_t layers = argc > 1 ? std::atoll(argv[1]) : 1, T0 = argc > 2 ? std::atoll(argv[2]) : 256;
  set_threads(argc > 3 ? std::atoi(argv[3]) : 0);
  auto dev = pick_device(argc > 4 ? argv[4] : "auto");
  torch::NoGradGuard ng;
  std::printf("bench_forward: Mistral-7B shape, %lld layers, %d threads, %s\n", (long long)layers,
              at::get_num_threads(), dev.str().c_str());
  for (auto dt : {torch::kBFloat16, torch::kFloat32}) {
    double peak = matmul_peak_gflops(dt, dev);
    int64_t T = (peak < 50 && !dev.is_cuda()) ? 32 : T0;  // a slow reference kernel: keep the run short
    auto cfg = mistral7b_shape(layers);
    CausalLM m(cfg, torch::TensorOptions().dtype(dt).device(dev));
    init_random(*m, 0);
    auto ids = torch::randint(0, cfg.vocab_size, {1, T}, torch::TensorOptions().dtype(torch::kLong).device(dev));
    m->hidden_states(ids);  // warm-up
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      double t = now_s();
      auto h = m->hidden_states(ids);
      if (dev.is_cuda()) torch::cuda::synchronize();
      else h.sum().item<float>();
      best = std::min(best, now_s() - t);
    }
    // FLOPs (io/model_config.h), without the head: hidden_states() stops before it
    double flops = T * (2.0 * double(cfg.layer_matmul_params()) + cfg.attention_flops_per_token(T));
    double achieved = flops / best / 1e9;
    std::printf(
        "  %-5s %4lld tokens | matmul peak %7.1f GFLOP/s | forward %8.1f tokens/s  %7.1f GFLOP/s  MFU %5.1f%%  peak "
        "RSS %.0f MiB\n",
        dtype_short_name(dt).c_str(), (long long)T, peak, T / best, achieved, 100.0 * achieved / peak, peak_rss_mib());
  }
  return 0;
}
