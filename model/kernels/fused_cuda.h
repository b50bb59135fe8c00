// Launchers of the fused CUDA kernels (model/kernels/fused_kernels.cu): plain C++ over raw device pointers, no
// ATen, so nvcc never sees the LibTorch headers. Each returns the cudaError_t of its launch (0 = fine).
// `dtype` is a FusedDtype; `stream` is a cudaStream_t (nullptr = the legacy default stream). All arithmetic is
// fp32; results are rounded once to the element type (round to nearest even). model/kernels/fused_cpu.h holds
// the CPU twin of every function here; model/kernels/fused.h is what the rest of affinage calls.
#pragma once
#include <cstdint>

namespace affinage::kernels {

enum FusedDtype : int { kFusedF32 = 0, kFusedBF16 = 1, kFusedF16 = 2 };

// RMSNorm (transformers' LlamaRMSNorm), rows of `dim` contiguous elements:
//   rstd[r] = 1/sqrt(mean(x[r]^2) + eps)   (fp32, kept for backward)
//   y[r]    = w * T(x[r] * rstd[r])         (T = the element type; w already in that type)
int rms_norm_forward_cuda(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t dim, float eps,
                          int dtype, void* stream);
// dx = rstd * (g*w - n * mean(g*w*n)) with n = x*rstd; dx may be null (not wanted).
// dw (fp32 [dim], may be null) = sum over rows of g * T(n), summed per chunk of rows into `dw_partial`
// (fp32 [rms_norm_dw_chunks(rows) * dim]) and then over the chunks in order: deterministic, no atomics.
int rms_norm_backward_cuda(const void* g, const void* x, const void* w, const float* rstd, void* dx, float* dw_partial,
                           float* dw, int64_t rows, int64_t dim, int dtype, void* stream);
int64_t rms_norm_dw_chunks(int64_t rows);

// Rotate-half RoPE on x of logical shape [B, H, T, d] (d even, last dimension contiguous), element strides
// (sb, sh, st) for x and (ob, oh, ot) for out; cos/sin contiguous [Bc, T, d] with Bc = B or 1 (broadcast).
//   forward:  out1 = x1*c1 - x2*s1,  out2 = x2*c2 + x1*s2      (1 = first half of d, 2 = second half)
//   backward: the transpose, dx1 = g1*c1 + g2*s2, dx2 = g2*c2 - g1*s1 (rotation by -sin); x is then the grad.
struct RopeShape {
  int64_t B, H, T, d;
  int64_t sb, sh, st;  // strides of the input, in elements
  int64_t ob, oh, ot;  // strides of the output, in elements
  bool cos_broadcast;  // cos/sin have batch size 1
};
int rope_cuda(const void* x, const void* cos, const void* sin, void* out, const RopeShape& s, bool backward, int dtype,
              void* stream);

// SwiGLU on n contiguous elements: out = silu(gate) * up; backward (either output may be null):
//   d_gate = g * up * sig(gate) * (1 + gate * (1 - sig(gate))),  d_up = g * silu(gate).
int swiglu_forward_cuda(const void* gate, const void* up, void* out, int64_t n, int dtype, void* stream);
int swiglu_backward_cuda(const void* g, const void* gate, const void* up, void* d_gate, void* d_up, int64_t n,
                         int dtype, void* stream);

}  // namespace affinage::kernels
