// `herd datasets inspect`'s rendering, golden strings: token separators and trained markers
// without colour, ANSI styles with it, newlines and control characters, the per-example and
// total counts; and reading herd-prepare's dump into the RPC's answer.
#include "cli/datasets_inspect.h"

#include <gtest/gtest.h>

namespace herd::cli {
namespace {

TEST(RenderTokensTest, PlainMarksBoundariesAndTrainedRuns) {
  struct Case {
    std::vector<std::string> pieces;
    std::vector<bool> trained;
    std::string want;
  } cases[] = {
      {{}, {}, ""},
      {{"<s>", " Hi", " there", "</s>"}, {false, false, false, false}, "<s>· Hi· there·</s>"},
      {{"<s>", "Q", ":", " Paris", "</s>"}, {false, false, false, true, true}, "<s>·Q·:·⟦ Paris·</s>⟧"},
      {{"a", "b", "c", "d"}, {true, false, true, true}, "⟦a⟧·b·⟦c·d⟧"},
      {{"x"}, {true}, "⟦x⟧"},
      // A newline shows as ↵ and breaks the line; other control bytes are escaped.
      {{"a\n", "b\x1b[31m", "\t"}, {false, true, false}, "a↵\n·⟦b<0x1B>[31m⟧·\t"},
      {{"\xC2\x85", "é"}, {false, false}, "<0x85>·é"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(RenderTokens(c.pieces, c.trained, {.color = false}), c.want);
  }
}

TEST(RenderTokensTest, ColourAlternatesBackgroundsAndNeverSpansANewline) {
  EXPECT_EQ(RenderTokens({"<s>", " Hi", "!"}, {false, true, true}, {.color = true}),
            "\x1b[48;5;236m\x1b[38;5;250m<s>\x1b[0m"
            "\x1b[48;5;28m\x1b[38;5;15m Hi\x1b[0m"
            "\x1b[48;5;22m\x1b[38;5;15m!\x1b[0m");
  EXPECT_EQ(RenderTokens({"a\nb"}, {true}, {.color = true}),
            "\x1b[48;5;22m\x1b[38;5;15ma↵\x1b[0m\n\x1b[48;5;22m\x1b[38;5;15mb\x1b[0m");
  // No marker characters in colour.
  EXPECT_EQ(RenderTokens({"a", "b"}, {true, true}, {.color = true}).find("⟦"), std::string::npos);
}

herd::v1::InspectDatasetResponse Sample() {
  herd::v1::InspectDatasetResponse r;
  r.set_format(herd::v1::RECORD_FORMAT_PROMPT_COMPLETION);
  herd::v1::InspectedExample* a = r.add_examples();
  a->set_line(1);
  for (const auto& [id, piece, trained] : std::vector<std::tuple<int, std::string, bool>>{
           {1, "<s>", false}, {50, "Q", false}, {60, " Yes", true}, {2, "</s>", true}}) {
    a->add_token_ids(id);
    a->add_pieces(piece);
    a->add_trained(trained);
  }
  a->set_length(7);
  herd::v1::InspectedExample* b = r.add_examples();
  b->set_line(4);
  b->set_error("messages[1].role: turns must alternate");
  return r;
}

TEST(RenderInspectionTest, CountsPerExampleAndTotals) {
  EXPECT_EQ(RenderInspection(Sample(), {.color = false}),
            "format: prompt_completion; tokens separated by ·, trained tokens between ⟦ and ⟧\n"
            "\n--- example 1 (line 1): 4 tokens, 2 trained (cut from 7 tokens by --max-seq-len)\n"
            "<s>·Q·⟦ Yes·</s>⟧\n"
            "\n--- example 2 (line 4): not usable: messages[1].role: turns must alternate\n"
            "\ntotal: 2 examples, 4 tokens, 2 trained (50.0%), 1 not usable\n");
  herd::v1::InspectDatasetResponse chat;
  chat.set_format(herd::v1::RECORD_FORMAT_CHAT);
  chat.set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA3);
  const std::string text = RenderInspection(chat, {.color = true});
  EXPECT_EQ(text, "format: chat, chat template: llama3; trained tokens in green\n"
                  "\ntotal: 0 examples, 0 tokens, 0 trained (0%)\n");
}

TEST(ParseExampleDumpTest, ReadsHerdPrepareLines) {
  auto r = ParseExampleDump(
      "{\"line\":2,\"format\":\"chat\",\"chat_template\":\"llama2\",\"length\":3,\"ids\":[1,9,2],"
      "\"trained\":[0,1,1],\"pieces\":[\"<s>\",\" ok\",\"</s>\"],\"text\":\"...\"}\n"
      "{\"line\":5,\"format\":\"chat\",\"chat_template\":\"llama2\",\"error\":\"bad turn\"}\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->format(), herd::v1::RECORD_FORMAT_CHAT);
  EXPECT_EQ(r->chat_template(), herd::v1::CHAT_TEMPLATE_LLAMA2);
  ASSERT_EQ(r->examples_size(), 2);
  EXPECT_EQ(r->examples(0).line(), 2);
  EXPECT_EQ(r->examples(0).token_ids_size(), 3);
  EXPECT_EQ(r->examples(0).pieces(1), " ok");
  EXPECT_TRUE(r->examples(0).trained(2));
  EXPECT_EQ(r->examples(0).length(), 3);
  EXPECT_EQ(r->examples(1).error(), "bad turn");
  for (const char* bad : {"[1]\n", "{\"line\":1,\"ids\":[1],\"trained\":[0,1],\"pieces\":[\"a\"]}\n"}) {
    EXPECT_EQ(ParseExampleDump(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace herd::cli
