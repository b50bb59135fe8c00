// Autograd ops over the fused kernels and the choice between them and the composites (see model/kernels/fused.h).
#include "model/kernels/fused.h"
#include <torch/autograd.h>
#include <cstdlib>
#include <functional>
#include <string>
#include "base/error.h"
#include "model/kernels/fused_cpu.h"
#include "model/kernels/fused_cuda.h"

namespace affinage {

#ifdef AFFINAGE_CUDA_KERNELS
namespace kernels {
// model/kernels/fused_cuda_glue.cpp: runs launch(stream) on t's device and current stream; throws on a CUDA error.
void launch_cuda(const at::Tensor& t, const char* what, const std::function<int(void*)>& launch);
}  // namespace kernels
#endif

// The CUDA launch of an op, as a function of the stream; a stub when the kernels were not compiled (the
// launchers do not exist then, and run() refuses CUDA tensors before calling it).
#ifdef AFFINAGE_CUDA_KERNELS
#define AFFINAGE_CUDA_LAUNCH(call) [&](void* st) { return call; }
#else
#define AFFINAGE_CUDA_LAUNCH(call) [](void*) { return -1; }
#endif

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
namespace k = kernels;

int fused_dtype(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return k::kFusedF32;
    case at::kBFloat16:
      return k::kFusedBF16;
    case at::kHalf:
      return k::kFusedF16;
    default:
      fail(what, ": tensors of type ", t.scalar_type(), " are not supported (fp32, bf16 or fp16)");
  }
}

// An output gradient's data, or null when autograd does not need that gradient (the kernels skip it).
void* ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// Runs the CUDA launcher for a CUDA tensor, the CPU twin otherwise.
void run(const at::Tensor& t, const char* what, const std::function<int(void*)>& cuda,
         const std::function<void()>& cpu) {
  if (t.is_cuda()) {
#ifdef AFFINAGE_CUDA_KERNELS
    k::launch_cuda(t, what, cuda);
    return;
#else
    fail(what, ": a CUDA tensor, but affinage was built without its CUDA kernels (a CPU-only LibTorch)");
#endif
  }
  if (!t.is_cpu()) fail(what, ": tensors on ", t.device(), " are not supported");
  cpu();
}

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::Tensor w, double eps) {
    const int64_t dim = x.size(-1);
    if (w.dim() != 1 || w.size(0) != dim) fail("fused_rms_norm: weight ", w.sizes(), " for rows of ", dim);
    const int dt = fused_dtype(x, "fused_rms_norm");
    auto xc = x.contiguous(), wc = w.contiguous();
    const int64_t rows = dim ? xc.numel() / dim : 0;
    auto y = at::empty(xc.sizes(), xc.options());
    auto rstd = at::empty({rows}, xc.options().dtype(at::kFloat));
    run(xc, "fused_rms_norm",
        AFFINAGE_CUDA_LAUNCH(k::rms_norm_forward_cuda(xc.data_ptr(), wc.data_ptr(), y.data_ptr(),
                                                      rstd.data_ptr<float>(), rows, dim, float(eps), dt, st)),
        [&] {
          k::rms_norm_forward_cpu(xc.data_ptr(), wc.data_ptr(), y.data_ptr(), rstd.data_ptr<float>(), rows, dim,
                                  float(eps), dt);
        });
    ctx->save_for_backward({xc, wc, rstd});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto saved = ctx->get_saved_variables();
    auto &x = saved[0], &w = saved[1], &rstd = saved[2];
    auto g = grad[0].contiguous();
    const int64_t dim = x.size(-1), rows = rstd.numel();
    const int dt = fused_dtype(x, "fused_rms_norm backward");
    at::Tensor dx, dw, dw_partial;
    if (ctx->needs_input_grad(0)) dx = at::empty(x.sizes(), x.options());
    if (ctx->needs_input_grad(1)) {
      dw = at::empty({dim}, x.options().dtype(at::kFloat));
#ifdef AFFINAGE_CUDA_KERNELS
      if (x.is_cuda()) dw_partial = at::empty({k::rms_norm_dw_chunks(rows), dim}, dw.options());
#endif
    }
    run(x, "fused_rms_norm backward",
        AFFINAGE_CUDA_LAUNCH(k::rms_norm_backward_cuda(g.data_ptr(), x.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(),
                                                       ptr(dx), static_cast<float*>(ptr(dw_partial)),
                                                       static_cast<float*>(ptr(dw)), rows, dim, dt, st)),
        [&] {
          k::rms_norm_backward_cpu(g.data_ptr(), x.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(), ptr(dx),
                                   static_cast<float*>(ptr(dw)), rows, dim, dt);
        });
    if (dw.defined()) dw = dw.to(w.scalar_type());
    return {dx, dw, at::Tensor()};
  }
};

// The kernel's view of x [B, H, T, d] and out; cos/sin [B or 1, T, d].
k::RopeShape rope_shape(const at::Tensor& x, const at::Tensor& out, const at::Tensor& cos) {
  return {x.size(0),
          x.size(1),
          x.size(2),
          x.size(3),
          x.stride(0),
          x.stride(1),
          x.stride(2),
          out.stride(0),
          out.stride(1),
          out.stride(2),
          cos.size(0) == 1 && x.size(0) != 1};
}

// Applies the rotation (or its transpose) to x into a new tensor of x's layout.
at::Tensor rope_apply(const at::Tensor& x_in, const at::Tensor& c, const at::Tensor& s, bool backward) {
  auto x = x_in.stride(-1) == 1 ? x_in : x_in.contiguous();
  auto out = at::empty_like(x);  // keeps x's strides when x is dense (q/k are transposed views)
  if (out.stride(-1) != 1) out = at::empty(x.sizes(), x.options());
  auto shape = rope_shape(x, out, c);
  const int dt = fused_dtype(x, "fused_apply_rope");
  run(x, "fused_apply_rope",
      AFFINAGE_CUDA_LAUNCH(
          k::rope_cuda(x.data_ptr(), c.data_ptr(), s.data_ptr(), out.data_ptr(), shape, backward, dt, st)),
      [&] { k::rope_cpu(x.data_ptr(), c.data_ptr(), s.data_ptr(), out.data_ptr(), shape, backward, dt); });
  return out;
}

struct RopeFn : torch::autograd::Function<RopeFn> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::Tensor cos, at::Tensor sin) {
    if (x.dim() != 4 || cos.dim() != 3 || x.size(-1) % 2 != 0 || cos.sizes() != sin.sizes() ||
        cos.size(1) != x.size(2) || cos.size(2) != x.size(3) || (cos.size(0) != x.size(0) && cos.size(0) != 1))
      fail("fused_apply_rope: x ", x.sizes(), " (want [B, H, T, d], d even) and cos/sin ", cos.sizes(), " / ",
           sin.sizes(), " (want [B or 1, T, d])");
    auto c = cos.to(x.scalar_type()).contiguous(), s = sin.to(x.scalar_type()).contiguous();
    ctx->saved_data["cos"] = c;
    ctx->saved_data["sin"] = s;
    return rope_apply(x, c, s, /*backward=*/false);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto c = ctx->saved_data["cos"].toTensor(), s = ctx->saved_data["sin"].toTensor();
    return {rope_apply(grad[0], c, s, /*backward=*/true), at::Tensor(), at::Tensor()};
  }
};

struct SwiGLUFn : torch::autograd::Function<SwiGLUFn> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor gate, at::Tensor up) {
    if (gate.sizes() != up.sizes() || gate.scalar_type() != up.scalar_type() || gate.device() != up.device())
      fail("fused_swiglu: gate ", gate.sizes(), " ", gate.scalar_type(), " and up ", up.sizes(), " ", up.scalar_type(),
           " differ");
    const int dt = fused_dtype(gate, "fused_swiglu");
    auto a = gate.contiguous(), b = up.contiguous();
    auto out = at::empty(a.sizes(), a.options());
    run(a, "fused_swiglu",
        AFFINAGE_CUDA_LAUNCH(k::swiglu_forward_cuda(a.data_ptr(), b.data_ptr(), out.data_ptr(), a.numel(), dt, st)),
        [&] { k::swiglu_forward_cpu(a.data_ptr(), b.data_ptr(), out.data_ptr(), a.numel(), dt); });
    ctx->save_for_backward({a, b});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto saved = ctx->get_saved_variables();
    auto &a = saved[0], &b = saved[1];
    auto g = grad[0].contiguous();
    at::Tensor da, db;
    if (ctx->needs_input_grad(0)) da = at::empty(a.sizes(), a.options());
    if (ctx->needs_input_grad(1)) db = at::empty(b.sizes(), b.options());
    const int dt = fused_dtype(a, "fused_swiglu backward");
    run(a, "fused_swiglu backward",
        AFFINAGE_CUDA_LAUNCH(
            k::swiglu_backward_cuda(g.data_ptr(), a.data_ptr(), b.data_ptr(), ptr(da), ptr(db), a.numel(), dt, st)),
        [&] { k::swiglu_backward_cpu(g.data_ptr(), a.data_ptr(), b.data_ptr(), ptr(da), ptr(db), a.numel(), dt); });
    return {da, db};
  }
};

// On CPU a twin is used only where bench/bench_kernels measured it faster than the composite, forward plus
// backward (bench/RESULTS.md, "Fused kernels").
constexpr bool kCpuTwinPays[] = {/*RMSNorm*/ true, /*Rope*/ true, /*SwiGLU*/ true};

bool env_disabled() {
  static const bool off = [] {
    const char* v = std::getenv("AFFINAGE_FUSED_KERNELS");
    return v && std::string(v) == "0";
  }();
  return off;
}

}  // namespace

at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return RmsNormFn::apply(x, w.to(x.scalar_type()), eps);
}

at::Tensor fused_apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return RopeFn::apply(x, cos, sin);
}

at::Tensor fused_swiglu(const at::Tensor& gate, const at::Tensor& up) { return SwiGLUFn::apply(gate, up); }

at::Tensor rms_norm_composite(const at::Tensor& x, const at::Tensor& w, double eps) {
  auto h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return w.to(x.scalar_type()) * h.to(x.scalar_type());
}

at::Tensor swiglu_composite(const at::Tensor& gate, const at::Tensor& up) { return at::silu(gate) * up; }

bool fused_cuda_kernels_compiled() {
#ifdef AFFINAGE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

bool use_fused(FusedOp op, const at::Tensor& x) {
  auto t = x.scalar_type();
  if (env_disabled() || (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf)) return false;
  if (x.is_cuda()) return fused_cuda_kernels_compiled();
  return x.is_cpu() && kCpuTwinPays[static_cast<int>(op)];
}

}  // namespace affinage
