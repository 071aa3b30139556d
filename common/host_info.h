// Facts about the machine and this process that the engine, the agent and the benchmarks report:
// the CPU's model name, the host's memory and /proc/self/status figures (resident set and its peak).
#ifndef HERD_COMMON_HOST_INFO_H_
#define HERD_COMMON_HOST_INFO_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace herd {

// /proc/cpuinfo's first "model name", or "cpu" where there is none.
std::string CpuModelName();

// Physical memory of the host in bytes; 0 where the system does not say.
int64_t HostMemoryBytes();

// A "VmRSS:"-style line of /proc/self/status in bytes (e.g. "VmHWM:", the peak resident set);
// -1 where there is none.
int64_t ProcStatusBytes(std::string_view key);

}  // namespace herd

#endif  // HERD_COMMON_HOST_INFO_H_
