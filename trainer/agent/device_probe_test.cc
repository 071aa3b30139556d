// DescribeTrainerDevice: the host for a CPU trainer; for a GPU the engine's probe (a script here
// stands in for herd-engine --probe), and "cuda:N" with unknown memory, and a warning saying why,
// when the probe cannot tell.
#include "trainer/agent/device_probe.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace herd::agent {
namespace {

class DeviceProbeTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/herd-device-probe-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // An executable that prints `out` (and exits with `code`).
  std::string Engine(const std::string& out, int code = 0) {
    const std::string path = dir_ + "/herd-engine-" + std::to_string(++n_);
    std::ofstream(path) << "#!/bin/sh\ncat <<'EOF'\n" << out << "\nEOF\nexit " << code << "\n";
    ::chmod(path.c_str(), 0755);
    return path;
  }

  std::string dir_;
  int n_ = 0;
};

TEST_F(DeviceProbeTest, CpuIsTheHost) {
  DeviceDescription d = DescribeTrainerDevice("cpu", "/nonexistent/herd-engine");
  EXPECT_EQ(d.info.kind(), herd::v1::DEVICE_KIND_CPU);
  EXPECT_FALSE(d.info.name().empty());
  EXPECT_GT(d.info.memory_bytes(), 0);
  EXPECT_TRUE(d.warning.empty()) << "a CPU trainer runs no probe";
}

TEST_F(DeviceProbeTest, GpuFromTheEnginesProbe) {
  const std::string engine = Engine(
      R"({"cuda_devices":2,"devices":[{"index":0,"name":"NVIDIA H100 80GB HBM3","memory_bytes":85045477376},)"
      R"({"index":1,"name":"NVIDIA H200","memory_bytes":150754820096}]})");
  DeviceDescription d = DescribeTrainerDevice("cuda:1", engine);
  EXPECT_EQ(d.info.kind(), herd::v1::DEVICE_KIND_CUDA);
  EXPECT_EQ(d.info.index(), 1);
  EXPECT_EQ(d.info.name(), "NVIDIA H200");
  EXPECT_EQ(d.info.memory_bytes(), 150754820096);
  EXPECT_TRUE(d.warning.empty()) << d.warning;
}

TEST_F(DeviceProbeTest, AProbeThatCannotTellSaysWhy) {
  struct Case {
    std::string engine;
    const char* want;
  };
  const Case kCases[] = {
      {"/nonexistent/herd-engine", "/nonexistent/herd-engine"},
      {Engine("no json"), "not a JSON object"},
      {Engine(R"({"cuda_devices":0})"), "no devices list"},
      {Engine(R"({"devices":[]})"), "no CUDA device 0 (0 visible)"},
      {Engine(R"({"devices":[{"index":0,"name":"x"}]})"), "no name or memory_bytes"},
      {Engine("{}", 3), "exited with 3"},
  };
  for (const Case& c : kCases) {
    DeviceDescription d = DescribeTrainerDevice("cuda:0", c.engine);
    EXPECT_EQ(d.info.kind(), herd::v1::DEVICE_KIND_CUDA);
    EXPECT_EQ(d.info.name(), "cuda:0");
    EXPECT_EQ(d.info.memory_bytes(), 0);
    EXPECT_NE(d.warning.find(c.want), std::string::npos) << d.warning;
  }
}

}  // namespace
}  // namespace herd::agent
