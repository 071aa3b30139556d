// ProgressBoard: steps count once every rank reported them, retries and stale points are
// ignored, tokens/s and loss history, evals, generations, waiting and forgetting.
#include "coordinator/progress_board.h"

#include <thread>

#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

ProgressSample Point(int rank, int64_t step, double loss = 2.0, int64_t tokens = 100,
                     double seconds = 1.0) {
  ProgressSample p;
  p.rank = rank;
  p.step = step;
  p.total_steps = 50;
  p.epoch = step / 50.0;
  p.loss = loss;
  p.learning_rate = 1e-4 * step;
  p.tokens = tokens;
  p.trained_tokens = 80;
  p.step_seconds = seconds;
  p.time = kT0 + absl::Seconds(step);
  return p;
}

TEST(ProgressBoardTest, UnknownJob) {
  ProgressBoard board;
  EXPECT_EQ(board.Get("job_x"), std::nullopt);
  EXPECT_EQ(board.Version("job_x"), 0);
  EXPECT_TRUE(board.LatestPerRank("job_x").empty());
  EXPECT_EQ(board.WaitForChange("job_x", 0, absl::Now()), std::nullopt);
}

TEST(ProgressBoardTest, StepCountsWhenEveryRankReported) {
  ProgressBoard board;
  board.Report("j", 2, {Point(0, 1, 3.0), Point(0, 2, 2.5)}, {});
  auto v = board.Get("j");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->step, 0) << "rank 1 has not reported step 1";
  EXPECT_EQ(v->loss, std::nullopt);
  const int64_t before = v->version;

  board.Report("j", 2, {Point(1, 1, 9.9, 300, 2.0)}, {});
  v = board.Get("j");
  EXPECT_EQ(v->step, 1);
  EXPECT_EQ(v->loss, 3.0) << "loss from rank 0";
  EXPECT_DOUBLE_EQ(v->learning_rate, 1e-4);
  EXPECT_EQ(v->total_steps, 50);
  EXPECT_EQ(v->trained_tokens, 80) << "global figure, counted once";
  EXPECT_DOUBLE_EQ(v->tokens_per_second, 400 / 2.0) << "tokens over ranks / slowest rank";
  EXPECT_EQ(v->update_time, kT0 + absl::Seconds(1));
  EXPECT_GT(v->version, before);

  board.Report("j", 2, {Point(1, 2, 9.9, 100, 1.0)}, {});
  v = board.Get("j");
  EXPECT_EQ(v->step, 2);
  EXPECT_EQ(v->loss, 2.5);
  EXPECT_EQ(v->trained_tokens, 160);
  EXPECT_DOUBLE_EQ(v->tokens_per_second, (400 + 200) / 3.0) << "averaged over the window";
  ASSERT_EQ(v->loss_history.size(), 2u);
  EXPECT_EQ(v->loss_history[0], std::make_pair(int64_t{1}, 3.0));
  EXPECT_EQ(v->loss_history[1], std::make_pair(int64_t{2}, 2.5));

  auto ranks = board.LatestPerRank("j");
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_EQ(ranks[0].rank, 0);
  EXPECT_EQ(ranks[1].rank, 1);
  EXPECT_EQ(ranks[1].step, 2);
}

TEST(ProgressBoardTest, PublishedJobCountsTheStepsRankZeroReported) {
  // Rank 0 reported its last steps before its final checkpoint; rank 1's last report is still on
  // its way when the adapter is published.
  ProgressBoard board;
  board.Report("j", 2, {Point(0, 1, 3.0), Point(0, 2, 2.5), Point(0, 3, 2.0)}, {});
  board.Report("j", 2, {Point(1, 1)}, {});
  ASSERT_EQ(board.Get("j")->step, 1);
  const int64_t before = board.Version("j");
  board.CompleteThrough("j", 3);
  auto v = board.Get("j");
  EXPECT_EQ(v->step, 3);
  EXPECT_EQ(v->loss, 2.0);
  ASSERT_EQ(v->loss_history.size(), 3u);
  EXPECT_EQ(v->loss_history[2], std::make_pair(int64_t{3}, 2.0));
  EXPECT_GT(board.Version("j"), before);
  board.Report("j", 2, {Point(1, 2), Point(1, 3)}, {});  // late: ignored, nothing counted twice
  EXPECT_EQ(board.Get("j")->loss_history.size(), 3u);
  board.CompleteThrough("job_unknown", 3);  // nothing to do
  EXPECT_EQ(board.Get("job_unknown"), std::nullopt);
}

TEST(ProgressBoardTest, RetriesAndBadRanksAreIgnored) {
  ProgressBoard board;
  board.Report("j", 1, {Point(0, 1), Point(0, 2)}, {});
  const auto v = board.Get("j");
  board.Report("j", 1, {Point(0, 1), Point(0, 2)}, {});  // a retry
  board.Report("j", 1, {Point(1, 3), Point(-1, 3)}, {});  // ranks outside the world
  const auto again = board.Get("j");
  EXPECT_EQ(again->version, v->version) << "nothing changed";
  EXPECT_EQ(again->trained_tokens, 160);
  EXPECT_EQ(again->step, 2);
}

TEST(ProgressBoardTest, SkippedStepIsDroppedWhenALaterOneCompletes) {
  ProgressBoard board;
  board.Report("j", 2, {Point(0, 1), Point(0, 2), Point(0, 3)}, {});
  board.Report("j", 2, {Point(1, 1), Point(1, 3)}, {});  // rank 1 lost its point of step 2
  auto v = board.Get("j");
  EXPECT_EQ(v->step, 3);
  EXPECT_EQ(v->loss_history.size(), 2u) << "steps 1 and 3";
  EXPECT_EQ(v->trained_tokens, 160);
}

TEST(ProgressBoardTest, EvalsAndTotalSteps) {
  ProgressBoard board;
  board.SetTotalSteps("j", 120);
  EXPECT_EQ(board.Get("j")->total_steps, 120);
  board.Report("j", 1, {}, {{.step = 10, .eval_loss = 1.5, .token_accuracy = 0.4, .time = kT0}});
  auto v = board.Get("j");
  EXPECT_EQ(v->eval_loss, 1.5);
  EXPECT_EQ(v->eval_token_accuracy, 0.4);
  board.Report("j", 1, {}, {{.step = 5, .eval_loss = 9.0, .token_accuracy = 0.1, .time = kT0}});
  EXPECT_EQ(board.Get("j")->eval_loss, 1.5) << "older eval ignored";
  board.Report("j", 1, {}, {{.step = 20, .eval_loss = std::nullopt, .time = kT0}});
  v = board.Get("j");
  EXPECT_EQ(v->eval_loss, std::nullopt) << "not finite";
  EXPECT_EQ(v->eval_token_accuracy, std::nullopt);
  board.Report("j", 1, {Point(0, 1)}, {});
  EXPECT_EQ(board.Get("j")->total_steps, 50) << "the engine's figure wins";
}

TEST(ProgressBoardTest, NewGenerationResumesFromCheckpoint) {
  ProgressBoard board;
  for (int64_t s = 1; s <= 8; ++s) board.Report("j", 2, {Point(0, s, 10.0 - s), Point(1, s)}, {});
  ASSERT_EQ(board.Get("j")->step, 8);
  const int64_t tokens_before = board.Get("j")->trained_tokens;

  board.NewGeneration("j", 1, 5);
  auto v = board.Get("j");
  EXPECT_EQ(v->step, 5);
  EXPECT_EQ(v->tokens_per_second, 0);
  ASSERT_EQ(v->loss_history.size(), 5u);
  EXPECT_EQ(v->loss_history.back().first, 5);
  EXPECT_TRUE(board.LatestPerRank("j").empty());

  board.Report("j", 1, {Point(0, 5), Point(0, 6, 0.5)}, {});  // step 5 is the checkpoint's
  v = board.Get("j");
  EXPECT_EQ(v->step, 6);
  EXPECT_EQ(v->loss, 0.5);
  EXPECT_EQ(v->trained_tokens, tokens_before + 80) << "retrained tokens count again";
  EXPECT_EQ(v->loss_history.back(), std::make_pair(int64_t{6}, 0.5));

  // A report of another world size without NewGeneration resets the cursors at the current step.
  board.Report("j", 2, {Point(0, 7), Point(1, 7)}, {});
  EXPECT_EQ(board.Get("j")->step, 7);
}

TEST(ProgressBoardTest, LossHistoryIsBounded) {
  ProgressBoard board;
  std::vector<ProgressSample> points;
  const int64_t n = ProgressBoard::kMaxLossHistory + 5;
  for (int64_t s = 1; s <= n; ++s) points.push_back(Point(0, s, static_cast<double>(s)));
  board.Report("j", 1, points, {});
  auto v = board.Get("j");
  ASSERT_EQ(v->loss_history.size(), ProgressBoard::kMaxLossHistory);
  EXPECT_EQ(v->loss_history.front().first, 6);
  EXPECT_EQ(v->loss_history.back().first, n);
}

TEST(ProgressBoardTest, WaitForChange) {
  ProgressBoard board;
  board.Report("j", 1, {Point(0, 1)}, {});
  const int64_t v1 = board.Version("j");
  // Already newer: at once.
  auto now = board.WaitForChange("j", v1 - 1, absl::InfiniteFuture());
  ASSERT_TRUE(now);
  EXPECT_EQ(now->version, v1);
  // Deadline: the current view.
  auto same = board.WaitForChange("j", v1, absl::Now() + absl::Milliseconds(10));
  ASSERT_TRUE(same);
  EXPECT_EQ(same->version, v1);

  std::optional<JobProgressView> got;
  std::thread waiter([&] { got = board.WaitForChange("j", v1, absl::InfiniteFuture()); });
  board.Report("j", 1, {Point(0, 2)}, {});
  waiter.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->step, 2);

  // Forget wakes waiters with nullopt (a wait that starts after it ends at once); a forgotten
  // job's versions never go back.
  const int64_t v2 = board.Version("j");
  std::optional<JobProgressView> gone = JobProgressView{};
  std::thread forgotten([&] { gone = board.WaitForChange("j", v2, absl::InfiniteFuture()); });
  board.Forget("j");
  forgotten.join();
  EXPECT_EQ(gone, std::nullopt);
  EXPECT_EQ(board.Get("j"), std::nullopt);
  EXPECT_EQ(board.WaitForChange("j", 0, absl::InfiniteFuture()), std::nullopt);
  board.Report("j", 1, {Point(0, 1)}, {});
  EXPECT_GT(board.Version("j"), v2);
  // Reported again, it waits like any job.
  EXPECT_TRUE(board.WaitForChange("j", board.Version("j"), absl::Now() + absl::Milliseconds(1)));
}

}  // namespace
}  // namespace herd::coordinator
