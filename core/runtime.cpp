// Process-wide run-time choices: threads, device, dtype names.
#include "core/runtime.h"
#include <cstdlib>
#include <thread>
#include <unistd.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include "core/distributed.h"
#include "core/error.h"

namespace affinage {

void prefer_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::execv("/proc/self/exe", argv);  // only returns on failure (no /proc): carry on as we are
}

void set_threads(int n) {
  // All cores, shared among the processes of this machine when data-parallel.
  if (n <= 0) n = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / world().local_size);
  at::set_num_threads(n);
}

c10::Device pick_device(const std::string& name) {
  // Data-parallel processes each take the GPU of their LOCAL_RANK unless the device names one.
  const c10::Device local_gpu(world().size > 1 ? "cuda:" + std::to_string(world().local_rank) : std::string("cuda"));
  if (name == "auto") return torch::cuda::is_available() ? local_gpu : c10::Device("cpu");
  if (name == "cpu") return c10::Device("cpu");
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      fail("device '", name, "' requested but this LibTorch has no CUDA or no GPU is visible; use --device cpu");
    return name == "cuda" ? local_gpu : c10::Device(name);
  }
  fail("unknown device '", name, "': use auto, cpu, cuda or cuda:N");
}

c10::ScalarType parse_dtype(const std::string& n) {
  if (n == "bf16" || n == "bfloat16") return c10::kBFloat16;
  if (n == "f16" || n == "fp16" || n == "float16") return c10::kHalf;
  if (n == "f32" || n == "fp32" || n == "float32") return c10::kFloat;
  fail("unknown dtype '", n, "': use bf16, f16 or f32");
}

std::string dtype_short_name(c10::ScalarType t) {
  switch (t) {
    case c10::kBFloat16: return "bf16";
    case c10::kHalf: return "f16";
    case c10::kFloat: return "f32";
    default: fail("dtype ", c10::toString(t), " is not a model dtype (bf16, f16, f32)");
  }
}

std::string hf_dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    case c10::kFloat: return "float32";
    default: fail("dtype ", c10::toString(t), " is not a model dtype (bf16, f16, f32)");
  }
}

}  // namespace affinage
