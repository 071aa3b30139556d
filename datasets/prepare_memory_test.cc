// Preparation runs in memory that does not grow with the dataset's tokens: the process's peak
// resident set grows by far less than 4 bytes per token while 200k records are prepared. A binary
// of its own, so that no other test's allocations set the peak.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "common/host_info.h"
#include "datasets/fake_tokenizer.h"
#include "datasets/prepare.h"
#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

TEST(PrepareMemory, PeakDoesNotGrowWithTokens) {
  char tmpl[] = "/tmp/herd_prepare_memory_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  // 200k records; nine in ten are longer than max_seq_len and dropped, so the output stays small
  // while every token still goes through parsing and tokenising. FakeTokenizer: one id per byte.
  const std::string data = dir + "/big.jsonl";
  int64_t tokens = 0;
  {
    std::ofstream out(data, std::ios::binary);
    const std::string long_answer(200, 'y');
    for (int i = 0; i < 200000; ++i) {
      const std::string prompt = "question " + std::to_string(i);
      const std::string answer = i % 10 == 0 ? " short answer" : " " + long_answer;
      out << "{\"prompt\": \"" << prompt << "\", \"completion\": \"" << answer << "\"}\n";
      tokens += 1 + 1 + static_cast<int64_t>(prompt.size() + answer.size()) + 1;  // BOS ▁ ... EOS
    }
  }
  const int64_t before = ProcStatusBytes("VmHWM:");
  ASSERT_GT(before, 0);

  FakeTokenizer tokenizer;
  PrepareOptions o;
  o.packing.max_seq_len = 64;
  o.packing.overflow = Overflow::kDrop;
  o.validation_split = 0.01;
  o.threads = 2;
  o.output_path = dir + "/train.safetensors";
  o.validation_output_path = dir + "/val.safetensors";
  absl::StatusOr<PrepareResult> r = PrepareJsonl(data, tokenizer, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->records, 200000);
  EXPECT_EQ(r->train.dropped_too_long + r->validation.dropped_too_long, 180000);

  // The token ids alone would take 4 bytes each (the in-memory preparation held about 21 per
  // token); what may grow is a few dozen bytes per record and buffers of a few megabytes.
  const int64_t growth = ProcStatusBytes("VmHWM:") - before;
  const int64_t bound = 48 << 20;
  std::cout << "peak RSS growth " << growth << " bytes, " << tokens << " tokens\n";
  ASSERT_GT(tokens * 4, 3 * bound) << "the dataset is too small to show anything";
  EXPECT_LT(growth, bound) << "peak RSS grew by " << growth << " bytes for " << tokens
                           << " tokens";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace herd::datasets
