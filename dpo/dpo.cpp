// Preference optimization, top to bottom: load, build pairs, set up the reference, loop, save.
#include "dpo/dpo.h"
#include <filesystem>
#include <iostream>
#include "base/distributed.h"
#include "base/error.h"
#include "base/files.h"
#include "io/safetensors.h"
#include "train/prepare.h"
#include "train/stage.h"

namespace fs = std::filesystem;

namespace affinage {

PreferenceLossConfig preference_loss_config(const DpoConfig& d) {
  PreferenceLossConfig c;
  c.type = d.loss, c.beta = d.beta, c.label_smoothing = d.label_smoothing, c.simpo_gamma = d.simpo_gamma;
  return c;
}

StepLoss preference_step_loss(const PairLogps& lp, const at::Tensor& ref_c, const at::Tensor& ref_r,
                              const PreferenceLossConfig& cfg, int64_t tokens) {
  PreferenceInputs in{lp.chosen_sum, lp.rejected_sum, lp.chosen_len, lp.rejected_len, ref_c, ref_r};
  PreferenceLoss l = preference_loss(in, cfg);
  StepLoss s;
  s.sum = l.losses.sum();
  s.units = double(lp.chosen_sum.size(0));
  s.tokens = tokens;
  // Six sums in one host transfer (one sync per micro-batch, not six).
  auto d = [](const at::Tensor& t) { return t.detach().to(at::kDouble).sum(); };
  auto v =
      at::stack({d(l.chosen_rewards), d(l.rejected_rewards), d((l.chosen_rewards > l.rejected_rewards).to(at::kDouble)),
                 d(l.chosen_rewards - l.rejected_rewards), d(lp.chosen_sum), d(lp.rejected_sum)})
          .cpu();
  const double* x = v.data_ptr<double>();
  s.sums = {{"rewards/chosen", x[0]},  {"rewards/rejected", x[1]}, {"rewards/accuracies", x[2]},
            {"rewards/margins", x[3]}, {"logps/chosen", x[4]},     {"logps/rejected", x[5]}};
  return s;
}

std::pair<at::Tensor, at::Tensor> precompute_reference(ReferencePolicy& ref, const std::vector<PreferencePair>& pairs,
                                                       int64_t batch, c10::Device dev) {
  // Data-parallel: each process computes a share of the batches (the same batches as one process would
  // run, so the same values); the sum over processes fills in the rest.
  const int64_t n = pairs.size(), batches = (n + batch - 1) / batch;
  auto [first, last] = rank_share(batches, world().rank, world().size);
  const int64_t lo = std::min(n, first * batch), hi = std::min(n, last * batch);
  std::vector<at::Tensor> out{at::zeros({n}, at::kFloat), at::zeros({n}, at::kFloat)};
  for_each_batch(hi - lo, batch, 0, [&](const std::vector<int64_t>& local) {
    std::vector<int64_t> idx;
    for (int64_t i : local) idx.push_back(lo + i);
    auto [rc, rr] = ref.logps(make_pair_batch(pairs, idx, dev));
    out[0].narrow(0, idx[0], idx.size()).copy_(rc), out[1].narrow(0, idx[0], idx.size()).copy_(rr);
  });
  all_reduce_sum(out);
  return {out[0], out[1]};
}

// What the cached reference log-probs depend on: the reference weights and every pair's ids.
static std::string reference_fingerprint(const Recipe& r, const PreferenceData& d) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  };
  for (const std::string& s : {r.model, r.lora.init_from, name_of(r.dpo.reference), r.dtype})
    mix(s.data(), s.size() + 1);
  for (auto* set : {&d.train, &d.eval})
    for (auto& p : *set)
      for (auto* v : {&p.prompt, &p.chosen, &p.rejected}) {
        uint64_t n = v->size();
        mix(&n, sizeof n), mix(v->data(), n * sizeof(int));
      }
  return std::to_string(h);
}

StageResult run_dpo(const Recipe& r, bool resume) {
  // 1. model, tokenizer, adapters (a continued SFT adapter comes in through lora.init_from)
  PreparedModel pm = prepare_model(r);
  auto& model = *pm.model;
  model.set_recompute_layers(r.train.activation_checkpointing);
  const PreferenceLossConfig loss_cfg = preference_loss_config(r.dpo);
  const bool needs_ref = preference_loss_needs_reference(r.dpo.loss);

  // 2. pairs: every row validated before the first step
  fs::create_directories(r.output_dir);
  const int64_t max_prompt = effective_max_prompt_len(r);
  PreferenceData data = build_preference_data(r.data, max_prompt, *pm.tokenizer, r.seed);
  StageResult res;
  res.data_stats = {{"train", data.train_stats.to_json()}, {"eval", data.eval_stats.to_json()}};
  const auto& ts = data.train_stats;
  std::cerr << "data: " << data.train.size() << " preference pairs (" << ts.prompt_tokens << " prompt, "
            << ts.chosen_tokens << " chosen, " << ts.rejected_tokens << " rejected tokens; " << ts.truncated_prompts
            << " prompts and " << ts.truncated_responses << " responses cut, " << ts.dropped << " dropped), "
            << data.eval.size() << " eval pairs\n";
  if (world().main()) write_file_atomic(r.output_dir + "/data_stats.json", res.data_stats.dump(2));

  // 3. the reference: the model as it is now (before any checkpoint is restored), optionally run once
  ReferencePolicy reference(model, pm.trainable, r.dpo.reference);
  at::Tensor cache_c[2], cache_r[2];  // [0] train, [1] eval
  if (needs_ref && r.dpo.precompute_reference) {
    const std::string path = r.output_dir + "/reference_logps.safetensors", fp = reference_fingerprint(r, data);
    std::unique_ptr<SafetensorsFile> f;
    if (fs::exists(path)) f = std::make_unique<SafetensorsFile>(path);
    bool cached = f && f->metadata().count("fingerprint") && f->metadata().at("fingerprint") == fp;
    if (world().size > 1) {  // reused only when every process sees the same valid file
      std::vector<at::Tensor> votes{at::full({1}, cached ? 1.0 : 0.0, at::kDouble)};
      all_reduce_sum(votes);
      cached = votes[0].item<double>() == world().size;
    }
    if (cached) {
      for (int s = 0; s < 2; ++s)
        cache_c[s] = f->load(s ? "eval.chosen" : "train.chosen"),
        cache_r[s] = f->load(s ? "eval.rejected" : "train.rejected");
      std::cerr << "reference log-probs: reusing " << path << "\n";
    } else {
      std::tie(cache_c[0], cache_r[0]) = precompute_reference(reference, data.train, r.train.batch_size, pm.device);
      std::tie(cache_c[1], cache_r[1]) = precompute_reference(reference, data.eval, r.train.batch_size, pm.device);
      if (world().main())
        write_safetensors(path,
                          {{"train.chosen", cache_c[0]},
                           {"train.rejected", cache_r[0]},
                           {"eval.chosen", cache_c[1]},
                           {"eval.rejected", cache_r[1]}},
                          {{"fingerprint", fp}});
      std::cerr << "reference log-probs of " << data.train.size() + data.eval.size() << " pairs cached in " << path
                << "\n";
    }
  }
  auto batch_loss = [&](CausalLMImpl& m, const std::vector<PreferencePair>& pairs, int set,
                        const std::vector<int64_t>& idx) {
    PairBatch b = make_pair_batch(pairs, idx, pm.device);
    PairLogps lp = pair_logps(m, b);
    at::Tensor rc, rr;
    if (needs_ref && cache_c[set].defined()) {
      auto sel = at::tensor(idx, at::kLong);
      rc = cache_c[set].index_select(0, sel).to(pm.device), rr = cache_r[set].index_select(0, sel).to(pm.device);
    } else if (needs_ref) {
      std::tie(rc, rr) = reference.logps(b);
    } else {
      rc = at::zeros_like(lp.chosen_sum), rr = at::zeros_like(lp.rejected_sum);
    }
    return preference_step_loss(lp, rc, rr, loss_cfg, b.real_tokens);
  };

  // 4. DPO's batches (batch_size pairs = 2 x batch_size sequences) and loss for the shared loop
  StageHooks hooks;
  hooks.num_rows = data.train.size();
  hooks.loss = [&](CausalLMImpl& m, const std::vector<int64_t>& idx) { return batch_loss(m, data.train, 0, idx); };
  if (!data.eval.empty())
    hooks.evaluate = [&](CausalLMImpl& m) {
      double loss = 0, n = 0;
      std::map<std::string, double> sums;
      for_each_batch(data.eval.size(), r.train.batch_size, r.eval.max_batches, [&](const std::vector<int64_t>& idx) {
        StepLoss l = batch_loss(m, data.eval, 1, idx);
        loss += l.sum.item<double>(), n += l.units;
        for (auto& [k, v] : l.sums) sums[k] += v;
      });
      std::map<std::string, double> out{{"eval_loss", loss / n}};
      for (auto& [k, v] : sums) out["eval_" + k] = v / n;
      return out;
    };
  hooks.save_artifacts = [&](const std::string& dir) { save_adapter_artifacts(pm, dir); };

  // 5. the loop between the recipe's task metrics, then the final adapter (the continued SFT adapter included)
  run_stage_loop(r, pm, hooks, resume, res);
  return res;
}

}  // namespace affinage
