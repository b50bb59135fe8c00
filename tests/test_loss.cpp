// Target-only, chunked losses against a plain full-logits log_softmax computed in the test.
#include "model/loader.h"
#include "model/loss.h"
#include "tests/test_util.h"

using namespace affinage;

TEST(Loss, TokenNllAndSequenceLogprobsMatchFullLogits) {
  auto m = load_model(affinage::test::repo_path("models/stories260K"), torch::kFloat32);
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{1L, 403L, 407L, 261L, 378L, 432L}, {1L, 385L, 410L, 317L, 407L, 0L}});
  auto targets = torch::tensor({{-100L, -100L, 261L, 378L, 432L, 383L}, {385L, 410L, -100L, 407L, -100L, -100L}});
  auto h = m->hidden_states(ids);
  auto lp = torch::log_softmax(m->logits(h).to(torch::kDouble), -1);  // [B, T, V]
  std::vector<double> row_sum(2, 0.0);
  std::vector<int64_t> row_n(2, 0);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 6; ++t) {
      int64_t y = targets[b][t].item<int64_t>();
      if (y == -100) continue;
      row_sum[b] += lp[b][t][y].item<double>();
      ++row_n[b];
    }
  for (int64_t chunk : {3, 2048}) {  // several chunks, and one
    auto l = token_nll(*m, h, targets, chunk);
    EXPECT_EQ(l.count, row_n[0] + row_n[1]);
    EXPECT_NEAR(l.sum.item<double>(), -(row_sum[0] + row_sum[1]), 1e-4) << "chunk " << chunk;
    auto [sums, counts] = sequence_logprobs(*m, h, targets, chunk);
    for (int64_t b = 0; b < 2; ++b) {
      EXPECT_NEAR(sums[b].item<double>(), row_sum[b], 1e-4) << "row " << b << " chunk " << chunk;
      EXPECT_EQ(counts[b].item<int64_t>(), row_n[b]);
    }
  }
}
