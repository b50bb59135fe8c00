// Merging adapters into weights: merged logits equal base + adapter (fp32, bf16), rsLoRA and rank/alpha
// patterns, PEFT folders from elsewhere (adapter names in tensor names, modules_to_save), TIES and DARE on
// hand-worked tensors, sharded and Mistral outputs loading back, CLI errors, and peak memory on a larger
// synthetic checkpoint.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "base/files.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "lora/merge.h"
#include "model/loader.h"
#include "tests/test_util.h"

using namespace affinage;
using affinage::test::expect_error;
using affinage::test::tensors_close;
namespace fs = std::filesystem;

extern char** environ;

static const std::string kStories = affinage::test::repo_path("models/stories260K");
static const auto kIds = torch::tensor({{1L, 403L, 407L, 261L, 378L, 432L, 383L, 290L, 17L, 2L}});

static CausalLM stories(c10::ScalarType dt = torch::kFloat32) { return load_model(kStories, dt); }

// A PEFT folder with nonzero B written from `cfg` on stories260K; returns base + adapter logits (fp32).
static at::Tensor make_adapter(const std::string& dir, const LoraConfig& cfg, uint64_t seed,
                               const std::map<std::string, at::Tensor>& extra = {}) {
  auto m = stories();
  inject_lora(*m, cfg, seed);
  torch::NoGradGuard ng;
  torch::manual_seed(seed + 100);
  for (auto& [n, lin] : m->linears())
    if (lin->has_lora()) lin->lora_B->weight.normal_(0, 0.05);
  AdapterInfo info;
  info.lora = cfg;
  info.lora.targets = expand_lora_targets(cfg.targets);
  info.base_model = kStories;
  for (auto& [n, t] : extra) info.modules_to_save.push_back(n);
  save_peft_adapter(*m, info, dir, extra);
  auto ref = stories();
  load_adapter(*ref, dir);
  return ref->forward(kIds);
}

// The merged folder against base + adapter, on the same tokens. Evaluated in fp64 (weights as stored, the
// LoRA branch in fp64 too), the two differ only by the merge's one rounding of W + ΔW to fp32: within 1e-5.
// Evaluated in fp32 they also differ by summation order, within 2e-6 of the largest logit (about 4e-5 here).
static void expect_same_logits(const std::string& merged_dir, const std::string& adapter_dir) {
  torch::NoGradGuard ng;
  auto merged = load_model(merged_dir, torch::kFloat64);
  auto ref = load_model(kStories, torch::kFloat64);
  load_adapter(*ref, adapter_dir);
  for (auto& [n, lin] : ref->linears())
    if (lin->has_lora()) {
      lin->lora_A->to(torch::kFloat64);
      lin->lora_B->to(torch::kFloat64);
    }
  EXPECT_TRUE(tensors_close(merged->forward(kIds), ref->forward(kIds), 1e-5)) << merged_dir << " (fp64)";
  auto m32 = load_model(merged_dir, torch::kFloat32)->forward(kIds);
  auto r32 = stories();
  load_adapter(*r32, adapter_dir);
  auto want = r32->forward(kIds);
  EXPECT_TRUE(tensors_close(m32, want, 2e-6 * want.abs().max().item<double>())) << merged_dir << " (fp32)";
}

static LoraConfig all_linear(int64_t r = 4, double alpha = 8) {
  LoraConfig c;
  c.targets = {"all-linear"};
  c.r = r, c.alpha = alpha;
  return c;
}

static MergeSummary merge(const std::string& model, std::vector<AdapterInput> ads, const std::string& out,
                          const std::function<void(MergeOptions&)>& tweak = {}) {
  MergeOptions o;
  o.model_dir = model, o.adapters = std::move(ads), o.out_dir = out;
  if (tweak) tweak(o);
  return merge_adapters(o);
}

TEST(Merge, MergedLogitsEqualBasePlusAdapterF32) {
  auto tmp = affinage::test::temp_dir("merge_f32");
  auto want = make_adapter(tmp + "/ad", all_linear(), 1);
  auto s = merge(kStories, {{tmp + "/ad"}}, tmp + "/out");
  EXPECT_EQ(s.tensors, 47u);
  EXPECT_EQ(s.lora_modules, 35u);
  expect_same_logits(tmp + "/out", tmp + "/ad");
  torch::NoGradGuard ng;
  EXPECT_FALSE(tensors_close(stories()->forward(kIds), want, 1e-2));  // the adapter does change the model
  // untouched tensors are copied bit for bit; the folder is complete
  WeightSource a(kStories), b(tmp + "/out");
  EXPECT_TRUE(torch::equal(a.load("model.norm.weight"), b.load("model.norm.weight")));
  for (auto* f :
       {"config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json", "affinage_merge.json"})
    EXPECT_TRUE(fs::exists(tmp + "/out/" + f)) << f;
  auto cfg = nlohmann::json::parse(read_file(tmp + "/out/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  auto gen = nlohmann::json::parse(read_file(tmp + "/out/generation_config.json"));
  EXPECT_EQ(gen["bos_token_id"], 1);
  EXPECT_EQ(gen["eos_token_id"], 2);
  fs::remove_all(tmp);
}

TEST(Merge, Bf16OutputWithinStatedTolerance) {
  auto tmp = affinage::test::temp_dir("merge_bf16");
  auto want = make_adapter(tmp + "/ad", all_linear(), 2);
  merge(kStories, {{tmp + "/ad"}}, tmp + "/out", [](MergeOptions& o) { o.dtype = at::kBFloat16; });
  WeightSource b(tmp + "/out");
  EXPECT_EQ(b.dtype_name("model.layers.0.self_attn.q_proj.weight"), "BF16");
  EXPECT_EQ(b.config().torch_dtype, "bfloat16");
  torch::NoGradGuard ng;
  // bf16 weights and bf16 compute against the fp32 base + adapter. Stated tolerance: 3% of the largest logit
  // (measured: 0.24 of 18.3), and no more than twice what bf16 alone costs the base model (measured: 0.29).
  auto merged = load_model(tmp + "/out")->forward(kIds).to(torch::kFloat32);
  EXPECT_TRUE(tensors_close(merged, want, 0.03 * want.abs().max().item<double>()));
  auto base_err = (stories(torch::kBFloat16)->forward(kIds).to(torch::kFloat32) - stories()->forward(kIds))
                      .abs()
                      .max()
                      .item<double>();
  auto merge_err = (merged - want).abs().max().item<double>();
  EXPECT_LT(merge_err, 2 * base_err) << "merge_err " << merge_err << " base_err " << base_err;
  // and the bf16 weights are exactly the fp32 merge rounded once
  merge(kStories, {{tmp + "/ad"}}, tmp + "/out32");
  WeightSource f(tmp + "/out32");
  auto n = "model.layers.2.mlp.down_proj.weight";
  EXPECT_TRUE(torch::equal(b.load(n), f.load(n).to(at::kBFloat16)));
  fs::remove_all(tmp);
}

TEST(Merge, RsloraRankAndAlphaPatterns) {
  auto tmp = affinage::test::temp_dir("merge_rs");
  auto c = all_linear(4, 8);
  c.rslora = true;
  c.rank_pattern = {{"v_proj", 2}, {"model.layers.1.mlp.up_proj", 6}};
  c.alpha_pattern = {{"o_proj", 32}};
  make_adapter(tmp + "/ad", c, 3);
  merge(kStories, {{tmp + "/ad"}}, tmp + "/out");
  expect_same_logits(tmp + "/out", tmp + "/ad");
  // one module by hand: o_proj takes alpha 32 from alpha_pattern, scale 32 / sqrt(4)
  SafetensorsFile ad(tmp + "/ad/adapter_model.safetensors");
  auto A = ad.load("base_model.model.model.layers.3.self_attn.o_proj.lora_A.weight");
  auto B = ad.load("base_model.model.model.layers.3.self_attn.o_proj.lora_B.weight");
  auto n = "model.layers.3.self_attn.o_proj.weight";
  auto w = WeightSource(kStories).load(n) + torch::matmul(B, A) * (32.0 / 2.0);
  EXPECT_TRUE(tensors_close(WeightSource(tmp + "/out").load(n), w, 1e-7));
  EXPECT_EQ(ad.find("base_model.model.model.layers.1.mlp.up_proj.lora_A.weight")->shape[0], 6);
  // a config whose rank disagrees with the tensors is refused, naming the module and the pattern
  auto cfg = nlohmann::json::parse(read_file(tmp + "/ad/adapter_config.json"));
  cfg["rank_pattern"]["v_proj"] = 3;
  write_file_atomic(tmp + "/ad/adapter_config.json", cfg.dump());
  expect_error([&] { merge(kStories, {{tmp + "/ad"}}, tmp + "/bad"); }, {"v_proj", "rank 2", "rank_pattern"});
  EXPECT_FALSE(fs::exists(tmp + "/bad"));
  fs::remove_all(tmp);
}

TEST(Merge, PeftFolderFromElsewhereWithModulesToSave) {
  auto tmp = affinage::test::temp_dir("merge_ext");
  auto dir = tmp + "/ad";
  fs::create_directories(dir);
  auto A = torch::randn({2, 64}), B = torch::randn({172, 2}), norm = torch::rand({64});
  write_safetensors(dir + "/adapter_model.safetensors",
                    {{"base_model.model.model.layers.4.mlp.gate_proj.lora_A.default.weight", A},
                     {"base_model.model.model.layers.4.mlp.gate_proj.lora_B.default.weight", B},
                     {"base_model.model.model.norm.weight", norm}});
  write_file_atomic(
      dir + "/adapter_config.json",
      R"({"peft_type":"LORA","target_modules":["gate_proj"],"r":2,"lora_alpha":3,"modules_to_save":["model.norm"]})");
  auto s = merge(kStories, {{dir}}, tmp + "/out");
  EXPECT_EQ(s.lora_modules, 1u);
  EXPECT_EQ(s.replaced, 1u);
  WeightSource base(kStories), out(tmp + "/out");
  EXPECT_TRUE(torch::equal(out.load("model.norm.weight"), norm));
  auto n = "model.layers.4.mlp.gate_proj.weight";
  EXPECT_TRUE(tensors_close(out.load(n), base.load(n) + torch::matmul(B, A) * 1.5, 1e-6));
  EXPECT_TRUE(
      torch::equal(out.load("model.layers.4.mlp.up_proj.weight"), base.load("model.layers.4.mlp.up_proj.weight")));
  expect_same_logits(tmp + "/out", dir);
  // an adapter for another model: the module and the base tensor are named
  write_safetensors(dir + "/adapter_model.safetensors",
                    {{"base_model.model.model.layers.4.mlp.gate_proj.lora_A.weight", torch::randn({2, 128})},
                     {"base_model.model.model.layers.4.mlp.gate_proj.lora_B.weight", B}});
  expect_error([&] { merge(kStories, {{dir}}, tmp + "/bad"); }, {"model.layers.4.mlp.gate_proj", "another base model"});
  write_safetensors(dir + "/adapter_model.safetensors", {{"base_model.model.lm_head.weight", torch::randn({512, 64})}});
  expect_error([&] { merge(kStories, {{dir}}, tmp + "/bad"); }, {"lm_head.weight", "does not have"});
  fs::remove_all(tmp);
}

TEST(Merge, TiesHandWorked) {
  // density 0.5 keeps 3 of 6 by magnitude: p1 = [0,-2,3,0,4,0], p2 = [-3,1.5,0,0,2,0]
  auto d1 = torch::tensor({1.0, -2.0, 3.0, 0.5, 4.0, 0.1}), d2 = torch::tensor({-3.0, 1.5, 1.0, 0.2, 2.0, -0.4});
  EXPECT_TRUE(torch::equal(magnitude_prune(d1, 0.5), torch::tensor({0.0, -2.0, 3.0, 0.0, 4.0, 0.0})));
  EXPECT_TRUE(torch::equal(magnitude_prune(d2, 0.5), torch::tensor({-3.0, 1.5, 0.0, 0.0, 2.0, 0.0})));
  // sign of p1 + p2 = [-3,-0.5,3,0,6,0] -> [-,-,+,+,+,+]; weights 1 and 0.5 applied after the election;
  // mean over the agreeing: [0.5*-3, -2, 3, (none) 0, (1*4 + 0.5*2)/2, (none) 0]
  CombineOptions o{MergeMethod::Ties, 0.5, 0};
  auto got = combine_deltas({d1, d2}, {1.0, 0.5}, o, "t");
  EXPECT_TRUE(tensors_close(got, torch::tensor({-1.5, -2.0, 3.0, 0.0, 2.5, 0.0}), 1e-12)) << got;
  // 2-D like a weight, and an adapter that lacks the module counts as zeros
  auto g2 = combine_deltas({d1.view({2, 3}), at::Tensor()}, {1.0, 1.0}, o, "t");
  EXPECT_TRUE(tensors_close(g2, torch::tensor({0.0, -2.0, 3.0, 0.0, 4.0, 0.0}).view({2, 3}), 1e-12));
  // density 1: no trimming, only the election: [1,-2] and [3,1] -> [(1+3)/2, -2]
  CombineOptions full{MergeMethod::Ties, 1.0, 0};
  EXPECT_TRUE(tensors_close(combine_deltas({torch::tensor({1.0, -2.0}), torch::tensor({3.0, 1.0})}, {1, 1}, full, "t"),
                            torch::tensor({2.0, -2.0}), 1e-12));
  // linear: the weighted sum
  CombineOptions lin{MergeMethod::Linear, 1.0, 0};
  EXPECT_TRUE(tensors_close(combine_deltas({d1, d2}, {1.0, 0.5}, lin, "t"), d1 + 0.5 * d2, 1e-12));
}

TEST(Merge, DareHandChecked) {
  auto ones = torch::ones({4000}, torch::kFloat64);
  // dare_linear, density 0.5: each delta kept with p = 0.5 and doubled, so every entry of 1·d1 + 1·d2 with
  // d1 = 1, d2 = 10 is one of 0, 2, 20, 22, each about a quarter of the time.
  CombineOptions o{MergeMethod::DareLinear, 0.5, 7};
  auto g = combine_deltas({ones, 10 * ones}, {1.0, 1.0}, o, "layer.w");
  for (double v : {0.0, 2.0, 20.0, 22.0}) {
    double share = (g == v).to(torch::kFloat64).mean().item<double>();
    EXPECT_NEAR(share, 0.25, 0.03) << v;
  }
  EXPECT_EQ((g == 0).logical_or(g == 2).logical_or(g == 20).logical_or(g == 22).all().item<bool>(), true);
  // seeded by (seed, tensor name, adapter index): same inputs -> same masks; another name or seed -> others
  EXPECT_TRUE(torch::equal(g, combine_deltas({ones, 10 * ones}, {1.0, 1.0}, o, "layer.w")));
  EXPECT_FALSE(torch::equal(g, combine_deltas({ones, 10 * ones}, {1.0, 1.0}, o, "layer.v")));
  o.seed = 8;
  EXPECT_FALSE(torch::equal(g, combine_deltas({ones, 10 * ones}, {1.0, 1.0}, o, "layer.w")));
  // dare_ties with d1 = 1, d2 = -3 (density 0.5, rescaled to 2 and -6): both kept -> sum -4, only -6 agrees;
  // one kept -> itself; none -> 0. So entries are in {0, 2, -6}, and 2 appears only where d2 was dropped.
  CombineOptions t{MergeMethod::DareTies, 0.5, 7};
  auto h = combine_deltas({ones, -3 * ones}, {1.0, 1.0}, t, "layer.w");
  EXPECT_TRUE((h == 0).logical_or(h == 2).logical_or(h == -6).all().item<bool>());
  EXPECT_NEAR((h == -6).to(torch::kFloat64).mean().item<double>(), 0.5, 0.03);
  EXPECT_NEAR((h == 2).to(torch::kFloat64).mean().item<double>(), 0.25, 0.03);
  // the same masks as dare_linear drew for these names: where h == 2, dare_linear's d2 part was dropped
  auto l = combine_deltas({ones, -3 * ones}, {1.0, 1.0}, CombineOptions{MergeMethod::DareLinear, 0.5, 7}, "layer.w");
  EXPECT_TRUE(torch::equal(h == 2, l == 2));
  // density 1 is no pruning at all
  EXPECT_TRUE(
      torch::equal(combine_deltas({ones}, {0.5}, CombineOptions{MergeMethod::DareLinear, 1.0, 7}, "x"), 0.5 * ones));
}

TEST(Merge, TwoAdaptersTiesOnAModel) {
  auto tmp = affinage::test::temp_dir("merge_two");
  make_adapter(tmp + "/a1", all_linear(), 11);
  make_adapter(tmp + "/a2", all_linear(), 12);
  merge(kStories, {{tmp + "/a1", 1.0}, {tmp + "/a2", 0.5}}, tmp + "/out", [](MergeOptions& o) {
    o.combine = {MergeMethod::Ties, 0.3, 0};
  });
  // the merged tensor equals the combination done by hand from the two adapters' ΔW
  auto n = std::string("model.layers.1.self_attn.k_proj");
  auto delta = [&](const std::string& d) {
    SafetensorsFile f(d + "/adapter_model.safetensors");
    return torch::matmul(f.load("base_model.model." + n + ".lora_B.weight"),
                         f.load("base_model.model." + n + ".lora_A.weight")) *
           2.0;
  };
  auto want =
      WeightSource(kStories).load(n + ".weight") +
      combine_deltas({delta(tmp + "/a1"), delta(tmp + "/a2")}, {1.0, 0.5}, {MergeMethod::Ties, 0.3, 0}, n + ".weight");
  EXPECT_TRUE(tensors_close(WeightSource(tmp + "/out").load(n + ".weight"), want, 1e-7));
  auto rec = nlohmann::json::parse(read_file(tmp + "/out/affinage_merge.json"));
  EXPECT_EQ(rec["method"], "ties");
  EXPECT_EQ(rec["density"], 0.3);
  EXPECT_EQ(rec["adapters"][1]["weight"], 0.5);
  fs::remove_all(tmp);
}

TEST(Merge, ShardedAndMistralOutputsLoadBack) {
  auto tmp = affinage::test::temp_dir("merge_fmt");
  make_adapter(tmp + "/ad", all_linear(), 4);
  merge(kStories, {{tmp + "/ad"}}, tmp + "/sharded",
        [](MergeOptions& o) { o.shard_bytes = parse_byte_size("200KB", "x"); });
  EXPECT_TRUE(fs::exists(tmp + "/sharded/model.safetensors.index.json"));
  int shards = 0;
  for (auto& e : fs::directory_iterator(tmp + "/sharded"))
    shards += e.path().filename().string().rfind("model-0000", 0) == 0;
  EXPECT_GE(shards, 4);  // 1.04 MB in shards of at most 200 kB (a tensor never splits)
  EXPECT_FALSE(fs::exists(tmp + "/sharded/model.safetensors"));
  EXPECT_EQ(WeightSource(tmp + "/sharded").format(), "hf-sharded");
  merge(kStories, {{tmp + "/ad"}}, tmp + "/mistral", [](MergeOptions& o) { o.format = "mistral"; });
  EXPECT_TRUE(fs::exists(tmp + "/mistral/params.json"));
  EXPECT_TRUE(fs::exists(tmp + "/mistral/tokenizer.model"));
  EXPECT_FALSE(fs::exists(tmp + "/mistral/config.json"));
  SafetensorsFile cons(tmp + "/mistral/consolidated.safetensors");
  EXPECT_NE(cons.find("output.weight"), nullptr);  // the tied head, stored: params.json cannot say "tied"
  EXPECT_NE(cons.find("layers.0.attention.wq.weight"), nullptr);
  expect_same_logits(tmp + "/sharded", tmp + "/ad");
  expect_same_logits(tmp + "/mistral", tmp + "/ad");
  // a Mistral folder as the base: merged back into HF, the weights come out as the HF merge plus one more ΔW
  merge(tmp + "/mistral", {{tmp + "/ad", -1.0}}, tmp + "/back");
  WeightSource back(tmp + "/back"), base(kStories);
  for (auto& n : base.names()) EXPECT_TRUE(tensors_close(back.load(n), base.load(n), 1e-6)) << n;
  EXPECT_EQ(parse_byte_size("5GB", "x"), 5000000000ull);
  EXPECT_EQ(parse_byte_size("2GiB", "x"), 2ull << 30);
  expect_error([] { parse_byte_size("lots", "--shard-size"); }, {"--shard-size", "lots"});
  fs::remove_all(tmp);
}

// Runs build/affinage with `args` and returns its peak resident memory (VmHWM, KiB), read from /proc every
// 2 ms while it runs. (wait4's ru_maxrss would not do: exec keeps the high-water mark of the spawning
// process, here this test with its 234 MB model.) VmHWM only grows and the peak is in the tensor loop, long
// before the process ends, so the last reading is the peak.
static long child_peak_rss_kb(const std::vector<std::string>& args, int* code) {
  std::vector<std::string> all = {AFFINAGE_CLI_PATH};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  long peak = 0;
  for (;;) {
    std::ifstream st("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(st, line);)
      if (line.rfind("VmHWM:", 0) == 0) peak = std::max(peak, std::stol(line.substr(6)));
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
      return peak;
    }
    usleep(2000);
  }
}

TEST(Merge, PeakMemoryStaysNearOneShardOnALargerCheckpoint) {
  auto tmp = affinage::test::temp_dir("merge_mem");
  // A synthetic 4-layer model, 234 MB of fp32: 58.6M parameters, the largest tensor 16 MB.
  ModelConfig c;
  c.vocab_size = 4096, c.hidden_size = 1024, c.intermediate_size = 2816, c.num_hidden_layers = 4;
  c.num_attention_heads = 8, c.num_key_value_heads = 8, c.head_dim = 128, c.torch_dtype = "float32";
  fs::create_directories(tmp + "/big");
  write_file_atomic(tmp + "/big/config.json", c.to_hf_json().dump(2));
  uint64_t model_bytes = 0;
  std::vector<std::pair<std::string, at::Tensor>> ad;
  {
    CausalLM m(c, torch::TensorOptions().dtype(torch::kFloat32));
    init_random(*m, 1);
    ShardedWriter w(tmp + "/big", 1ull << 30);
    for (auto& p : m->named_parameters()) {
      w.add(p.key(), p.value());
      model_bytes += p.value().numel() * 4;
    }
    w.finish();
    torch::manual_seed(2);
    for (auto& [n, lin] : m->linears()) {
      if (n == "lm_head") continue;
      ad.emplace_back("base_model.model." + n + ".lora_A.weight", torch::randn({8, lin->in_features}) * 0.01);
      ad.emplace_back("base_model.model." + n + ".lora_B.weight", torch::randn({lin->out_features, 8}) * 0.01);
    }
  }
  fs::create_directories(tmp + "/ad");
  write_safetensors(tmp + "/ad/adapter_model.safetensors", ad);
  write_file_atomic(tmp + "/ad/adapter_config.json",
                    R"({"peft_type":"LORA","target_modules":"all-linear","r":8,"lora_alpha":16})");
  ASSERT_GT(model_bytes, 200u << 20);
  // Baseline: the same command on the tiny model (the binary, LibTorch and its threads).
  int code = 0;
  make_adapter(tmp + "/small_ad", all_linear(), 5);
  long small = child_peak_rss_kb(
      {"merge", "--model", kStories, "--adapter", tmp + "/small_ad", "--out", tmp + "/small_out", "--threads", "1"},
      &code);
  ASSERT_EQ(code, 0);
  long big = child_peak_rss_kb({"merge", "--model", tmp + "/big", "--adapter", tmp + "/ad", "--out", tmp + "/big_out",
                                "--shard-size", "32MB", "--threads", "1"},
                               &code);
  ASSERT_EQ(code, 0);
  double growth_mb = double(big - small) / 1024.0, model_mb = double(model_bytes) / (1 << 20);
  std::cout << "[ merge peak RSS ] tiny model " << small / 1024 << " MiB, " << model_mb
            << " MiB model with 32 MB shards " << big / 1024 << " MiB: growth " << growth_mb << " MiB\n";
  // One 32 MB shard pending + a few tensors of at most 16 MiB in flight (measured: 55 MiB); the whole model is
  // 228 MiB, and a merge holding base and result would grow by twice that.
  EXPECT_LT(growth_mb, 32 + 4 * 16);
  EXPECT_LT(growth_mb, 0.45 * model_mb);
  // and the result is right: one module checked by hand
  auto n = std::string("model.layers.3.mlp.down_proj");
  SafetensorsFile f(tmp + "/ad/adapter_model.safetensors");
  auto want = WeightSource(tmp + "/big").load(n + ".weight") +
              torch::matmul(f.load("base_model.model." + n + ".lora_B.weight"),
                            f.load("base_model.model." + n + ".lora_A.weight")) *
                  2.0;
  EXPECT_TRUE(tensors_close(WeightSource(tmp + "/big_out").load(n + ".weight"), want, 1e-6));
  fs::remove_all(tmp);
}

TEST(Merge, CliErrorsNameTheOptionAndWhatToDo) {
  auto tmp = affinage::test::temp_dir("merge_cli");
  auto r = affinage::test::run_cli("merge --model '" + kStories + "' --adapter '" + tmp + "/nope:0.5' --out '" + tmp +
                                   "/o' --method ties");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--density"), std::string::npos) << r.err;
  r = affinage::test::run_cli("merge --model '" + kStories + "' --adapter '" + tmp + "/nope:0.5' --out '" + tmp +
                              "/o'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(tmp + "/nope' does not exist"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp + "/o"));
  r = affinage::test::run_cli("merge --model '" + kStories + "' --out x");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("adapter"), std::string::npos) << r.err;
  // library-level checks (no process start): method, density, occupied output folder
  expect_error([] { parse_merge_method("avg"); }, {"avg", "linear, ties, dare_linear, dare_ties"});
  expect_error(
      [&] { merge(kStories, {{tmp}}, tmp + "/o", [](MergeOptions& o) {
              o.combine = {MergeMethod::Ties, 1.5, 0};
            }); },
      {"density", "(0, 1]"});
  fs::create_directories(tmp + "/full");
  write_file_atomic(tmp + "/full/x", "x");
  make_adapter(tmp + "/ad", all_linear(), 6);
  expect_error([&] { merge(kStories, {{tmp + "/ad"}}, tmp + "/full"); }, {tmp + "/full", "not empty"});
  fs::remove_all(tmp);
}
