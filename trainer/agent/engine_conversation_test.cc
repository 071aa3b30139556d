// EngineConversation: the protocol rules the agent enforces on engine lines (engine_protocol.md
// §4, §9), the exit reasons of §7, and the UTF-8 tail of the engine's log.
#include "trainer/agent/engine_conversation.h"

#include <filesystem>

#include "common/file_util.h"
#include "gtest/gtest.h"

namespace herd::agent {
namespace {

namespace v1 = herd::v1;
using nlohmann::json;

json Line(const std::string& type, json fields = json::object()) {
  fields["v"] = 1;
  fields["type"] = type;
  return fields;
}

json Progress(int64_t step) { return Line("progress", {{"step", step}, {"loss", 1.5}, {"tokens", 10}}); }

TEST(EngineConversationTest, AcceptsAWholeSession) {
  EngineConversation c(1, "/scratch/checkpoints");
  EXPECT_EQ(c.Accept(Line("hello")), "");
  EXPECT_EQ(c.Accept(Line("phase", {{"phase", "rendezvous"}})), "");
  EXPECT_EQ(c.phase(), v1::ASSIGNMENT_PHASE_RENDEZVOUS);
  EXPECT_EQ(c.Accept(Line("rendezvous_get", {{"key", "cpu_group"}, {"timeout_seconds", 30}})), "");
  EXPECT_TRUE(c.waiting_on_agent());
  c.Answered("cpu_group");
  EXPECT_FALSE(c.waiting_on_agent());
  EXPECT_EQ(c.Accept(Line("phase", {{"phase", "training"}})), "");
  EXPECT_EQ(c.Accept(Progress(1)), "");
  EXPECT_EQ(c.Accept(Progress(2)), "");
  EXPECT_EQ(c.Accept(Line("some_future_message")), "");  // unknown types are ignored
  EXPECT_EQ(c.Accept(Line("exit", {{"reason", "completed"}, {"step", 2}})), "");
  const v1::ReportEngineExitRequest r = c.ExitReport(0, 0, false, "", "");
  EXPECT_EQ(r.reason(), v1::ENGINE_EXIT_REASON_COMPLETED);
  EXPECT_EQ(r.step(), 2);
  EXPECT_EQ(r.exit_code(), 0);
  EXPECT_FALSE(r.has_signal());
}

TEST(EngineConversationTest, FindsViolations) {
  struct Case {
    const char* what;
    std::vector<json> lines;  // the last one must be refused
  };
  const std::vector<Case> cases = {
      {"before hello", {Progress(1)}},
      {"second hello", {Line("hello"), Line("hello")}},
      {"after exit", {Line("hello"), Line("exit", {{"reason", "cancelled"}}), Line("phase", {{"phase", "x"}})}},
      {"step backwards", {Line("hello"), Progress(2), Progress(2)}},
      {"step not an integer", {Line("hello"), Line("progress", {{"step", "3"}})}},
      {"eval ahead of progress", {Line("hello"), Progress(1), Line("eval", {{"step", 2}})}},
      {"two requests for one key",
       {Line("hello"), Line("rendezvous_put", {{"key", "k"}, {"value", "v"}}),
        Line("rendezvous_get", {{"key", "k"}, {"timeout_seconds", 1}})}},
      {"checkpoint outside the folder",
       {Line("hello"), Progress(1),
        Line("checkpoint", {{"step", 1}, {"final", false}, {"dir", "/elsewhere/step-00000001"}, {"files", json::array()}})}},
      {"checkpoint file missing",
       {Line("hello"), Progress(1),
        Line("checkpoint", {{"step", 1}, {"final", true}, {"dir", "/scratch/checkpoints/step-00000001"},
                            {"files", {{{"name", "adapter_model.safetensors"}, {"size_bytes", 4}, {"sha256", "ab"}}}}})}},
      {"error without code", {Line("hello"), Line("error", {{"message", "m"}})}},
  };
  for (const Case& c : cases) {
    EngineConversation conv(0, "/scratch/checkpoints");
    for (size_t i = 0; i + 1 < c.lines.size(); ++i) ASSERT_EQ(conv.Accept(c.lines[i]), "") << c.what;
    EXPECT_NE(conv.Accept(c.lines.back()), "") << c.what;
  }
}

TEST(EngineConversationTest, CheckpointsOnlyFromRankZeroWithTheirFiles) {
  const std::string dir = ::testing::TempDir() + "/conv-test/checkpoints";
  std::filesystem::create_directories(dir + "/step-00000001");
  ASSERT_TRUE(WriteFileAtomic(dir + "/step-00000001/adapter_model.safetensors", "abcd").ok());
  const json ckpt = Line("checkpoint", {{"step", 1}, {"final", true}, {"dir", dir + "/step-00000001"},
                                        {"files", {{{"name", "adapter_model.safetensors"}, {"size_bytes", 4},
                                                    {"sha256", "00"}}}}});
  EngineConversation rank0(0, dir), rank1(1, dir);
  for (EngineConversation* c : {&rank0, &rank1}) {
    ASSERT_EQ(c->Accept(Line("hello")), "");
    ASSERT_EQ(c->Accept(Progress(1)), "");
  }
  EXPECT_EQ(rank0.Accept(ckpt), "");
  EXPECT_TRUE(rank0.saw_final_checkpoint());
  EXPECT_NE(rank0.Accept(ckpt), "") << "a second final checkpoint";
  EXPECT_NE(rank1.Accept(ckpt), "") << "rank 1 writes no checkpoints";
}

TEST(EngineConversationTest, ExitReasons) {
  auto session = [](std::vector<json> lines) {
    auto c = std::make_unique<EngineConversation>(1, "/s/checkpoints");
    EXPECT_EQ(c->Accept(Line("hello")), "");
    for (const json& l : lines) EXPECT_EQ(c->Accept(l), "");
    return c;
  };
  const json oom = Line("error", {{"code", "RESOURCE_EXHAUSTED"}, {"message", "CUDA out of memory"}});
  auto r = session({oom, Line("exit", {{"reason", "error"}, {"step", 3}})})->ExitReport(1, 0, false, "", "");
  EXPECT_EQ(r.reason(), v1::ENGINE_EXIT_REASON_ERROR);
  EXPECT_EQ(r.failure().code(), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(r.failure().message(), "CUDA out of memory");

  const json hang = Line("error", {{"code", "DEADLINE_EXCEEDED"}, {"message", "all_reduce #7"}});
  r = session({hang, Line("exit", {{"reason", "watchdog"}})})->ExitReport(1, 0, false, "", "");
  EXPECT_EQ(r.reason(), v1::ENGINE_EXIT_REASON_WATCHDOG);
  EXPECT_EQ(r.failure().code(), "DEADLINE_EXCEEDED");

  r = session({Progress(1)})->ExitReport(0, 11, false, "", "");
  EXPECT_EQ(r.reason(), v1::ENGINE_EXIT_REASON_CRASHED);
  EXPECT_EQ(r.signal(), 11);
  EXPECT_FALSE(r.has_exit_code());
  EXPECT_EQ(r.step(), 1);

  r = session({Line("exit", {{"reason", "completed"}})})->ExitReport(3, 0, false, "", "");
  EXPECT_EQ(r.reason(), v1::ENGINE_EXIT_REASON_CRASHED) << "a code that does not match the exit line";
  EXPECT_EQ(r.exit_code(), 3);

  EXPECT_EQ(session({})->ExitReport(0, 0, false, "", "").reason(), v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION)
      << "code 0 without an exit line";
  EXPECT_EQ(session({})->ExitReport(0, 9, true, "", "").reason(), v1::ENGINE_EXIT_REASON_CANCELLED);
  EXPECT_EQ(session({})->ExitReport(0, 9, false, "", "silent").reason(), v1::ENGINE_EXIT_REASON_HUNG);
  EXPECT_EQ(session({})->ExitReport(0, 9, false, "bad line", "").reason(), v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION);

  // Rank 0 must have sent its final checkpoint before exiting completed.
  EngineConversation rank0(0, "/s/checkpoints");
  ASSERT_EQ(rank0.Accept(Line("hello")), "");
  ASSERT_EQ(rank0.Accept(Line("exit", {{"reason", "completed"}})), "");
  EXPECT_EQ(rank0.ExitReport(0, 0, false, "", "").reason(), v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION);
}

TEST(EngineConversationTest, ProgressBecomesAPoint) {
  const json p = Line("progress", {{"step", 7}, {"total_steps", 20}, {"epoch", 0.35}, {"loss", nullptr}, {"lr", 1e-4},
                                   {"grad_norm", 0.5}, {"tokens", 512}, {"trained_tokens", 900}, {"step_seconds", 0.2},
                                   {"mfu", nullptr}, {"device_memory_bytes", nullptr}});
  const v1::ProgressPoint point = ProgressFromLine(p, 3, absl::FromUnixSeconds(1000));
  EXPECT_EQ(point.rank(), 3);
  EXPECT_EQ(point.step(), 7);
  EXPECT_FALSE(point.has_loss());
  EXPECT_DOUBLE_EQ(point.grad_norm(), 0.5);
  EXPECT_DOUBLE_EQ(point.learning_rate(), 1e-4);
  EXPECT_EQ(point.trained_tokens(), 900);
  EXPECT_FALSE(point.has_mfu());
  EXPECT_EQ(point.time().seconds(), 1000);
}

TEST(EngineConversationTest, Utf8TailIsValidAndBounded) {
  EXPECT_EQ(Utf8Tail("hello", 3), "llo");
  EXPECT_EQ(Utf8Tail("a\xc3\xa9z", 3), "\xc3\xa9z");
  EXPECT_EQ(Utf8Tail("a\xc3\xa9z", 2), "z") << "a cut character is dropped";
  EXPECT_EQ(Utf8Tail("x\xff\xc0\x80y", 16), "x???y");
  EXPECT_EQ(Utf8Tail("\xed\xa0\x80", 16), "???") << "surrogates are not UTF-8";
}

}  // namespace
}  // namespace herd::agent
