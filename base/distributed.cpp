// c10d process groups behind the few collectives the training loop needs (see base/distributed.h).
// Compiled without the precompiled header: the c10d headers need USE_C10D_* defined before they are read.
#include "base/distributed.h"
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include "base/error.h"
#if defined(AFFINAGE_HAVE_GLOO)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(AFFINAGE_HAVE_NCCL)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(AFFINAGE_HAVE_GLOO) || defined(AFFINAGE_HAVE_NCCL)
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#define AFFINAGE_HAVE_C10D 1
#endif

namespace affinage {

namespace {

World g_world;

// The collectives the loop uses, over one concrete process group type (the c10d classes differ between
// LibTorch 1.13 and 2.x in their base class, not in these calls).
struct Comm {
  virtual ~Comm() = default;
  virtual void all_reduce(std::vector<at::Tensor>& flat) = 0;  // each tensor reduced on its own, all in flight at once
  virtual void broadcast(std::vector<at::Tensor>& flat) = 0;
  c10::Device device = c10::Device("cpu");  // where the tensors must be for this backend
};
std::unique_ptr<Comm> g_comm;

#ifdef AFFINAGE_HAVE_C10D
template <class PG>
struct PgComm : Comm {
  c10::intrusive_ptr<PG> pg;
  void all_reduce(std::vector<at::Tensor>& flat) override {
    each(flat, [&](std::vector<at::Tensor>& one) { return pg->allreduce(one); });
  }
  void broadcast(std::vector<at::Tensor>& flat) override {
    c10d::BroadcastOptions o;
    o.rootRank = 0;
    each(flat, [&](std::vector<at::Tensor>& one) { return pg->broadcast(one, o); });
  }
  // Launches the collective on every tensor, then waits for all of them (the buckets travel together).
  template <class Launch>
  static void each(std::vector<at::Tensor>& flat, Launch launch) {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : flat) {
      std::vector<at::Tensor> one{t};
      works.push_back(launch(one));
    }
    for (auto& w : works) w->wait();
  }
};
#endif

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// The integer in an environment variable (a Slurm count like "2(x3)" reads as 2), or `def` when unset.
int env_int(std::initializer_list<const char*> names, int def) {
  for (const char* n : names) {
    const char* v = env(n);
    if (!v) continue;
    char* end = nullptr;
    long x = std::strtol(v, &end, 10);
    if (end == v || x < 0) fail("environment variable ", n, "='", v, "' is not a non-negative integer");
    return static_cast<int>(x);
  }
  return def;
}

// Flattens same-dtype runs of `ts` into buckets of at most kBucketBytes on the backend's device, runs `op`
// on the buckets, and copies the results back.
constexpr int64_t kBucketBytes = 64 << 20;
void bucketed(std::vector<at::Tensor>& ts, void (Comm::*op)(std::vector<at::Tensor>&)) {
  std::map<c10::ScalarType, std::vector<size_t>> by_dtype;
  for (size_t i = 0; i < ts.size(); ++i) by_dtype[ts[i].scalar_type()].push_back(i);
  std::vector<std::vector<size_t>> groups;
  for (auto& [dt, idx] : by_dtype) {
    int64_t bytes = 0;
    groups.emplace_back();
    for (size_t i : idx) {
      int64_t b = ts[i].numel() * static_cast<int64_t>(ts[i].element_size());
      if (bytes > 0 && bytes + b > kBucketBytes) groups.emplace_back(), bytes = 0;
      groups.back().push_back(i), bytes += b;
    }
  }
  std::vector<at::Tensor> flat;
  for (auto& g : groups) {
    std::vector<at::Tensor> parts;
    for (size_t i : g) parts.push_back(ts[i].reshape(-1).to(g_comm->device));
    flat.push_back(at::cat(parts));
  }
  ((*g_comm).*op)(flat);
  for (size_t k = 0; k < groups.size(); ++k) {
    int64_t off = 0;
    for (size_t i : groups[k]) {
      int64_t n = ts[i].numel();
      ts[i].copy_(flat[k].narrow(0, off, n).view(ts[i].sizes()));
      off += n;
    }
  }
}

}  // namespace

const World& world() { return g_world; }

void read_world_from_env() {
  World w;
  // Slurm: the step's counts, not the allocation's (SLURM_NTASKS), so that a plain `affinage run` inside an
  // sbatch script or salloc shell stays one process instead of waiting for tasks that were never started.
  w.size = env_int({"WORLD_SIZE", "SLURM_STEP_NUM_TASKS"}, 1);
  w.rank = env_int({"RANK", "SLURM_PROCID"}, 0);
  w.local_rank = env_int({"LOCAL_RANK", "SLURM_LOCALID"}, 0);
  w.local_size = env_int({"LOCAL_WORLD_SIZE", "SLURM_STEP_TASKS_PER_NODE"}, w.size);
  if (w.size < 1) fail("WORLD_SIZE must be at least 1");
  if (w.rank >= w.size) fail("RANK=", w.rank, " is not below WORLD_SIZE=", w.size);
  if (w.local_size < 1 || w.local_rank >= w.local_size)
    fail("LOCAL_RANK=", w.local_rank, " is not below LOCAL_WORLD_SIZE=", w.local_size);
  g_world = w;
}

void init_process_group(c10::Device device) {
  if (g_world.size == 1 || g_comm) return;
#ifndef AFFINAGE_HAVE_C10D
  fail("WORLD_SIZE=", g_world.size, " asks for ", g_world.size,
       " processes, but this build has no c10d backend: "
       "install libgloo-dev (CPU) or build against a CUDA LibTorch with NCCL, then rebuild");
#else
  const char* addr = env("MASTER_ADDR");
  if (!addr)
    fail("WORLD_SIZE=", g_world.size,
         " but MASTER_ADDR is not set: export MASTER_ADDR=<host of rank 0> and "
         "MASTER_PORT=<free port> (torchrun sets both; `affinage run --nproc K` does it for one machine)");
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env_int({"MASTER_PORT"}, 29500));
  so.isServer = g_world.rank == 0;
  so.numWorkers = g_world.size;
  so.timeout = std::chrono::seconds(env_int({"AFFINAGE_DIST_TIMEOUT_S"}, 1800));
  if (g_world.rank == 0)
    std::cerr << "distributed: " << g_world.size << " processes meet at " << addr << ":" << so.port
              << " (waiting up to " << std::chrono::duration_cast<std::chrono::seconds>(so.timeout).count()
              << " s for all of them)\n";
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    fail("rank ", g_world.rank, ": cannot reach the rendezvous at ", addr, ":", so.port,
         " (MASTER_ADDR:MASTER_PORT): ", e.what());
  }
#ifdef AFFINAGE_HAVE_NCCL
  if (device.is_cuda()) {
    auto c = std::make_unique<PgComm<c10d::ProcessGroupNCCL>>();
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = so.timeout;
    c->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, g_world.rank, g_world.size, o);
    c->device = device;
    g_comm = std::move(c);
    return;
  }
#endif
#ifdef AFFINAGE_HAVE_GLOO
  {
    auto c = std::make_unique<PgComm<c10d::ProcessGroupGloo>>();
    auto o = c10d::ProcessGroupGloo::Options::create(so.timeout);
    const std::string host = addr;
    if (const char* ifname = env("GLOO_SOCKET_IFNAME"))
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (host == "localhost" || host.rfind("127.", 0) == 0)
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    c->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, g_world.rank, g_world.size, o);
    c->device = device.is_cuda() ? device : c10::Device("cpu");
    g_comm = std::move(c);
    return;
  }
#endif
  fail("device ", device.str(), " needs NCCL for more than one process, and this LibTorch has none");
#endif
}

void all_reduce_sum(std::vector<at::Tensor>& tensors) {
  if (!g_comm || tensors.empty()) return;
  bucketed(tensors, &Comm::all_reduce);
}

void broadcast_from_main(std::vector<at::Tensor>& tensors) {
  if (!g_comm || tensors.empty()) return;
  bucketed(tensors, &Comm::broadcast);
}

void barrier() {
  if (!g_comm) return;
  std::vector<at::Tensor> t{at::zeros({1})};
  all_reduce_sum(t);
}

std::pair<int64_t, int64_t> rank_share(int64_t n, int rank, int size) {
  return {n * rank / size, n * (rank + 1) / size};
}

}  // namespace affinage
