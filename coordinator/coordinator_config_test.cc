// coordinator.yaml: defaults, overrides and errors naming the field.
#include "coordinator/coordinator_config.h"

#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

TEST(CoordinatorConfigTest, EmptyFileGivesLoopbackDefaults) {
  auto c = ParseCoordinatorConfig("", "coordinator.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "127.0.0.1:7070");
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:9400");
  EXPECT_EQ(c->trainer_grace_seconds, 60);
  EXPECT_TRUE(c->Validate().ok());
}

TEST(CoordinatorConfigTest, ReadsFields) {
  auto c = ParseCoordinatorConfig(
      "listen: 0.0.0.0:7443\ndata_dir: /var/lib/herd\ntls: {cert_file: c.pem, key_file: k.pem}\n"
      "trainer_grace_seconds: 120\n",
      "coordinator.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "0.0.0.0:7443");
  EXPECT_EQ(c->tls.cert_file, "c.pem");
  EXPECT_EQ(c->trainer_grace_seconds, 120);
  EXPECT_TRUE(c->Validate().ok());
}

TEST(CoordinatorConfigTest, MetricsFieldsAndTheDiscoveryFileDefault) {
  auto c = ParseCoordinatorConfig("data_dir: /d\nmetrics_listen: 127.0.0.1:0\nmetrics_ready_file: /tmp/m\n",
                                  "coordinator.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->metrics_listen, "127.0.0.1:0");
  EXPECT_EQ(c->metrics_ready_file, "/tmp/m");
  EXPECT_EQ(c->EffectiveFileSdPath(), "/d/prometheus/trainers.json");
  c = ParseCoordinatorConfig("file_sd_path: /etc/prometheus/herd.json\n", "coordinator.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->EffectiveFileSdPath(), "/etc/prometheus/herd.json");
}

TEST(CoordinatorConfigTest, ErrorsNameTheField) {
  struct Case {
    const char* yaml;
    const char* want;
  };
  for (const Case& k : {Case{"lisen: x\n", "coordinator.yaml:1: lisen: unknown field"},
                        Case{"heartbeat_seconds: often\n", "heartbeat_seconds: expected an integer"},
                        Case{"tls: {cert_file: c.pem}\n", "tls: cert_file and key_file go together"},
                        Case{"heartbeat_seconds: 20\n", "trainer_lease_seconds: must be at least twice"}}) {
    auto c = ParseCoordinatorConfig(k.yaml, "coordinator.yaml");
    absl::Status s = c.ok() ? c->Validate() : c.status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.yaml;
    EXPECT_NE(std::string(s.message()).find(k.want), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace herd::coordinator
