// RelayRendezvous against the fake coordinator: a put then a get, a get that times out, a put of
// a key holding another value, and the answers the engine expects for each.
#include "trainer/agent/rendezvous_relay.h"

#include "gtest/gtest.h"
#include "trainer/agent/fake_coordinator.h"

namespace herd::agent {
namespace {

using nlohmann::json;

class RendezvousRelayTest : public ::testing::Test {
 protected:
  RendezvousRelayOptions Options() {
    RendezvousRelayOptions o{.trainer_id = "tr_1", .wait_chunk = absl::Milliseconds(50),
                             .retry_backoff = absl::Milliseconds(1)};
    o.ref.set_job_id("job_1");
    o.pause = [](absl::Duration) { return false; };
    return o;
  }
  FakeCoordinator fake_;
};

TEST_F(RendezvousRelayTest, PutThenGet) {
  auto put = RelayRendezvous(fake_, Options(), {{"type", "rendezvous_put"}, {"key", "cpu_group"}, {"value", "a:1"}});
  ASSERT_TRUE(put.has_value());
  EXPECT_EQ(*put, json({{"value", "a:1"}}));
  auto get = RelayRendezvous(fake_, Options(), {{"type", "rendezvous_get"}, {"key", "cpu_group"}, {"timeout_seconds", 5}});
  ASSERT_TRUE(get.has_value());
  EXPECT_EQ(*get, json({{"value", "a:1"}}));
}

TEST_F(RendezvousRelayTest, GetPastItsTimeoutIsDeadlineExceeded) {
  // Several waits of 50 ms within the engine's 0.2 s.
  auto get = RelayRendezvous(fake_, Options(), {{"type", "rendezvous_get"}, {"key", "k"}, {"timeout_seconds", 0.2}});
  ASSERT_TRUE(get.has_value());
  EXPECT_EQ((*get)["error"]["code"], "DEADLINE_EXCEEDED");
}

TEST_F(RendezvousRelayTest, ConflictingPutIsAlreadyExists) {
  ASSERT_TRUE(RelayRendezvous(fake_, Options(), {{"type", "rendezvous_put"}, {"key", "k"}, {"value", "1"}}));
  auto put = RelayRendezvous(fake_, Options(), {{"type", "rendezvous_put"}, {"key", "k"}, {"value", "2"}});
  ASSERT_TRUE(put.has_value());
  EXPECT_EQ((*put)["error"]["code"], "ALREADY_EXISTS");
}

TEST_F(RendezvousRelayTest, NoAnswerOnceTheEngineIsGone) {
  RendezvousRelayOptions o = Options();
  o.pause = [](absl::Duration) { return true; };
  EXPECT_FALSE(RelayRendezvous(fake_, o, {{"type", "rendezvous_get"}, {"key", "k"}, {"timeout_seconds", 5}}));
}

}  // namespace
}  // namespace herd::agent
