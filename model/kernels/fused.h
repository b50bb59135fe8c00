// Fused RMSNorm, rotate-half RoPE and SwiGLU with their own backward, as autograd ops on ATen tensors. On a
// CUDA tensor they run the CUDA kernels (model/kernels/fused_kernels.cu) when affinage was built with them
// (AFFINAGE_CUDA_KERNELS); on a CPU tensor, their CPU twins (model/kernels/fused_cpu.cpp). Each computes in
// fp32 and rounds once to the input's type (fp32, bf16 or fp16); the composites round after every op, so in
// bf16 the two differ by an ulp or so (tests/test_kernels.cpp). The model picks one per op with use_fused().
#pragma once
#include <ATen/ATen.h>

namespace affinage {

// x [..., D], w [D] (cast to x's type first, like LlamaRMSNorm): w * (x * rsqrt(mean(x^2) + eps)).
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);
// x [B, H, T, d] (any strides with a contiguous last dimension), cos/sin [B or 1, T, d]: as apply_rope.
at::Tensor fused_apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// silu(gate) * up, gate and up of one shape and type.
at::Tensor fused_swiglu(const at::Tensor& gate, const at::Tensor& up);

// The ATen composites the fused ops replace; the model's path where a fused op does not pay.
// (RoPE's composite is apply_rope, model/attention.h.)
at::Tensor rms_norm_composite(const at::Tensor& x, const at::Tensor& w, double eps);  // transformers' LlamaRMSNorm
at::Tensor swiglu_composite(const at::Tensor& gate, const at::Tensor& up);            // silu(gate) * up

enum class FusedOp { RMSNorm, Rope, SwiGLU };
// Whether the model runs `op` fused for tensors like x: on CUDA when the kernels were compiled; on CPU only
// where bench/bench_kernels measured the twin faster than the composite (bench/RESULTS.md); never for
// dtypes other than fp32/bf16/fp16, nor with the environment variable AFFINAGE_FUSED_KERNELS=0.
bool use_fused(FusedOp op, const at::Tensor& x);
bool fused_cuda_kernels_compiled();

}  // namespace affinage
