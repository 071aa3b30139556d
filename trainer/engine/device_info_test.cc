// The MFU denominators by GPU name, and what a CPU engine reports about itself.
#include "trainer/engine/device_info.h"

#include <gtest/gtest.h>

namespace herd::engine {
namespace {

TEST(DeviceInfoTest, PeakBf16FlopsByName) {
  EXPECT_EQ(PeakBf16Flops("NVIDIA H100 80GB HBM3"), 989.4e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA H100 PCIe"), 756e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA H100 NVL"), 835.5e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA H200"), 989.4e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA GeForce RTX 4090"), std::nullopt) << "unknown: no guess";
  EXPECT_EQ(PeakBf16Flops("AMD EPYC 7B13"), std::nullopt);
}

TEST(DeviceInfoTest, CpuDescribesTheHost) {
  const DeviceInfo d = DescribeDevice("cpu");
  EXPECT_EQ(d.kind, "cpu");
  EXPECT_FALSE(d.name.empty());
  EXPECT_GT(d.memory_bytes, int64_t{1} << 28);
  EXPECT_GT(TakeStepPeakMemory("cpu"), 0) << "the process's peak resident set";
}

}  // namespace
}  // namespace herd::engine
