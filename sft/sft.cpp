// Supervised fine-tuning, top to bottom: load, build data, inject LoRA, loop, save.
#include "sft/sft.h"
#include <filesystem>
#include <iostream>
#include "core/error.h"
#include "core/prepare.h"
#include "core/safetensors.h"
#include "eval/tasks.h"
#include "datasets/row_batch.h"

namespace fs = std::filesystem;

namespace affinage {

static StepLoss rows_loss(CausalLMImpl& m, const std::vector<Row>& rows, const std::vector<int64_t>& idx, c10::Device dev) {
  auto batch = rows_to_batch(rows, idx, dev);
  auto l = row_batch_nll(m, batch);
  StepLoss s;
  s.sum = l.sum;
  s.units = double(l.count);
  s.tokens = batch.real_tokens();
  return s;
}

SftResult run_sft(const Recipe& r, bool resume) {
  // 1. model, tokenizer, adapters
  PreparedModel pm = prepare_model(r);
  auto& model = *pm.model;
  model.set_activation_checkpointing(r.train.activation_checkpointing);

  // 2. data: every row validated before the first step
  fs::create_directories(r.output_dir);
  SftData data = build_sft_data(r.data, *pm.tokenizer, r.seed);
  SftResult res;
  res.data_stats = {{"train", data.train_stats.to_json()}, {"eval", data.eval_stats.to_json()}};
  std::cerr << "data: " << data.train.size() << " training rows of " << r.data.seq_len << " tokens ("
            << data.train_stats.trained_tokens << " trained tokens, " << data.train_stats.truncated << " truncated, "
            << data.train_stats.dropped << " dropped), " << data.eval.size() << " eval rows\n";
  write_file_atomic(r.output_dir + "/data_stats.json", res.data_stats.dump(2));

  // 3. the shared loop with SFT's batches and loss
  StageHooks hooks;
  hooks.num_rows = data.train.size();
  hooks.loss = [&](CausalLMImpl& m, const std::vector<int64_t>& idx) { return rows_loss(m, data.train, idx, pm.device); };
  if (!data.eval.empty())
    hooks.evaluate = [&](CausalLMImpl& m) {
      double sum = 0, n = 0;
      int64_t B = r.train.batch_size, batches = 0;
      for (int64_t s = 0; s < (int64_t)data.eval.size(); s += B, ++batches) {
        if (r.eval.max_batches > 0 && batches >= r.eval.max_batches) break;
        std::vector<int64_t> idx;
        for (int64_t i = s; i < std::min<int64_t>(s + B, data.eval.size()); ++i) idx.push_back(i);
        auto l = rows_loss(m, data.eval, idx, pm.device);
        sum += l.sum.item<double>();
        n += l.units;
      }
      return std::map<std::string, double>{{"eval_loss", n > 0 ? sum / n : 0.0}};
    };
  hooks.save_artifacts = [&](const std::string& dir) { save_adapter_artifacts(pm, dir); };
  if (!resume) res.tasks["before"] = run_eval_tasks(r.eval.tasks, model, *pm.tokenizer, r.train.batch_size, "before training");
  res.summary = train_loop(r, model, pm.trainable, hooks, resume);
  res.tasks["after"] = run_eval_tasks(r.eval.tasks, model, *pm.tokenizer, r.train.batch_size, "after training");

  // 4. the final adapter
  save_adapter_artifacts(pm, r.output_dir + "/adapter");
  std::cerr << "adapter written to " << r.output_dir << "/adapter\n";
  return res;
}

}  // namespace affinage
