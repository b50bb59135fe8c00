// DPO training-step throughput: policy forward+backward over chosen+rejected in one batch, the reference
// forward (adapters swapped to their initial values), AdamW; and the same step with precomputed reference
// log-probs. Prints pairs/s, pair-tokens/s (tokens of both sequences) and MFU against the measured peak.
// FLOPs: 4 per matmul parameter per token for the LoRA policy step (forward + activation gradients) + 2 for the
// reference forward; the head (vocab x hidden) counts only on response tokens, the only ones it runs on.
// Usage: build/bench_dpo [mid_layers=1] [prompt=64] [response=64] [threads=0] [device=auto]
#include <cstdlib>
#include <iostream>
#include "bench/bench_util.h"
#include "core/loader.h"
#include "core/runtime.h"
#include "dpo/dpo.h"
#include "lora/adapter.h"

using namespace affinage;
using namespace affinage::bench;

static void run(const std::string& label, CausalLM m, int64_t P, int64_t Tp, int64_t Tr, torch::Device dev, double peak) {
  const auto& cfg = m->config();
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  LoraConfig lc;
  lc.r = 16, lc.alpha = 32, lc.targets = {"all-linear"};
  inject_lora(*m, lc, 0);
  std::vector<NamedParam> tp;
  for (auto& p : m->named_parameters())
    if (p.key().find("lora_") != std::string::npos) { p.value().set_requires_grad(true); tp.push_back({p.key(), p.value(), true}); }
  AdamW opt(tp, OptimConfig{});
  ReferencePolicy ref(*m, tp, "initial");
  std::vector<PreferencePair> pairs(P);
  auto rnd = [&](int64_t n) { std::vector<int> v(n); for (auto& x : v) x = 3 + std::rand() % (cfg.vocab_size - 3); return v; };
  for (auto& p : pairs) p.prompt = rnd(Tp), p.chosen = rnd(Tr), p.rejected = rnd(Tr);
  std::vector<int64_t> idx(P);
  for (int64_t i = 0; i < P; ++i) idx[i] = i;
  auto b = make_pair_batch(pairs, idx, dev);
  at::Tensor cached_c, cached_r;
  std::tie(cached_c, cached_r) = ref.logps(b);
  m->train();
  auto step = [&](bool precomputed) {
    for (auto& p : tp) p.param.mutable_grad() = at::Tensor();
    auto lp = pair_logps(*m, b);
    at::Tensor rc = cached_c, rr = cached_r;
    if (!precomputed) std::tie(rc, rr) = ref.logps(b);
    StepLoss s = preference_step_loss(lp, rc, rr, PreferenceLossConfig{}, b.real_tokens);
    (s.sum / s.units).backward();
    opt.step(1e-4);
    if (dev.is_cuda()) torch::cuda::synchronize();
  };
  const double n_layers = layer_matmul_params(cfg), n_head = double(cfg.vocab_size) * cfg.hidden_size;
  const double tokens = 2.0 * P * (Tp + Tr), response_tokens = 2.0 * P * Tr;
  for (bool pre : {false, true}) {
    step(pre);  // warm-up
    double best = 1e30;
    for (int r = 0; r < 3; ++r) {
      double t = now_s();
      step(pre);
      best = std::min(best, now_s() - t);
    }
    double flops = (pre ? 4.0 : 6.0) * (tokens * n_layers + response_tokens * n_head);
    std::printf("  %-34s %-13s %7.2f pairs/s %9.1f pair-tokens/s  MFU %5.1f%%  step %.3f s  peak RSS %.0f MiB\n",
                label.c_str(), pre ? "precomputed" : "live ref", P / best, tokens / best,
                100.0 * flops / best / 1e9 / peak, best, peak_rss_mib());
  }
}

int main(int argc, char** argv) {
  int64_t layers = argc > 1 ? std::atoll(argv[1]) : 1, Tp = argc > 2 ? std::atoll(argv[2]) : 64,
          Tr = argc > 3 ? std::atoll(argv[3]) : 64;
  set_threads(argc > 4 ? std::atoi(argv[4]) : 0);
  auto dev = pick_device(argc > 5 ? argv[5] : "auto");
  std::srand(0);
  double peak32 = matmul_peak_gflops(torch::kFloat32, dev), peak16 = matmul_peak_gflops(torch::kBFloat16, dev);
  std::printf("bench_dpo: sigmoid DPO, LoRA r16 all-linear, prompt %ld + response %ld tokens, %d threads, %s; "
              "matmul peak bf16 %.1f, f32 %.1f GFLOP/s\n", (long)Tp, (long)Tr, at::get_num_threads(), dev.str().c_str(), peak16, peak32);
  run("stories260K f32 8 pairs", load_model(std::string(AFFINAGE_SOURCE_DIR) + "/models/stories260K", torch::kFloat32, dev),
      8, Tp, Tr, dev, peak32);
  auto dt = dev.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  CausalLM m(mistral7b_shape(layers), torch::TensorOptions().dtype(dt).device(dev));
  init_random(*m, 0);
  run("mistral7b-width " + std::to_string(layers) + "L " + dtype_short_name(dt) + " 1 pair", m, 1, Tp, Tr, dev,
      dt == torch::kBFloat16 ? peak16 : peak32);
  return 0;
}
