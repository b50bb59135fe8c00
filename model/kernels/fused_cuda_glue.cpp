// The CUDA side of model/kernels/fused.cpp, compiled only with the CUDA kernels (AFFINAGE_CUDA_KERNELS): runs a
// launcher on the tensor's device and LibTorch's current stream, and turns a CUDA error into an affinage::Error.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <functional>
#include "base/error.h"

namespace affinage::kernels {

void launch_cuda(const at::Tensor& t, const char* what, const std::function<int(void*)>& launch) {
  c10::cuda::CUDAGuard guard(t.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(t.device().index()).stream();
  int rc = launch(static_cast<void*>(stream));
  if (rc != 0) fail(what, ": CUDA error ", rc, " (", cudaGetErrorString(static_cast<cudaError_t>(rc)), ")");
}

}  // namespace affinage::kernels
