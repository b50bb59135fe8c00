// Supervised fine-tuning, top to bottom: load, build data, inject LoRA, loop, save.
#include "sft/sft.h"
#include <filesystem>
#include <iostream>
#include "base/distributed.h"
#include "base/error.h"
#include "base/files.h"
#include "datasets/row_batch.h"
#include "io/safetensors.h"
#include "train/prepare.h"
#include "train/stage.h"

namespace fs = std::filesystem;

namespace affinage {

static StepLoss rows_loss(CausalLMImpl& m, const std::vector<Row>& rows, const std::vector<int64_t>& idx,
                          c10::Device dev) {
  auto batch = rows_to_batch(rows, idx, dev);
  auto l = row_batch_nll(m, batch);
  StepLoss s;
  s.sum = l.sum;
  s.units = double(l.count);
  s.tokens = batch.real_tokens();
  return s;
}

StageResult run_sft(const Recipe& r, bool resume) {
  // 1. model, tokenizer, adapters
  PreparedModel pm = prepare_model(r);
  auto& model = *pm.model;
  model.set_recompute_layers(r.train.activation_checkpointing);

  // 2. data: every row validated before the first step
  fs::create_directories(r.output_dir);
  SftData data = build_sft_data(r.data, *pm.tokenizer, r.seed);
  StageResult res;
  res.data_stats = {{"train", data.train_stats.to_json()}, {"eval", data.eval_stats.to_json()}};
  std::cerr << "data: " << data.train.size() << " training rows of " << r.data.seq_len << " tokens ("
            << data.train_stats.trained_tokens << " trained tokens, " << data.train_stats.truncated << " truncated, "
            << data.train_stats.dropped << " dropped), " << data.eval.size() << " eval rows\n";
  if (world().main()) write_file_atomic(r.output_dir + "/data_stats.json", res.data_stats.dump(2));

  // 3. SFT's batches and loss for the shared loop
  StageHooks hooks;
  hooks.num_rows = data.train.size();
  hooks.loss = [&](CausalLMImpl& m, const std::vector<int64_t>& idx) {
    return rows_loss(m, data.train, idx, pm.device);
  };
  if (!data.eval.empty())
    hooks.evaluate = [&](CausalLMImpl& m) {
      double sum = 0, n = 0;
      for_each_batch(data.eval.size(), r.train.batch_size, r.eval.max_batches, [&](const std::vector<int64_t>& idx) {
        auto l = rows_loss(m, data.eval, idx, pm.device);
        sum += l.sum.item<double>(), n += l.units;
      });
      return std::map<std::string, double>{{"eval_loss", n > 0 ? sum / n : 0.0}};
    };
  hooks.save_artifacts = [&](const std::string& dir) { save_adapter_artifacts(pm, dir); };

  // 4. the loop between the recipe's task metrics, then the final adapter
  run_stage_loop(r, pm, hooks, resume, res);
  return res;
}

}  // namespace affinage
