// The engine protocol's shared part: assignments survive a round trip, and a bad one names the
// field; lines are framed and versioned.
#include "common/engine_protocol.h"

#include "gtest/gtest.h"

namespace herd {
namespace {

EngineAssignment Sample() {
  EngineAssignment a;
  a.job_id = "job_1";
  a.generation = 3;
  a.rank = 1;
  a.world_size = 2;
  a.model_name = "tiny";
  a.model_dir = "/m";
  a.train_data = "/d/train";
  a.lora.r = 4;
  a.lora.target_modules = {"q_proj", "v_proj"};
  a.training.max_steps = 9;
  a.total_steps = 9;
  a.resume_step = 3;
  a.resume_dir = "/r";
  a.scratch_dir = "/s";
  return a;
}

TEST(EngineProtocolTest, AssignmentRoundTrip) {
  nlohmann::json j = AssignmentToJson(Sample());
  EXPECT_EQ(j["v"], kEngineProtocolVersion);
  EXPECT_EQ(j["type"], "assignment");
  EXPECT_TRUE(j["data"]["validation"].is_null());
  auto back = AssignmentFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(AssignmentToJson(*back), j);
  EXPECT_EQ(back->lora.ExpandedTargets(), (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(*back->resume_step, 3);
}

TEST(EngineProtocolTest, ActivationCheckpointingIsTheTrainingField) {
  EngineAssignment a = Sample();
  EXPECT_EQ(AssignmentToJson(a)["activation_checkpointing"], false);
  a.training.activation_checkpointing = true;
  nlohmann::json j = AssignmentToJson(a);
  EXPECT_EQ(j["activation_checkpointing"], true);
  auto back = AssignmentFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->training.activation_checkpointing);
  // Optional: an agent that does not send it means off.
  j.erase("activation_checkpointing");
  back = AssignmentFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_FALSE(back->training.activation_checkpointing);
}

TEST(EngineProtocolTest, WeightsDtypeIsOptional) {
  EngineAssignment a = Sample();
  EXPECT_FALSE(AssignmentToJson(a).contains("weights_dtype")) << "by device: older engines read it unchanged";
  a.weights_dtype = "bf16";
  auto back = AssignmentFromJson(AssignmentToJson(a));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->weights_dtype, "bf16");
}

TEST(EngineProtocolTest, BadAssignmentsNameTheField) {
  struct Case {
    std::function<void(nlohmann::json&)> mutate;
    const char* want;
  };
  const Case kCases[] = {
      {[](nlohmann::json& j) { j.erase("job_id"); }, "job_id is missing"},
      {[](nlohmann::json& j) { j["lora"]["r"] = "sixteen"; }, "lora.r is string"},
      {[](nlohmann::json& j) { j["model"] = 3; }, "model must be an object"},
      {[](nlohmann::json& j) { j["rank"] = 2; }, "rank 2 of world_size 2"},
      {[](nlohmann::json& j) { j["collective"]["backend"] = "gloo"; }, "'gloo' is not tcp or nccl"},
      {[](nlohmann::json& j) { j["training"].erase("seed"); }, "training.seed is missing"},
      {[](nlohmann::json& j) { j["activation_checkpointing"] = "yes"; }, "activation_checkpointing is string"},
      {[](nlohmann::json& j) { j["weights_dtype"] = "fp8"; }, "weights_dtype 'fp8' is not bf16 or fp32"},
  };
  for (const Case& c : kCases) {
    nlohmann::json j = AssignmentToJson(Sample());
    c.mutate(j);
    auto a = AssignmentFromJson(j);
    ASSERT_FALSE(a.ok()) << c.want;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(a.status().message()).find(c.want), std::string::npos) << a.status();
  }
}

TEST(EngineProtocolTest, ParsesLines) {
  EXPECT_TRUE(ParseProtocolLine(R"({"v":1,"type":"hello"})").ok());
  EXPECT_FALSE(ParseProtocolLine("not json").ok());
  EXPECT_FALSE(ParseProtocolLine(R"({"type":"hello"})").ok());
  EXPECT_FALSE(ParseProtocolLine(R"({"v":2,"type":"hello"})").ok());
  EXPECT_FALSE(ParseProtocolLine(std::string(kMaxProtocolLineBytes + 1, ' ')).ok());
}

TEST(EngineProtocolTest, StatusCodeNames) {
  EXPECT_EQ(StatusCodeFromName("DEADLINE_EXCEEDED"), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(StatusCodeFromName("OUT_OF_RANGE"), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(StatusCodeFromName("nonsense"), absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace herd
