// LoRA SFT training-step throughput (forward + backward + AdamW) and MFU against the matmul peak measured in
// the same run: the bundled stories260K (small), then a Mistral-7B-shaped stack (random weights, LoRA r16 on
// all linears). On a GPU that is the real Mistral-7B-v0.3 config (32 layers, bf16, weights drawn on the
// device), 8 packed rows of 4096 tokens with activation checkpointing, and the peak GPU memory. On a CPU it is
// 4 layers of that width in f32, side by side with a plain reference step (bench_util.h: LoRA merged into
// dense weights, [T, T] attention scores, full-vocabulary fp32 logits + cross_entropy) and its loss parity.
// FLOPs per token, the LoRA convention: 4N (N = matmul parameters incl. the head: forward + activation
// gradients, no weight gradients) + causal attention 3 x 2·L·T·H·d. Recomputation under checkpointing is not
// counted (MFU, not hardware utilisation).
// Usage: build/bench_train [layers] [seq] [threads] [device] [key=value ...]; keys: layers, seq, threads (0 =
// all cores), device (auto|cpu|cuda), rows, docs (documents packed per row, 1 = plain causal), ckpt (0|1),
// dtype (bf16|f32), steps (timed, best counts), small (0|1: the stories260K line), reference (0|1).
// Defaults: CPU layers=4 seq=256 rows=1 dtype=f32 ckpt=0 reference=1; CUDA layers=32 seq=4096 rows=8 dtype=bf16
// ckpt=1 reference=0. On a CPU without AVX-512 bf16 has only a reference kernel (~4 GFLOP/s): use f32 there.
#include <functional>
#include <iostream>
#include "base/runtime.h"
#include "bench/bench_util.h"
#include "lora/adapter.h"
#include "model/loader.h"
#include "model/loss.h"
#include "model/model.h"
#include "train/optim.h"

using namespace affinage;
using namespace affinage::bench;

struct Opts {
  int64_t rows, seq, docs, steps;
  bool ckpt, reference;
  torch::Device dev;
  double peak;  // GFLOP/s of the model's dtype
};

static void report(const std::string& label, const std::string& variant, double tokens, double flops, double s,
                   const Opts& o, const std::string& extra = "") {
  const bool gpu = o.dev.is_cuda();
  double rate = flops / s / 1e9;
  std::printf("  %-34s %-6s %9.1f tokens/s %8.1f %s  MFU %5.1f%%  step %.3f s  %s%s\n", label.c_str(), variant.c_str(),
              tokens / s, gpu ? rate / 1000 : rate, gpu ? "TFLOP/s" : "GFLOP/s", 100.0 * rate / o.peak, s,
              memory_note(o.dev).c_str(), extra.c_str());
  std::fflush(stdout);
}

static void run(const std::string& label, CausalLM m, const Opts& o) {
  const auto& cfg = m->config();
  const int64_t B = o.rows, T = o.seq, V = cfg.vocab_size;
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  LoraConfig lc;
  lc.r = 16;
  lc.alpha = 32;
  lc.targets = {"all-linear"};
  inject_lora(*m, lc, 0);
  std::vector<NamedParam> tp;
  for (auto& p : m->named_parameters())
    if (p.key().find("lora_") != std::string::npos) {
      p.value().set_requires_grad(true);
      tp.push_back({p.key(), p.value(), true});
    }
  AdamW opt(tp, OptimConfig{});
  m->set_recompute_layers(o.ckpt);
  m->train();
  auto lopts = torch::TensorOptions().dtype(torch::kLong).device(o.dev);
  auto ids = torch::randint(0, V, {B, T}, lopts);
  auto targets = ids.roll(-1, 1);
  at::Tensor pos, docs;  // packed rows: `docs` documents of T/docs tokens, positions restarting in each
  if (o.docs > 1) {
    auto slot = torch::arange(T, lopts);
    int64_t len = (T + o.docs - 1) / o.docs;
    pos = (slot % len).unsqueeze(0).expand({B, T});
    docs = at::div(slot, len, "floor").unsqueeze(0).expand({B, T});
  }
  auto zero_grads = [&] {
    for (auto& p : tp) p.param.mutable_grad() = at::Tensor();
  };
  auto ours = [&] {
    zero_grads();
    auto l = token_nll(*m, m->hidden_states(ids, pos, docs), targets);
    (l.sum / double(l.count)).backward();
    opt.step(1e-4);
  };
  auto plain = [&] {
    zero_grads();
    auto logits = plain_logits(*m, plain_hidden_states(*m, ids));
    torch::nn::functional::cross_entropy(logits.view({-1, V}), targets.reshape({-1})).backward();
    opt.step(1e-4);
  };
  const double per_token = 4.0 * (double(cfg.layer_matmul_params()) + double(cfg.head_matmul_params())) +
                           3.0 * cfg.attention_flops_per_token(o.docs > 1 ? (T + o.docs - 1) / o.docs : T);
  const double tokens = double(B) * T;
  std::string parity;
  if (o.reference) {  // the same loss both ways, with adapters that do something
    randomize_lora_b(*m);
    torch::NoGradGuard ng;
    auto l = token_nll(*m, m->hidden_states(ids), targets);
    double a = (l.sum / double(l.count)).item<double>();
    double b = torch::nn::functional::cross_entropy(plain_logits(*m, plain_hidden_states(*m, ids)).view({-1, V}),
                                                    targets.reshape({-1}))
                   .item<double>();
    char buf[96];
    std::snprintf(buf, sizeof buf, "  loss %.5f vs plain %.5f", a, b);
    parity = buf;
  }
  reset_peak_device_memory(o.dev);
  double t_ours = best_seconds(o.steps, o.dev, ours);
  report(label, "ours", tokens, tokens * per_token, t_ours, o, parity);
  if (!o.reference) return;
  reset_peak_device_memory(o.dev);
  double t_plain = best_seconds(o.steps, o.dev, plain);
  char buf[64];
  std::snprintf(buf, sizeof buf, "  (ours %.2fx faster)", t_plain / t_ours);
  report(label, "plain", tokens, tokens * per_token, t_plain, o, buf);
}

static int bench_main(int argc, char** argv) {
  Args a(argc, argv,
         {"layers", "seq", "threads", "device", "rows", "docs", "ckpt", "dtype", "steps", "small", "reference"});
  set_threads(a.num("threads", 0));
  auto dev = pick_device(a.str("device", "auto"));
  const bool gpu = dev.is_cuda();
  torch::manual_seed(0);
  double peak32 = matmul_peak_gflops(torch::kFloat32, dev), peak16 = matmul_peak_gflops(torch::kBFloat16, dev);
  std::printf("bench_train: LoRA r16 all-linear, %d threads, %s; matmul peak bf16 %.1f, f32 %.1f GFLOP/s\n",
              at::get_num_threads(), dev.str().c_str(), peak16, peak32);
  if (a.num("small", 1)) {
    Opts o{8, 256, 1, 3, false, false, dev, peak32};
    run("stories260K f32 8x256", load_model(repo_file("models/stories260K"), torch::kFloat32, dev), o);
  }
  auto dt = parse_dtype(a.str("dtype", gpu ? "bf16" : "f32"));
  int64_t layers = a.num("layers", gpu ? 32 : 4);
  Opts o{a.num("rows", gpu ? 8 : 1),
         a.num("seq", gpu ? 4096 : 256),
         std::max<int64_t>(1, a.num("docs", 1)),
         a.num("steps", gpu ? 3 : 2),
         a.num("ckpt", gpu ? 1 : 0) != 0,
         a.num("reference", gpu ? 0 : 1) != 0,
         dev,
         dt == torch::kBFloat16 ? peak16 : peak32};
  if (!gpu && dt == torch::kBFloat16 && o.peak < 50)
    std::printf("  note: bf16 matmul runs at %.1f GFLOP/s here (no fast bf16 kernel on this CPU); expect a slow run\n",
                o.peak);
  CausalLM m(mistral7b_shape(layers), torch::TensorOptions().dtype(dt).device(dev));
  init_random_weights(*m, dev, 0);
  std::string label = (layers == 32 ? std::string("mistral7b ") : "mistral7b-width " + std::to_string(layers) + "L ") +
                      dtype_short_name(dt) + " " + std::to_string(o.rows) + "x" + std::to_string(o.seq) +
                      (o.docs > 1 ? " " + std::to_string(o.docs) + "docs" : "") + (o.ckpt ? " ckpt" : "");
  run(label, m, o);
  return 0;
}

int main(int argc, char** argv) {
  affinage::prefer_passive_omp_wait(argv);  // OpenMP threads sleep instead of spinning (base/runtime.h)
  try {
    return bench_main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_train: " << e.what() << "\n";
    return 1;
  }
}
