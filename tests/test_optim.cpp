// AdamW against LibTorch's own torch::optim::AdamW, clipping against the formula, schedules by hand.
#include <torch/optim/adamw.h>
#include <cmath>
#include "tests/test_util.h"
#include "train/optim.h"

using namespace affinage;
using affinage::test::tensors_close;

TEST(Optim, AdamWMatchesTorchAdamW) {
  torch::manual_seed(0);
  auto w = torch::randn({5, 4}).requires_grad_(true);
  auto n = torch::randn({4}).requires_grad_(true);  // a "norm": no decay
  auto w2 = w.detach().clone().requires_grad_(true), n2 = n.detach().clone().requires_grad_(true);
  OptimConfig c;
  c.weight_decay = 0.1;
  c.beta1 = 0.8;
  c.beta2 = 0.95;
  c.eps = 1e-6;
  AdamW ours({{"model.layers.0.mlp.up_proj.weight", w, true}, {"model.norm.weight", n, false}}, c);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{w2},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.8, 0.95}).eps(1e-6).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{n2},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(1e-2).betas({0.8, 0.95}).eps(1e-6).weight_decay(0.0)));
  torch::optim::AdamW ref(groups, torch::optim::AdamWOptions(1e-2));
  for (int s = 0; s < 5; ++s) {
    auto x = torch::randn({3, 5});
    for (auto [ww, nn] : {std::pair{w, n}, std::pair{w2, n2}}) {
      ww.mutable_grad() = torch::Tensor();
      nn.mutable_grad() = torch::Tensor();
      (torch::matmul(x, ww) * nn).pow(2).sum().backward();
    }
    ours.step(1e-2);
    ref.step();
    EXPECT_TRUE(tensors_close(w, w2, 1e-6, 1e-6)) << "step " << s;
    EXPECT_TRUE(tensors_close(n, n2, 1e-6, 1e-6)) << "step " << s;
  }
}

TEST(Optim, DecayOnlyOnMatricesThatAreNotNormsOrBiases) {
  EXPECT_TRUE(wants_weight_decay("model.layers.0.self_attn.q_proj.lora_A.weight", torch::zeros({2, 2})));
  EXPECT_TRUE(wants_weight_decay("lm_head.weight", torch::zeros({3, 2})));
  // 1-D tensors never decay, whatever their name...
  EXPECT_FALSE(wants_weight_decay("model.layers.0.input_layernorm.weight", torch::zeros({2})));
  EXPECT_FALSE(wants_weight_decay("model.layers.0.mlp.up_proj.weight", torch::zeros({2})));
  // ...and the name rule holds for tensors of two or more dimensions too (a norm or bias stored as a matrix).
  EXPECT_FALSE(wants_weight_decay("model.norm.weight", torch::zeros({2, 2})));
  EXPECT_FALSE(wants_weight_decay("model.layers.0.post_attention_layernorm.weight", torch::zeros({1, 4})));
  EXPECT_FALSE(wants_weight_decay("model.layers.0.self_attn.q_proj.bias", torch::zeros({4, 1})));
}

TEST(Optim, ClipGradNormScalesToMaxNorm) {
  auto a = torch::zeros({2}).requires_grad_(true), b = torch::zeros({1}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  std::vector<NamedParam> ps = {{"a", a, true}, {"b", b, true}};
  EXPECT_NEAR(clip_grad_norm(ps, 1.0), 5.0, 1e-6);  // sqrt(9 + 16)
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(clip_grad_norm(ps, 10.0), 1.0, 1e-5);  // below the bound: unchanged
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 / (5.0 + 1e-6), 1e-6);
}

TEST(Optim, SchedulesByHand) {
  ScheduleConfig s;
  s.warmup_steps = 4;
  s.type = Schedule::Cosine;
  EXPECT_DOUBLE_EQ(lr_at(s, 1.0, 0, 14), 0.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 1.0, 2, 14), 0.5);
  EXPECT_DOUBLE_EQ(lr_at(s, 1.0, 4, 14), 1.0);
  EXPECT_NEAR(lr_at(s, 1.0, 9, 14), 0.5, 1e-12);  // halfway through the decay: cos(pi/2)
  EXPECT_NEAR(lr_at(s, 1.0, 14, 14), 0.0, 1e-12);
  s.min_lr_ratio = 0.1;
  EXPECT_NEAR(lr_at(s, 2.0, 9, 14), 2.0 * (0.1 + 0.9 * 0.5), 1e-12);
  s.type = Schedule::Linear;
  s.min_lr_ratio = 0.0;
  EXPECT_NEAR(lr_at(s, 1.0, 9, 14), 0.5, 1e-12);
  EXPECT_NEAR(lr_at(s, 1.0, 13, 14), 0.1, 1e-12);
  s.type = Schedule::Constant;
  EXPECT_DOUBLE_EQ(lr_at(s, 3.0, 13, 14), 3.0);
}
