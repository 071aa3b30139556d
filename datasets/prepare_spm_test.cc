// Preparation with real tokenizers on several threads: SentencePiece (the tiny model, made here
// with herd-make-tiny-model) and byte-level BPE (a small tokenizer.json written here) are
// immutable after loading, so the prepared files are byte-identical for 1, 2 and 4 threads, on
// every sample dataset and on a generated file with invalid lines under skip_invalid.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "datasets/bpe_pretokenizer.h"
#include "datasets/prepare.h"
#include "datasets/sentencepiece_tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

namespace fs = std::filesystem;

// GPT-2's bytes_to_unicode spelling of byte b in tokenizer.json.
std::string Spell(uint8_t b) {
  int n = 0;
  for (int x = 0; x < b; ++x) {
    n += (x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || x >= 0xae ? 0 : 1;
  }
  const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  const char32_t cp = printable ? b : 0x100 + n;
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  return {static_cast<char>(0xc0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3f))};
}

// A LLaMA-3 style model directory: one token per byte, merges of a few English pairs, the
// template's special tokens.
std::string WriteBpeModel(const std::string& dir) {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[Spell(static_cast<uint8_t>(b))] = b;
  json merges = json::array();
  int next = 256;
  for (const char* pair : {"th", "he", "in", "er", "an", " t", " a", "re", "on", "es"}) {
    const std::string left = Spell(static_cast<uint8_t>(pair[0]));
    const std::string right = Spell(static_cast<uint8_t>(pair[1]));
    vocab[left + right] = next++;
    merges.push_back(left + " " + right);
  }
  json added = json::array();
  for (const char* special : {"<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                              "<|end_header_id|>"}) {
    added.push_back({{"id", next++}, {"content", special}, {"special", true}});
  }
  const json tokenizer = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(kLlama3SplitPattern)}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  fs::create_directories(dir);
  std::ofstream(dir + "/tokenizer.json") << tokenizer.dump();
  std::ofstream(dir + "/tokenizer_config.json")
      << json{{"bos_token", "<|begin_of_text|>"},
              {"eos_token", "<|eot_id|>"},
              {"chat_template", "{{ '<|start_header_id|>' }}"}}
             .dump();
  return dir;
}

// Chat records over several reader batches with what skip_invalid drops: invalid JSON, another
// format, records the template refuses.
std::string WriteMessyChat(const std::string& path, int n) {
  std::ofstream out(path, std::ios::binary);
  const char* words[] = {"the", "answer", "naïve", "東京", "🦙", "there", "in", "42"};
  for (int i = 0; i < n; ++i) {
    if (i % 97 == 5) {
      out << "{oops\n";
    } else if (i % 89 == 7) {
      out << "{\"text\": \"another format\"}\n";
    } else if (i % 79 == 11) {
      out << R"({"messages": [{"role": "assistant", "content": "a"}, )"
          << R"({"role": "assistant", "content": "b"}]})"
          << "\n";
    } else {
      std::string user, answer;
      for (int w = 0; w < 1 + i % 7; ++w) user += std::string(words[(i + w) % 8]) + " ";
      for (int w = 0; w < 1 + (i * 13) % 29; ++w) answer += std::string(words[(i * w) % 8]) + " ";
      out << nlohmann::json{{"messages",
                             {{{"role", "user"}, {"content", user}},
                              {{"role", "assistant"}, {"content", answer}}}}}
                 .dump()
          << (i % 5 == 0 ? "\r\n" : "\n");
    }
  }
  return path;
}

class PrepareThreadsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/herd_prepare_spm_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    const std::string cmd = std::string(HERD_MAKE_TINY_MODEL) + " --out " + *dir_ + "/tiny";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    WriteBpeModel(*dir_ + "/bpe");
    WriteMessyChat(*dir_ + "/messy.jsonl", 8000);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  // The result (or error) and the files' bytes for each thread count, compared to 1 thread.
  static void ExpectSameForAnyThreads(const Tokenizer& tokenizer, const std::string& data,
                                      bool skip_invalid) {
    std::string want_result, want_files;
    for (int threads : {1, 2, 4}) {
      PrepareOptions o;
      o.packing.max_seq_len = 192;
      o.validation_split = 0.1;
      o.skip_invalid = skip_invalid;
      o.threads = threads;
      o.output_path = *dir_ + "/train.safetensors";
      o.validation_output_path = *dir_ + "/val.safetensors";
      fs::remove(o.output_path);
      fs::remove(o.validation_output_path);
      absl::StatusOr<PrepareResult> r = PrepareJsonl(data, tokenizer, o);
      const std::string result = r.ok() ? r->ToJson() : r.status().ToString();
      const std::string files =
          r.ok() ? ReadFile(o.output_path).value() + ReadFile(o.validation_output_path).value()
                 : "";
      if (threads == 1) {
        want_result = result;
        want_files = files;
        if (skip_invalid) {
          EXPECT_TRUE(r.ok()) << r.status();
        }
        continue;
      }
      EXPECT_EQ(result, want_result) << threads << " threads";
      EXPECT_TRUE(files == want_files) << threads << " threads: the files differ";
    }
  }

  static std::string* dir_;
};
std::string* PrepareThreadsTest::dir_ = nullptr;

TEST_F(PrepareThreadsTest, SentencePieceOnEverySample) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(*dir_ + "/tiny");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const char* src = std::getenv("HERD_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "HERD_SOURCE_DIR must point at the checkout";
  int samples = 0;
  for (const auto& entry : fs::directory_iterator(std::string(src) + "/datasets/samples")) {
    if (entry.path().extension() != ".jsonl") continue;
    SCOPED_TRACE(entry.path().filename().string());
    ExpectSameForAnyThreads(**tokenizer, entry.path().string(), /*skip_invalid=*/false);
    ++samples;
  }
  EXPECT_GE(samples, 2);
  SCOPED_TRACE("messy");
  ExpectSameForAnyThreads(**tokenizer, *dir_ + "/messy.jsonl", /*skip_invalid=*/true);
}

TEST_F(PrepareThreadsTest, ByteLevelBpe) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(*dir_ + "/bpe");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  ExpectSameForAnyThreads(**tokenizer, *dir_ + "/messy.jsonl", /*skip_invalid=*/true);
}

}  // namespace
}  // namespace herd::datasets
