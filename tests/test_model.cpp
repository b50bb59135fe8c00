// The decoder against independent references: llama2.c's greedy output on stories260K, a hand-written
// attention loop (GQA by explicit head repetition, explicit masks), RoPE as complex rotation, KV cache vs
// full forward, packed rows vs documents run alone, activation checkpointing vs plain backward.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include "model/attention.h"
#include "model/generate.h"
#include "model/loader.h"
#include "model/model.h"
#include "tests/test_util.h"

using namespace affinage;
using affinage::test::tensors_close;

static CausalLM stories(std::optional<c10::ScalarType> dt = std::nullopt) {
  return load_model(affinage::test::repo_path("models/stories260K"), dt);
}

TEST(Model, Stories260KMatchesLlama2cReference) {
  std::ifstream f(affinage::test::data_path("stories260K_reference_partial.json"));
  auto ref = nlohmann::json::parse(f);
  auto m = stories();
  torch::NoGradGuard ng;
  auto logits = m->forward(torch::tensor({{1L}}))[0][0];  // position 0 after BOS
  for (auto& pair : ref["top5_position0"]) {
    int64_t id = pair[0].get<int64_t>();
    double want = pair[1].get<double>();
    EXPECT_NEAR(logits[id].item<double>(), want, 1e-4) << "logit of id " << id;
  }
  auto top = std::get<1>(logits.topk(5));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(top[i].item<int64_t>(), ref["top5_position0"][i][0].get<int64_t>());
  SamplingOptions o;
  o.max_new_tokens = 20;
  o.eos_id = -1;  // run.c does not stop on EOS for these 20 tokens
  auto out = generate(*m, {{1}}, o)[0];
  std::vector<int> want = ref["first_20_generated_ids"].get<std::vector<int>>();
  EXPECT_EQ(out, want);
}

// Plain reference: loops over heads, repeats KV heads by index, applies an explicit allowed[i][j] mask.
static at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& allowed /*[B,Tq,Tk] bool*/) {
  int64_t B = q.size(0), H = q.size(1), Hkv = k.size(1);
  auto out = torch::zeros_like(q, torch::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      int64_t kh = h / (H / Hkv);
      auto s =
          torch::matmul(q[b][h].to(torch::kDouble), k[b][kh].to(torch::kDouble).t()) / std::sqrt(double(q.size(3)));
      s = s.masked_fill(allowed[b].logical_not(), -INFINITY);
      out[b][h] = torch::matmul(torch::softmax(s, -1), v[b][kh].to(torch::kDouble));
    }
  return out;
}

TEST(Attention, GqaPlainAndFusedMatchHeadLoopReference) {
  torch::manual_seed(0);
  int64_t B = 2, H = 8, Hkv = 2, T = 7, D = 16;
  auto q = torch::randn({B, H, T, D}), k = torch::randn({B, Hkv, T, D}), v = torch::randn({B, Hkv, T, D});
  auto causal = torch::ones({T, T}, torch::kBool).tril().expand({B, T, T});
  auto ref = reference_attention(q, k, v, causal);
  EXPECT_TRUE(tensors_close(attention(q, k, v, {}, AttnBackend::Plain), ref, 1e-5));
  ASSERT_TRUE(fused_attention_available());
  EXPECT_TRUE(tensors_close(attention(q, k, v, {}, AttnBackend::Fused), ref, 1e-5));
  // with an explicit mask: two documents in each row and a window of 3
  auto docs = torch::tensor({{0, 0, 0, 1, 1, 1, 1}, {0, 0, 0, 0, 0, 1, 1}});
  auto slots = torch::arange(T).unsqueeze(0).expand({B, T});
  auto mask = attention_mask(slots, T, docs, docs, {}, 3);
  auto allowed = torch::zeros({B, T, T}, torch::kBool);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j <= i; ++j)
        allowed[b][i][j] = (docs[b][i].item<int64_t>() == docs[b][j].item<int64_t>()) && (i - j < 3);
  EXPECT_TRUE(torch::equal(mask.squeeze(1), allowed));
  auto ref2 = reference_attention(q, k, v, allowed);
  EXPECT_TRUE(tensors_close(attention(q, k, v, mask, AttnBackend::Plain), ref2, 1e-5));
  EXPECT_TRUE(tensors_close(attention(q, k, v, mask, AttnBackend::Fused), ref2, 1e-5));
}

TEST(Attention, RopeEqualsComplexRotationOfHalfPairs) {
  torch::manual_seed(1);
  int64_t T = 5, D = 8;
  double theta = 10000.0;
  auto x = torch::randn({1, 2, T, D}, torch::kDouble);
  auto pos = torch::tensor({{0L, 3L, 7L, 100L, 511L}});
  auto [cos, sin] = rope_cos_sin(pos, D, theta, torch::kDouble);
  auto y = apply_rope(x, cos, sin);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < D / 2; ++i) {
        double ang = pos[0][t].item<double>() / std::pow(theta, 2.0 * i / D);
        double a = x[0][h][t][i].item<double>(), b = x[0][h][t][i + D / 2].item<double>();
        // (a + ib) * e^{i ang}; rotate-half pairs element i with element i + D/2
        // angles are formed in fp32 as transformers does: at position 511 that costs ~3e-5 rad
        EXPECT_NEAR(y[0][h][t][i].item<double>(), a * std::cos(ang) - b * std::sin(ang), 1e-4);
        EXPECT_NEAR(y[0][h][t][i + D / 2].item<double>(), b * std::cos(ang) + a * std::sin(ang), 1e-4);
      }
}

TEST(Model, RmsNormMatchesFormula) {
  RMSNorm n(4, 1e-5, torch::TensorOptions());
  torch::NoGradGuard ng;
  n->weight.copy_(torch::tensor({1.0, 2.0, 0.5, -1.0}));
  auto x = torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}});
  double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-5);
  auto want = torch::tensor({{1.0 / rms, 4.0 / rms, 1.5 / rms, -4.0 / rms}});
  EXPECT_TRUE(tensors_close(n(x), want, 1e-6));
}

TEST(Model, KvCacheEqualsFullForward) {
  auto m = stories();
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{1L, 403L, 407L, 261L, 378L, 432L, 383L, 286L}});
  auto full = m->forward(ids).to(torch::kFloat32)[0];  // [T, V]
  auto cache = m->new_cache(1, 16);
  auto pos = torch::arange(8).unsqueeze(0);
  // prefill 5 tokens, then one at a time
  auto last = m->forward_cached(ids.narrow(1, 0, 5), pos.narrow(1, 0, 5), cache);
  EXPECT_TRUE(tensors_close(last[0], full[4], 1e-4));
  for (int64_t t = 5; t < 8; ++t) {
    last = m->forward_cached(ids.narrow(1, t, 1), pos.narrow(1, t, 1), cache);
    EXPECT_TRUE(tensors_close(last[0], full[t], 1e-4)) << "position " << t;
  }
}

TEST(Model, LeftPaddedBatchEqualsRowsAlone) {
  auto m = stories();
  SamplingOptions o;
  o.max_new_tokens = 12;
  o.eos_id = -1;
  std::vector<std::vector<int>> prompts = {{1, 403, 407, 261, 378}, {1, 385}};
  auto batched = generate(*m, prompts, o);
  EXPECT_EQ(batched[0], generate(*m, {prompts[0]}, o)[0]);
  EXPECT_EQ(batched[1], generate(*m, {prompts[1]}, o)[0]);
}

TEST(Model, SlidingWindowEqualsExplicitWindowMask) {
  auto cfg = stories()->config();
  cfg.sliding_window = 3;
  CausalLM windowed(cfg, torch::TensorOptions());
  init_random(*windowed, 7);
  torch::NoGradGuard ng;
  auto ids = torch::randint(0, cfg.vocab_size, {1, 9});
  auto h = windowed->hidden_states(ids);
  // reference: the same weights without a window, restricting each position's context by running the
  // last 3 tokens only with their true positions (attention can then only see those 3)
  cfg.sliding_window.reset();
  CausalLM full(cfg, torch::TensorOptions());
  auto src = windowed->named_parameters();
  for (auto& p : full->named_parameters()) p.value().copy_(src[p.key()]);
  // with a window the output at the first layer differs from full attention beyond position 2 only
  auto hf = full->hidden_states(ids);
  EXPECT_TRUE(tensors_close(h.narrow(1, 0, 3), hf.narrow(1, 0, 3), 1e-5));
  // one layer: the window equals attending over the last 3 tokens only (multi-layer receptive fields grow)
  cfg.num_hidden_layers = 1;
  CausalLM w1(cfg, torch::TensorOptions());
  for (auto& p : w1->named_parameters()) p.value().copy_(src[p.key()]);
  cfg.sliding_window = 3;
  CausalLM w1win(cfg, torch::TensorOptions());
  for (auto& p : w1win->named_parameters()) p.value().copy_(src[p.key()]);
  auto hw = w1win->hidden_states(ids);
  for (int64_t t = 3; t < 9; ++t) {
    auto sub = ids.narrow(1, t - 2, 3);
    auto pos = torch::arange(t - 2, t + 1).unsqueeze(0);
    auto hs = w1->hidden_states(sub, pos);
    EXPECT_TRUE(tensors_close(hw[0][t], hs[0][2], 1e-5)) << "position " << t;
  }
}

TEST(Model, PackedRowEqualsDocumentsAlone) {
  auto m = stories();
  torch::NoGradGuard ng;
  auto a = torch::tensor({{1L, 403L, 407L, 261L}}), b = torch::tensor({{1L, 385L, 410L}});
  auto packed = torch::cat({a, b}, 1);
  auto pos = torch::tensor({{0L, 1L, 2L, 3L, 0L, 1L, 2L}});
  auto docs = torch::tensor({{0L, 0L, 0L, 0L, 1L, 1L, 1L}});
  auto hp = m->hidden_states(packed, pos, docs);
  EXPECT_TRUE(tensors_close(hp.narrow(1, 0, 4), m->hidden_states(a), 1e-5));
  EXPECT_TRUE(tensors_close(hp.narrow(1, 4, 3), m->hidden_states(b), 1e-5));
}

TEST(Model, ActivationCheckpointingGivesSameGradients) {
  auto run = [](bool ckpt) {
    auto m = stories();
    torch::manual_seed(5);  // the same adapter weights in both runs
    for (auto& [name, lin] : m->linears()) {
      lin->attach_lora(4, /*scale=*/2.0, /*dropout=*/0.1);  // dropout: recompute must redraw the same mask
      torch::NoGradGuard ng;
      lin->lora_B->weight.normal_(0, 0.1);
    }
    m->train();
    m->set_recompute_layers(ckpt);
    torch::manual_seed(123);
    auto ids = torch::tensor({{1L, 403L, 407L, 261L, 378L, 432L}});
    auto logits = m->forward(ids);
    auto loss = torch::nn::functional::cross_entropy(logits[0].narrow(0, 0, 5), ids[0].narrow(0, 1, 5));
    loss.backward();
    std::map<std::string, at::Tensor> g;
    for (auto& p : m->named_parameters())
      if (p.value().requires_grad()) g[p.key()] = p.value().grad().clone();
    return g;
  };
  auto a = run(false), b = run(true);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 0u);
  for (auto& [k, v] : a) EXPECT_TRUE(tensors_close(b[k], v, 1e-6, 1e-5)) << k;
}

TEST(Model, Bf16ForwardTracksF32) {
  auto m32 = stories(torch::kFloat32), m16 = stories(torch::kBFloat16);
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{1L, 403L, 407L, 261L, 378L}});
  auto l32 = m32->forward(ids), l16 = m16->forward(ids).to(torch::kFloat32);
  // bf16 has 8 bits of mantissa: logits of size ~15 agree to a few tenths after 5 layers
  EXPECT_TRUE(tensors_close(l16, l32, 0.5, 0.02));
  EXPECT_EQ(l16[0][0].argmax().item<int64_t>(), l32[0][0].argmax().item<int64_t>());
}
