// LoRA linear layer, forward + backward: our layer (scale folded into the rank-r intermediate, B's product
// added into the base output in place) against the plain PEFT formula y + (B(A(x)) * s) with its full-size
// temporaries, same weights, same inputs, in one run. Shapes of Mistral-7B's q/o (4096x4096) and MLP
// (4096x14336, 14336x4096) projections.
// Usage: build/bench_lora [tokens=256] [r=16] [dtype=f32|bf16] [device=cpu|cuda] [reps=5]
#include <torch/torch.h>
#include <cstdio>
#include <string>
#include "base/runtime.h"
#include "bench/bench_util.h"
#include "model/lora_linear.h"

using namespace affinage;
using namespace affinage::bench;

static int bench_main(int argc, char** argv) {
  Args args(argc, argv, {"tokens", "r", "dtype", "device", "reps"});
  const int64_t T = args.num("tokens", 256), r = args.num("r", 16), reps = args.num("reps", 5);
  const std::string dtype = args.str("dtype", "f32");
  const auto dt = parse_dtype(dtype);
  const c10::Device dev = pick_device(args.str("device", "cpu"));
  set_threads(0);
  std::printf("bench_lora: LoRA r%lld linear fwd+bwd, %lld tokens, %s, %d threads, %s\n", (long long)r, (long long)T,
              dtype.c_str(), at::get_num_threads(), dev.str().c_str());
  for (auto [in, out] : {std::pair<int64_t, int64_t>{4096, 4096}, {4096, 14336}, {14336, 4096}}) {
    torch::manual_seed(0);
    LoraLinear lin(in, out, torch::TensorOptions().dtype(dt).device(dev));
    {
      torch::NoGradGuard ng;
      lin->weight.normal_(0, 0.02);
    }
    lin->attach_lora(r, /*scale=alpha/r=*/2.0, /*dropout=*/0.0, torch::kFloat32);
    {
      torch::NoGradGuard ng;
      lin->lora_B->weight.normal_(0, 0.02);
    }
    const double s = lin->lora_scale();
    auto x = torch::randn({1, T, in}, torch::TensorOptions().dtype(dt).device(dev)).requires_grad_(true);
    auto gy = torch::randn({1, T, out}, torch::TensorOptions().dtype(dt).device(dev));
    auto ours = [&] { return lin->forward(x); };
    auto plain = [&] {  // PEFT's formula in the LoRA weights' dtype
      auto y = torch::nn::functional::linear(x, lin->weight);
      auto h = x.to(torch::kFloat32);
      return y + (lin->lora_B(lin->lora_A(h)) * s).to(y.scalar_type());
    };
    auto time = [&](const std::function<torch::Tensor()>& f) {
      return best_seconds(reps, dev, [&] {
        for (auto* t : {&x, &lin->lora_A->weight, &lin->lora_B->weight}) t->mutable_grad() = torch::Tensor();
        f().backward(gy);
      });
    };
    // same values both ways (the check that the comparison is fair)
    auto a = ours(), b = plain();
    double diff = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
    double t_ours = time(ours), t_plain = time(plain);
    double flops = 6.0 * T * (double(in) * out + double(r) * (in + out));  // fwd 2, bwd 4 per MAC
    std::printf(
        "  %5lld -> %5lld | ours %8.2f ms %6.1f GFLOP/s | plain %8.2f ms %6.1f GFLOP/s | gain %5.1f%% | max diff "
        "%.2e\n",
        (long long)in, (long long)out, t_ours * 1e3, flops / t_ours / 1e9, t_plain * 1e3, flops / t_plain / 1e9,
        100.0 * (t_plain / t_ours - 1.0), diff);
  }
  return 0;
}

int main(int argc, char** argv) {
  prefer_passive_omp_wait(argv);  // OpenMP threads sleep instead of spinning (base/runtime.h)
  try {
    return bench_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_lora: %s\n", e.what());
    return 1;
  }
}
