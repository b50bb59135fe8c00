// Process-wide run-time choices (threads, device, dtype names) and the machine's measured matmul speed.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <string>

namespace affinage {

// LibTorch's OpenMP threads spin after each parallel region by default, stealing the cores OpenBLAS's own
// threads need for the f32 GEMMs that follow (measured here: 2.4x on a tiny model, +20-30% on 4 layers of
// 7B width; bench/RESULTS.md). libgomp reads OMP_WAIT_POLICY once, when it loads, before main(), so this
// re-executes the program once with OMP_WAIT_POLICY=passive when the variable is unset (set it, to any
// value, to keep your own). Call first thing in main(); returns only when no re-execution happened.
void prefer_passive_omp_wait(char** argv);

// Intra-op threads for the OpenBLAS/oneDNN paths. n <= 0: all cores, divided among this machine's
// data-parallel processes.
void set_threads(int n);
// OpenBLAS's own threads for a model of this width, unless OPENBLAS_NUM_THREADS says otherwise: one below a hidden
// size of 1024 (its threads spin in sched_yield between the small GEMMs of a narrow model: half the CPU time on
// stories260K, 1.1-4.7x slower steps; bench/TORCH_BASELINE.md), else as many as LibTorch's intra-op threads.
// A no-op when the BLAS is not OpenBLAS. Call after set_threads.
void set_blas_threads_for_width(int64_t hidden_size);
// Keeps freed heap memory in the process instead of handing large blocks back to the system and faulting them in
// again at the next step (14-15% of the CPU of a small model's step went to page faults and zeroing). For the
// training and inference commands; merge keeps glibc's defaults (it wants freed tensors returned).
void keep_freed_memory();
// "auto" (cuda when LibTorch has it and a GPU is there, else cpu) | "cpu" | "cuda" | "cuda:N". With several
// data-parallel processes, "auto" and "cuda" mean the GPU of LOCAL_RANK.
c10::Device pick_device(const std::string& name);
// "bf16"|"bfloat16" → BFloat16, "f16"|"fp16"|"float16" → Half, "f32"|"fp32"|"float32" → Float.
c10::ScalarType parse_dtype(const std::string& name);
std::string dtype_short_name(c10::ScalarType t);  // "bf16" | "f16" | "f32"
std::string hf_dtype_name(c10::ScalarType t);     // "bfloat16" | "float16" | "float32" (config.json torch_dtype)

// GFLOP/s of an [m,k]x[k,n] matmul in `dtype` on `device`: the peak MFU is measured against (benchmarks) and
// the data check's time estimate divides by. The first call also starts thread pools and picks kernels, so it
// is a warm-up, and the only timing when one product takes over half a second (a reference kernel). CPU: best
// of up to 5 runs; GPU: the mean of 10. Zero sizes take the defaults: 1024x2048x2048 on a CPU, 8192^3 on a GPU.
double matmul_gflops(c10::Device device, c10::ScalarType dtype, int64_t m = 0, int64_t k = 0, int64_t n = 0);

}  // namespace affinage
