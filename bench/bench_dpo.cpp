// DPO training-step throughput: policy forward+backward over chosen+rejected in one batch, the reference
// forward (adapters swapped to their initial values), AdamW; the same step with precomputed reference
// log-probs; and on a CPU a plain reference step (bench_util.h: LoRA merged into dense weights, [T, T]
// attention, full-vocabulary fp32 log-softmax at every position, the reference as a second plain forward with
// adapters off). Prints pairs/s, pair-tokens/s (tokens of both sequences), MFU against the matmul peak of the
// same run, and peak memory (RSS on a CPU, the caching allocator's peak on a GPU).
// FLOPs: 4 per matmul parameter per token for the LoRA policy step (forward + activation gradients) + 2 for
// the reference forward; the head counts only on response tokens (the only ones it runs on); causal attention
// 3 x 2·L·T·H·d per token for the policy, 1 x for the reference.
// Usage: build/bench_dpo [layers] [prompt] [response] [threads] [device] [key=value ...]; keys also: pairs,
// ckpt (0|1), steps, small (0|1), reference (0|1: the plain step). Defaults: CPU layers=4 prompt=64 response=64
// pairs=1 f32 reference=1; CUDA layers=32 (Mistral-7B-v0.3, bf16) pairs=8 prompt=1024 response=1024 ckpt=1.
#include <functional>
#include <iostream>
#include "base/runtime.h"
#include "bench/bench_util.h"
#include "dpo/dpo.h"
#include "lora/adapter.h"
#include "model/loader.h"
#include "model/loss.h"

using namespace affinage;
using namespace affinage::bench;

struct Opts {
  int64_t pairs, prompt, response, steps;
  bool ckpt, reference;
  torch::Device dev;
  double peak;
};

static void run(const std::string& label, CausalLM m, const Opts& o) {
  const auto& cfg = m->config();
  const int64_t P = o.pairs, Tp = o.prompt, Tr = o.response;
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  LoraConfig lc;
  lc.r = 16, lc.alpha = 32, lc.targets = {"all-linear"};
  inject_lora(*m, lc, 0);
  std::vector<NamedParam> tp;
  for (auto& p : m->named_parameters())
    if (p.key().find("lora_") != std::string::npos) {
      p.value().set_requires_grad(true);
      tp.push_back({p.key(), p.value(), true});
    }
  AdamW opt(tp, OptimConfig{});
  m->set_recompute_layers(o.ckpt);
  ReferencePolicy ref(*m, tp, Reference::Initial);
  std::vector<PreferencePair> pairs(P);
  auto rnd = [&](int64_t n) {
    std::vector<int> v(n);
    for (auto& x : v) x = 3 + std::rand() % (cfg.vocab_size - 3);
    return v;
  };
  for (auto& p : pairs) p.prompt = rnd(Tp), p.chosen = rnd(Tr), p.rejected = rnd(Tr);
  std::vector<int64_t> idx(P);
  for (int64_t i = 0; i < P; ++i) idx[i] = i;
  auto b = make_pair_batch(pairs, idx, o.dev);
  at::Tensor cached_c, cached_r;
  std::tie(cached_c, cached_r) = ref.logps(b);
  m->train();
  auto zero_grads = [&] {
    for (auto& p : tp) p.param.mutable_grad() = at::Tensor();
  };
  auto step = [&](bool precomputed) {
    zero_grads();
    auto lp = pair_logps(*m, b);
    at::Tensor rc = cached_c, rr = cached_r;
    if (!precomputed) std::tie(rc, rr) = ref.logps(b);
    StepLoss s = preference_step_loss(lp, rc, rr, PreferenceLossConfig{}, b.real_tokens);
    (s.sum / s.units).backward();
    opt.step(1e-4);
  };
  // Plain: summed response log-probs of chosen [P] and rejected [P] from full-vocabulary logits everywhere.
  auto plain_logps = [&] {
    auto lp = at::log_softmax(plain_logits(*m, plain_hidden_states(*m, b.input_ids)), -1);
    auto on = b.targets != kIgnoreIndex;
    auto tok = lp.gather(2, b.targets.clamp_min(0).unsqueeze(2)).squeeze(2) * on;
    auto sums = tok.sum(1);
    return std::make_pair(sums.narrow(0, 0, P), sums.narrow(0, P, P));
  };
  auto plain = [&] {
    zero_grads();
    auto [pc, pr] = plain_logps();
    at::Tensor rc, rr;
    {
      torch::NoGradGuard ng;
      m->set_adapters_enabled(false);
      std::tie(rc, rr) = plain_logps();
      m->set_adapters_enabled(true);
    }
    (-at::log_sigmoid(0.1 * ((pc - rc) - (pr - rr)))).mean().backward();
    opt.step(1e-4);
  };
  const double n_layers = double(cfg.layer_matmul_params()), n_head = double(cfg.head_matmul_params());
  const double tokens = 2.0 * P * (Tp + Tr), response_tokens = 2.0 * P * Tr;
  const double attn = tokens * cfg.attention_flops_per_token(Tp + Tr);
  std::string parity;
  if (o.reference) {  // the policy's log-probs both ways, with adapters that do something
    randomize_lora_b(*m);
    torch::NoGradGuard ng;
    auto lp = pair_logps(*m, b);
    auto [pc, pr] = plain_logps();
    double d =
        std::max((lp.chosen_sum - pc).abs().max().item<double>(), (lp.rejected_sum - pr).abs().max().item<double>());
    char buf[96];
    std::snprintf(buf, sizeof buf, "  logp %.3f, max |ours - plain| %.2g", lp.chosen_sum[0].item<double>(), d);
    parity = buf;
  }
  auto report = [&](const char* variant, double best, double flops, const std::string& extra) {
    const bool gpu = o.dev.is_cuda();
    double rate = flops / best / 1e9;
    std::printf("  %-34s %-12s %7.2f pairs/s %9.1f pair-tokens/s %7.1f %s  MFU %5.1f%%  step %.3f s  %s%s\n",
                label.c_str(), variant, P / best, tokens / best, gpu ? rate / 1000 : rate, gpu ? "TFLOP/s" : "GFLOP/s",
                100.0 * rate / o.peak, best, memory_note(o.dev).c_str(), extra.c_str());
    std::fflush(stdout);
  };
  auto time_step = [&](const std::function<void()>& f) {
    reset_peak_device_memory(o.dev);
    return best_seconds(o.steps, o.dev, f);
  };
  double t_live = 0;
  for (bool pre : {false, true}) {
    double best = time_step([&] { step(pre); });
    if (!pre) t_live = best;
    double flops = (pre ? 4.0 : 6.0) * (tokens * n_layers + response_tokens * n_head) + (pre ? 3.0 : 4.0) * attn;
    report(pre ? "precomputed" : "live ref", best, flops, pre ? "" : parity);
  }
  if (!o.reference) return;
  double best = time_step(plain);
  char buf[64];
  std::snprintf(buf, sizeof buf, "  (ours, live ref, %.2fx faster)", best / t_live);
  report("plain", best, 6.0 * (tokens * n_layers + response_tokens * n_head) + 4.0 * attn, buf);
}

static int bench_main(int argc, char** argv) {
  Args a(argc, argv,
         {"layers", "prompt", "response", "threads", "device", "pairs", "ckpt", "steps", "small", "reference"});
  set_threads(a.num("threads", 0));
  auto dev = pick_device(a.str("device", "auto"));
  const bool gpu = dev.is_cuda();
  std::srand(0);
  torch::manual_seed(0);
  double peak32 = matmul_peak_gflops(torch::kFloat32, dev), peak16 = matmul_peak_gflops(torch::kBFloat16, dev);
  Opts o{a.num("pairs", gpu ? 8 : 1),
         a.num("prompt", gpu ? 1024 : 64),
         a.num("response", gpu ? 1024 : 64),
         a.num("steps", gpu ? 3 : 2),
         a.num("ckpt", gpu ? 1 : 0) != 0,
         a.num("reference", gpu ? 0 : 1) != 0,
         dev,
         gpu ? peak16 : peak32};
  std::printf(
      "bench_dpo: sigmoid DPO, LoRA r16 all-linear, prompt %ld + response %ld tokens, %d threads, %s; "
      "matmul peak bf16 %.1f, f32 %.1f GFLOP/s\n",
      (long)o.prompt, (long)o.response, at::get_num_threads(), dev.str().c_str(), peak16, peak32);
  if (a.num("small", 1)) {
    Opts s{8, o.prompt, o.response, 3, false, false, dev, peak32};
    if (gpu) s.prompt = s.response = 64;  // the model takes 512 positions
    run("stories260K f32 8 pairs", load_model(repo_file("models/stories260K"), torch::kFloat32, dev), s);
  }
  auto dt = gpu ? torch::kBFloat16 : torch::kFloat32;  // f32 on a CPU: see bench_train
  int64_t layers = a.num("layers", gpu ? 32 : 4);
  CausalLM m(mistral7b_shape(layers), torch::TensorOptions().dtype(dt).device(dev));
  init_random_weights(*m, dev, 0);
  std::string label = (layers == 32 ? std::string("mistral7b ") : "mistral7b-width " + std::to_string(layers) + "L ") +
                      dtype_short_name(dt) + " " + std::to_string(o.pairs) + (o.pairs == 1 ? " pair" : " pairs") +
                      (o.ckpt ? " ckpt" : "");
  run(label, m, o);
  return 0;
}

int main(int argc, char** argv) {
  affinage::prefer_passive_omp_wait(argv);  // OpenMP threads sleep instead of spinning (base/runtime.h)
  try {
    return bench_main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_dpo: " << e.what() << "\n";
    return 1;
  }
}
