// ParseExampleDump: herd-prepare --dump-examples --pieces lines read back, and what it refuses.
#include "datasets/example_dump.h"

#include <gtest/gtest.h>

namespace herd::datasets {
namespace {

TEST(ParseExampleDumpTest, ReadsExamplesAndErrors) {
  auto parsed = ParseExampleDump(
      "{\"line\":1,\"format\":\"chat\",\"chat_template\":\"llama2\",\"length\":9,\"ids\":[1,5,2],"
      "\"trained\":[0,1,1],\"pieces\":[\"<s>\",\" Hi\",\"</s>\"]}\n"
      "\n"
      "{\"line\":3,\"format\":\"chat\",\"chat_template\":\"llama2\",\"error\":\"messages: no turn\"}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->format, "chat");
  EXPECT_EQ(parsed->chat_template, "llama2");
  ASSERT_EQ(parsed->examples.size(), 2u);
  const InspectedExample& a = parsed->examples[0];
  EXPECT_EQ(a.line, 1);
  EXPECT_EQ(a.ids, (std::vector<int32_t>{1, 5, 2}));
  EXPECT_EQ(a.trained, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(a.pieces, (std::vector<std::string>{"<s>", " Hi", "</s>"}));
  EXPECT_EQ(a.length, 9);
  EXPECT_EQ(parsed->examples[1].line, 3);
  EXPECT_EQ(parsed->examples[1].error, "messages: no turn");
  EXPECT_TRUE(parsed->examples[1].ids.empty());
}

TEST(ParseExampleDumpTest, RejectsWhatHerdPrepareDoesNotWrite) {
  for (const char* bad : {"not json\n", "[1]\n", "{\"ids\":[1]}\n",
                          "{\"line\":1,\"ids\":[1,2],\"trained\":[0],\"pieces\":[\"a\",\"b\"]}\n",
                          "{\"line\":1,\"ids\":[1],\"trained\":[0]}\n"}) {
    EXPECT_EQ(ParseExampleDump(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace herd::datasets
