// LoRA SFT training-step throughput (forward + backward + AdamW) and MFU against the measured matmul peak,
// on the bundled stories260K (small) and on a Mistral-7B-width stack (mid-size, random weights).
// FLOPs per token follow the LoRA convention: 4N (N = matmul parameters incl. the head) + attention 6·L·T·(H·d)/2.
// Usage: build/bench_train [mid_layers=1] [seq=256] [threads=0] [device=auto]
// On a CPU without AVX-512, bf16 runs 32 tokens (LibTorch 1.13 has no fast bf16 matmul there).
#include <cstdlib>
#include <iostream>
#include "bench/bench_util.h"
#include "core/loader.h"
#include "core/loss.h"
#include "core/model.h"
#include "core/optim.h"
#include "core/runtime.h"
#include "lora/adapter.h"

using namespace affinage;
using namespace affinage::bench;

static void run(const std::string& label, CausalLM m, int64_t B, int64_t T, torch::Device dev, double peak) {
  const auto& cfg = m->config();
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  LoraConfig lc;
  lc.r = 16;
  lc.alpha = 32;
  lc.targets = {"all-linear"};
  inject_lora(*m, lc, 0);
  std::vector<NamedParam> tp;
  for (auto& p : m->named_parameters())
    if (p.key().find("lora_") != std::string::npos) { p.value().set_requires_grad(true); tp.push_back({p.key(), p.value(), true}); }
  OptimConfig oc;
  AdamW opt(tp, oc);
  m->train();
  auto ids = torch::randint(0, cfg.vocab_size, {B, T}, torch::TensorOptions().dtype(torch::kLong).device(dev));
  auto targets = ids.roll(-1, 1);
  auto step = [&] {
    for (auto& p : tp) p.param.mutable_grad() = at::Tensor();
    auto h = m->hidden_states(ids);
    auto l = token_nll(*m, h, targets);
    (l.sum / double(l.count)).backward();
    opt.step(1e-4);
    if (dev.is_cuda()) torch::cuda::synchronize();
  };
  step();  // warm-up
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    double t = now_s();
    step();
    best = std::min(best, now_s() - t);
  }
  double n = layer_matmul_params(cfg) + double(cfg.vocab_size) * cfg.hidden_size;
  double per_token = 4.0 * n + 6.0 * cfg.num_hidden_layers * T * cfg.num_attention_heads * cfg.head_dim / 2.0;
  double tps = B * T / best;
  double achieved = tps * per_token / 1e9;
  std::printf("  %-28s %8.1f tokens/s  %7.1f GFLOP/s  MFU %5.1f%%  step %.3f s  peak RSS %.0f MiB\n", label.c_str(), tps,
              achieved, 100.0 * achieved / peak, best, peak_rss_mib());
}

int main(int argc, char** argv) {
  int64_t layers = argc > 1 ? std::atoll(argv[1]) : 1, T = argc > 2 ? std::atoll(argv[2]) : 256;
  set_threads(argc > 3 ? std::atoi(argv[3]) : 0);
  auto dev = pick_device(argc > 4 ? argv[4] : "auto");
  double peak16 = matmul_peak_gflops(torch::kBFloat16, dev), peak32 = matmul_peak_gflops(torch::kFloat32, dev);
  std::printf("bench_train: LoRA r16 all-linear, %d threads, %s; matmul peak bf16 %.1f, f32 %.1f GFLOP/s\n",
              at::get_num_threads(), dev.str().c_str(), peak16, peak32);
  run("stories260K f32 8x256", load_model(std::string(AFFINAGE_SOURCE_DIR) + "/models/stories260K", torch::kFloat32, dev),
      8, 256, dev, peak32);
  for (auto dt : {torch::kBFloat16, torch::kFloat32}) {
    CausalLM m(mistral7b_shape(layers), torch::TensorOptions().dtype(dt).device(dev));
    init_random(*m, 0);
    double peak = dt == torch::kBFloat16 ? peak16 : peak32;
    int64_t t = (peak < 50 && !dev.is_cuda()) ? 32 : T;
    run("mistral7b-width " + std::to_string(layers) + "L " + dtype_short_name(dt) + " 1x" + std::to_string(t), m, 1, t, dev, peak);
  }
  return 0;
}
