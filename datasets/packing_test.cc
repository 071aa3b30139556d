// Packing: row layouts (targets, positions, document ids, padding), placement, overflow, stats.
#include "datasets/packing.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

constexpr int32_t X = kIgnoreTarget;
constexpr int32_t P = kPadDocId;

// A document with ids base, base+1, ...; trained from index `first_trained` on.
Example Doc(int32_t base, int n, int first_trained = 1) {
  Example e;
  for (int i = 0; i < n; ++i) {
    e.ids.push_back(base + i);
    e.trained.push_back(i >= first_trained ? 1 : 0);
  }
  return e;
}

PackingOptions Opts(int64_t seq_len, bool packing = true, Overflow overflow = Overflow::kTruncate) {
  PackingOptions o;
  o.max_seq_len = seq_len;
  o.packing = packing;
  o.overflow = overflow;
  o.pad_id = 0;
  return o;
}

struct Case {
  std::string name;
  std::vector<Example> docs;
  PackingOptions options;
  std::vector<std::vector<int32_t>> input_ids, targets, position_ids, doc_ids;  // per row
};

std::vector<std::vector<int32_t>> Split(const std::vector<int32_t>& flat, int64_t seq_len) {
  std::vector<std::vector<int32_t>> rows;
  for (size_t i = 0; i < flat.size(); i += seq_len) {
    rows.emplace_back(flat.begin() + i, flat.begin() + i + seq_len);
  }
  return rows;
}

TEST(Pack, Layouts) {
  const std::vector<Case> cases = {
      {"one document, padded; only trained next tokens are targets",
       {Doc(10, 4, /*first_trained=*/2)}, Opts(6),
       {{10, 11, 12, 13, 0, 0}}, {{X, 12, 13, X, X, X}}, {{0, 1, 2, 3, 0, 0}},
       {{0, 0, 0, 0, P, P}}},
      {"two documents share a row; the last token of each predicts nothing",
       {Doc(10, 3), Doc(20, 2)}, Opts(6),
       {{10, 11, 12, 20, 21, 0}}, {{11, 12, X, 21, X, X}}, {{0, 1, 2, 0, 1, 0}},
       {{0, 0, 0, 1, 1, P}}},
      {"a full row has no padding", {Doc(10, 2), Doc(20, 2)}, Opts(4),
       {{10, 11, 20, 21}}, {{11, X, 21, X}}, {{0, 1, 0, 1}}, {{0, 0, 1, 1}}},
      {"best fit: a later short document fills the fullest row that has room",
       {Doc(10, 4), Doc(20, 3), Doc(30, 2)}, Opts(6),
       {{10, 11, 12, 13, 30, 31}, {20, 21, 22, 0, 0, 0}},
       {{11, 12, 13, X, 31, X}, {21, 22, X, X, X, X}},
       {{0, 1, 2, 3, 0, 1}, {0, 1, 2, 0, 0, 0}},
       {{0, 0, 0, 0, 1, 1}, {0, 0, 0, P, P, P}}},
      {"no packing: one document per row", {Doc(10, 2), Doc(20, 2)}, Opts(4, false),
       {{10, 11, 0, 0}, {20, 21, 0, 0}}, {{11, X, X, X}, {21, X, X, X}},
       {{0, 1, 0, 0}, {0, 1, 0, 0}}, {{0, 0, P, P}, {0, 0, P, P}}},
      {"truncation keeps the first max_seq_len tokens; the last kept predicts nothing",
       {Doc(10, 6)}, Opts(4),
       {{10, 11, 12, 13}}, {{11, 12, 13, X}}, {{0, 1, 2, 3}}, {{0, 0, 0, 0}}},
      {"drop removes over-long documents", {Doc(10, 6), Doc(20, 2)}, Opts(4, true, Overflow::kDrop),
       {{20, 21, 0, 0}}, {{21, X, X, X}}, {{0, 1, 0, 0}}, {{0, 0, P, P}}},
      {"documents with nothing to train on are dropped",
       {Doc(10, 3, /*first_trained=*/3), Doc(20, 1), Doc(30, 2)}, Opts(4),
       {{30, 31, 0, 0}}, {{31, X, X, X}}, {{0, 1, 0, 0}}, {{0, 0, P, P}}},
      {"nothing left: no rows", {Doc(10, 5)}, Opts(4, true, Overflow::kDrop), {}, {}, {}, {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    PackStats stats;
    absl::StatusOr<PreparedRows> rows = Pack(c.docs, c.options, &stats);
    ASSERT_TRUE(rows.ok()) << rows.status();
    const int64_t T = c.options.max_seq_len;
    EXPECT_EQ(rows->seq_len, T);
    EXPECT_EQ(rows->rows, static_cast<int64_t>(c.input_ids.size()));
    EXPECT_EQ(Split(rows->input_ids, T), c.input_ids);
    EXPECT_EQ(Split(rows->targets, T), c.targets);
    EXPECT_EQ(Split(rows->position_ids, T), c.position_ids);
    EXPECT_EQ(Split(rows->doc_ids, T), c.doc_ids);
    EXPECT_TRUE(VerifyRows(*rows, 100).ok()) << VerifyRows(*rows, 100);
  }
}

TEST(Pack, Stats) {
  // T = 4: 10.. (6 tokens) is truncated to 4; 20.. and 30.. share a row; 40.. is truncated and
  // loses its only trained token; 50 has a single token, which nothing predicts.
  std::vector<Example> docs = {Doc(10, 6), Doc(20, 2), Doc(30, 2), Doc(40, 5, 4), Doc(50, 1)};
  PackStats stats;
  ASSERT_TRUE(Pack(docs, Opts(4), &stats).ok());
  EXPECT_EQ(stats.examples, 5);
  EXPECT_EQ(stats.truncated, 2);  // 10.. and 40..
  EXPECT_EQ(stats.dropped_untrained, 2);  // 40.. lost its only trained token; 50 has none
  EXPECT_EQ(stats.dropped_too_long, 0);
  EXPECT_EQ(stats.documents, 3);
  EXPECT_EQ(stats.tokens, 4 + 2 + 2);
  EXPECT_EQ(stats.trained_tokens, 3 + 1 + 1);
  EXPECT_EQ(stats.sequences, 2);
  EXPECT_EQ(stats.slots, 8);
  EXPECT_DOUBLE_EQ(stats.packing_efficiency(), 1.0);
  EXPECT_EQ(stats.ToJson(),
            "{\"examples\":5,\"documents\":3,\"tokens\":8,\"trained_tokens\":5,\"sequences\":2,"
            "\"slots\":8,\"truncated\":2,\"dropped_too_long\":0,\"dropped_untrained\":2,"
            "\"packing_efficiency\":1.0}");

  ASSERT_TRUE(Pack(docs, Opts(4, true, Overflow::kDrop), &stats).ok());
  EXPECT_EQ(stats.dropped_too_long, 2);
  EXPECT_EQ(stats.truncated, 0);
  EXPECT_EQ(stats.documents, 2);
  EXPECT_DOUBLE_EQ(stats.packing_efficiency(), 1.0);

  ASSERT_TRUE(Pack(docs, Opts(4, false), &stats).ok());
  EXPECT_EQ(stats.sequences, 3);
  EXPECT_DOUBLE_EQ(stats.packing_efficiency(), 8.0 / 12.0);
}

TEST(Pack, Deterministic) {
  std::vector<Example> docs;
  for (int i = 0; i < 200; ++i) docs.push_back(Doc(i % 50, 1 + (i * 37) % 60));
  PackStats a_stats, b_stats;
  absl::StatusOr<PreparedRows> a = Pack(docs, Opts(64), &a_stats);
  absl::StatusOr<PreparedRows> b = Pack(docs, Opts(64), &b_stats);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->input_ids, b->input_ids);
  EXPECT_EQ(a->targets, b->targets);
  EXPECT_EQ(a->doc_ids, b->doc_ids);
  EXPECT_EQ(a_stats.ToJson(), b_stats.ToJson());
  EXPECT_GT(a_stats.packing_efficiency(), 0.9);
  EXPECT_TRUE(VerifyRows(*a, 0).ok()) << VerifyRows(*a, 0);
}

TEST(Pack, Errors) {
  PackStats stats;
  EXPECT_EQ(Pack({}, Opts(1), &stats).status().code(), absl::StatusCode::kInvalidArgument);
  PackingOptions negative_pad = Opts(4);
  negative_pad.pad_id = -1;
  EXPECT_FALSE(negative_pad.Validate().ok());
  Example bad = Doc(1, 3);
  bad.trained.pop_back();
  const std::vector<Example> docs = {bad};
  absl::StatusOr<PreparedRows> rows = Pack(docs, Opts(4), &stats);
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("example 0"), std::string::npos) << rows.status();
}

TEST(Overflow, Names) {
  EXPECT_EQ(ParseOverflowName(OverflowName(Overflow::kDrop)), Overflow::kDrop);
  EXPECT_EQ(ParseOverflowName(OverflowName(Overflow::kTruncate)), Overflow::kTruncate);
  EXPECT_FALSE(ParseOverflowName("split"));
}

}  // namespace
}  // namespace herd::datasets
