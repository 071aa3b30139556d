// The LLaMA-3 pre-tokenizer against the splits Hugging Face tokenizers' Split(Regex(pattern),
// "isolated") gives for tricky strings (expected values taken from tokenizers 0.23).
#include "datasets/bpe_pretokenizer.h"

#include <string>
#include <vector>

#include "datasets/unicode_categories.h"
#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

TEST(SplitLlama3, MatchesHuggingFace) {
  struct Case {
    std::string text;
    std::vector<std::string> want;
  };
  const Case cases[] = {
      {"Hello world", {"Hello", " world"}},
      {"I'm don't WE'LL they'RE it'S",
       {"I", "'m", " don", "'t", " WE", "'LL", " they", "'RE", " it", "'S"}},
      {"'sup 'Twas", {"'s", "up", " '", "Twas"}},
      {"it'\u017f", {"it", "'\u017f"}},  // ſ folds to s under (?i:)
      {"12345 1234567", {"123", "45", " ", "123", "456", "7"}},
      {"x1y22z333", {"x", "1", "y", "22", "z", "333"}},
      {"$100.00", {"$", "100", ".", "00"}},
      {"  leading", {" ", " leading"}},
      {"trailing   ", {"trailing", "   "}},
      {"a  b", {"a", " ", " b"}},
      {"a   \n\n  b", {"a", "   \n\n", " ", " b"}},
      {"line\r\n\r\nnext", {"line", "\r\n\r\n", "next"}},
      {"foo\n\n\nbar  \n baz", {"foo", "\n\n\n", "bar", "  \n", " baz"}},
      {"don't\n", {"don", "'t", "\n"}},
      {"tab\tseparated", {"tab", "\tseparated"}},
      {"hello!!! ...?", {"hello", "!!!", " ...?"}},
      {" !!!\n\nx", {" !!!\n\n", "x"}},
      {"caf\u00e9 na\u00efve", {"caf\u00e9", " na\u00efve"}},
      {"e\u0301\u0301 combining", {"e", "\u0301\u0301", " combining"}},  // marks are not \p{L}
      {"\u6771\u4eac\u306f\u6674\u308c", {"\u6771\u4eac\u306f\u6674\u308c"}},
      {"emoji \U0001F999\U0001F999 ok", {"emoji", " \U0001F999\U0001F999", " ok"}},
      {"\u0663\u0664\u0665 \u216b \u00bd", {"\u0663\u0664\u0665", " ", "\u216b", " ", "\u00bd"}},
      {"<|eot_id|> <|start_header_id|>",
       {"<|", "eot", "_id", "|>", " <|", "start", "_header", "_id", "|>"}},
      {"\u3000full\u00a0width", {"\u3000full", "\u00a0width"}},
      {"x\x1c\x1cy", {"x", "\x1c\x1c", "y"}},  // U+001C is not White_Space
      {"\n", {"\n"}},
      {"   ", {"   "}},
      {"", {}},
      {"bad \xff\xfe bytes", {"bad", " \xff\xfe", " bytes"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    std::vector<std::string> got;
    for (std::string_view p : SplitLlama3(c.text)) got.emplace_back(p);
    EXPECT_EQ(got, c.want);
  }
}

TEST(UnicodeCategories, Samples) {
  EXPECT_TRUE(IsUnicodeLetter('a'));
  EXPECT_TRUE(IsUnicodeLetter(U'\u00e9'));
  EXPECT_TRUE(IsUnicodeLetter(U'\u6771'));
  EXPECT_TRUE(IsUnicodeLetter(U'\U00020000'));  // CJK Extension B
  EXPECT_FALSE(IsUnicodeLetter('1'));
  EXPECT_FALSE(IsUnicodeLetter(U'\u0301'));
  EXPECT_FALSE(IsUnicodeLetter(U'\U0001F999'));
  EXPECT_FALSE(IsUnicodeLetter('@'));
  EXPECT_FALSE(IsUnicodeLetter('['));
  EXPECT_TRUE(IsUnicodeNumber('7'));
  EXPECT_TRUE(IsUnicodeNumber(U'\u00bd'));
  EXPECT_TRUE(IsUnicodeNumber(U'\u216b'));
  EXPECT_FALSE(IsUnicodeNumber('a'));
  EXPECT_FALSE(IsUnicodeNumber('/'));
  EXPECT_TRUE(IsUnicodeWhiteSpace(U'\u3000'));
  EXPECT_FALSE(IsUnicodeWhiteSpace(0x1c));
}

}  // namespace
}  // namespace herd::datasets
