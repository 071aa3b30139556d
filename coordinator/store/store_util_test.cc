// Tests of ids, page tokens, page sizes and the name rules.
#include "coordinator/store/store_util.h"

#include <set>

#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

TEST(StoreUtilTest, Base32MatchesRfc4648) {
  // RFC 4648 §10 test vectors, lower-cased and unpadded.
  const std::pair<std::string, std::string> cases[] = {
      {"", ""},           {"f", "my"},          {"fo", "mzxq"},         {"foo", "mzxw6"},
      {"foob", "mzxw6yq"}, {"fooba", "mzxw6ytb"}, {"foobar", "mzxw6ytboi"},
  };
  for (const auto& [in, out] : cases) EXPECT_EQ(Base32(in), out) << in;
}

TEST(StoreUtilTest, NewIdHasPrefixAndIsUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = NewId("job_");
    ASSERT_TRUE(id.ok());
    ASSERT_EQ(id->size(), 4u + 26u) << *id;
    EXPECT_EQ(id->substr(0, 4), "job_");
    for (char c : id->substr(4)) EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')) << *id;
    EXPECT_TRUE(seen.insert(*id).second);
  }
}

TEST(StoreUtilTest, NormalizePageSize) {
  const std::pair<int, int> ok[] = {{0, 100}, {1, 1}, {100, 100}, {1000, 1000}, {1001, 1000}, {1 << 30, 1000}};
  for (auto [in, out] : ok) EXPECT_EQ(*NormalizePageSize(in), out) << in;
  EXPECT_EQ(NormalizePageSize(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StoreUtilTest, PageTokensRoundTripAndBindToTheirFilters) {
  std::string token = EncodePageToken("jobs", 12345, "acme\nRUNNING");
  auto cursor = DecodePageToken(token, "jobs", "acme\nRUNNING");
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  EXPECT_EQ(*cursor, 12345);
  EXPECT_EQ(*DecodePageToken("", "jobs", "x"), std::nullopt);
  struct Case {
    std::string token, kind, filter;
  };
  for (const Case& c : std::vector<Case>{
           {token, "jobs", "acme\nQUEUED"},      // other filters
           {token, "jobs", "globex\nRUNNING"},   // other tenant
           {token, "datasets", "acme\nRUNNING"}, // other listing
           {"not base64!", "jobs", "acme\nRUNNING"},
           {"MTIzNDU", "jobs", "acme\nRUNNING"},  // base64 of "12345"
           {std::string(300, 'A'), "jobs", "acme\nRUNNING"},
       }) {
    EXPECT_EQ(DecodePageToken(c.token, c.kind, c.filter).status().code(),
              absl::StatusCode::kInvalidArgument)
        << c.token;
  }
}

TEST(StoreUtilTest, ValidateName) {
  const std::string ok[] = {"a", "support-bot", "data.jsonl", "Ünïcødé name", "x y", std::string(128, 'n'),
                            "..a", "a..", "emoji \xF0\x9F\x98\x80"};
  for (const auto& name : ok) EXPECT_TRUE(ValidateName("name", name).ok()) << name;
  const std::string bad[] = {"",
                             std::string(129, 'n'),
                             ".",
                             "..",
                             "a/b",
                             "a\\b",
                             std::string("a\0b", 3),
                             "tab\there",
                             "new\nline",
                             " leading",
                             "trailing ",
                             "\xff\xfe",
                             "\xc0\xaf",             // overlong '/'
                             "\xed\xa0\x80",         // surrogate
                             "\xe2\x82",             // truncated
                             "\xc2\x85"};            // C1 control (NEL)
  for (const auto& name : bad) {
    absl::Status s = ValidateName("spec.name", name);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(s.message().find("spec.name"), std::string::npos) << s;
  }
}

TEST(StoreUtilTest, IsSha256Hex) {
  EXPECT_TRUE(IsSha256Hex(std::string(64, 'a')));
  EXPECT_TRUE(IsSha256Hex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
  EXPECT_FALSE(IsSha256Hex(std::string(63, 'a')));
  EXPECT_FALSE(IsSha256Hex(std::string(64, 'A')));
  EXPECT_FALSE(IsSha256Hex("../../../../etc/passwd" + std::string(42, 'a')));
}

}  // namespace
}  // namespace herd::coordinator::store
