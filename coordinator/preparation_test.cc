// Preparer with the real herd-prepare on the tiny model fixture: the plan's figures and
// schedule, a bad dataset's error naming the line, a separate validation dataset, and the
// plan's JSON round trip. FillSchedule's arithmetic is table-driven.
#include "coordinator/preparation.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/strings.h"
#include "coordinator/tiny_model_testing.h"

namespace herd::coordinator {
namespace {

namespace fs = std::filesystem;

class PreparationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = test_models::TinyModelDir();
    ASSERT_TRUE(dir.ok()) << dir.status();
    model_dir_ = new std::string(*dir);
    root_ = new fs::path(fs::temp_directory_path() / StrCat("herd_preparation_test_", getpid()));
    fs::create_directories(*root_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
    delete model_dir_;
  }

  PreparationInput Input(const std::string& dataset) {
    PreparationInput in;
    in.spec.base_model = "tiny-llama";
    in.spec.dataset = "ds_x";
    in.spec.training.max_seq_len = 128;
    in.spec.training.global_batch_size = 4;
    in.spec.resources.trainers = 2;
    in.dataset_path = dataset;
    in.model_files = test_models::TinyModelMetadataFiles(*model_dir_);
    return in;
  }

  std::string Scratch(const std::string& name) {
    const fs::path p = *root_ / name;
    fs::create_directories(p);
    return p.string();
  }

  Preparer preparer_{{.herd_prepare = HERD_PREPARE, .work_dir = "/tmp"}};
  static fs::path* root_;
  static std::string* model_dir_;
};
fs::path* PreparationTest::root_ = nullptr;
std::string* PreparationTest::model_dir_ = nullptr;

const std::string kSamples = StrCat(HERD_SOURCE_ROOT, "/datasets/samples");

TEST_F(PreparationTest, PlansAChatDataset) {
  PreparationInput in = Input(kSamples + "/support_chat.jsonl");
  auto out = preparer_.Prepare(in, Scratch("chat"));
  ASSERT_TRUE(out.ok()) << out.status();
  const PreparationPlan& p = out->plan;
  EXPECT_EQ(p.format, "chat");
  EXPECT_FALSE(p.chat_template.empty());
  EXPECT_GT(p.records, 250);
  EXPECT_GT(p.validation_records, 0);  // the default 5% hold-out
  EXPECT_EQ(p.records + p.validation_records, 328);
  EXPECT_GT(p.sequences, 0);
  EXPECT_GT(p.tokens, p.trained_tokens);
  EXPECT_GT(p.packing_efficiency, 0.5);
  EXPECT_LE(p.packing_efficiency, 1.0);
  EXPECT_EQ(p.steps_per_epoch, (p.sequences + 3) / 4);
  EXPECT_EQ(p.total_steps, p.steps_per_epoch);
  EXPECT_EQ(p.world_size, 2);
  EXPECT_EQ(p.grad_accum_steps, 2);
  EXPECT_TRUE(fs::exists(out->train_path));
  EXPECT_TRUE(fs::exists(out->validation_path));
}

TEST_F(PreparationTest, SeparateValidationDatasetAndNoSplit) {
  PreparationInput in = Input(kSamples + "/support_qa.jsonl");
  in.spec.validation_split = 0.0;
  auto no_split = preparer_.Prepare(in, Scratch("nosplit"));
  ASSERT_TRUE(no_split.ok()) << no_split.status();
  EXPECT_EQ(no_split->plan.format, "prompt_completion");
  EXPECT_EQ(no_split->plan.chat_template, "");
  EXPECT_EQ(no_split->plan.records, 316);
  EXPECT_TRUE(no_split->validation_path.empty());

  in.validation_path = kSamples + "/support_chat.jsonl";
  auto separate = preparer_.Prepare(in, Scratch("separate"));
  ASSERT_TRUE(separate.ok()) << separate.status();
  EXPECT_EQ(separate->plan.validation_records, 328);
  EXPECT_FALSE(separate->validation_path.empty());
}

TEST_F(PreparationTest, BadRecordsAreRejectedWithTheirLine) {
  const std::string bad = Scratch("bad") + "/bad.jsonl";
  std::ofstream(bad) << "{\"text\": \"fine\"}\n{\"text\": 3}\n";
  auto out = preparer_.Prepare(Input(bad), Scratch("bad-out"));
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  EXPECT_NE(out.status().message().find("line 2"), std::string::npos) << out.status();

  PreparationInput skip = Input(bad);
  skip.skip_invalid = true;
  skip.spec.validation_split = 0;
  auto kept = preparer_.Prepare(skip, Scratch("skip-out"));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->plan.records, 1);
}

TEST_F(PreparationTest, MissingProgramIsAnError) {
  Preparer broken({.herd_prepare = "/nonexistent/herd-prepare", .work_dir = "/tmp"});
  auto out = broken.Prepare(Input(kSamples + "/support_qa.jsonl"), Scratch("missing"));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kNotFound) << out.status();
}

TEST(PreparationPlan, ProtoJsonRoundTrip) {
  PreparationPlan p;
  p.format = "chat";
  p.chat_template = "llama3";
  p.records = 10;
  p.records_truncated = 1;
  p.sequences = 4;
  p.packing_efficiency = 0.75;
  p.steps_per_epoch = 2;
  p.total_steps = 6;
  p.world_size = 2;
  p.grad_accum_steps = 4;
  p.warnings = {"one", "two"};
  const std::string json = p.ToProtoJson();
  EXPECT_NE(json.find("\"RECORD_FORMAT_CHAT\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"CHAT_TEMPLATE_LLAMA3\""), std::string::npos) << json;
  auto back = PreparationPlan::FromProtoJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->format, "chat");
  EXPECT_EQ(back->chat_template, "llama3");
  EXPECT_EQ(back->total_steps, 6);
  EXPECT_EQ(back->grad_accum_steps, 4);
  EXPECT_EQ(back->warnings, p.warnings);
  EXPECT_FALSE(PreparationPlan::FromProtoJson("[]").ok());
}

TEST(FillSchedule, StepsAndAccumulation) {
  struct Case {
    int64_t sequences, epochs, global_batch, micro_batch, trainers;
    std::optional<int64_t> max_steps;
    int64_t steps_per_epoch, total_steps, grad_accum;
  };
  const Case cases[] = {
      {10, 1, 4, 1, 1, std::nullopt, 3, 3, 4},
      {10, 2, 4, 1, 2, std::nullopt, 3, 5, 2},  // ceil(2*10/4)
      {8, 3, 8, 2, 2, std::nullopt, 1, 3, 2},
      {100, 1, 8, 1, 4, 5, 13, 5, 2},           // capped by max_steps
  };
  for (const Case& c : cases) {
    JobSpec spec;
    spec.training.epochs = c.epochs;
    spec.training.global_batch_size = c.global_batch;
    spec.training.micro_batch_size = c.micro_batch;
    spec.training.max_steps = c.max_steps;
    spec.resources.trainers = c.trainers;
    PreparationPlan plan;
    plan.sequences = c.sequences;
    ASSERT_TRUE(FillSchedule(spec, plan).ok());
    EXPECT_EQ(plan.steps_per_epoch, c.steps_per_epoch) << c.sequences;
    EXPECT_EQ(plan.total_steps, c.total_steps) << c.sequences;
    EXPECT_EQ(plan.grad_accum_steps, c.grad_accum) << c.sequences;
  }
  JobSpec bad;
  bad.training.global_batch_size = 6;
  bad.resources.trainers = 4;
  PreparationPlan plan;
  plan.sequences = 10;
  EXPECT_EQ(FillSchedule(bad, plan).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace herd::coordinator
