// Fused RMSNorm, RoPE and SwiGLU (core/kernels/): the CPU twins against the ATen composites the model uses,
// forward and backward (grads of the twin's own backward vs autograd through the composite), in fp32 and bf16,
// on odd sizes; and, in a CUDA build, the CUDA kernels against the CPU twins.
#include <torch/torch.h>
#include "model/attention.h"
#include "model/kernels/fused.h"
#include "tests/test_util.h"

using namespace affinage;
using affinage::test::tensors_close;

namespace {

// Output and input grads of f(inputs) for the upstream grad g; inputs are fresh leaves asking for grads
// where `want_grad` says so.
struct FwdBwd {
  at::Tensor out;
  std::vector<at::Tensor> grads;
};
template <class F>
FwdBwd run(F&& f, const std::vector<at::Tensor>& inputs, const std::vector<bool>& want_grad, const at::Tensor& g) {
  std::vector<at::Tensor> leaves;
  for (size_t i = 0; i < inputs.size(); ++i) leaves.push_back(inputs[i].detach().clone().requires_grad_(want_grad[i]));
  auto out = f(leaves);
  out.backward(g);
  FwdBwd r{out.detach(), {}};
  for (auto& l : leaves) r.grads.push_back(l.grad());
  return r;
}

// The same inputs in fp32: what the bf16 results are checked against besides the bf16 composite.
std::vector<at::Tensor> to_f32(const std::vector<at::Tensor>& v) {
  std::vector<at::Tensor> out;
  for (auto& t : v) out.push_back(t.to(at::kFloat));
  return out;
}

// bf16 keeps 8 significant bits: one rounding is a relative error of at most 2^-9; fp32 arithmetic on the
// exact bf16 inputs (the twins) is within a rounding or two of the fp32 result. Differences that cancel
// (RMSNorm's dx) are bounded by the largest magnitude, hence the atol scaled by max |ref|.
::testing::AssertionResult bf16_close(const at::Tensor& a, const at::Tensor& ref, double ulps) {
  double scale = ref.abs().max().item<double>();
  return tensors_close(a, ref, ulps * std::ldexp(scale, -9), ulps * std::ldexp(1.0, -9));
}

void expect_runs_close(const FwdBwd& a, const FwdBwd& b, double atol, double rtol, const char* what) {
  EXPECT_TRUE(tensors_close(a.out, b.out, atol, rtol)) << what << ": forward";
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    ASSERT_EQ(a.grads[i].defined(), b.grads[i].defined()) << what << ": grad " << i;
    if (a.grads[i].defined()) {
      EXPECT_TRUE(tensors_close(a.grads[i], b.grads[i], atol, rtol)) << what << ": grad " << i;
    }
  }
}

void expect_runs_bf16(const FwdBwd& a, const FwdBwd& ref, double ulps, const char* what) {
  EXPECT_TRUE(bf16_close(a.out, ref.out, ulps)) << what << ": forward";
  for (size_t i = 0; i < a.grads.size(); ++i)
    if (a.grads[i].defined()) {
      EXPECT_TRUE(bf16_close(a.grads[i], ref.grads[i], ulps)) << what << ": grad " << i;
    }
}

constexpr double kEps = 1e-5;

auto rms_fused = [](const std::vector<at::Tensor>& v) { return fused_rms_norm(v[0], v[1], kEps); };
auto rms_ref = [](const std::vector<at::Tensor>& v) { return rms_norm_composite(v[0], v[1], kEps); };
auto swiglu_fused = [](const std::vector<at::Tensor>& v) { return fused_swiglu(v[0], v[1]); };
auto swiglu_ref = [](const std::vector<at::Tensor>& v) { return swiglu_composite(v[0], v[1]); };
auto rope_fused = [](const std::vector<at::Tensor>& v) { return fused_apply_rope(v[0], v[1], v[2]); };
auto rope_ref = [](const std::vector<at::Tensor>& v) { return apply_rope(v[0], v[1], v[2]); };

// RMSNorm inputs: x [shape], w [D] around 1, g like x.
std::vector<at::Tensor> rms_inputs(at::IntArrayRef shape, at::ScalarType t) {
  auto x = torch::randn(shape) * 2 + 0.5;
  auto w = 1 + 0.3 * torch::randn({shape.back()});
  return {x.to(t), w.to(t)};
}

// q as the model makes it: [B, T, H, d] memory seen as [B, H, T, d]; cos/sin of random positions.
std::vector<at::Tensor> rope_inputs(int64_t B, int64_t H, int64_t T, int64_t d, at::ScalarType t, bool cos_b1) {
  auto x = torch::randn({B, T, H, d}).to(t).transpose(1, 2);
  auto pos = torch::randint(0, 4096, {cos_b1 ? 1 : B, T}, torch::kLong);
  auto [cos, sin] = rope_cos_sin(pos, d, 10000.0, t);
  return {x, cos, sin};
}

}  // namespace

TEST(Kernels, RmsNormTwinMatchesCompositeF32) {
  torch::manual_seed(0);
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 7}, {3, 5, 37}, {300, 37}, {2, 4096}}) {
    auto in = rms_inputs(shape, at::kFloat);
    auto g = torch::randn(shape);
    auto a = run(rms_fused, in, {true, true}, g), b = run(rms_ref, in, {true, true}, g);
    expect_runs_close(a, b, 1e-5, 1e-5, "rms_norm f32");
  }
}

TEST(Kernels, RmsNormTwinMatchesCompositeBF16) {
  torch::manual_seed(1);
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 7}, {3, 5, 37}, {300, 37}, {2, 4096}}) {
    auto in = rms_inputs(shape, at::kBFloat16);
    auto g = torch::randn(shape).to(at::kBFloat16);
    auto a = run(rms_fused, in, {true, true}, g), b = run(rms_ref, in, {true, true}, g);
    auto exact = run(rms_ref, to_f32(in), {true, true}, g.to(at::kFloat));
    expect_runs_bf16(a, exact, 2, "rms_norm bf16 twin vs fp32");  // one rounding (two for y = w * T(n))
    // the composite rounds after each op; on a sum over many rows (dw) that adds up to a few ulps.
    expect_runs_bf16(a, b, 8, "rms_norm bf16 twin vs bf16 composite");
  }
}

TEST(Kernels, RmsNormFrozenWeightAndMixedTypes) {
  torch::manual_seed(2);
  // A frozen weight (LoRA) gets no gradient and costs none; an fp32 weight with bf16 x is cast first.
  auto x = torch::randn({4, 19}).to(at::kBFloat16);
  auto w = (1 + 0.1 * torch::randn({19}));
  auto g = torch::randn({4, 19}).to(at::kBFloat16);
  auto a = run(rms_fused, {x, w}, {true, false}, g), b = run(rms_ref, {x, w}, {true, false}, g);
  EXPECT_FALSE(a.grads[1].defined());
  EXPECT_TRUE(bf16_close(a.out, b.out, 4));
  EXPECT_TRUE(bf16_close(a.grads[0], b.grads[0], 4));
  auto c = run(rms_fused, {x, w}, {false, true}, g), d = run(rms_ref, {x, w}, {false, true}, g);
  EXPECT_EQ(c.grads[1].scalar_type(), at::kFloat);
  EXPECT_TRUE(bf16_close(c.grads[1], d.grads[1], 8));
}

TEST(Kernels, RmsNormWeightGradDoesNotDependOnThreads) {
  torch::manual_seed(3);
  auto in = rms_inputs({700, 33}, at::kFloat);
  auto g = torch::randn({700, 33});
  int before = at::get_num_threads();
  at::set_num_threads(1);
  auto a = run(rms_fused, in, {true, true}, g);
  at::set_num_threads(2);
  auto b = run(rms_fused, in, {true, true}, g);
  at::set_num_threads(before);
  EXPECT_TRUE(at::equal(a.grads[1], b.grads[1]));
  EXPECT_TRUE(at::equal(a.grads[0], b.grads[0]));
}

TEST(Kernels, RopeTwinMatchesCompositeF32) {
  torch::manual_seed(4);
  for (bool cos_b1 : {false, true})
    for (auto [B, H, T, d] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 2}, {2, 3, 5, 6}, {2, 4, 9, 128}}) {
      auto in = rope_inputs(B, H, T, d, at::kFloat, cos_b1);
      auto g = torch::randn({B, H, T, d});
      auto a = run(rope_fused, in, {true, false, false}, g), b = run(rope_ref, in, {true, false, false}, g);
      expect_runs_close(a, b, 1e-5, 1e-5, "rope f32");
    }
}

TEST(Kernels, RopeKeepsTheLayoutOfItsInput) {
  torch::manual_seed(5);
  auto in = rope_inputs(2, 3, 4, 8, at::kFloat, false);  // a transposed view, like q and k in attention
  auto y = fused_apply_rope(in[0], in[1], in[2]);
  EXPECT_EQ(y.strides(), in[0].strides());
  auto xc = in[0].contiguous();
  EXPECT_TRUE(tensors_close(fused_apply_rope(xc, in[1], in[2]), apply_rope(xc, in[1], in[2]), 1e-6, 1e-6));
}

TEST(Kernels, RopeTwinMatchesCompositeBF16) {
  torch::manual_seed(6);
  for (auto [B, H, T, d] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 2}, {2, 3, 5, 6}, {2, 4, 9, 128}}) {
    auto in = rope_inputs(B, H, T, d, at::kBFloat16, false);
    auto g = torch::randn({B, H, T, d}).to(at::kBFloat16);
    auto a = run(rope_fused, in, {true, false, false}, g), b = run(rope_ref, in, {true, false, false}, g);
    auto exact = run(rope_ref, to_f32(in), {true, false, false}, g.to(at::kFloat));
    expect_runs_bf16(a, exact, 1, "rope bf16 twin vs fp32");
    expect_runs_bf16(a, b, 4, "rope bf16 twin vs bf16 composite");
  }
}

TEST(Kernels, SwiGLUTwinMatchesCompositeF32) {
  torch::manual_seed(7);
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 13}, {2, 3, 37}, {4, 14336}}) {
    std::vector<at::Tensor> in{torch::randn(shape) * 3, torch::randn(shape)};
    auto g = torch::randn(shape);
    auto a = run(swiglu_fused, in, {true, true}, g), b = run(swiglu_ref, in, {true, true}, g);
    expect_runs_close(a, b, 1e-5, 1e-5, "swiglu f32");
    auto c = run(swiglu_fused, in, {false, true}, g);  // frozen gate: only up's grad
    EXPECT_FALSE(c.grads[0].defined());
    EXPECT_TRUE(tensors_close(c.grads[1], b.grads[1], 1e-5, 1e-5));
  }
}

TEST(Kernels, SwiGLUTwinMatchesCompositeBF16) {
  torch::manual_seed(8);
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 13}, {2, 3, 37}, {4, 14336}}) {
    std::vector<at::Tensor> in{(torch::randn(shape) * 3).to(at::kBFloat16), torch::randn(shape).to(at::kBFloat16)};
    auto g = torch::randn(shape).to(at::kBFloat16);
    auto a = run(swiglu_fused, in, {true, true}, g), b = run(swiglu_ref, in, {true, true}, g);
    auto exact = run(swiglu_ref, to_f32(in), {true, true}, g.to(at::kFloat));
    expect_runs_bf16(a, exact, 1, "swiglu bf16 twin vs fp32");
    expect_runs_bf16(a, b, 4, "swiglu bf16 twin vs bf16 composite");
  }
}

TEST(Kernels, UnsupportedInputsAreClearErrors) {
  auto x = torch::randn({2, 4}, torch::kDouble);
  EXPECT_FALSE(use_fused(FusedOp::SwiGLU, x));
  test::expect_error([&] { fused_swiglu(x, x); }, {"fused_swiglu", "not supported"});
  test::expect_error(
      [&] {
        fused_rms_norm(torch::randn({2, 4}), torch::ones({5}), 1e-5);
      },
      {"fused_rms_norm", "weight"});
  test::expect_error(
      [&] {
        fused_apply_rope(torch::randn({2, 4}), torch::randn({1, 2, 4}), torch::randn({1, 2, 4}));
      },
      {"fused_apply_rope", "[B, H, T, d]"});
}

#ifdef AFFINAGE_CUDA_KERNELS
// The CUDA kernels against the CPU twins: the same fp32 arithmetic in another order (block reductions,
// rsqrtf, expf), so fp32 agrees to ~1e-5 and bf16/fp16 to one rounding.
TEST(Kernels, CudaKernelsMatchCpuTwins) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "built with the CUDA kernels, but no GPU is visible";
  torch::manual_seed(9);
  auto cuda = [](const std::vector<at::Tensor>& v) {
    std::vector<at::Tensor> out;
    for (auto& t : v) out.push_back(t.to(at::kCUDA));
    return out;
  };
  for (auto t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const double ulps = t == at::kFloat ? 0 : 2, f32 = 2e-5;
    auto check = [&](const FwdBwd& gpu, const FwdBwd& cpu, const char* what) {
      if (t == at::kFloat) return expect_runs_close(gpu, cpu, f32, f32, what);
      double unit = std::ldexp(1.0, t == at::kHalf ? -11 : -9);
      EXPECT_TRUE(tensors_close(gpu.out, cpu.out, ulps * unit * cpu.out.abs().max().item<double>(), ulps * unit))
          << what;
      for (size_t i = 0; i < gpu.grads.size(); ++i) {
        if (!cpu.grads[i].defined()) continue;
        double atol = ulps * unit * cpu.grads[i].abs().max().item<double>();
        EXPECT_TRUE(tensors_close(gpu.grads[i], cpu.grads[i], atol, ulps * unit)) << what << ": grad " << i;
      }
    };
    for (auto shape : std::vector<std::vector<int64_t>>{{1, 7}, {300, 37}, {64, 4096}}) {
      auto in = rms_inputs(shape, t);
      auto g = torch::randn(shape).to(t);
      check(run(rms_fused, cuda(in), {true, true}, g.to(at::kCUDA)), run(rms_fused, in, {true, true}, g), "rms_norm");
      std::vector<at::Tensor> sw{(torch::randn(shape) * 3).to(t), torch::randn(shape).to(t)};
      check(run(swiglu_fused, cuda(sw), {true, true}, g.to(at::kCUDA)), run(swiglu_fused, sw, {true, true}, g),
            "swiglu");
    }
    for (bool cos_b1 : {false, true}) {
      auto in = rope_inputs(2, 4, 9, 128, t, cos_b1);
      auto g = torch::randn({2, 4, 9, 128}).to(t);
      check(run(rope_fused, cuda(in), {true, false, false}, g.to(at::kCUDA)),
            run(rope_fused, in, {true, false, false}, g), "rope");
    }
  }
}
#endif
