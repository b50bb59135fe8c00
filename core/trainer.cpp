// The shared training loop (see core/trainer.h).
#include "core/trainer.h"
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <unistd.h>
#include "core/distributed.h"
#include "core/error.h"
#include "core/run_checkpoint.h"
#include "core/safetensors.h"
#include "core/tfevents.h"

namespace fs = std::filesystem;

namespace affinage {

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> o(n);
  for (int64_t i = 0; i < n; ++i) o[i] = i;
  std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i) std::swap(o[i], o[rng() % static_cast<uint64_t>(i + 1)]);
  return o;
}

int64_t total_steps(const Recipe& r, int64_t num_rows) {
  if (r.train.max_steps > 0) return r.train.max_steps;
  int64_t per_step = r.train.batch_size * r.train.grad_accum;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(r.train.epochs * double(num_rows) / double(per_step))));
}

static std::string fmt_duration(double s) {
  char buf[32];
  int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

TrainSummary train_loop(const Recipe& r, CausalLMImpl& model, std::vector<NamedParam> trainable,
                        const StageHooks& hooks, bool resume) {
  if (hooks.num_rows <= 0) fail("recipe ", r.source_path, ": no training rows (check data.train)");
  if (trainable.empty()) fail("recipe ", r.source_path, ": nothing to train (enable lora or name train.train_modules)");
  const int64_t total = total_steps(r, hooks.num_rows);
  const std::string out = r.output_dir;
  const World& w = world();  // rank 0 alone writes files, evaluates and prints
  if (r.train.batch_size * r.train.grad_accum < w.size)
    fail("recipe ", r.source_path, ": a step has ", r.train.batch_size * r.train.grad_accum,
         " rows (train.batch_size x train.grad_accum) for ", w.size, " processes; raise train.grad_accum to at least ",
         (w.size + r.train.batch_size - 1) / r.train.batch_size, " or run fewer processes");
  if (w.main()) fs::create_directories(out);
  AdamW opt(trainable, r.optim);
  TrainSummary sum;
  int64_t start = 0;
  double elapsed_before = 0;
  auto device = trainable[0].param.device();
  auto gen = at::globalContext().defaultGenerator(device);
  std::string ck = resume ? latest_checkpoint(out) : "";
  if (!ck.empty()) {
    auto st = load_run_checkpoint(ck, trainable, opt, gen);
    start = st.step;
    elapsed_before = st.elapsed_s;
    if (w.main()) {
      truncate_metrics(out + "/metrics.jsonl", start);
      std::cerr << "resuming from " << ck << " (step " << start << " of " << total << ")\n";
    }
  } else if (resume && w.main()) {
    std::cerr << "no checkpoint in " << out << "/checkpoints: starting from step 0\n";
  }
  if (w.size > 1) {
    // Every process must continue from the same step (checkpoints on a filesystem they all see) and the
    // same weights (rank 0's, whatever each process initialized).
    std::vector<at::Tensor> agree{at::full({1}, double(start), at::kDouble)};
    all_reduce_sum(agree);
    if (agree[0].item<double>() != double(start) * w.size)
      fail("rank ", w.rank, " resumes from step ", start, " but the other processes do not: put output_dir (", out,
           ") on a filesystem every process sees");
    std::vector<at::Tensor> params;
    for (auto& p : trainable) params.push_back(p.param.detach());
    torch::NoGradGuard ng;
    broadcast_from_main(params);
  }
  // LoRA dropout draws from here; each process its own stream. (A resumed run continues rank 0's saved
  // stream on rank 0 and a fresh one elsewhere.)
  if (start == 0) torch::manual_seed(r.seed + 1000003ull * w.rank);
  else if (w.rank > 0) torch::manual_seed(r.seed + 1000003ull * w.rank + start);
  if (start == 0 && w.main()) std::ofstream(out + "/metrics.jsonl", std::ios::trunc);
  std::ofstream metrics;
  std::unique_ptr<RunEvents> events;  // TensorBoard scalars mirroring metrics.jsonl
  if (w.main()) metrics.open(out + "/metrics.jsonl", std::ios::app), events = std::make_unique<RunEvents>(out);
  bool tty = isatty(STDERR_FILENO);
  auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const int64_t B = r.train.batch_size, A = r.train.grad_accum, n = hooks.num_rows;
  int64_t cached_epoch = -1;
  std::vector<int64_t> order;
  auto item = [&](int64_t k) {
    int64_t e = k / n;
    if (e != cached_epoch) { order = epoch_order(n, r.seed, e); cached_epoch = e; }
    return order[k % n];
  };
  auto run_eval = [&]() {
    std::map<std::string, double> ev;
    if (!hooks.evaluate || !w.main()) return ev;
    model.eval();
    {
      torch::NoGradGuard ng;
      ev = hooks.evaluate(model);
    }
    model.train();
    return ev;
  };

  if (start == 0 && hooks.evaluate) {  // the held-out baseline before any update
    auto ev = run_eval();
    if (!ev.empty()) {
      nlohmann::json line = {{"step", 0}};
      for (auto& [k, v] : ev) line[k] = v;
      metrics << line.dump() << "\n";
      events->write(line);
      std::cerr << "step 0/" << total;
      for (auto& [k, v] : ev) std::cerr << "  " << k << " " << v;
      std::cerr << "\n";
      sum.initial_eval = ev;
    }
  }
  model.train();
  for (int64_t step = start; step < total; ++step) {
    double ts = seconds();
    // Summed on the device: the host reads it once per step, not once per micro-batch (no sync between them).
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
    double units = 0;
    int64_t tokens = 0;
    std::map<std::string, double> sums;
    for (auto& p : trainable) p.param.mutable_grad() = at::Tensor();
    // The step's rows are items step*B*A ... step*B*A + B*A-1; this process takes its share of them, in
    // micro-batches of at most B rows (one process: A micro-batches of B).
    auto [lo, hi] = rank_share(B * A, w.rank, w.size);
    for (int64_t m = lo; m < hi; m += B) {
      std::vector<int64_t> rows;
      for (int64_t i = m; i < std::min(m + B, hi); ++i) rows.push_back(item(step * A * B + i));
      StepLoss l = hooks.loss(model, rows);
      if (l.units > 0) l.sum.backward();  // unnormalized: the step's total units are known only at the end
      loss_sum += l.sum.detach().to(at::kDouble);
      units += l.units;
      tokens += l.tokens;
      for (auto& [k, v] : l.sums) sums[k] += v;
    }
    double loss_total = loss_sum.item<double>();  // the one host read of the step
    if (w.size > 1) {  // the whole step's sums and gradients, over every process
      std::vector<double> v{loss_total, units, double(tokens)};
      for (auto& [k, x] : sums) v.push_back(x);
      std::vector<at::Tensor> t{at::tensor(v, at::kDouble)};
      all_reduce_sum(t);
      auto* x = t[0].data_ptr<double>();
      loss_total = x[0], units = x[1], tokens = static_cast<int64_t>(x[2] + 0.5);
      size_t i = 3;
      for (auto& kv : sums) kv.second = x[i++];
      all_reduce_grads(trainable);
    }
    double loss = units > 0 ? loss_total / units : 0.0;
    if (!std::isfinite(loss)) {
      auto ck = latest_checkpoint(out);
      fail("step ", step + 1, ": training loss is ", loss, "; stopping. ",
           ck.empty() ? std::string("No checkpoint was written yet.") : "The last good checkpoint is " + ck + ".",
           " Lower optim.lr, check the data, or use dtype f32.");
    }
    {
      torch::NoGradGuard ng;
      for (auto& p : trainable)
        if (p.param.grad().defined() && units > 0) p.param.grad().div_(units);
    }
    double gnorm = clip_grad_norm(trainable, r.optim.grad_clip);
    double lr = lr_at(r.schedule, r.optim.lr, step, total);
    opt.step(lr);
    double dt = seconds() - ts;
    int64_t done = step + 1;
    sum.steps = done;
    sum.losses.push_back(loss);

    bool eval_now = (r.eval.every > 0 && done % r.eval.every == 0) || done == total;
    std::map<std::string, double> ev = eval_now ? run_eval() : std::map<std::string, double>{};
    if (!ev.empty()) sum.eval = ev;
    nlohmann::json line = {{"step", done}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                           {"tokens_per_s", dt > 0 ? tokens / dt : 0.0}, {"trained_units", units},
                           {"tokens", tokens}, {"elapsed_s", elapsed_before + seconds()}};
    for (auto& [k, v] : sums) line[k] = units > 0 ? v / units : 0.0;
    for (auto& [k, v] : ev) line[k] = v;
    sum.last.clear();
    for (auto& [k, v] : line.items()) if (v.is_number()) sum.last[k] = v.get<double>();
    if (w.main() && (done % std::max<int64_t>(1, r.log_every) == 0 || done == total || !ev.empty())) {
      metrics << line.dump() << "\n";
      metrics.flush();
      events->write(line);
      double eta = (seconds() / double(done - start)) * double(total - done);
      char buf[256];
      std::snprintf(buf, sizeof buf, "step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s", (long long)done,
                    (long long)total, loss, lr, dt > 0 ? tokens / dt : 0.0, fmt_duration(eta).c_str());
      std::string msg = buf;
      for (auto& [k, v] : ev) { std::snprintf(buf, sizeof buf, "  %s %.4f", k.c_str(), v); msg += buf; }
      std::cerr << (tty ? "\r" : "") << msg << (tty && ev.empty() && done != total ? "" : "\n") << std::flush;
    }
    bool ckpt_now = (r.checkpoint.every > 0 && done % r.checkpoint.every == 0) || done == total;
    if (ckpt_now && w.main()) {
      RunState st{done, elapsed_before + seconds()};
      save_run_checkpoint(out, r, st, trainable, opt, gen, hooks.save_artifacts);
      prune_checkpoints(out, r.checkpoint.keep);
    }
  }
  if (tty && w.main()) std::cerr << "\n";
  return sum;
}

}  // namespace affinage
