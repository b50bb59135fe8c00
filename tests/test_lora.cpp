// LoRA layers and adapter files: PEFT init leaves the model unchanged, a disabled adapter is the base,
// gradients match a plain autograd formulation and finite differences, PEFT and mistral-finetune files.
#include <filesystem>
#include <nlohmann/json.hpp>
#include "base/files.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/loader.h"
#include "tests/test_util.h"

using namespace affinage;
using affinage::test::tensors_close;
namespace fs = std::filesystem;

static CausalLM stories() { return load_model(affinage::test::repo_path("models/stories260K"), torch::kFloat32); }
static const auto kIds = torch::tensor({{1L, 403L, 407L, 261L, 378L, 432L, 383L}});

static void randomize_lora(CausalLMImpl& m, double std = 0.05) {
  torch::NoGradGuard ng;
  for (auto& [n, lin] : m.linears())
    if (lin->has_lora()) {
      lin->lora_A->weight.normal_(0, std);
      lin->lora_B->weight.normal_(0, std);
    }
}

TEST(Lora, FreshAdapterLeavesLogitsUnchanged) {
  auto m = stories();
  torch::NoGradGuard ng;
  auto base = m->forward(kIds);
  LoraConfig c;
  c.targets = {"all-linear"};
  auto names = inject_lora(*m, c, 1);
  EXPECT_EQ(names.size(), 5u * 7u);
  EXPECT_TRUE(torch::equal(m->forward(kIds), base));
  for (auto& [n, lin] : m->linears())
    if (lin->has_lora()) {
      EXPECT_TRUE(lin->lora_B->weight.eq(0).all().item<bool>()) << n;
      EXPECT_GT(lin->lora_A->weight.abs().sum().item<double>(), 0.0) << n;
      // Kaiming-uniform with a = sqrt(5): bound = 1/sqrt(fan_in)
      EXPECT_LE(lin->lora_A->weight.abs().max().item<double>(), 1.0 / std::sqrt(double(lin->in_features)) + 1e-7);
    }
}

TEST(Lora, DisabledAdapterGivesTheBaseExactly) {
  auto m = stories();
  torch::NoGradGuard ng;
  auto base = m->forward(kIds);
  LoraConfig c;
  c.targets = {"all-linear"};
  inject_lora(*m, c, 1);
  randomize_lora(*m);
  auto adapted = m->forward(kIds);
  EXPECT_FALSE(tensors_close(adapted, base, 1e-3));
  m->set_adapters_enabled(false);
  EXPECT_TRUE(torch::equal(m->forward(kIds), base));
  m->set_adapters_enabled(true);
  EXPECT_TRUE(torch::equal(m->forward(kIds), adapted));
}

TEST(Lora, GradientsMatchMergedWeightAutogradAndFiniteDifferences) {
  torch::manual_seed(3);
  LoraLinear lin(6, 5, torch::TensorOptions().dtype(torch::kDouble));
  {
    torch::NoGradGuard ng;
    lin->weight.normal_();
  }
  LoraSettings s;  // the scale as PEFT's rules give it (lora/adapter.h), checked below against alpha/sqrt(r)
  s.r = 3;
  s.alpha = 6;
  s.rslora = true;
  lin->attach_lora(3, module_scale(s, "q_proj", 3), 0.0, torch::kDouble);
  {
    torch::NoGradGuard ng;
    lin->lora_B->weight.normal_();
  }
  auto x = torch::randn({4, 6}, torch::kDouble), g = torch::randn({4, 5}, torch::kDouble);
  (lin(x) * g).sum().backward();
  // reference: y = x (W + s·B·A)ᵀ with autograd on copies of A and B; rsLoRA scale alpha/sqrt(r)
  double scale = 6.0 / std::sqrt(3.0);
  auto A = lin->lora_A->weight.detach().clone().requires_grad_(true);
  auto B = lin->lora_B->weight.detach().clone().requires_grad_(true);
  auto y = torch::matmul(x, (lin->weight.detach() + scale * torch::matmul(B, A)).t());
  (y * g).sum().backward();
  EXPECT_TRUE(tensors_close(lin->lora_A->weight.grad(), A.grad(), 1e-10, 1e-10));
  EXPECT_TRUE(tensors_close(lin->lora_B->weight.grad(), B.grad(), 1e-10, 1e-10));
  // finite differences on a few entries of A and B
  auto f = [&]() {
    torch::NoGradGuard ng;
    return (lin(x) * g).sum().item<double>();
  };
  for (auto* w : {&lin->lora_A->weight, &lin->lora_B->weight})
    for (int64_t i = 0; i < 3; ++i) {
      double h = 1e-6, orig;
      {
        torch::NoGradGuard ng;
        orig = w->view(-1)[i].item<double>();
        w->view(-1)[i].fill_(orig + h);
      }
      double up = f();
      {
        torch::NoGradGuard ng;
        w->view(-1)[i].fill_(orig - h);
      }
      double down = f();
      {
        torch::NoGradGuard ng;
        w->view(-1)[i].fill_(orig);
      }
      EXPECT_NEAR(w->grad().view(-1)[i].item<double>(), (up - down) / (2 * h), 1e-6);
    }
  EXPECT_FALSE(lin->weight.grad().defined());  // the base stays frozen
}

TEST(Lora, PatternsFollowPeftRules) {
  std::vector<std::string> keys = {"q_proj", "model.layers.1.mlp.down_proj"};
  EXPECT_EQ(*match_pattern(keys, "model.layers.0.self_attn.q_proj"), "q_proj");
  EXPECT_EQ(*match_pattern(keys, "model.layers.1.mlp.down_proj"), "model.layers.1.mlp.down_proj");
  EXPECT_EQ(match_pattern(keys, "model.layers.2.mlp.down_proj"), nullptr);
  EXPECT_EQ(match_pattern(keys, "model.layers.0.self_attn.xq_proj"), nullptr);
  auto m = stories();
  LoraConfig c;
  c.targets = {"q_proj", "down_proj"};
  c.r = 4;
  c.alpha = 8;
  c.rank_pattern = {{"model.layers.1.mlp.down_proj", 2}};
  c.alpha_pattern = {{"q_proj", 1.0}};
  inject_lora(*m, c, 1);
  for (auto& [n, lin] : m->linears()) {
    if (n == "model.layers.1.mlp.down_proj") {
      EXPECT_EQ(lin->lora_rank(), 2);
      EXPECT_DOUBLE_EQ(lin->lora_scale(), 4.0);
    } else if (n.find("q_proj") != std::string::npos) {
      EXPECT_EQ(lin->lora_rank(), 4);
      EXPECT_DOUBLE_EQ(lin->lora_scale(), 0.25);
    } else if (n.find("down_proj") != std::string::npos) EXPECT_DOUBLE_EQ(lin->lora_scale(), 2.0);
    else EXPECT_FALSE(lin->has_lora()) << n;
  }
}

TEST(Lora, PeftFolderRoundTripWithExactNamesAndShapes) {
  auto m = stories();
  LoraConfig c;
  c.targets = {"all-linear"};
  c.r = 4;
  c.alpha = 8;
  c.rank_pattern = {{"v_proj", 2}};
  inject_lora(*m, c, 1);
  randomize_lora(*m);
  AdapterInfo info;
  info.lora.r = 4;
  info.lora.alpha = 8;
  info.lora.targets = expand_lora_targets(c.targets);
  info.lora.rank_pattern = c.rank_pattern;
  info.base_model = "stories260K";
  auto dir = affinage::test::temp_dir("peft") + "/adapter";
  save_peft_adapter(*m, info, dir);
  SafetensorsFile f(dir + "/adapter_model.safetensors");
  EXPECT_EQ(f.tensors().size(), 5u * 7u * 2u);
  auto* a = f.find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(a->dtype, "F32");
  auto* b = f.find("base_model.model.model.layers.4.mlp.down_proj.lora_B.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(f.find("base_model.model.model.layers.2.self_attn.v_proj.lora_A.weight")->shape,
            (std::vector<int64_t>{2, 64}));
  auto cfg = nlohmann::json::parse(read_file(dir + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["rank_pattern"]["v_proj"], 2);
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["bias"], "none");
  // reload onto a fresh base: identical logits
  torch::NoGradGuard ng;
  auto want = m->forward(kIds);
  auto m2 = stories();
  load_peft_adapter(*m2, dir);
  EXPECT_TRUE(tensors_close(m2->forward(kIds), want, 1e-6));
  // merged-weight reference: W + ΔW gives the same logits as base + adapter
  auto m3 = stories();
  auto params3 = m3->named_parameters();
  for (auto& [n, lin] : m->linears())
    if (lin->has_lora()) params3[n + ".weight"].add_(lin->delta_weight());
  EXPECT_TRUE(tensors_close(m3->forward(kIds), want, 1e-5, 2e-6));  // fp32 rounding of W + ΔW
}

TEST(Lora, PeftFolderFromElsewhereWithUnknownKeysAndErrors) {
  auto dir = affinage::test::temp_dir("peft_ext");
  auto m = stories();
  // a hand-made PEFT folder: rsLoRA, one module, an unknown key, adapter name inside tensor names
  auto A = torch::randn({2, 64}), B = torch::randn({64, 2});
  write_safetensors(dir + "/adapter_model.safetensors",
                    {{"base_model.model.model.layers.3.self_attn.o_proj.lora_A.weight", A},
                     {"base_model.model.model.layers.3.self_attn.o_proj.lora_B.weight", B}});
  write_file_atomic(
      dir + "/adapter_config.json",
      R"({"peft_type":"LORA","target_modules":["o_proj"],"r":2,"lora_alpha":4,"use_rslora":true,"some_new_key":1})");
  testing::internal::CaptureStderr();
  auto info = load_peft_adapter(*m, dir);
  auto err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("some_new_key"), std::string::npos);
  auto m0 = stories();
  auto lin = m->model->layers[3]->as<DecoderLayerImpl>()->self_attn->o_proj;
  EXPECT_TRUE(lin->has_lora());
  EXPECT_DOUBLE_EQ(lin->lora_scale(), 4.0 / std::sqrt(2.0));
  EXPECT_TRUE(tensors_close(lin->delta_weight(), torch::matmul(B, A) * (4.0 / std::sqrt(2.0)), 1e-5));
  // DoRA is refused with the key named
  write_file_atomic(dir + "/adapter_config.json",
                    R"({"peft_type":"LORA","target_modules":["o_proj"],"use_dora":true})");
  affinage::test::expect_error([&] { load_peft_adapter(*m0, dir); }, {"use_dora", "adapter_config.json"});
  // wrong shapes name the module
  write_safetensors(dir + "/adapter_model.safetensors",
                    {{"base_model.model.model.layers.3.self_attn.o_proj.lora_A.weight", torch::randn({2, 65})},
                     {"base_model.model.model.layers.3.self_attn.o_proj.lora_B.weight", B}});
  write_file_atomic(dir + "/adapter_config.json", R"({"peft_type":"LORA","target_modules":["o_proj"]})");
  affinage::test::expect_error([&] { load_peft_adapter(*m0, dir); }, {"model.layers.3.self_attn.o_proj"});
}

TEST(Lora, MistralFinetuneFileLoadsWithScaleTwoAndRopePermutation) {
  // Build a mistral-finetune lora.safetensors from an adapter we know, then load it back.
  auto m = stories();
  LoraConfig c;
  c.targets = {"q_proj", "k_proj", "v_proj"};
  c.r = 4;
  c.alpha = 8;  // alpha = 2r: mistral-finetune's scale 2.0
  inject_lora(*m, c, 1);
  randomize_lora(*m);
  const auto& cfg = m->config();
  std::vector<std::pair<std::string, at::Tensor>> t;
  for (auto& [n, lin] : m->linears()) {
    if (!lin->has_lora()) continue;
    auto mname = hf_to_mistral_name(n + ".weight");
    auto base = mname.substr(0, mname.size() - 7);
    auto Bw = lin->lora_B->weight.detach();
    if (n.find("q_proj") != std::string::npos) Bw = permute_rotate_half_to_interleaved(Bw, cfg.num_attention_heads);
    if (n.find("k_proj") != std::string::npos) Bw = permute_rotate_half_to_interleaved(Bw, cfg.num_key_value_heads);
    t.emplace_back(base + ".lora_A.weight", lin->lora_A->weight.detach());
    t.emplace_back(base + ".lora_B.weight", Bw.contiguous());
  }
  auto dir = affinage::test::temp_dir("mft");
  write_safetensors(dir + "/lora.safetensors", t);
  torch::NoGradGuard ng;
  auto want = m->forward(kIds);
  auto m2 = stories();
  auto info = load_adapter(*m2, dir + "/lora.safetensors");
  EXPECT_EQ(info.lora.r, 4);
  EXPECT_DOUBLE_EQ(info.lora.alpha, 8.0);
  EXPECT_TRUE(tensors_close(m2->forward(kIds), want, 1e-5));
}
