// Job file parsing: defaults, every field, and errors that name file, line and field.
#include "common/job_spec.h"

#include "common/strings.h"
#include "gtest/gtest.h"

namespace herd {
namespace {

TEST(JobSpecTest, DefaultsMatchDesign) {
  auto spec = ParseJobSpec("base_model: tiny-llama\ndataset: ds_1\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->lora.r, 16);
  EXPECT_EQ(spec->lora.alpha, 32);
  EXPECT_EQ(spec->training.global_batch_size, 8);
  EXPECT_EQ(spec->training.learning_rate, 2.0e-4);
  EXPECT_EQ(spec->training.lr_scheduler, "cosine");
  EXPECT_EQ(spec->training.max_seq_len, 2048);
  EXPECT_FALSE(spec->training.max_steps.has_value());
  EXPECT_FALSE(spec->training.activation_checkpointing);
  EXPECT_EQ(spec->checkpoints.every_steps, 100);
  EXPECT_EQ(spec->validation_split, 0.05);
  EXPECT_EQ(spec->lora.ExpandedTargets().size(), 7u);
  EXPECT_TRUE(spec->Validate().ok());
}

TEST(JobSpecTest, ReadsEveryField) {
  const char* kYaml = R"(
name: support-bot
base_model: tiny-llama
dataset: ds_abc
validation_dataset: null
validation_split: 0.1
format: chat
chat_template: llama3
train_on_inputs: true
lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj], rslora: true}
training: {epochs: 2, max_steps: 50, micro_batch_size: 2, global_batch_size: 16,
           learning_rate: 1.0e-4, lr_scheduler: linear, warmup_ratio: 0.1, weight_decay: 0.01,
           max_grad_norm: 0.5, max_seq_len: 512, packing: false, seed: 7,
           activation_checkpointing: true}
checkpoints: {every_steps: 10, keep: 2}
resources: {trainers: 2, priority: 5}
)";
  auto spec = ParseJobSpec(kYaml, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "support-bot");
  EXPECT_EQ(spec->validation_dataset, "");
  EXPECT_EQ(spec->lora.ExpandedTargets(), (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_TRUE(spec->lora.rslora);
  EXPECT_EQ(*spec->training.max_steps, 50);
  EXPECT_EQ(spec->training.seed, 7);
  EXPECT_FALSE(spec->training.packing);
  EXPECT_TRUE(spec->training.activation_checkpointing);
  EXPECT_EQ(spec->resources.trainers, 2);
  EXPECT_TRUE(spec->Validate().ok()) << spec->Validate();
  // The YAML written back parses to the same spec.
  auto again = ParseJobSpec(JobSpecToYaml(*spec), "roundtrip");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(JobSpecToYaml(*again), JobSpecToYaml(*spec));
  EXPECT_TRUE(again->training.activation_checkpointing);
}

TEST(JobSpecTest, ActivationCheckpointing) {
  const struct {
    const char* training;
    bool expected;
  } kCases[] = {
      {"{activation_checkpointing: true}", true},
      {"{activation_checkpointing: false}", false},
      {"{micro_batch_size: 2}", false},  // absent: off
      {"{activation_checkpointing: yes}", true},  // the spellings every boolean field takes
  };
  for (const auto& c : kCases) {
    auto spec = ParseJobSpec(herd::StrCat("base_model: m\ndataset: d\ntraining: ", c.training, "\n"), "job.yaml");
    ASSERT_TRUE(spec.ok()) << c.training << ": " << spec.status();
    EXPECT_EQ(spec->training.activation_checkpointing, c.expected) << c.training;
    // The YAML written back keeps it.
    auto again = ParseJobSpec(JobSpecToYaml(*spec), "roundtrip");
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->training.activation_checkpointing, c.expected) << c.training;
  }
}

struct BadCase {
  const char* yaml;
  const char* expected;  // substring of the error
};

TEST(JobSpecTest, ParseErrorsNameFileLineAndField) {
  const BadCase kCases[] = {
      {"base_model: m\ndataset: d\ntraining:\n  learning_rate: fast\n",
       "job.yaml:4: training.learning_rate: expected a number, got 'fast'"},
      {"base_model: m\ndataset: d\ntraining: {leraning_rate: 0.1}\n",
       "training.leraning_rate: unknown field"},
      {"base_model: m\nbogus: 1\n", "job.yaml:2: bogus: unknown field"},
      {"base_model: m\nlora: 3\n", "lora: expected a mapping"},
      {"base_model: [m\n", "job.yaml:"},
      {"base_model: m\ntraining: {epochs: 1.5}\n", "training.epochs: expected an integer"},
      {"base_model: m\ntrain_on_inputs: maybe\n", "train_on_inputs: expected true or false"},
      {"base_model: m\ntraining:\n  activation_checkpointing: 1\n",
       "job.yaml:3: training.activation_checkpointing: expected true or false, got '1'"},
      {"base_model: m\ntraining: {activation_checkpointing: sometimes}\n",
       "training.activation_checkpointing: expected true or false"},
      {"base_model: m\ntraining: {activation_checkpointing: [true]}\n",
       "training.activation_checkpointing: expected true or false"},
      {"base_model: m\ntraining: {activation_checkpoint: true}\n",
       "training.activation_checkpoint: unknown field"},
  };
  for (const BadCase& c : kCases) {
    auto spec = ParseJobSpec(c.yaml, "job.yaml");
    ASSERT_FALSE(spec.ok()) << c.yaml;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find(c.expected), std::string::npos)
        << "got: " << spec.status().message() << "\nwant: " << c.expected;
  }
}

TEST(JobSpecTest, ValidateNamesTheField) {
  const BadCase kCases[] = {
      {"dataset: d\n", "base_model: required"},
      {"base_model: m\ndataset: d\nlora: {r: 0}\n", "lora.r"},
      {"base_model: m\ndataset: d\nlora: {target_modules: [qkv]}\n", "unknown module 'qkv'"},
      {"base_model: m\ndataset: d\ntraining: {micro_batch_size: 3, global_batch_size: 8}\n",
       "training.global_batch_size: must be a multiple of micro_batch_size"},
      {"base_model: m\ndataset: d\ntraining: {lr_scheduler: step}\n", "training.lr_scheduler"},
      {"base_model: m\ndataset: d\nformat: csv\n", "format: 'csv'"},
      {"base_model: m\ndataset: d\nresources: {trainers: 3}\n", "micro_batch_size x resources.trainers"},
  };
  for (const BadCase& c : kCases) {
    auto spec = ParseJobSpec(c.yaml, "job.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status();
    absl::Status s = spec->Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_NE(s.message().find(c.expected), std::string::npos)
        << "got: " << s.message() << "\nwant: " << c.expected;
  }
}

}  // namespace
}  // namespace herd
