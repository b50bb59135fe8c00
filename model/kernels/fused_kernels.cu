// The fused CUDA kernels: RMSNorm, rotate-half RoPE and SwiGLU, forward and backward, for fp32/bf16/fp16
// elements with fp32 arithmetic (launcher API and formulas: model/kernels/fused_cuda.h; CPU twin:
// model/kernels/fused_cpu.cpp). Plain CUDA C++: no ATen headers, raw pointers, the caller's stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include "model/kernels/fused_cuda.h"

namespace affinage::kernels {
namespace {

// Element type <-> fp32 (round to nearest even, as c10::BFloat16 / c10::Half on the CPU).
template <class T>
struct Cvt;
template <>
struct Cvt<float> {
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
template <>
struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Cvt<__half> {
  static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <class T>
__device__ __forceinline__ float ld(const T* p, int64_t i) {
  return Cvt<T>::load(p[i]);
}
template <class T>
__device__ __forceinline__ float round_to(float v) {
  return Cvt<T>::load(Cvt<T>::store(v));
}

constexpr int kNormThreads = 256;  // one block per row for RMSNorm
constexpr int kDwChunkRows = 64;   // rows summed per partial of RMSNorm's weight gradient
constexpr int kEltThreads = 256;   // elementwise kernels

// Sum over the block (blockDim.x == kNormThreads); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[kNormThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float s = 0.f;
  for (int i = 0; i < kNormThreads / 32; ++i) s += warp_sums[i];  // same order in every thread
  __syncthreads();                                                // warp_sums may be reused by a following call
  return s;
}

// ---- RMSNorm
template <class T>
__global__ void rms_norm_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                    float* __restrict__ rstd, int64_t dim, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * dim;
  T* yr = y + row * dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = ld(xr, i);
    ss += v * v;
  }
  float r = rsqrtf(block_sum(ss) / float(dim) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = Cvt<T>::store(ld(w, i) * round_to<T>(ld(xr, i) * r));
}

template <class T>
__global__ void rms_norm_dx_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                                   const float* __restrict__ rstd, T* __restrict__ dx, int64_t dim) {
  const int64_t row = blockIdx.x;
  const T *gr = g + row * dim, *xr = x + row * dim;
  const float r = rstd[row];
  float dot = 0.f;  // sum of (g*w) * n
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dot += ld(gr, i) * ld(w, i) * (ld(xr, i) * r);
  const float mean = block_sum(dot) / float(dim);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    dx[row * dim + i] = Cvt<T>::store(r * (ld(gr, i) * ld(w, i) - ld(xr, i) * r * mean));
}

// partial[c, j] = sum over rows r of chunk c of g[r, j] * T(x[r, j] * rstd[r]); one thread per column.
template <class T>
__global__ void rms_norm_dw_partial_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                           const float* __restrict__ rstd, float* __restrict__ partial, int64_t rows,
                                           int64_t dim) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= dim) return;
  const int64_t r0 = int64_t(blockIdx.y) * kDwChunkRows;
  const int64_t r1 = min(rows, r0 + kDwChunkRows);
  float s = 0.f;
  for (int64_t r = r0; r < r1; ++r) s += ld(g, r * dim + j) * round_to<T>(ld(x, r * dim + j) * rstd[r]);
  partial[int64_t(blockIdx.y) * dim + j] = s;
}

__global__ void sum_chunks_kernel(const float* __restrict__ partial, float* __restrict__ out, int64_t chunks,
                                  int64_t dim) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= dim) return;
  float s = 0.f;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * dim + j];
  out[j] = s;
}

// ---- RoPE: one thread per (row, i < d/2) pair, grid-stride.
template <class T>
__global__ void rope_kernel(const T* __restrict__ x, const T* __restrict__ cos, const T* __restrict__ sin,
                            T* __restrict__ out, RopeShape s, bool backward) {
  const int64_t half = s.d / 2;
  const int64_t n = s.B * s.H * s.T * half;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < n; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % half;
    int64_t row = p / half;
    const int64_t t = row % s.T;
    row /= s.T;
    const int64_t h = row % s.H, b = row / s.H;
    const T* xr = x + b * s.sb + h * s.sh + t * s.st;
    T* outr = out + b * s.ob + h * s.oh + t * s.ot;
    const int64_t cs = ((s.cos_broadcast ? 0 : b) * s.T + t) * s.d;
    const float c1 = ld(cos, cs + i), c2 = ld(cos, cs + i + half);
    const float s1 = ld(sin, cs + i), s2 = ld(sin, cs + i + half);
    const float a1 = ld(xr, i), a2 = ld(xr, i + half);
    if (!backward) {
      outr[i] = Cvt<T>::store(a1 * c1 - a2 * s1);
      outr[i + half] = Cvt<T>::store(a2 * c2 + a1 * s2);
    } else {
      outr[i] = Cvt<T>::store(a1 * c1 + a2 * s2);
      outr[i + half] = Cvt<T>::store(a2 * c2 - a1 * s1);
    }
  }
}

// ---- SwiGLU
template <class T>
__global__ void swiglu_fwd_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                                  int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float a = ld(gate, i);
    out[i] = Cvt<T>::store(a / (1.f + expf(-a)) * ld(up, i));
  }
}

template <class T>
__global__ void swiglu_bwd_kernel(const T* __restrict__ g, const T* __restrict__ gate, const T* __restrict__ up,
                                  T* __restrict__ d_gate, T* __restrict__ d_up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float a = ld(gate, i), gi = ld(g, i);
    const float sg = 1.f / (1.f + expf(-a));
    if (d_gate) d_gate[i] = Cvt<T>::store(gi * ld(up, i) * sg * (1.f + a * (1.f - sg)));
    if (d_up) d_up[i] = Cvt<T>::store(gi * a * sg);
  }
}

// Grid of a grid-stride elementwise kernel: enough blocks to fill the GPU, no more than the work needs.
unsigned elt_blocks(int64_t n) {
  int64_t b = (n + kEltThreads - 1) / kEltThreads;
  return unsigned(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

// Calls f(T{}) with T the element type of `dtype`; false for an unknown dtype.
template <class F>
bool dispatch(int dtype, F&& f) {
  switch (dtype) {
    case kFusedF32:
      f(float{});
      return true;
    case kFusedBF16:
      f(__nv_bfloat16{});
      return true;
    case kFusedF16:
      f(__half{});
      return true;
  }
  return false;
}

int done(bool known) { return known ? int(cudaGetLastError()) : int(cudaErrorInvalidValue); }

}  // namespace

int64_t rms_norm_dw_chunks(int64_t rows) { return (rows + kDwChunkRows - 1) / kDwChunkRows; }

int rms_norm_forward_cuda(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t dim, float eps,
                          int dtype, void* stream) {
  if (rows == 0) return 0;
  auto st = static_cast<cudaStream_t>(stream);
  return done(dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    rms_norm_fwd_kernel<T><<<unsigned(rows), kNormThreads, 0, st>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                                    static_cast<T*>(y), rstd, dim, eps);
  }));
}

int rms_norm_backward_cuda(const void* g, const void* x, const void* w, const float* rstd, void* dx, float* dw_partial,
                           float* dw, int64_t rows, int64_t dim, int dtype, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (rows == 0) {
    if (dw) return int(cudaMemsetAsync(dw, 0, sizeof(float) * dim, st));
    return 0;
  }
  return done(dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    auto gp = static_cast<const T*>(g);
    auto xp = static_cast<const T*>(x);
    if (dx)
      rms_norm_dx_kernel<T>
          <<<unsigned(rows), kNormThreads, 0, st>>>(gp, xp, static_cast<const T*>(w), rstd, static_cast<T*>(dx), dim);
    if (dw) {
      const int64_t chunks = rms_norm_dw_chunks(rows);
      dim3 grid(unsigned((dim + kNormThreads - 1) / kNormThreads), unsigned(chunks));
      rms_norm_dw_partial_kernel<T><<<grid, kNormThreads, 0, st>>>(gp, xp, rstd, dw_partial, rows, dim);
      sum_chunks_kernel<<<unsigned((dim + kNormThreads - 1) / kNormThreads), kNormThreads, 0, st>>>(dw_partial, dw,
                                                                                                    chunks, dim);
    }
  }));
}

int rope_cuda(const void* x, const void* cos, const void* sin, void* out, const RopeShape& s, bool backward, int dtype,
              void* stream) {
  const int64_t n = s.B * s.H * s.T * (s.d / 2);
  if (n == 0) return 0;
  auto st = static_cast<cudaStream_t>(stream);
  return done(dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    rope_kernel<T><<<elt_blocks(n), kEltThreads, 0, st>>>(static_cast<const T*>(x), static_cast<const T*>(cos),
                                                          static_cast<const T*>(sin), static_cast<T*>(out), s,
                                                          backward);
  }));
}

int swiglu_forward_cuda(const void* gate, const void* up, void* out, int64_t n, int dtype, void* stream) {
  if (n == 0) return 0;
  auto st = static_cast<cudaStream_t>(stream);
  return done(dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    swiglu_fwd_kernel<T><<<elt_blocks(n), kEltThreads, 0, st>>>(static_cast<const T*>(gate), static_cast<const T*>(up),
                                                                static_cast<T*>(out), n);
  }));
}

int swiglu_backward_cuda(const void* g, const void* gate, const void* up, void* d_gate, void* d_up, int64_t n,
                         int dtype, void* stream) {
  if (n == 0) return 0;
  auto st = static_cast<cudaStream_t>(stream);
  return done(dispatch(dtype, [&](auto t) {
    using T = decltype(t);
    swiglu_bwd_kernel<T><<<elt_blocks(n), kEltThreads, 0, st>>>(static_cast<const T*>(g), static_cast<const T*>(gate),
                                                                static_cast<const T*>(up), static_cast<T*>(d_gate),
                                                                static_cast<T*>(d_up), n);
  }));
}

}  // namespace affinage::kernels
