// Data-parallel training (base/distributed.h): two processes on Gloo over loopback train exactly like one
// process with the same recipe, for SFT and DPO, a run resumes with another number of processes, and the
// launch errors say what to do.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "base/distributed.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

using namespace affinage;
using affinage::test::repo_path;
using affinage::test::run_cli;
using affinage::test::tensors_close;
namespace fs = std::filesystem;

TEST(Distributed, RankSharesSplitAStepInOrder) {
  for (int64_t n = 1; n <= 9; ++n)
    for (int size = 1; size <= 4; ++size) {
      int64_t next = 0;
      for (int rank = 0; rank < size; ++rank) {
        auto [lo, hi] = rank_share(n, rank, size);
        EXPECT_EQ(lo, next) << n << " rows, rank " << rank << "/" << size;
        EXPECT_LE(hi - lo, n / size + 1);
        EXPECT_GE(hi - lo, n / size);
        next = hi;
      }
      EXPECT_EQ(next, n);
    }
}

namespace {

struct TrainedRun {
  std::vector<nlohmann::json> metrics;  // metrics.jsonl, one object per line
  std::string dir;
};

// 6 steps of 4 rows (2 per micro-batch x 2), a checkpoint every 3 steps; `extra` adds arguments.
TrainedRun train(const std::string& recipe, const std::string& dir, const std::string& extra) {
  fs::current_path(repo_path(""));  // the recipe's relative paths resolve as for a user at the repo root
  auto r = run_cli("run '" + repo_path(recipe) + "' --set output_dir='" + dir +
                   "' --set train.max_steps=6 --set train.batch_size=2 --set train.grad_accum=2 --set log_every=1"
                   " --set checkpoint.every=3 --set checkpoint.keep=2 --set eval.every=3 " +
                   extra);
  EXPECT_EQ(r.code, 0) << r.err;
  TrainedRun run{{}, dir};
  std::ifstream f(dir + "/metrics.jsonl");
  for (std::string line; std::getline(f, line);) run.metrics.push_back(nlohmann::json::parse(line));
  return run;
}

// Same losses, gradient norms, eval losses and token counts step by step, and the same adapter.
void expect_same_training(const TrainedRun& a, const TrainedRun& b, const std::vector<std::string>& keys) {
  ASSERT_EQ(a.metrics.size(), b.metrics.size());
  for (size_t i = 0; i < a.metrics.size(); ++i)
    for (auto& k : keys) {
      ASSERT_EQ(a.metrics[i].contains(k), b.metrics[i].contains(k)) << k << " at line " << i;
      if (a.metrics[i].contains(k)) {
        EXPECT_NEAR(a.metrics[i][k].get<double>(), b.metrics[i][k].get<double>(),
                    1e-5 * (1 + std::abs(a.metrics[i][k].get<double>())))
            << k << " at step " << a.metrics[i]["step"];
      }
    }
  SafetensorsFile fa(a.dir + "/adapter/adapter_model.safetensors"), fb(b.dir + "/adapter/adapter_model.safetensors");
  ASSERT_EQ(fa.tensors().size(), fb.tensors().size());
  for (auto& t : fa.tensors()) EXPECT_TRUE(tensors_close(fa.load(t.name), fb.load(t.name), 1e-6, 1e-5)) << t.name;
}

const std::vector<std::string> kSftKeys{"loss", "grad_norm", "tokens", "trained_units", "eval_loss"};

}  // namespace

TEST(Distributed, TwoGlooProcessesTrainLikeOneAndResumeWithAnotherCount) {
  const std::string root = affinage::test::temp_dir("dist_sft");
  TrainedRun one = train("recipes/stories260k_sft.json", root + "/one", "");
  TrainedRun two = train("recipes/stories260k_sft.json", root + "/two", "--nproc 2");
  ASSERT_EQ(one.metrics.size(), 7u);  // the step-0 eval, then one line per step (evals folded in)
  expect_same_training(one, two, kSftKeys);
  // rank 0 alone wrote the run's files: checkpoints at steps 3 and 6, one metrics line per step
  EXPECT_TRUE(fs::exists(two.dir + "/checkpoints/step-00000003"));
  EXPECT_TRUE(fs::exists(two.dir + "/summary.json"));

  // Stopped after step 3 (the later checkpoint and outputs removed), resumed with the other process count.
  auto cut = [&](const std::string& from, const std::string& to) {
    fs::copy(from, to, fs::copy_options::recursive);
    fs::remove_all(to + "/checkpoints/step-00000006");
    fs::remove_all(to + "/adapter");
    fs::remove(to + "/summary.json");
  };
  cut(two.dir, root + "/two_then_one");
  cut(one.dir, root + "/one_then_two");
  TrainedRun a = train("recipes/stories260k_sft.json", root + "/two_then_one", "--resume");
  TrainedRun b = train("recipes/stories260k_sft.json", root + "/one_then_two", "--resume --nproc 2");
  expect_same_training(one, a, kSftKeys);
  expect_same_training(one, b, kSftKeys);
}

TEST(Distributed, DpoWithSharedReferencePrecomputeMatchesOneProcess) {
  const std::string root = affinage::test::temp_dir("dist_dpo");
  const std::string s = "--set dpo.precompute_reference=true";
  TrainedRun one = train("recipes/stories260k_dpo.json", root + "/one", s);
  TrainedRun two = train("recipes/stories260k_dpo.json", root + "/two", s + " --nproc 2");
  expect_same_training(one, two,
                       {"loss", "grad_norm", "rewards/accuracies", "rewards/margins", "logps/chosen", "eval_loss",
                        "eval_rewards/margins"});
  SafetensorsFile ra(one.dir + "/reference_logps.safetensors"), rb(two.dir + "/reference_logps.safetensors");
  for (auto* n : {"train.chosen", "train.rejected", "eval.chosen", "eval.rejected"})
    EXPECT_TRUE(tensors_close(ra.load(n), rb.load(n), 1e-5, 1e-6)) << n;
}

TEST(Distributed, LaunchErrorsSayWhatToDo) {
  const std::string dir = affinage::test::temp_dir("dist_err");
  fs::current_path(repo_path(""));
  const std::string recipe = "run '" + repo_path("recipes/stories260k_sft.json") + "' --set output_dir='" + dir + "/x'";
  auto r = run_cli(recipe + " --set train.batch_size=1 --set train.grad_accum=1 --nproc 2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("raise train.grad_accum to at least 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" of 2 failed"), std::string::npos) << r.err;
  // as torchrun would start rank 1, but without the rendezvous address
  ::setenv("WORLD_SIZE", "2", 1), ::setenv("RANK", "1", 1);
  auto e = run_cli(recipe);
  ::unsetenv("WORLD_SIZE"), ::unsetenv("RANK");
  EXPECT_NE(e.code, 0);
  EXPECT_NE(e.err.find("MASTER_ADDR is not set"), std::string::npos) << e.err;
  // inside an sbatch script of a 4-task allocation, a plain run is one process (the batch step has 1 task),
  // not a rendezvous that waits for 3 processes nobody started
  ::setenv("SLURM_NTASKS", "4", 1), ::setenv("SLURM_PROCID", "0", 1), ::setenv("SLURM_STEP_NUM_TASKS", "1", 1);
  auto s = run_cli(recipe + " --set train.max_steps=1 --set eval.every=0 --set checkpoint.every=0");
  ::unsetenv("SLURM_NTASKS"), ::unsetenv("SLURM_PROCID"), ::unsetenv("SLURM_STEP_NUM_TASKS");
  EXPECT_EQ(s.code, 0) << s.err;
  EXPECT_EQ(s.err.find("distributed:"), std::string::npos) << s.err;
}
