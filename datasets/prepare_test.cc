// Preparation end to end over a fake tokenizer: files and figures, the seeded split and order,
// determinism, and errors that name the line.
#include "datasets/prepare.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "common/file_util.h"
#include "common/sha256.h"
#include "datasets/fake_tokenizer.h"
#include "datasets/prepared.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

#define EXPECT_CONTAINS(text, sub)                          \
  EXPECT_NE(std::string(text).find(sub), std::string::npos) \
      << "expected \"" << (sub) << "\" in: " << (text)

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/herd_prepare_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }
  // n prompt/completion records "q<i>" -> " a<i>".
  std::string QaFile(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) {
      s += "{\"prompt\": \"q" + std::to_string(i) + "\", \"completion\": \" a" + std::to_string(i) +
           "\"}\n";
    }
    return Write("qa.jsonl", s);
  }
  PrepareOptions Options(double validation_split = 0.0) {
    PrepareOptions o;
    o.packing.max_seq_len = 16;
    o.validation_split = validation_split;
    o.output_path = dir_ + "/train.safetensors";
    o.validation_output_path = dir_ + "/val.safetensors";
    return o;
  }

  FakeTokenizer tok_;
  std::string dir_;
};

TEST_F(PrepareTest, WritesFilesAndFigures) {
  const std::string data = QaFile(10);
  absl::StatusOr<PrepareResult> r = PrepareJsonl(data, tok_, Options(0.2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->format, RecordFormat::kPromptCompletion);
  EXPECT_EQ(r->records, 10);
  EXPECT_EQ(r->train_records, 8);
  EXPECT_EQ(r->validation_records, 2);
  EXPECT_TRUE(r->wrote_validation);
  // Each document: BOS, "▁q<i>" (3 ids), "▁a<i>" (3), EOS = 8 tokens, 4 trained; two to a row.
  EXPECT_EQ(r->train.documents, 8);
  EXPECT_EQ(r->train.tokens, 64);
  EXPECT_EQ(r->train.trained_tokens, 32);
  EXPECT_EQ(r->train.sequences, 4);
  EXPECT_DOUBLE_EQ(r->train.packing_efficiency(), 1.0);

  absl::StatusOr<std::unique_ptr<PreparedFile>> f = PreparedFile::Open(Options().output_path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->rows(), 4);
  EXPECT_EQ((*f)->seq_len(), 16);
  EXPECT_TRUE((*f)->Verify().ok()) << (*f)->Verify();
  const PreparedMetadata& m = (*f)->metadata();
  EXPECT_EQ(m.split, "train");
  EXPECT_EQ(m.vocab_size, 260);
  EXPECT_EQ(m.tokenizer_sha256, "fake-model");
  EXPECT_EQ(m.source_sha256, Sha256File(data).value());
  nlohmann::json stats = nlohmann::json::parse(m.stats_json);
  EXPECT_EQ(stats["records"], 8);
  EXPECT_EQ(stats["trained_tokens"], 32);
  nlohmann::json options = nlohmann::json::parse(m.options_json);
  EXPECT_EQ(options["format"], "prompt_completion");
  EXPECT_EQ(options["max_seq_len"], 16);
  EXPECT_EQ(options["seed"], 42);

  absl::StatusOr<std::unique_ptr<PreparedFile>> v =
      PreparedFile::Open(Options().validation_output_path);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)->metadata().split, "validation");
  EXPECT_EQ((*v)->rows(), 1);
  EXPECT_EQ(nlohmann::json::parse(r->ToJson())["validation"]["documents"], 2);
}

TEST_F(PrepareTest, SplitAndOrderAreSeeded) {
  const std::string data = QaFile(40);
  // The files' bytes fingerprint both the split and the order.
  const auto run = [&](uint64_t seed) {
    PrepareOptions o = Options(0.25);
    o.seed = seed;
    EXPECT_TRUE(PrepareJsonl(data, tok_, o).ok());
    return std::make_pair(ReadFile(o.output_path).value(),
                          ReadFile(o.validation_output_path).value());
  };
  const auto a = run(7), b = run(7), c = run(8);
  EXPECT_EQ(a, b);  // byte-identical files
  EXPECT_NE(a.first, c.first);
  EXPECT_NE(a.second, c.second);
}

TEST(SeededPermutation, FixedAcrossPlatforms) {
  // Pinned: the split and the global order of every prepared dataset depend on these values.
  EXPECT_EQ(SeededPermutation(8, 42), (std::vector<int64_t>{3, 1, 6, 2, 4, 0, 7, 5}));
  std::vector<int64_t> p = SeededPermutation(1000, 1);
  std::sort(p.begin(), p.end());
  std::vector<int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(p, iota);
  EXPECT_TRUE(SeededPermutation(0, 1).empty());
}

TEST_F(PrepareTest, ErrorsNameTheLine) {
  struct Case {
    std::string name, jsonl;
    bool skip_invalid;
    std::string message;  // "" = succeeds
    int64_t invalid_skipped = 0;
  };
  const std::string good =
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})";
  const std::string twice_user =
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]})";
  const std::vector<Case> cases = {
      {"invalid JSON", good + "\n\n{oops\n" + good + "\n", false, "line 3: not valid JSON"},
      {"invalid JSON skipped", good + "\n\n{oops\n" + good + "\n", true, "", 1},
      {"template refuses a record", good + "\n" + twice_user + "\n", false,
       "1 invalid record:\n  line 2: messages[1].role: roles must alternate"},
      {"template refusal skipped", good + "\n" + twice_user + "\n" + good + "\n", true, "", 1},
      {"empty file", "\n\n", false, "no records"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    PrepareOptions o = Options();
    o.packing.max_seq_len = 64;
    o.skip_invalid = c.skip_invalid;
    absl::StatusOr<PrepareResult> r = PrepareJsonl(Write("e.jsonl", c.jsonl), tok_, o);
    if (c.message.empty()) {
      ASSERT_TRUE(r.ok()) << r.status().message();
      EXPECT_EQ(r->invalid_skipped, c.invalid_skipped);
      EXPECT_EQ(r->records, 2);
    } else {
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_CONTAINS(r.status().message(), c.message);
    }
  }
}

TEST_F(PrepareTest, NothingLeftToTrainOn) {
  PrepareOptions o = Options();
  o.packing.max_seq_len = 4;
  o.packing.overflow = Overflow::kDrop;
  absl::StatusOr<PrepareResult> r = PrepareJsonl(QaFile(3), tok_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(),
                  "no documents left to train on (3 longer than max_seq_len 4");
}

TEST_F(PrepareTest, OptionErrors) {
  const std::string data = QaFile(1);
  PrepareOptions o = Options(0.5);
  absl::StatusOr<PrepareResult> r = PrepareJsonl(data, tok_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(), "needs at least 2 records");
  o.validation_output_path.clear();
  EXPECT_CONTAINS(PrepareJsonl(data, tok_, o).status().message(), "validation output path");
  o = Options(1.0);
  EXPECT_CONTAINS(PrepareJsonl(data, tok_, o).status().message(),
                  "validation_split must be in [0, 1)");
  o = Options();
  o.output_path.clear();
  EXPECT_CONTAINS(PrepareJsonl(data, tok_, o).status().message(), "no output path");
  EXPECT_EQ(PrepareJsonl(dir_ + "/missing.jsonl", tok_, Options()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PrepareTest, ReadJsonlRecordsKeepsLineNumbers) {
  const std::string path = Write("l.jsonl", "\n{\"text\": \"a\"}\n  \n{\"text\": \"b\"}\r\n");
  absl::StatusOr<std::vector<NumberedRecord>> got = ReadJsonlRecords(path, {}, nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].line, 2);
  EXPECT_EQ((*got)[0].record.text, "a");
  EXPECT_EQ((*got)[1].line, 4);
  EXPECT_EQ((*got)[1].record.text, "b");
}

// A chat file of `n` records spanning several reader batches, with what skip_invalid drops:
// invalid JSON, another format, records the template refuses, blank and CRLF lines.
std::string MessyChat(int n) {
  std::string s;
  const char* words[] = {"alpha", "béta", "東京", "🦙", "naïve", "zeta", "x"};
  for (int i = 0; i < n; ++i) {
    if (i % 97 == 5) {
      s += "{oops\n";
    } else if (i % 89 == 7) {
      s += "{\"text\": \"another format\"}\n";
    } else if (i % 83 == 9) {
      s += "\r\n";
    } else if (i % 79 == 11) {
      s += R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, )"
           R"({"role": "assistant", "content": "c"}]})"
           "\n";
    } else {
      std::string user, answer;
      for (int w = 0; w < 1 + i % 7; ++w) user += std::string(words[(i + w) % 7]) + " ";
      for (int w = 0; w < 1 + (i * 13) % 23; ++w) answer += std::string(words[(i * w) % 7]) + " ";
      s += R"({"messages": [{"role": "user", "content": ")" + user +
           R"("}, {"role": "assistant", "content": ")" + answer + "\"}]}" +
           (i % 5 == 0 ? "\r\n" : "\n");
    }
  }
  return s;
}

TEST_F(PrepareTest, ThreadCountDoesNotChangeTheFiles) {
  const char* src = std::getenv("HERD_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "HERD_SOURCE_DIR must point at the checkout";
  struct Case {
    std::string name, path;
    bool skip_invalid;
    double validation_split;
    int64_t max_seq_len;
  };
  const std::vector<Case> cases = {
      {"support_chat", std::string(src) + "/datasets/samples/support_chat.jsonl", false, 0.1, 256},
      {"support_qa", std::string(src) + "/datasets/samples/support_qa.jsonl", false, 0.2, 128},
      {"messy, skip_invalid", Write("messy.jsonl", MessyChat(12000)), true, 0.05, 96},
      {"messy, refused", dir_ + "/messy.jsonl", false, 0.05, 96},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string first_files, first_result;
    for (int threads : {1, 2, 4}) {
      PrepareOptions o = Options(c.validation_split);
      o.packing.max_seq_len = c.max_seq_len;
      o.skip_invalid = c.skip_invalid;
      o.threads = threads;
      std::filesystem::remove(o.output_path);
      std::filesystem::remove(o.validation_output_path);
      absl::StatusOr<PrepareResult> r = PrepareJsonl(c.path, tok_, o);
      const std::string result = r.ok() ? r->ToJson() : r.status().ToString();
      const std::string files = r.ok() ? ReadFile(o.output_path).value() + "|" +
                                             ReadFile(o.validation_output_path).value()
                                       : "";
      if (threads == 1) {
        first_files = files;
        first_result = result;
        if (c.skip_invalid) {
          ASSERT_TRUE(r.ok()) << r.status();
          EXPECT_GT(r->invalid_skipped, 0);
        }
        continue;
      }
      EXPECT_EQ(result, first_result) << "threads " << threads;
      EXPECT_TRUE(files == first_files) << "threads " << threads << ": files differ";
    }
  }
}

// The streamed preparation against the whole dataset in memory: records, examples, the seeded
// order and Pack over them give the same rows and figures.
TEST_F(PrepareTest, SameRowsAsPackingInMemory) {
  const std::string data = Write("messy.jsonl", MessyChat(5000));
  PrepareOptions o = Options(0.1);
  o.packing.max_seq_len = 80;
  o.skip_invalid = true;
  o.threads = 3;
  absl::StatusOr<PrepareResult> r = PrepareJsonl(data, tok_, o);
  ASSERT_TRUE(r.ok()) << r.status();

  ValidationOptions vopts{.skip_invalid = true};
  absl::StatusOr<std::vector<NumberedRecord>> records = ReadJsonlRecords(data, vopts, nullptr);
  ASSERT_TRUE(records.ok()) << records.status();
  std::vector<Example> examples;
  for (const NumberedRecord& nr : *records) {
    absl::StatusOr<Example> ex = BuildExample(nr.record, tok_, {});
    if (ex.ok()) examples.push_back(*std::move(ex));
  }
  ASSERT_EQ(static_cast<int64_t>(examples.size()), r->records);
  const std::vector<int64_t> order = SeededPermutation(r->records, o.seed);
  const int64_t k = r->validation_records;
  std::vector<Example> train, validation;
  for (int64_t i = 0; i < r->records; ++i) {
    (i < k ? validation : train).push_back(examples[order[i]]);
  }
  for (const auto& [split, docs, path, stats] :
       {std::tuple{"train", &train, o.output_path, r->train},
        std::tuple{"validation", &validation, o.validation_output_path, r->validation}}) {
    SCOPED_TRACE(split);
    PackStats want_stats;
    absl::StatusOr<PreparedRows> want = Pack(*docs, o.packing, &want_stats);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(stats.ToJson(), want_stats.ToJson());
    absl::StatusOr<std::unique_ptr<PreparedFile>> got = PreparedFile::Open(path);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ((*got)->rows(), want->rows);
    for (int64_t row = 0; row < want->rows; ++row) {
      const PreparedFile::Row g = (*got)->row(row);
      const auto slice = [&](const std::vector<int32_t>& v) {
        return std::vector<int32_t>(v.begin() + row * 80, v.begin() + (row + 1) * 80);
      };
      ASSERT_EQ(std::vector<int32_t>(g.input_ids.begin(), g.input_ids.end()),
                slice(want->input_ids))
          << "row " << row;
      ASSERT_EQ(std::vector<int32_t>(g.targets.begin(), g.targets.end()), slice(want->targets));
      ASSERT_EQ(std::vector<int32_t>(g.position_ids.begin(), g.position_ids.end()),
                slice(want->position_ids));
      ASSERT_EQ(std::vector<int32_t>(g.doc_ids.begin(), g.doc_ids.end()), slice(want->doc_ids));
    }
  }
}

TEST_F(PrepareTest, ThreadsOption) {
  PrepareOptions o = Options();
  o.threads = -1;
  EXPECT_CONTAINS(PrepareJsonl(QaFile(3), tok_, o).status().message(), "threads must be in");
}

}  // namespace
}  // namespace herd::datasets
