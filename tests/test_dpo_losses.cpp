// Preference losses against values worked by hand (with <cmath>) for fixed log-probabilities.
#include <cmath>
#include "config/recipe_file.h"
#include "dpo/losses.h"
#include "tests/test_util.h"

using namespace affinage;

static double logsig(double x) { return -std::log1p(std::exp(-x)); }

// One pair: policy chosen/rejected sums -10/-14 over 4/7 tokens; reference -11/-12.
static PreferenceInputs pair() {
  auto t = [](double v) { return torch::tensor({v}, torch::kDouble); };
  return {t(-10), t(-14), t(4), t(7), t(-11), t(-12)};
}

TEST(DpoLosses, SigmoidWithAndWithoutLabelSmoothing) {
  PreferenceLossConfig c;
  c.beta = 0.1;
  double x = (-10 - -14) - (-11 - -12);  // 3
  auto l = preference_loss(pair(), c);
  EXPECT_NEAR(l.losses.item<double>(), -logsig(0.3), 1e-12);
  EXPECT_NEAR(l.chosen_rewards.item<double>(), 0.1 * (-10 + 11), 1e-12);
  EXPECT_NEAR(l.rejected_rewards.item<double>(), 0.1 * (-14 + 12), 1e-12);
  c.label_smoothing = 0.2;
  EXPECT_NEAR(preference_loss(pair(), c).losses.item<double>(), -0.8 * logsig(0.1 * x) - 0.2 * logsig(-0.1 * x), 1e-12);
}

TEST(DpoLosses, SigmoidIsLog2WhenPolicyEqualsReference) {
  auto t = [](std::vector<double> v) { return torch::tensor(v, torch::kDouble); };
  PreferenceInputs in{t({-5, -9}), t({-7, -2}), t({3, 4}), t({5, 1}), t({-5, -9}), t({-7, -2})};
  PreferenceLossConfig c;
  auto l = preference_loss(in, c);
  EXPECT_TRUE(affinage::test::tensors_close(l.losses, torch::full({2}, std::log(2.0), torch::kDouble), 1e-12));
  EXPECT_TRUE(affinage::test::tensors_close(l.chosen_rewards, torch::zeros({2}, torch::kDouble), 1e-12));
}

TEST(DpoLosses, HingeAndIpo) {
  PreferenceLossConfig c;
  c.type = DpoLoss::Hinge;
  c.beta = 0.1;
  EXPECT_NEAR(preference_loss(pair(), c).losses.item<double>(), 1 - 0.3, 1e-12);  // relu(1 - 0.1·3)
  c.type = DpoLoss::Ipo;
  double x = (-10.0 / 4 - -14.0 / 7) - (-11.0 / 4 - -12.0 / 7);  // per-token averages
  EXPECT_NEAR(preference_loss(pair(), c).losses.item<double>(), std::pow(x - 1 / (2 * 0.1), 2), 1e-12);
}

TEST(DpoLosses, SimpoAndOrpoAreReferenceFree) {
  PreferenceLossConfig c;
  c.type = DpoLoss::Simpo;
  c.beta = 2.0;
  c.simpo_gamma = 0.5;
  double ac = -10.0 / 4, ar = -14.0 / 7;
  EXPECT_NEAR(preference_loss(pair(), c).losses.item<double>(), -logsig(2.0 * (ac - ar) - 0.5), 1e-12);
  EXPECT_FALSE(preference_loss_needs_reference(DpoLoss::Simpo));
  c.type = DpoLoss::Orpo;
  c.beta = 0.1;
  double lo = (ac - ar) - (std::log(1 - std::exp(ac)) - std::log(1 - std::exp(ar)));
  auto l = preference_loss(pair(), c);
  EXPECT_NEAR(l.losses.item<double>(), -ac - 0.1 * logsig(lo), 1e-12);
  EXPECT_NEAR(l.chosen_rewards.item<double>(), 0.1 * ac, 1e-12);
  EXPECT_FALSE(preference_loss_needs_reference(DpoLoss::Orpo));
  EXPECT_TRUE(preference_loss_needs_reference(DpoLoss::Sigmoid));
  // An unknown loss name stops at the recipe boundary, naming the ones there are.
  affinage::test::expect_error([] { parse_enum<DpoLoss>("kto", "dpo.loss"); }, {"dpo.loss", "kto", "sigmoid", "orpo"});
}
