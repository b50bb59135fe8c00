// Process-wide run-time choices: threads, device, dtype names.
#include "base/runtime.h"
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>
#include <torch/cuda.h>
#include <unistd.h>
#include <chrono>
#include <cstdlib>
#include <thread>
#include "base/distributed.h"
#include "base/error.h"

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

void set_blas_threads_for_width(int64_t hidden_size) {
  if (std::getenv("OPENBLAS_NUM_THREADS")) return;
  using SetFn = void (*)(int);
  auto set = reinterpret_cast<SetFn>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set) set(hidden_size < 1024 ? 1 : at::get_num_threads());
}

void keep_freed_memory() {
  // Large blocks from the heap rather than per-allocation mmaps, and no trimming of the heap's top.
  ::mallopt(M_MMAP_THRESHOLD, 1 << 30);
  ::mallopt(M_TRIM_THRESHOLD, -1);
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
    case c10::kBFloat16:
      return "bf16";
    case c10::kHalf:
      return "f16";
    case c10::kFloat:
      return "f32";
    default:
      fail("dtype ", c10::toString(t), " is not a model dtype (bf16, f16, f32)");
  }
}

std::string hf_dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::kBFloat16:
      return "bfloat16";
    case c10::kHalf:
      return "float16";
    case c10::kFloat:
      return "float32";
    default:
      fail("dtype ", c10::toString(t), " is not a model dtype (bf16, f16, f32)");
  }
}

double matmul_gflops(c10::Device dev, c10::ScalarType dtype, int64_t m, int64_t k, int64_t n) {
  const bool gpu = dev.is_cuda();
  if (m <= 0) m = gpu ? 8192 : 1024;
  if (k <= 0) k = gpu ? 8192 : 2048;
  if (n <= 0) n = gpu ? 8192 : 2048;
  const auto opts = at::TensorOptions().device(dev).dtype(dtype);
  at::Tensor a = at::randn({m, k}).to(opts), b = at::randn({k, n}).to(opts);
  auto now = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
  auto timed = [&](int reps) {  // seconds per product over `reps` products, waiting for the GPU
    const double t = now();
    at::Tensor c;
    for (int i = 0; i < reps; ++i) c = at::matmul(a, b);
    if (gpu) (void)c.sum().item<float>();
    return (now() - t) / reps;
  };
  double best = timed(1);
  if (best > 0.5) return 2.0 * m * k * n / best / 1e9;
  if (gpu) {
    best = timed(10);
  } else {
    best = 1e30;
    for (int i = 0; i < 5; ++i) best = std::min(best, timed(1));
  }
  return 2.0 * m * k * n / best / 1e9;
}

}  // namespace affinage
