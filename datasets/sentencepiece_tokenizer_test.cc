// The SentencePiece tokenizer on the tiny model (made here with herd-make-tiny-model): special
// ids, the special-token policy, dummy-prefix handling, loader errors. Token-exact agreement with
// transformers and sentencepiece is tests/python/tokenizer_parity.py's job.
#include "datasets/sentencepiece_tokenizer.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/file_util.h"
#include "common/sha256.h"
#include "datasets/examples.h"
#include "datasets/spm_processor.h"
#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

namespace fs = std::filesystem;

#define EXPECT_CONTAINS(text, sub)                          \
  EXPECT_NE(std::string(text).find(sub), std::string::npos) \
      << "expected \"" << (sub) << "\" in: " << (text)

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/herd_spm_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    const std::string cmd = std::string(HERD_MAKE_TINY_MODEL) + " --out " + *dir_ + "/tiny";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string Model() { return *dir_ + "/tiny"; }

  // A copy of the tiny model with `config` as its tokenizer_config.json ("" = none).
  static std::string Variant(const std::string& name, const std::string& config) {
    const std::string d = *dir_ + "/" + name;
    fs::create_directories(d);
    fs::copy_file(Model() + "/tokenizer.model", d + "/tokenizer.model",
                  fs::copy_options::overwrite_existing);
    if (!config.empty()) std::ofstream(d + "/tokenizer_config.json") << config;
    return d;
  }

  static std::unique_ptr<Tokenizer> Load(const std::string& dir) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(dir);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *std::move(t) : nullptr;
  }

  static std::string* dir_;
};
std::string* SentencePieceTest::dir_ = nullptr;

TEST_F(SentencePieceTest, InfoFromTheModelDirectory) {
  std::unique_ptr<Tokenizer> tok = Load(Model());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->info().kind, "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 1024);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->info().after_special, TextStart::kContinuation);  // legacy: false
  EXPECT_EQ(DetectChatTemplate(tok->info().chat_template).value_or(ChatTemplate::kAuto),
            ChatTemplate::kLlama2);
  EXPECT_EQ(tok->info().model_sha256, Sha256File(Model() + "/tokenizer.model").value());
  EXPECT_EQ(tok->info().config_sha256, Sha256File(Model() + "/tokenizer_config.json").value());
}

TEST_F(SentencePieceTest, UserTextNeverBecomesSpecialTokens) {
  std::unique_ptr<Tokenizer> tok = Load(Model());
  ASSERT_NE(tok, nullptr);
  for (std::string text : {"</s>", "<s>", "<unk>", "a</s>b<s>c", "[INST] <<SYS>> </s><s>"}) {
    SCOPED_TRACE(text);
    for (TextStart start : {TextStart::kDocument, TextStart::kContinuation}) {
      absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(text, start);
      ASSERT_TRUE(ids.ok()) << ids.status();
      EXPECT_GT(ids->size(), 1u);
      for (int32_t id : *ids) {
        EXPECT_TRUE(id != 0 && id != 1 && id != 2) << "special id " << id;
      }
      absl::StatusOr<std::string> back = tok->Decode(*ids);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(*back, text);
    }
  }
}

TEST_F(SentencePieceTest, DummyPrefix) {
  std::unique_ptr<Tokenizer> tok = Load(Model());
  ASSERT_NE(tok, nullptr);
  const auto enc = [&](std::string_view text, TextStart start) {
    return tok->Encode(text, start).value();
  };
  // "Hello" starting a document gets a space; continuing text does not.
  EXPECT_NE(enc("Hello", TextStart::kDocument), enc("Hello", TextStart::kContinuation));
  EXPECT_EQ(tok->Decode(enc("Hello", TextStart::kContinuation)).value(), "Hello");
  // A text that already starts with a space gets no second one (Hugging Face's rule), so these
  // three agree; SentencePiece alone would encode the first as "▁▁Hello".
  EXPECT_EQ(enc(" Hello", TextStart::kDocument), enc("Hello", TextStart::kDocument));
  EXPECT_EQ(enc(" Hello", TextStart::kContinuation), enc("Hello", TextStart::kDocument));
  // Continuation keeps the joint encoding: enc(a) + enc'(" b") == enc(a + " b").
  std::vector<int32_t> joined = enc("Hello world", TextStart::kDocument);
  std::vector<int32_t> apart = enc("Hello", TextStart::kDocument);
  for (int32_t id : enc(" world", TextStart::kContinuation)) apart.push_back(id);
  EXPECT_EQ(apart, joined);
  EXPECT_TRUE(enc("", TextStart::kDocument).empty());
}

// TokenBytes, piece by piece, spells the document exactly: "▁" is a space even at the start,
// byte-fallback tokens are their bytes, control tokens their names.
TEST_F(SentencePieceTest, TokenBytesSpellTheText) {
  std::unique_ptr<Tokenizer> tok = Load(Model());
  ASSERT_NE(tok, nullptr);
  for (std::string text : {"Hello world", "Invoices\n\nGo to Banking \xe2\x86\x92 Reconcile.",
                           "\xe8\xab\x8b\xe5\x95\x8f \xf0\x9f\x98\x80"}) {
    const std::vector<int32_t> ids = tok->Encode(text, TextStart::kDocument).value();
    std::string spelled;
    for (int32_t id : ids) spelled += tok->TokenBytes(id).value();
    EXPECT_EQ(spelled, " " + text);
  }
  EXPECT_EQ(tok->TokenBytes(tok->bos_id()).value(), "<s>");
  EXPECT_EQ(tok->TokenBytes(tok->eos_id()).value(), "</s>");
  EXPECT_FALSE(tok->TokenBytes(1024).ok());
}

TEST_F(SentencePieceTest, DecodeRejectsIdsOutsideTheVocabulary) {
  std::unique_ptr<Tokenizer> tok = Load(Model());
  ASSERT_NE(tok, nullptr);
  for (int32_t id : {-1, 1024}) {
    std::vector<int32_t> ids = {5, id};
    EXPECT_EQ(tok->Decode(ids).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(SentencePieceTest, ConfigOverridesAndLegacy) {
  std::unique_ptr<Tokenizer> tok = Load(
      Variant("swap", R"({"bos_token": "</s>", "eos_token": {"content": "<s>"}, "legacy": true})"));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), 2);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_EQ(tok->info().after_special, TextStart::kDocument);
  EXPECT_EQ(tok->info().chat_template, "");

  tok = Load(Variant("no_config", ""));
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->info().config_sha256, "");
}

TEST_F(SentencePieceTest, LoaderErrors) {
  struct Case {
    std::string name;
    std::function<std::string()> make;  // returns the model directory
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no directory", [] { return *dir_ + "/nope"; }, absl::StatusCode::kNotFound,
       "no tokenizer.model"},
      {"tokenizer.json only",
       [] {
         fs::create_directories(*dir_ + "/hf");
         std::ofstream(*dir_ + "/hf/tokenizer.json") << "{}";
         return *dir_ + "/hf";
       },
       absl::StatusCode::kUnimplemented, "LLaMA-3 style byte-level BPE"},
      {"not a model",
       [] {
         fs::create_directories(*dir_ + "/junk");
         std::ofstream(*dir_ + "/junk/tokenizer.model") << "this is not a protobuf";
         return *dir_ + "/junk";
       },
       absl::StatusCode::kInvalidArgument, "not a SentencePiece model"},
      {"unknown bos_token", [] { return Variant("bad_bos", R"({"bos_token": "<|begin|>"})"); },
       absl::StatusCode::kInvalidArgument, "bos_token '<|begin|>' is not in tokenizer.model"},
      {"malformed config", [] { return Variant("bad_config", R"({"legacy": 1})"); },
       absl::StatusCode::kInvalidArgument, "legacy"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(c.make());
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), c.code) << t.status();
    EXPECT_CONTAINS(t.status().message(), c.message);
  }
}

TEST(WithoutDummyPrefix, WireFormat) {
  std::string out;
  // pieces {piece: "a"} (field 1), self_test_data {} (field 4, dropped), then the override.
  EXPECT_EQ(WithoutDummyPrefix(std::string("\x0a\x03\x0a\x01"
                                           "a"
                                           "\x22\x00",
                                           7),
                               &out),
            "");
  EXPECT_EQ(out, std::string("\x0a\x03\x0a\x01"
                             "a"
                             "\x1a\x02\x18\x00",
                             9));
  EXPECT_NE(WithoutDummyPrefix("\x0a\x09"
                               "ab",
                               &out),
            "");                                    // length past the end
  EXPECT_NE(WithoutDummyPrefix("\x0b", &out), "");  // group wire type
}

TEST_F(SentencePieceTest, ChatExampleEndsTurnsWithEos) {
  std::unique_ptr<Tokenizer> tok = Load(Model());
  ASSERT_NE(tok, nullptr);
  Record r;
  r.format = RecordFormat::kChat;
  r.messages = {{"user", "Hi </s>", std::nullopt}, {"assistant", "Hello.", std::nullopt}};
  absl::StatusOr<Example> ex = BuildExample(r, *tok, {});
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_EQ(ex->ids.front(), 1);
  EXPECT_EQ(ex->ids.back(), 2);
  EXPECT_EQ(std::count(ex->ids.begin(), ex->ids.end(), 2), 1);  // the user's "</s>" is text
  EXPECT_EQ(ex->trained.back(), 1);
  EXPECT_EQ(ex->trained[1], 0);
}

}  // namespace
}  // namespace herd::datasets
