// The shared training loop through the SFT stage on the bundled stories260K model: a step changes only
// trainable weights, token-normalized accumulation equals one big batch, resume is bit-exact, packed and
// unpacked rows give the same loss, and fine-tuning lowers held-out loss.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "base/files.h"
#include "datasets/sft_data.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/loader.h"
#include "model/loss.h"
#include "sft/sft.h"
#include "tests/test_util.h"
#include "text/tokenizer.h"

using namespace affinage;
using affinage::test::repo_path;
using affinage::test::tensors_close;
namespace fs = std::filesystem;

static Recipe small_recipe(const std::string& tag) {
  Recipe r;
  r.name = tag;
  r.model = repo_path("models/stories260K");
  r.output_dir = affinage::test::temp_dir(tag);
  r.dtype = "f32";
  r.device = "cpu";
  r.threads = 2;
  r.data.train = {DataSource{repo_path("datasets/data/shakespeare_train.jsonl"), "auto", 1.0}};
  r.data.eval = DataSource{repo_path("datasets/data/shakespeare_eval.jsonl"), "auto", 1.0};
  r.data.seq_len = 128;
  r.data.packing = true;
  r.lora.r = 8;
  r.lora.alpha = 16;
  r.lora.targets = {"all-linear"};
  r.optim.lr = 3e-3;
  r.schedule.type = Schedule::Cosine;
  r.schedule.warmup_steps = 2;
  r.train.batch_size = 4;
  r.train.max_steps = 6;
  r.eval.every = 0;
  r.eval.max_batches = 2;
  r.checkpoint.every = 3;
  r.checkpoint.keep = 5;
  return r;
}

static std::vector<nlohmann::json> metrics(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::ifstream f(out + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {  // training steps only (the step-0 line holds the baseline eval)
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) v.push_back(j);
  }
  return v;
}

static std::map<std::string, at::Tensor> tensors_of(const std::string& path) {
  SafetensorsFile f(path);
  std::map<std::string, at::Tensor> m;
  for (auto& t : f.tensors()) m[t.name] = f.load(t.name);
  return m;
}

TEST(Train, OneStepChangesOnlyTrainableWeights) {
  auto r = small_recipe("only_trainable");
  r.train.max_steps = 1;
  r.schedule.warmup_steps = 0;  // a warmup step has lr 0 (transformers' schedule) and would change nothing
  r.data.eval.reset();
  run_sft(r, false);
  auto base = load_model(r.model, torch::kFloat32);
  auto tuned = load_model(r.model, torch::kFloat32);
  load_peft_adapter(*tuned, r.output_dir + "/adapter");
  auto bp = base->named_parameters();
  int64_t lora_b_changed = 0, lora = 0;
  for (auto& p : tuned->named_parameters()) {
    if (p.key().find("lora_") != std::string::npos) {
      ++lora;
      if (p.key().find("lora_B") != std::string::npos && p.value().abs().sum().item<double>() > 0) ++lora_b_changed;
      continue;
    }
    EXPECT_TRUE(torch::equal(p.value(), bp[p.key()])) << p.key() << " changed";
  }
  EXPECT_EQ(lora, 5 * 7 * 2);
  EXPECT_EQ(lora_b_changed, 5 * 7);  // every B, zero at the start (PEFT init), has moved after one step
}

TEST(Train, TokenNormalizedAccumulationEqualsOneBigBatch) {
  // unpacked rows of different lengths: micro-batches hold different numbers of trained tokens, so
  // per-micro-batch normalization would give another loss and gradient.
  auto big = small_recipe("accum_big"), acc = small_recipe("accum_small");
  for (auto* r : {&big, &acc}) {
    r->data.packing = false;
    r->train.max_steps = 2;
    r->data.eval.reset();
    r->optim.grad_clip = 0;
  }
  big.train.batch_size = 4;
  big.train.grad_accum = 1;
  acc.train.batch_size = 1;
  acc.train.grad_accum = 4;
  run_sft(big, false);
  run_sft(acc, false);
  auto mb = metrics(big.output_dir), ma = metrics(acc.output_dir);
  ASSERT_EQ(mb.size(), 2u);
  ASSERT_EQ(ma.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NEAR(ma[i]["loss"].get<double>(), mb[i]["loss"].get<double>(), 1e-5);
    EXPECT_NEAR(ma[i]["grad_norm"].get<double>(), mb[i]["grad_norm"].get<double>(),
                1e-5 * mb[i]["grad_norm"].get<double>());
    EXPECT_EQ(ma[i]["trained_units"], mb[i]["trained_units"]);
  }
  auto a = tensors_of(acc.output_dir + "/adapter/adapter_model.safetensors");
  auto b = tensors_of(big.output_dir + "/adapter/adapter_model.safetensors");
  for (auto& [k, v] : b) EXPECT_TRUE(tensors_close(a[k], v, 1e-6, 1e-4)) << k;
}

TEST(Train, ResumeIsBitExact) {
  auto r = small_recipe("resume");
  r.lora.dropout = 0.1;  // the RNG state must come back too
  run_sft(r, false);
  auto full = metrics(r.output_dir);
  auto final_full = tensors_of(r.output_dir + "/adapter/adapter_model.safetensors");
  ASSERT_EQ(full.size(), 6u);
  // what a run killed after step 3 leaves behind: checkpoint 3, metrics up to step 3 (and maybe later lines)
  fs::remove_all(r.output_dir + "/checkpoints/step-00000006");
  fs::remove_all(r.output_dir + "/adapter");
  ASSERT_TRUE(fs::exists(r.output_dir + "/checkpoints/step-00000003/state.json"));
  run_sft(r, /*resume=*/true);
  auto resumed = metrics(r.output_dir);
  ASSERT_EQ(resumed.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(resumed[i]["step"], full[i]["step"]);
    EXPECT_EQ(resumed[i]["loss"].get<double>(), full[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(resumed[i]["grad_norm"].get<double>(), full[i]["grad_norm"].get<double>()) << "step " << i + 1;
  }
  auto final_resumed = tensors_of(r.output_dir + "/adapter/adapter_model.safetensors");
  for (auto& [k, v] : final_full) EXPECT_TRUE(torch::equal(final_resumed[k], v)) << k;
}

TEST(Train, CheckpointsKeepTheNewestAndAreComplete) {
  auto r = small_recipe("keep");
  r.checkpoint.every = 2;
  r.checkpoint.keep = 2;
  r.data.eval.reset();
  run_sft(r, false);
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(r.output_dir + "/checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names, (std::vector<std::string>{"step-00000004", "step-00000006"}));
  for (auto f : {"state.json", "trainable.safetensors", "optimizer.safetensors", "rng.safetensors",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"})
    EXPECT_TRUE(fs::exists(r.output_dir + "/checkpoints/step-00000006/" + f)) << f;
  auto st = nlohmann::json::parse(read_file(r.output_dir + "/checkpoints/step-00000006/state.json"));
  EXPECT_EQ(st["step"], 6);
  EXPECT_EQ(st["recipe"]["lora"]["r"], 8);
}

TEST(Train, PackedRowLossEqualsDocumentsOneByOne) {
  auto tok = Tokenizer::load(repo_path("models/stories260K/tokenizer.model"));
  auto m = load_model(repo_path("models/stories260K"), torch::kFloat32);
  DataSource src{repo_path("datasets/data/shakespeare_eval.jsonl"), "text", 1.0};
  auto samples = load_sft_file(src, *tok, ChatFormat::MistralV1, {});
  samples.resize(std::min<size_t>(samples.size(), 6));
  DataStats st;
  truncate_samples(samples, 100, Truncation::Right, st);
  auto packed = make_rows(samples, 256, true, st);
  ASSERT_LT(packed.size(), samples.size());  // several documents share a row
  torch::NoGradGuard ng;
  auto loss_of = [&](const std::vector<Row>& rows) {
    double sum = 0;
    int64_t n = 0;
    for (auto& row : rows) {
      auto t = [&](const std::vector<int64_t>& v) { return torch::tensor(v).unsqueeze(0); };
      auto h = m->hidden_states(t(row.input_ids), t(row.position_ids), t(row.doc_ids));
      auto l = token_nll(*m, h, t(row.targets));
      sum += l.sum.item<double>();
      n += l.count;
    }
    return std::pair{sum, n};
  };
  auto [ps, pn] = loss_of(packed);
  double os = 0;
  int64_t on = 0;
  for (auto& s : samples) {  // each document alone, plain full-sequence cross-entropy
    auto ids = torch::tensor(std::vector<int64_t>(s.ids.begin(), s.ids.end())).unsqueeze(0);
    auto logits = m->forward(ids)[0];
    for (size_t t = 0; t + 1 < s.ids.size(); ++t)
      if (s.trainable[t + 1]) {
        os -= torch::log_softmax(logits[t], 0)[s.ids[t + 1]].item<double>();
        ++on;
      }
  }
  EXPECT_EQ(pn, on);
  EXPECT_NEAR(ps / pn, os / on, 1e-5);
}

TEST(Train, SftLowersHeldOutLoss) {
  auto r = small_recipe("learns");
  r.train.max_steps = 40;
  r.train.batch_size = 8;
  r.data.seq_len = 256;
  r.eval.max_batches = 0;
  r.checkpoint.every = 0;
  auto res = run_sft(r, false);
  double before = res.summary.initial_eval.at("eval_loss"), after = res.summary.eval.at("eval_loss");
  std::cerr << "held-out loss " << before << " -> " << after << "\n";
  EXPECT_LT(after, before - 0.3);  // Shakespeare is far from TinyStories: a real adaptation shows
}

TEST(Train, FullFineTuningOfChosenModulesOnly) {
  auto r = small_recipe("full_norms");
  r.lora.enabled = false;
  r.train.train_modules = {"norm"};
  r.train.max_steps = 1;
  r.schedule.warmup_steps = 0;
  r.data.eval.reset();
  run_sft(r, false);
  auto base = load_model(r.model, torch::kFloat32);
  auto tuned = load_model(r.model, torch::kFloat32);
  auto info = load_peft_adapter(*tuned, r.output_dir + "/adapter");
  EXPECT_EQ(info.modules_to_save.size(), 5u * 2u + 1u);  // two norms per layer + the final norm
  auto bp = base->named_parameters();
  for (auto& p : tuned->named_parameters()) {
    bool norm = p.key().find("norm") != std::string::npos;
    EXPECT_EQ(torch::equal(p.value().to(torch::kFloat32), bp[p.key()]), !norm) << p.key();
  }
}

TEST(Train, NonFiniteLossStopsTheRunAndNamesTheLastCheckpoint) {
  auto r = small_recipe("nan");
  r.optim.lr = 1e30;  // the first update blows the adapter up; the next loss is not finite
  r.optim.grad_clip = 0;
  r.schedule.warmup_steps = 0;
  r.schedule.type = Schedule::Constant;
  r.checkpoint.every = 1;
  r.data.eval.reset();
  affinage::test::expect_error([&] { run_sft(r, false); }, {"step 2", "training loss is", "step-00000001"});
  EXPECT_TRUE(fs::exists(r.output_dir + "/checkpoints/step-00000001/state.json"));
  EXPECT_FALSE(fs::exists(r.output_dir + "/checkpoints/step-00000002"));
  EXPECT_FALSE(fs::exists(r.output_dir + "/adapter"));  // no final adapter from a failed run
}
