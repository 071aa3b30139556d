// tokenizer_config.json parsing: the token spellings and flags Hugging Face writes, and errors.
#include "datasets/tokenizer.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/sha256.h"
#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

TEST(ParseTokenizerConfig, Fields) {
  struct Case {
    std::string name, json;
    std::string bos, eos, chat_template;
    bool legacy;
  };
  const Case cases[] = {
      {"strings",
       R"({"bos_token": "<s>", "eos_token": "</s>", "legacy": false, "chat_template": "T"})", "<s>",
       "</s>", "T", false},
      {"AddedToken objects", R"({"bos_token": {"__type": "AddedToken", "content": "<s>"},
          "eos_token": {"content": "</s>", "special": true}, "legacy": true})",
       "<s>", "</s>", "", true},
      {"nulls and absent keys", R"({"bos_token": null, "chat_template": null})", "", "", "", false},
      {"a list of templates", R"({"chat_template": [{"name": "tool_use", "template": "X"},
          {"name": "default", "template": "D"}]})",
       "", "", "D", false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<TokenizerConfig> got = ParseTokenizerConfig(c.json, "tc.json");
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(got->present);
    EXPECT_EQ(got->bos_token, c.bos);
    EXPECT_EQ(got->eos_token, c.eos);
    EXPECT_EQ(got->chat_template, c.chat_template);
    EXPECT_EQ(got->legacy, c.legacy);
    EXPECT_EQ(got->sha256, Sha256Hex(c.json));
  }
}

TEST(ParseTokenizerConfig, Errors) {
  struct Case {
    std::string json, message;
  };
  const Case cases[] = {
      {"[1, 2]", "tc.json: not a JSON object"},
      {"{", "tc.json: not a JSON object"},
      {R"({"bos_token": 1})", "tc.json: bos_token: must be a string"},
      {R"({"eos_token": {"special": true}})", "tc.json: eos_token"},
      {R"({"legacy": "no"})", "tc.json: legacy: must be true or false"},
      {R"({"chat_template": [{"name": "x", "template": "y"}]})", "without one named \"default\""},
      {R"({"chat_template": 3})", "chat_template: must be a string"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    absl::StatusOr<TokenizerConfig> got = ParseTokenizerConfig(c.json, "tc.json");
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(got.status().message().find(c.message), std::string::npos) << got.status();
  }
}

TEST(ReadTokenizerConfig, MissingFileIsAbsentConfig) {
  char tmpl[] = "/tmp/herd_tokenizer_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  absl::StatusOr<TokenizerConfig> got = ReadTokenizerConfig(dir);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->present);
  EXPECT_EQ(got->sha256, "");
  std::ofstream(dir + "/tokenizer_config.json") << R"({"eos_token": "</s>"})";
  got = ReadTokenizerConfig(dir);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->present);
  EXPECT_EQ(got->eos_token, "</s>");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace herd::datasets
