// `affinage run --nproc K`: torchrun's job for one machine, for users without it (app/launch.cpp).
#pragma once
#include <string>
#include <vector>

namespace affinage {

// Starts K copies of this program running `affinage run <child_args>` with RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, waits for all of them, stops the rest as soon as one fails,
// and returns the first failing exit status (0 when all succeed).
int launch_local_ranks(int nproc, const std::vector<std::string>& child_args);

}  // namespace affinage
