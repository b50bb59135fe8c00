// The shared training loop (see train/loop.h).
#include "train/loop.h"
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include "base/distributed.h"
#include "base/error.h"
#include "base/random.h"
#include "base/strings.h"
#include "io/safetensors.h"
#include "io/tfevents.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;

namespace affinage {

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(epoch));
  auto p = seeded_permutation(static_cast<size_t>(n), rng);
  return std::vector<int64_t>(p.begin(), p.end());
}

int64_t total_steps(const Recipe& r, int64_t num_rows) {
  if (r.train.max_steps > 0) return r.train.max_steps;
  int64_t per_step = r.train.batch_size * r.train.grad_accum;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(r.train.epochs * double(num_rows) / double(per_step))));
}

namespace {

// All sums over processes of all the micro-batches of one optimizer step.
struct StepSums {
  double loss = 0, units = 0;
  int64_t tokens = 0;
  std::map<std::string, double> sums;
};

// Sums every trainable gradient over the processes (undefined gradients count as zeros and become defined).
void all_reduce_grads(const std::vector<NamedParam>& trainable) {
  std::vector<at::Tensor> grads;
  for (auto& p : trainable) {
    if (!p.param.grad().defined()) p.param.mutable_grad() = at::zeros_like(p.param);
    grads.push_back(p.param.grad());
  }
  all_reduce_sum(grads);
}

// One run of the loop: its state and the steps that make it, in the order train_loop calls them.
class Loop {
 public:
  Loop(const Recipe& r, CausalLMImpl& model, std::vector<NamedParam> trainable, const StageHooks& hooks)
      : r_(r),
        model_(model),
        trainable_(std::move(trainable)),
        hooks_(hooks),
        w_(world()),
        opt_(trainable_, r.optim),
        total_(total_steps(r, hooks.num_rows)),
        out_(r.output_dir),
        device_(trainable_[0].param.device()),
        gen_(at::globalContext().defaultGenerator(device_)),
        tty_(isatty(STDERR_FILENO)) {}

  // Restores the newest checkpoint when resuming, makes every process agree on the step and the weights,
  // seeds LoRA dropout, opens metrics.jsonl and the TensorBoard mirror. Returns the first step to run.
  int64_t start_or_resume(bool resume) {
    if (w_.main()) fs::create_directories(out_);
    std::string ck = resume ? latest_checkpoint(out_) : "";
    if (!ck.empty()) {
      auto st = load_run_checkpoint(ck, trainable_, opt_, gen_);
      start_ = st.step;
      elapsed_before_ = st.elapsed_s;
      if (w_.main()) {
        truncate_metrics(out_ + "/metrics.jsonl", start_);
        std::cerr << "resuming from " << ck << " (step " << start_ << " of " << total_ << ")\n";
      }
    } else if (resume && w_.main()) {
      std::cerr << "no checkpoint in " << out_ << "/checkpoints: starting from step 0\n";
    }
    if (w_.size > 1) {
      // Every process must continue from the same step (checkpoints on a filesystem they all see) and the
      // same weights (rank 0's, whatever each process initialized).
      std::vector<at::Tensor> agree{at::full({1}, double(start_), at::kDouble)};
      all_reduce_sum(agree);
      if (agree[0].item<double>() != double(start_) * w_.size)
        fail("rank ", w_.rank, " resumes from step ", start_, " but the other processes do not: put output_dir (", out_,
             ") on a filesystem every process sees");
      std::vector<at::Tensor> params;
      for (auto& p : trainable_) params.push_back(p.param.detach());
      torch::NoGradGuard ng;
      broadcast_from_main(params);
    }
    // LoRA dropout draws from here; each process its own stream. (A resumed run continues rank 0's saved
    // stream on rank 0 and a fresh one elsewhere.)
    if (start_ == 0) torch::manual_seed(r_.seed + 1000003ull * w_.rank);
    else if (w_.rank > 0) torch::manual_seed(r_.seed + 1000003ull * w_.rank + start_);
    if (start_ == 0 && w_.main()) std::ofstream(out_ + "/metrics.jsonl", std::ios::trunc);
    if (w_.main()) metrics_.open(out_ + "/metrics.jsonl", std::ios::app), events_ = std::make_unique<RunEvents>(out_);
    t0_ = std::chrono::steady_clock::now();
    return start_;
  }

  int64_t total() const { return total_; }

  // The held-out metrics (rank 0 only; no grad, eval mode), or none.
  std::map<std::string, double> evaluate() {
    std::map<std::string, double> ev;
    if (!hooks_.evaluate || !w_.main()) return ev;
    model_.eval();
    {
      torch::NoGradGuard ng;
      ev = hooks_.evaluate(model_);
    }
    model_.train();
    return ev;
  }

  // The step-0 line: the held-out baseline before any update.
  void log_baseline(TrainSummary& sum) {
    auto ev = evaluate();
    if (ev.empty()) return;
    nlohmann::json line = {{"step", 0}};
    for (auto& [k, v] : ev) line[k] = v;
    write_metrics(line);
    std::cerr << "step 0/" << total_;
    for (auto& [k, v] : ev) std::cerr << "  " << k << " " << v;
    std::cerr << "\n";
    sum.initial_eval = ev;
  }

  // Forward and backward over this process's share of the step's rows, then the sums of every process.
  StepSums accumulate(int64_t step) {
    // Summed on the device: the host reads it once per step, not once per micro-batch (no sync between them).
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device_));
    StepSums s;
    for (auto& p : trainable_) p.param.mutable_grad() = at::Tensor();
    // The step's rows are items step*B*A ... step*B*A + B*A-1; this process takes its share of them, in
    // micro-batches of at most B rows (one process: A micro-batches of B).
    const int64_t B = r_.train.batch_size, A = r_.train.grad_accum;
    auto [lo, hi] = rank_share(B * A, w_.rank, w_.size);
    for (int64_t m = lo; m < hi; m += B) {
      std::vector<int64_t> rows;
      for (int64_t i = m; i < std::min(m + B, hi); ++i) rows.push_back(item(step * A * B + i));
      StepLoss l = hooks_.loss(model_, rows);
      if (l.units > 0) l.sum.backward();  // unnormalized: the step's total units are known only at the end
      loss_sum += l.sum.detach().to(at::kDouble);
      s.units += l.units;
      s.tokens += l.tokens;
      for (auto& [k, v] : l.sums) s.sums[k] += v;
    }
    s.loss = loss_sum.item<double>();  // the one host read of the step
    if (w_.size > 1) {                 // the whole step's sums and gradients, over every process
      std::vector<double> v{s.loss, s.units, double(s.tokens)};
      for (auto& [k, x] : s.sums) v.push_back(x);
      std::vector<at::Tensor> t{at::tensor(v, at::kDouble)};
      all_reduce_sum(t);
      auto* x = t[0].data_ptr<double>();
      s.loss = x[0], s.units = x[1], s.tokens = static_cast<int64_t>(x[2] + 0.5);
      size_t i = 3;
      for (auto& kv : s.sums) kv.second = x[i++];
      all_reduce_grads(trainable_);
    }
    return s;
  }

  // The update: gradients divided by the step's units (accumulation normalized by the whole step's tokens),
  // clipping, the scheduled learning rate, AdamW. Returns {grad_norm, lr}.
  std::pair<double, double> update(int64_t step, const StepSums& s) {
    {
      torch::NoGradGuard ng;
      for (auto& p : trainable_)
        if (p.param.grad().defined() && s.units > 0) p.param.grad().div_(s.units);
    }
    double gnorm = clip_grad_norm(trainable_, r_.optim.grad_clip);
    double lr = lr_at(r_.schedule, r_.optim.lr, step, total_);
    opt_.step(lr);
    return {gnorm, lr};
  }

  // The metrics line of a finished step (eval metrics when it evaluated), its progress line, the summary.
  void log_step(int64_t done, const StepSums& s, double loss, double gnorm, double lr, double dt,
                const std::map<std::string, double>& ev, TrainSummary& sum) {
    nlohmann::json line = {{"step", done},
                           {"loss", loss},
                           {"lr", lr},
                           {"grad_norm", gnorm},
                           {"tokens_per_s", dt > 0 ? s.tokens / dt : 0.0},
                           {"trained_units", s.units},
                           {"tokens", s.tokens},
                           {"elapsed_s", elapsed_before_ + seconds()}};
    for (auto& [k, v] : s.sums) line[k] = s.units > 0 ? v / s.units : 0.0;
    for (auto& [k, v] : ev) line[k] = v;
    sum.last.clear();
    for (auto& [k, v] : line.items())
      if (v.is_number()) sum.last[k] = v.get<double>();
    if (!w_.main() || (done % std::max<int64_t>(1, r_.log_every) != 0 && done != total_ && ev.empty())) return;
    write_metrics(line);
    double eta = (seconds() / double(done - start_)) * double(total_ - done);
    char buf[256];
    std::snprintf(buf, sizeof buf, "step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s", (long long)done,
                  (long long)total_, loss, lr, dt > 0 ? s.tokens / dt : 0.0, format_duration(eta).c_str());
    std::string msg = buf;
    for (auto& [k, v] : ev) std::snprintf(buf, sizeof buf, "  %s %.4f", k.c_str(), v), msg += buf;
    std::cerr << (tty_ ? "\r" : "") << msg << (tty_ && ev.empty() && done != total_ ? "" : "\n") << std::flush;
  }

  void checkpoint(int64_t done) {
    RunState st{done, elapsed_before_ + seconds()};
    save_run_checkpoint(out_, r_, st, trainable_, opt_, gen_, hooks_.save_artifacts);
    prune_checkpoints(out_, r_.checkpoint.keep);
  }

  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }
  bool tty() const { return tty_; }

 private:
  // Item k of the run: epoch k / n's seeded order, at k % n.
  int64_t item(int64_t k) {
    const int64_t n = hooks_.num_rows, e = k / n;
    if (e != cached_epoch_) order_ = epoch_order(n, r_.seed, e), cached_epoch_ = e;
    return order_[k % n];
  }

  void write_metrics(const nlohmann::json& line) {
    metrics_ << line.dump() << "\n";
    metrics_.flush();
    events_->write(line);
  }

  const Recipe& r_;
  CausalLMImpl& model_;
  std::vector<NamedParam> trainable_;
  const StageHooks& hooks_;
  const World& w_;  // rank 0 alone writes files, evaluates and prints
  AdamW opt_;
  const int64_t total_;
  const std::string out_;
  const c10::Device device_;
  at::Generator gen_;
  const bool tty_;
  int64_t start_ = 0;
  double elapsed_before_ = 0;
  std::chrono::steady_clock::time_point t0_;
  std::ofstream metrics_;
  std::unique_ptr<RunEvents> events_;  // TensorBoard scalars mirroring metrics.jsonl
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace

TrainSummary train_loop(const Recipe& r, CausalLMImpl& model, std::vector<NamedParam> trainable,
                        const StageHooks& hooks, bool resume) {
  if (hooks.num_rows <= 0) fail("recipe ", r.source_path, ": no training rows (check data.train)");
  if (trainable.empty()) fail("recipe ", r.source_path, ": nothing to train (enable lora or name train.train_modules)");
  const int64_t rows_per_step = r.train.batch_size * r.train.grad_accum, procs = world().size;
  if (rows_per_step < procs)
    fail("recipe ", r.source_path, ": a step has ", rows_per_step, " rows (train.batch_size x train.grad_accum) for ",
         procs, " processes; raise train.grad_accum to at least ",
         (procs + r.train.batch_size - 1) / r.train.batch_size, " or run fewer processes");
  Loop loop(r, model, std::move(trainable), hooks);
  TrainSummary sum;
  const int64_t start = loop.start_or_resume(resume), total = loop.total();
  if (start == 0 && hooks.evaluate) loop.log_baseline(sum);
  model.train();
  for (int64_t step = start; step < total; ++step) {
    const double t = loop.seconds();
    StepSums s = loop.accumulate(step);
    const double loss = s.units > 0 ? s.loss / s.units : 0.0;
    if (!std::isfinite(loss)) {
      auto ck = latest_checkpoint(r.output_dir);
      fail("step ", step + 1, ": training loss is ", loss, "; stopping. ",
           ck.empty() ? std::string("No checkpoint was written yet.") : "The last good checkpoint is " + ck + ".",
           " Lower optim.lr, check the data, or use dtype f32.");
    }
    auto [gnorm, lr] = loop.update(step, s);
    const double dt = loop.seconds() - t;
    const int64_t done = step + 1;
    sum.steps = done;
    sum.losses.push_back(loss);
    const bool eval_now = (r.eval.every > 0 && done % r.eval.every == 0) || done == total;
    const auto ev = eval_now ? loop.evaluate() : std::map<std::string, double>{};
    if (!ev.empty()) sum.eval = ev;
    loop.log_step(done, s, loss, gnorm, lr, dt, ev, sum);
    if (world().main() && ((r.checkpoint.every > 0 && done % r.checkpoint.every == 0) || done == total))
      loop.checkpoint(done);
  }
  if (loop.tty() && world().main()) std::cerr << "\n";
  return sum;
}

}  // namespace affinage
