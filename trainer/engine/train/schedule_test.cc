// LrSchedule: hand-checked values and edges (no warmup, one step, past the end), argument errors,
// and transformers' own schedulers (tests/python/optimizer_reference.py, one run) as the reference.
#include "trainer/engine/train/schedule.h"

#include <stdio.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numbers>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "tests/testing/python_script.h"
#include "trainer/engine/tensor_io.h"

namespace herd::engine {
namespace {

struct ValueCase {
  const char* scheduler;
  double warmup_ratio;
  int64_t total;
  int64_t step;
  double expected;  // in units of the peak learning rate
};

TEST(LrScheduleTest, ValuesByHand) {
  const double kHalfCos = 0.5 * (1 + std::cos(std::numbers::pi * 0.5));  // cosine at progress 1/2
  const ValueCase cases[] = {
      // 10 steps, warmup ceil(10 * 0.2) = 2: 0, 1/2, then the decay over the remaining 8.
      {"cosine", 0.2, 10, 0, 0.0},
      {"cosine", 0.2, 10, 1, 0.5},
      {"cosine", 0.2, 10, 2, 1.0},
      {"cosine", 0.2, 10, 6, kHalfCos},
      {"linear", 0.2, 10, 2, 1.0},
      {"linear", 0.2, 10, 6, 0.5},
      {"linear", 0.2, 10, 9, 1.0 / 8},
      {"constant", 0.2, 10, 1, 0.5},
      {"constant", 0.2, 10, 9, 1.0},
      // No warmup: full rate at step 0.
      {"cosine", 0.0, 4, 0, 1.0},
      {"linear", 0.0, 4, 0, 1.0},
      {"linear", 0.0, 4, 3, 0.25},
      {"constant", 0.0, 4, 0, 1.0},
      // One step: with no warmup it runs at the peak; any warmup makes it the only warmup step,
      // at rate 0 (transformers does the same).
      {"cosine", 0.0, 1, 0, 1.0},
      {"linear", 0.0, 1, 0, 1.0},
      {"cosine", 0.5, 1, 0, 0.0},
      {"constant", 0.5, 1, 0, 0.0},
      // Past the end: held at the end's value (0, or the peak for constant), never rising again.
      {"cosine", 0.0, 4, 4, 0.0},
      {"cosine", 0.0, 4, 6, 0.0},
      {"linear", 0.0, 4, 100, 0.0},
      {"constant", 0.2, 10, 1000, 1.0},
      // Negative steps are step 0.
      {"constant", 0.2, 10, -3, 0.0},
  };
  for (const ValueCase& c : cases) {
    SCOPED_TRACE(herd::StrCat(c.scheduler, " warmup_ratio ", c.warmup_ratio, " total ", c.total,
                              " step ", c.step));
    auto s = LrSchedule::Create(2e-4, c.scheduler, c.warmup_ratio, c.total);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_NEAR(s->LearningRate(c.step), 2e-4 * c.expected, 1e-18);
  }
}

TEST(LrScheduleTest, WarmupStepsRoundUpLikeTransformers) {
  struct Case {
    double ratio;
    int64_t total, warmup;
  };
  const Case cases[] = {{0.0, 37, 0},  {0.1, 37, 4},   {0.03, 100, 3}, {0.07, 100, 8},
                        {0.03, 10, 1}, {0.5, 1, 1},    {0.999, 3, 3},  {0.03, 1000, 30}};
  for (const Case& c : cases) {
    auto s = LrSchedule::Create(1e-3, "linear", c.ratio, c.total);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->warmup_steps(), c.warmup) << c.ratio << " of " << c.total;
  }
}

TEST(LrScheduleTest, RejectsBadArguments) {
  struct Case {
    double peak;
    const char* scheduler;
    double ratio;
    int64_t total;
    const char* message;
  };
  const Case cases[] = {
      {2e-4, "cosine_with_restarts", 0.0, 10, "'cosine_with_restarts' is not one of cosine"},
      {2e-4, "", 0.0, 10, "is not one of"},
      {-1e-4, "cosine", 0.0, 10, "learning_rate -0.0001"},
      {std::nan(""), "cosine", 0.0, 10, "learning_rate nan"},
      {2e-4, "cosine", 1.0, 10, "warmup_ratio 1 is not in [0, 1)"},
      {2e-4, "cosine", -0.1, 10, "warmup_ratio -0.1"},
      {2e-4, "cosine", 0.0, 0, "at least one step, got 0"},
  };
  for (const Case& c : cases) {
    auto s = LrSchedule::Create(c.peak, c.scheduler, c.ratio, c.total);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(std::string(s.status().message()).find(c.message), std::string::npos)
        << s.status().message();
  }
}


at::Tensor Get(const SafetensorsFile& f, const std::string& name) {
  auto t = ReadTensor(f, name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : at::zeros({0}, at::kDouble);
}

// One Python run per test binary (DESIGN.md §10): every schedule and run length in one test.
TEST(ScheduleReferenceTest, MatchesTransformers) {
  const std::string out =
      herd::StrCat(::testing::TempDir(), "/herd_schedule_ref_", ::getpid(), ".safetensors");
  auto output = herd::testing::RunPythonScript("tests/python/optimizer_reference.py", {"--part", "schedule", "--out", out});
  ASSERT_TRUE(output.ok()) << output.status();
  auto opened = SafetensorsFile::Open(out);
  std::filesystem::remove(out);  // the mapping stays valid
  ASSERT_TRUE(opened.ok()) << opened.status();
  const SafetensorsFile& f = **opened;

  const int cases = std::stoi(f.metadata().at("schedule_cases"));
  ASSERT_GT(cases, 0);
  for (int k = 0; k < cases; ++k) {
    const std::string prefix = herd::StrCat("schedule.", k, ".");
    const std::string name = f.metadata().at(prefix + "name");
    const int64_t total = Get(f, prefix + "total").item<int64_t>();
    const double ratio = Get(f, prefix + "warmup_ratio").item<double>();
    const double peak = Get(f, prefix + "peak").item<double>();
    SCOPED_TRACE(herd::StrCat(name, " total ", total, " warmup_ratio ", ratio));
    auto s = LrSchedule::Create(peak, name, ratio, total);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->warmup_steps(), Get(f, prefix + "warmup_steps").item<int64_t>());
    const at::Tensor lrs = Get(f, prefix + "lr");
    ASSERT_EQ(lrs.numel(), total);
    const double* ref = lrs.data_ptr<double>();
    for (int64_t step = 0; step < total; ++step) {
      // Same double arithmetic as Python: equal to the last bit or nearly so.
      EXPECT_DOUBLE_EQ(s->LearningRate(step), ref[step]) << "step " << step;
    }
  }
}

}  // namespace
}  // namespace herd::engine
