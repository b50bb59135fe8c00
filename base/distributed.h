// Data-parallel training on PyTorch's distributed engine (c10d process groups: NCCL between GPUs, Gloo
// between CPU processes), launched by torchrun, srun or `affinage run --nproc K`. Every process holds the
// whole model; the shared loop splits each optimizer step's rows across the processes and all-reduces the
// trainable gradients and the step's sums, so a recipe trains the same on any number of processes.
// With one process (no WORLD_SIZE, or WORLD_SIZE=1) every call here is a no-op.
#pragma once
#include <ATen/ATen.h>
#include <utility>
#include <vector>

namespace affinage {

struct World {
  int rank = 0, size = 1;              // global rank and number of processes
  int local_rank = 0, local_size = 1;  // within this machine (GPU index, thread share)
  bool main() const { return rank == 0; }
};

const World& world();

// torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE; inside an srun step, Slurm's
// SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_STEP_TASKS_PER_NODE as a fallback). Sets rank/size only;
// errors name the variable. Call before pick_device.
void read_world_from_env();
// With more than one process: the TCP store at MASTER_ADDR:MASTER_PORT and the process group for `device`
// (NCCL for CUDA where this LibTorch has it, else Gloo). Rank 0 hosts the store.
void init_process_group(c10::Device device);

// In place, summed over all processes. Any device; tensors are reduced in buckets of one dtype.
void all_reduce_sum(std::vector<at::Tensor>& tensors);
// Rank 0's values into every process's tensors, in place.
void broadcast_from_main(std::vector<at::Tensor>& tensors);
void barrier();

// The part [begin, end) of a step's `n` rows that `rank` of `size` trains on (contiguous, sizes differ by <= 1).
std::pair<int64_t, int64_t> rank_share(int64_t n, int rank, int size);

}  // namespace affinage
