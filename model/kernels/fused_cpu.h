// The CPU twins of the fused CUDA kernels: the same functions as model/kernels/fused_cuda.h (same arguments and
// formulas, minus the stream), written again as plain loops over raw pointers. fp32/bf16/fp16 elements, fp32
// arithmetic, one rounding to the element type; rows are split over LibTorch's intra-op threads.
#pragma once
#include <cstdint>
#include "model/kernels/fused_cuda.h"  // FusedDtype, RopeShape

namespace affinage::kernels {

void rms_norm_forward_cpu(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t dim, float eps,
                          int dtype);
// dw: fp32 [dim] or null; summed per fixed chunk of rows and then over the chunks in order, so the result does
// not depend on the number of threads.
void rms_norm_backward_cpu(const void* g, const void* x, const void* w, const float* rstd, void* dx, float* dw,
                           int64_t rows, int64_t dim, int dtype);
void rope_cpu(const void* x, const void* cos, const void* sin, void* out, const RopeShape& s, bool backward, int dtype);
void swiglu_forward_cpu(const void* gate, const void* up, void* out, int64_t n, int dtype);
void swiglu_backward_cpu(const void* g, const void* gate, const void* up, void* d_gate, void* d_up, int64_t n,
                         int dtype);

}  // namespace affinage::kernels
