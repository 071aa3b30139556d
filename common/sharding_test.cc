// Sharding: the union over ranks is the same global batch for every world size, epochs are
// permutations, and the plan is a pure function of its inputs.
#include "common/sharding.h"

#include <algorithm>
#include <set>

#include "gtest/gtest.h"

namespace herd {
namespace {

std::vector<int64_t> GlobalBatch(const ShardShape& s, int64_t step) {
  std::vector<int64_t> rows;
  for (int r = 0; r < s.world_size; ++r) {
    for (const MicroBatch& mb : ShardForStep(s, step, r)) rows.insert(rows.end(), mb.rows.begin(), mb.rows.end());
  }
  return rows;
}

TEST(ShardingTest, SameGlobalBatchForEveryWorldSize) {
  for (int64_t n : {1, 7, 24, 50}) {
    ShardShape one{.num_sequences = n, .epochs = 2, .global_batch = 8, .micro_batch = 1, .world_size = 1, .seed = 5};
    for (int64_t w : {2, 4, 8}) {
      ShardShape many = one;
      many.world_size = w;
      ASSERT_TRUE(many.Validate().ok());
      EXPECT_EQ(many.TotalSteps(), one.TotalSteps());
      for (int64_t step = 0; step < one.TotalSteps(); ++step) {
        EXPECT_EQ(GlobalBatch(many, step), GlobalBatch(one, step)) << "n=" << n << " w=" << w << " step=" << step;
      }
    }
  }
}

TEST(ShardingTest, EachEpochVisitsEverySequenceOnce) {
  ShardShape s{.num_sequences = 30, .epochs = 3, .global_batch = 4, .micro_batch = 2, .world_size = 2, .seed = 9};
  std::vector<int64_t> stream;
  for (int64_t step = 0; step < s.TotalSteps(); ++step) {
    auto rows = GlobalBatch(s, step);
    stream.insert(stream.end(), rows.begin(), rows.end());
  }
  ASSERT_EQ(stream.size(), 90u);
  for (int e = 0; e < 3; ++e) {
    std::set<int64_t> seen(stream.begin() + 30 * e, stream.begin() + 30 * (e + 1));
    EXPECT_EQ(seen.size(), 30u) << "epoch " << e;
  }
  // Epochs are shuffled differently.
  EXPECT_NE(std::vector<int64_t>(stream.begin(), stream.begin() + 30),
            std::vector<int64_t>(stream.begin() + 30, stream.begin() + 60));
}

TEST(ShardingTest, DeterministicAndSeeded) {
  EXPECT_EQ(EpochOrder(100, 42, 0), EpochOrder(100, 42, 0));
  EXPECT_NE(EpochOrder(100, 42, 0), EpochOrder(100, 43, 0));
  // Pinned values: the order is part of the resume contract and must not drift between builds.
  EXPECT_EQ(EpochOrder(8, 42, 0), (std::vector<int64_t>{1, 2, 5, 4, 7, 3, 6, 0}));
  EXPECT_EQ(EpochOrder(8, 42, 1), (std::vector<int64_t>{5, 7, 0, 1, 3, 4, 6, 2}));
}

TEST(ShardingTest, MicroBatchesAndStreamPositions) {
  ShardShape s{.num_sequences = 10, .epochs = 1, .global_batch = 8, .micro_batch = 2, .world_size = 2, .seed = 1};
  EXPECT_EQ(s.GradAccum(), 2);
  EXPECT_EQ(s.TotalSteps(), 2);
  auto r1 = ShardForStep(s, 0, 1);
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(r1[0].stream_positions, (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(r1[1].stream_positions, (std::vector<int64_t>{6, 7}));
  // The last step is short: rank 1 gets nothing but still has its micro-batch slots.
  auto last = ShardForStep(s, 1, 1);
  ASSERT_EQ(last.size(), 2u);
  EXPECT_TRUE(last[0].rows.empty());
  EXPECT_EQ(ShardForStep(s, 1, 0)[0].stream_positions, (std::vector<int64_t>{8, 9}));
}

TEST(ShardingTest, ValidateNamesTheProblem) {
  ShardShape s{.num_sequences = 10, .global_batch = 6, .micro_batch = 2, .world_size = 2};
  EXPECT_NE(std::string(s.Validate().message()).find("not a multiple"), std::string::npos);
  s.num_sequences = 0;
  EXPECT_FALSE(s.Validate().ok());
}

}  // namespace
}  // namespace herd
