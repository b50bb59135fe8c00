// The CPU twins of the fused kernels (see model/kernels/fused_cpu.h): a second, independent implementation of
// what model/kernels/fused_kernels.cu computes, used on CPU tensors and as the reference of the CUDA parity test.
#include "model/kernels/fused_cpu.h"
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace affinage::kernels {
namespace {

constexpr int64_t kDwChunkRows = 128;  // rows per partial sum of RMSNorm's weight gradient (fixed: deterministic)

template <class T>
inline float ld(const T* p, int64_t i) {
  return static_cast<float>(p[i]);
}
template <class T>
inline float round_to(float v) {
  return static_cast<float>(T(v));
}
template <>
inline float round_to<float>(float v) {
  return v;
}

// Calls f(T{}) with T the element type of `dtype`.
template <class F>
void dispatch(int dtype, const char* what, F&& f) {
  switch (dtype) {
    case kFusedF32:
      f(float{});
      return;
    case kFusedBF16:
      f(c10::BFloat16{});
      return;
    case kFusedF16:
      f(c10::Half{});
      return;
  }
  throw std::invalid_argument(std::string(what) + ": unsupported element type");
}

// Rows per task for at::parallel_for: about 32K elements each.
int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(dim, 1)); }

// The sum of term(i) over [0, n) in 8 fp32 lanes (the compiler vectorizes the fixed-width inner loop).
template <class Fn>
inline float lane_sum(int64_t n, Fn&& term) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += term(i + k);
  float s = 0.f;
  for (; i < n; ++i) s += term(i);
  return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <class T>
void rms_norm_fwd(const T* x, const T* w, T* y, float* rstd, int64_t rows, int64_t dim, float eps) {
  at::parallel_for(0, rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * dim;
      T* yr = y + r * dim;
      const float ss = lane_sum(dim, [&](int64_t i) {
        float v = ld(xr, i);
        return v * v;
      });
      const float rs = 1.f / std::sqrt(ss / float(dim) + eps);
      rstd[r] = rs;
      for (int64_t i = 0; i < dim; ++i) yr[i] = T(ld(w, i) * round_to<T>(ld(xr, i) * rs));
    }
  });
}

template <class T>
void rms_norm_bwd(const T* g, const T* x, const T* w, const float* rstd, T* dx, float* dw, int64_t rows, int64_t dim) {
  const int64_t chunks = (rows + kDwChunkRows - 1) / kDwChunkRows;
  std::vector<float> partial(dw ? chunks * dim : 0, 0.f);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* pc = dw ? partial.data() + c * dim : nullptr;
      for (int64_t r = c * kDwChunkRows; r < std::min(rows, (c + 1) * kDwChunkRows); ++r) {
        const T *gr = g + r * dim, *xr = x + r * dim;
        const float rs = rstd[r];
        if (dx) {
          const float mean =
              lane_sum(dim, [&](int64_t i) { return ld(gr, i) * ld(w, i) * (ld(xr, i) * rs); }) / float(dim);
          T* dxr = dx + r * dim;
          for (int64_t i = 0; i < dim; ++i) dxr[i] = T(rs * (ld(gr, i) * ld(w, i) - ld(xr, i) * rs * mean));
        }
        if (pc)
          for (int64_t i = 0; i < dim; ++i) pc[i] += ld(gr, i) * round_to<T>(ld(xr, i) * rs);
      }
    }
  });
  if (!dw) return;
  for (int64_t i = 0; i < dim; ++i) dw[i] = 0.f;
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < dim; ++i) dw[i] += partial[c * dim + i];
}

template <class T>
void rope(const T* x, const T* cos, const T* sin, T* out, const RopeShape& s, bool backward) {
  const int64_t half = s.d / 2;
  at::parallel_for(0, s.B * s.H * s.T, row_grain(s.d), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t t = q % s.T, h = (q / s.T) % s.H, b = q / (s.T * s.H);
      const T* xr = x + b * s.sb + h * s.sh + t * s.st;
      T* o = out + b * s.ob + h * s.oh + t * s.ot;
      const int64_t cs = ((s.cos_broadcast ? 0 : b) * s.T + t) * s.d;
      const T *c = cos + cs, *sn = sin + cs;
      if (!backward) {
        for (int64_t i = 0; i < half; ++i) {
          const float a1 = ld(xr, i), a2 = ld(xr, i + half);
          o[i] = T(a1 * ld(c, i) - a2 * ld(sn, i));
          o[i + half] = T(a2 * ld(c, i + half) + a1 * ld(sn, i + half));
        }
      } else {
        for (int64_t i = 0; i < half; ++i) {
          const float a1 = ld(xr, i), a2 = ld(xr, i + half);
          o[i] = T(a1 * ld(c, i) + a2 * ld(sn, i + half));
          o[i + half] = T(a2 * ld(c, i + half) - a1 * ld(sn, i));
        }
      }
    }
  });
}

// SwiGLU is compute-bound on a CPU (an exp per element), so it runs on fp32 blocks with a polynomial exp the
// compiler vectorizes (glibc's expf does not), built twice: for AVX2 and for any x86-64 (GCC picks at load).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AFFINAGE_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define AFFINAGE_SIMD_CLONES
#endif
constexpr int64_t kBlock = 1024;

// exp(x) in fp32 to ~1 ulp (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r, times 2^n); no calls and
// no branches, so it vectorizes. Clamped to the normal range: exp of less than -87.3 is 0 to fp32 precision
// in silu's 1 + exp(-x), and more than 88.3 overflows to a huge finite value, giving silu(x) = -0.
inline __attribute__((always_inline)) float exp_f32(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round(x / ln2), 1.5*2^23 trick
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * x * x + x + 1.f;
  const uint32_t bits = uint32_t(int32_t(n) + 127) << 23;
  float p;
  std::memcpy(&p, &bits, sizeof p);
  return y * p;
}

AFFINAGE_SIMD_CLONES void swiglu_fwd_f32(const float* a, const float* b, float* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = a[i] / (1.f + exp_f32(-a[i])) * b[i];
}

AFFINAGE_SIMD_CLONES void swiglu_bwd_f32(const float* g, const float* a, const float* b, float* da, float* db,
                                         int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float sg = 1.f / (1.f + exp_f32(-a[i]));
    da[i] = g[i] * b[i] * sg * (1.f + a[i] * (1.f - sg));
    db[i] = g[i] * a[i] * sg;
  }
}

// Element blocks <-> fp32 blocks. bf16 both ways by bits (round to nearest even, NaN kept quiet, as c10).
inline void load_f32(const float* p, float* out, int64_t n) { std::memcpy(out, p, n * sizeof(float)); }
inline void load_f32(const c10::Half* p, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
}
inline void load_f32(const c10::BFloat16* p, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(p[i].x) << 16;
    std::memcpy(out + i, &u, sizeof u);
  }
}
inline void store_f32(const float* in, float* p, int64_t n) { std::memcpy(p, in, n * sizeof(float)); }
inline void store_f32(const float* in, c10::Half* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = c10::Half(in[i]);
}
inline void store_f32(const float* in, c10::BFloat16* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, in + i, sizeof u);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    p[i].x = static_cast<uint16_t>(in[i] != in[i] ? 0x7fc0u : r);
  }
}

template <class T>
void swiglu_fwd(const T* gate, const T* up, T* out, int64_t n) {
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 16, [&](int64_t b0, int64_t b1) {
    float a[kBlock], u[kBlock], o[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i = b * kBlock, m = std::min(kBlock, n - i);
      load_f32(gate + i, a, m);
      load_f32(up + i, u, m);
      swiglu_fwd_f32(a, u, o, m);
      store_f32(o, out + i, m);
    }
  });
}

template <class T>
void swiglu_bwd(const T* g, const T* gate, const T* up, T* d_gate, T* d_up, int64_t n) {
  at::parallel_for(0, (n + kBlock - 1) / kBlock, 16, [&](int64_t b0, int64_t b1) {
    float gb[kBlock], a[kBlock], u[kBlock], da[kBlock], du[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i = b * kBlock, m = std::min(kBlock, n - i);
      load_f32(g + i, gb, m);
      load_f32(gate + i, a, m);
      load_f32(up + i, u, m);
      swiglu_bwd_f32(gb, a, u, da, du, m);
      if (d_gate) store_f32(da, d_gate + i, m);
      if (d_up) store_f32(du, d_up + i, m);
    }
  });
}

}  // namespace

void rms_norm_forward_cpu(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t dim, float eps,
                          int dtype) {
  dispatch(dtype, "rms_norm_forward_cpu", [&](auto t) {
    using T = decltype(t);
    rms_norm_fwd(static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), rstd, rows, dim, eps);
  });
}

void rms_norm_backward_cpu(const void* g, const void* x, const void* w, const float* rstd, void* dx, float* dw,
                           int64_t rows, int64_t dim, int dtype) {
  dispatch(dtype, "rms_norm_backward_cpu", [&](auto t) {
    using T = decltype(t);
    rms_norm_bwd(static_cast<const T*>(g), static_cast<const T*>(x), static_cast<const T*>(w), rstd,
                 static_cast<T*>(dx), dw, rows, dim);
  });
}

void rope_cpu(const void* x, const void* cos, const void* sin, void* out, const RopeShape& s, bool backward,
              int dtype) {
  dispatch(dtype, "rope_cpu", [&](auto t) {
    using T = decltype(t);
    rope(static_cast<const T*>(x), static_cast<const T*>(cos), static_cast<const T*>(sin), static_cast<T*>(out), s,
         backward);
  });
}

void swiglu_forward_cpu(const void* gate, const void* up, void* out, int64_t n, int dtype) {
  dispatch(dtype, "swiglu_forward_cpu", [&](auto t) {
    using T = decltype(t);
    swiglu_fwd(static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), n);
  });
}

void swiglu_backward_cpu(const void* g, const void* gate, const void* up, void* d_gate, void* d_up, int64_t n,
                         int dtype) {
  dispatch(dtype, "swiglu_backward_cpu", [&](auto t) {
    using T = decltype(t);
    swiglu_bwd(static_cast<const T*>(g), static_cast<const T*>(gate), static_cast<const T*>(up),
               static_cast<T*>(d_gate), static_cast<T*>(d_up), n);
  });
}

}  // namespace affinage::kernels
