// DescribeTrainerDevice: see device_probe.h.
#include "trainer/agent/device_probe.h"

#include "common/host_info.h"
#include "common/strings.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"

namespace herd::agent {
namespace {

void DescribeHost(herd::v1::DeviceInfo* out) {
  out->set_kind(herd::v1::DEVICE_KIND_CPU);
  out->set_name(CpuModelName());
  out->set_memory_bytes(HostMemoryBytes());
}

// The probe's entry for CUDA device `index`, or why there is none.
std::string ReadProbe(const std::string& text, int index, herd::v1::DeviceInfo* out) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return "its output is not a JSON object";
  auto devices = j.find("devices");
  if (devices == j.end() || !devices->is_array()) return "its output has no devices list";
  for (const nlohmann::json& d : *devices) {
    if (!d.is_object() || d.value("index", -1) != index) continue;
    if (!d.contains("name") || !d["name"].is_string() || !d.contains("memory_bytes") ||
        !d["memory_bytes"].is_number_integer()) {
      return herd::StrCat("device ", index, " has no name or memory_bytes");
    }
    out->set_name(d["name"].get<std::string>());
    out->set_memory_bytes(d["memory_bytes"].get<int64_t>());
    return "";
  }
  return herd::StrCat("it sees no CUDA device ", index, " (", devices->size(), " visible)");
}

}  // namespace

DeviceDescription DescribeTrainerDevice(const std::string& device, const std::string& engine_path,
                                        absl::Duration probe_timeout) {
  DeviceDescription d;
  if (device.rfind("cuda:", 0) != 0) {
    DescribeHost(&d.info);
    return d;
  }
  int index = 0;
  try {
    index = std::stoi(device.substr(5));
  } catch (const std::exception&) {
    index = 0;
  }
  d.info.set_kind(herd::v1::DEVICE_KIND_CUDA);
  d.info.set_index(index);
  d.info.set_name(device);
  auto probe = RunSubprocess({.argv = {engine_path, "--probe"}, .timeout = probe_timeout});
  std::string why;
  if (!probe.ok()) {
    why = std::string(probe.status().message());
  } else if (!probe->ok()) {
    why = herd::StrCat("it exited with ", probe->exit_code, probe->signal ? herd::StrCat(" (signal ", probe->signal, ")") : "",
                       ": ", probe->stderr_text.substr(0, 300));
  } else {
    why = ReadProbe(probe->stdout_text, index, &d.info);
  }
  if (!why.empty()) {
    d.info.set_name(device);
    d.info.set_memory_bytes(0);
    d.warning = herd::StrCat(engine_path, " --probe could not describe ", device, ": ", why);
  }
  return d;
}

}  // namespace herd::agent
