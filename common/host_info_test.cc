// Host facts as this process sees them.
#include "common/host_info.h"

#include <vector>

#include "gtest/gtest.h"

namespace herd {
namespace {

TEST(HostInfoTest, CpuAndMemory) {
  EXPECT_FALSE(CpuModelName().empty());
  EXPECT_GT(HostMemoryBytes(), int64_t{1} << 28);
}

TEST(HostInfoTest, ResidentSetAndItsPeak) {
  const int64_t rss = ProcStatusBytes("VmRSS:");
  EXPECT_GT(rss, 0);
  std::vector<char> touched(64 << 20, 1);  // 64 MiB resident
  EXPECT_GE(ProcStatusBytes("VmHWM:"), rss + (int64_t{60} << 20)) << int(touched[1234]);
  EXPECT_EQ(ProcStatusBytes("NoSuchKey:"), -1);
}

}  // namespace
}  // namespace herd
