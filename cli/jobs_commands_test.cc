// LoadSubmission: the job file with the flags applied, and errors that point at file:line:field.
// The commands against a real coordinator are tests/python/jobs_e2e.py.
#include "cli/jobs_commands.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace herd::cli {
namespace {

class LoadSubmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(base != nullptr && *base ? base : "/tmp") + "/herd-cli-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& text) {
    const std::string path = dir_ + "/job.yaml";
    std::ofstream(path) << text;
    return path;
  }

  std::string dir_;
};

constexpr char kJob[] =
    "name: bot\n"
    "base_model: tiny-llama\n"
    "dataset: ds_1\n"
    "training:\n"
    "  max_seq_len: 256\n";

TEST_F(LoadSubmissionTest, FlagsOverrideTheFile) {
  auto spec = LoadSubmission({.path = Write(kJob), .dataset = "ds_2", .name = "other", .base_model = "m2"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset, "ds_2");
  EXPECT_EQ(spec->name, "other");
  EXPECT_EQ(spec->base_model, "m2");
  EXPECT_EQ(spec->training.max_seq_len, 256);
}

TEST_F(LoadSubmissionTest, ErrorsNameFileLineAndField) {
  struct Case {
    std::string text;
    std::string expect;  // a part of the message
  } cases[] = {
      {std::string(kJob).replace(std::string(kJob).find("256"), 3, "4"), "job.yaml:5: training.max_seq_len"},
      {std::string(kJob) + "lora: {r: 0}\n", "job.yaml:6: lora.r"},
      {std::string(kJob) + "lora:\n  bogus: 1\n", "job.yaml:7: lora.bogus"},
      {"name: bot\nbase_model: tiny-llama\n", "job.yaml: dataset: required"},
  };
  for (const Case& c : cases) {
    auto spec = LoadSubmission({.path = Write(c.text)});
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(std::string(spec.status().message()).find(c.expect), std::string::npos)
        << spec.status() << " wanted " << c.expect;
  }
  EXPECT_EQ(LoadSubmission({.path = dir_ + "/missing.yaml"}).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace herd::cli
