// Safetensors parsing and serialisation. The checks follow the reference implementation
// (huggingface/safetensors, Metadata::validate): tensors sorted by offset must tile the data
// buffer exactly, and each tensor's byte count must equal numel * element size.
#include "common/safetensors.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace herd {
namespace {

using nlohmann::json;

struct DtypeEntry {
  Dtype dtype;
  std::string_view name;
  size_t size;
};

constexpr std::array<DtypeEntry, 10> kDtypes = {{
    {Dtype::kF64, "F64", 8},
    {Dtype::kF32, "F32", 4},
    {Dtype::kF16, "F16", 2},
    {Dtype::kBF16, "BF16", 2},
    {Dtype::kI64, "I64", 8},
    {Dtype::kI32, "I32", 4},
    {Dtype::kI16, "I16", 2},
    {Dtype::kI8, "I8", 1},
    {Dtype::kU8, "U8", 1},
    {Dtype::kBool, "BOOL", 1},
}};

const DtypeEntry& EntryOf(Dtype dtype) { return kDtypes[static_cast<size_t>(dtype)]; }

// numel and byte count of a shape, or false when either overflows (hostile headers).
bool ByteCount(const std::vector<int64_t>& shape, Dtype dtype, uint64_t* numel, uint64_t* bytes) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  if (n > static_cast<uint64_t>(INT64_MAX)) return false;
  *numel = n;
  return !__builtin_mul_overflow(n, static_cast<uint64_t>(DtypeSize(dtype)), bytes);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppendFormat(&s, "%s%d", i ? ", " : "", shape[i]);
  return s + "]";
}

// Reads a non-negative JSON integer; floats, negatives and out-of-range numbers are rejected.
bool AsUnsigned(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  *out = v.get<uint64_t>();
  return true;
}

// Parses the header JSON, remembering the first key repeated inside any object: nlohmann keeps
// the last value silently, which would let two tensors hide behind one name.
absl::StatusOr<json> ParseHeaderJson(std::string_view text, std::string* duplicate) {
  std::vector<std::set<std::string>> open_objects;
  json::parser_callback_t cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key && duplicate->empty() && !open_objects.empty()) {
      if (!open_objects.back().insert(parsed.get<std::string>()).second) {
        *duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("header is not valid JSON: %s", e.what()));
  }
}

// Checks one "name": {...} entry against the buffer and fills `t` (data span left empty).
absl::Status ParseEntry(const std::string& name, const json& v, uint64_t buffer_size,
                        SafetensorsTensor* t) {
  t->name = name;
  if (!v.is_object()) return absl::InvalidArgumentError("entry is not a JSON object");
  auto dtype_it = v.find("dtype");
  if (dtype_it == v.end() || !dtype_it->is_string()) {
    return absl::InvalidArgumentError("\"dtype\" is missing or not a string");
  }
  HERD_ASSIGN_OR_RETURN(t->dtype, DtypeFromName(dtype_it->get<std::string>()));

  auto shape_it = v.find("shape");
  if (shape_it == v.end() || !shape_it->is_array()) {
    return absl::InvalidArgumentError("\"shape\" is missing or not an array");
  }
  for (const json& d : *shape_it) {
    uint64_t dim;
    if (!AsUnsigned(d, &dim) || dim > static_cast<uint64_t>(INT64_MAX)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("shape %s has a dimension that is not a non-negative integer", shape_it->dump()));
    }
    t->shape.push_back(static_cast<int64_t>(dim));
  }

  auto off_it = v.find("data_offsets");
  if (off_it == v.end() || !off_it->is_array() || off_it->size() != 2 ||
      !AsUnsigned((*off_it)[0], &t->begin) || !AsUnsigned((*off_it)[1], &t->end)) {
    return absl::InvalidArgumentError(
        "\"data_offsets\" is missing or not a pair of non-negative integers [begin, end]");
  }
  if (t->end < t->begin) {
    return absl::InvalidArgumentError(
        absl::StrFormat("data_offsets [%d, %d] end before they begin", t->begin, t->end));
  }
  if (t->end > buffer_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "data_offsets [%d, %d] run past the end of the %d-byte data buffer", t->begin, t->end,
        buffer_size));
  }
  uint64_t numel, nbytes;
  if (!ByteCount(t->shape, t->dtype, &numel, &nbytes)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("shape %s overflows a 64-bit byte count", ShapeString(t->shape)));
  }
  if (t->end - t->begin != nbytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "shape %s of %s needs %d bytes but data_offsets [%d, %d] span %d", ShapeString(t->shape),
        DtypeName(t->dtype), nbytes, t->begin, t->end, t->end - t->begin));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view DtypeName(Dtype dtype) { return EntryOf(dtype).name; }
size_t DtypeSize(Dtype dtype) { return EntryOf(dtype).size; }

absl::StatusOr<Dtype> DtypeFromName(std::string_view name) {
  for (const DtypeEntry& e : kDtypes) {
    if (e.name == name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "unsupported dtype \"%s\" (Herd reads F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)", name));
}

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated against overflow when parsed or added
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->source_ = path;
  HERD_ASSIGN_OR_RETURN(file->mapped_, MappedFile::Open(path));
  HERD_RETURN_IF_ERROR(file->Init(file->mapped_->data(), file->mapped_->size()));
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(std::string bytes,
                                                                       std::string source) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->source_ = std::move(source);
  file->owned_ = std::move(bytes);  // moved before taking pointers: SSO moves change data()
  HERD_RETURN_IF_ERROR(file->Init(reinterpret_cast<const uint8_t*>(file->owned_.data()),
                                  file->owned_.size()));
  return file;
}

absl::Status SafetensorsFile::Init(const uint8_t* bytes, size_t size) {
  auto error = [this](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", source_, what));
  };
  if (size < 8) {
    return error(absl::StrFormat("file is %d bytes, too short for the 8-byte header length", size));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kSafetensorsMaxHeaderBytes) {
    return error(absl::StrFormat("header length %d exceeds the limit of %d bytes", header_len,
                                 kSafetensorsMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return error(absl::StrFormat("header length %d runs past the end of the %d-byte file",
                                 header_len, size));
  }
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_len);
  std::string duplicate;
  absl::StatusOr<json> header = ParseHeaderJson(text, &duplicate);
  if (!header.ok()) return error(std::string(header.status().message()));
  if (!header->is_object()) return error("header is not a JSON object");
  if (!duplicate.empty()) return error(absl::StrFormat("header repeats the key \"%s\"", duplicate));

  const uint8_t* buffer = bytes + 8 + header_len;
  const uint64_t buffer_size = size - 8 - header_len;
  for (const auto& [key, value] : header->items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return error("__metadata__ is not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return error(absl::StrFormat("__metadata__ value for \"%s\" is not a string", mk));
        }
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    SafetensorsTensor t;
    absl::Status s = ParseEntry(key, value, buffer_size, &t);
    if (!s.ok()) return error(absl::StrFormat("tensor \"%s\": %s", key, s.message()));
    t.data = std::span<const uint8_t>(buffer + t.begin, t.end - t.begin);
    tensors_.push_back(std::move(t));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Tensors in offset order must tile the buffer: each starts where the previous one ended.
  uint64_t covered = 0;
  const SafetensorsTensor* last = nullptr;
  for (const SafetensorsTensor& t : tensors_) {
    if (t.begin < covered) {
      return error(absl::StrFormat(
          "tensor \"%s\": data_offsets [%d, %d] overlap tensor \"%s\" at [%d, %d]", t.name,
          t.begin, t.end, last->name, last->begin, last->end));
    }
    if (t.begin > covered) {
      return error(absl::StrFormat(
          "tensor \"%s\": data_offsets [%d, %d] leave bytes [%d, %d) of the data buffer unused "
          "(a hole)",
          t.name, t.begin, t.end, covered, t.begin));
    }
    covered = t.end;
    last = &t;
  }
  if (covered != buffer_size) {
    return error(absl::StrFormat(
        "bytes [%d, %d) at the end of the data buffer belong to no tensor (a hole)", covered,
        buffer_size));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const SafetensorsTensor& t : tensors_) out.push_back(t.name);
  return out;
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const SafetensorsTensor*> SafetensorsFile::Get(std::string_view name) const {
  const SafetensorsTensor* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrFormat("%s: no tensor named \"%s\"", source_, name));
  }
  return t;
}

absl::Status SafetensorsWriter::Add(std::string name, Dtype dtype, std::vector<int64_t> shape,
                                    std::string bytes) {
  if (name == "__metadata__") {
    return absl::InvalidArgumentError("\"__metadata__\" is reserved and cannot name a tensor");
  }
  try {
    (void)json(name).dump();  // the header is JSON: names must be valid UTF-8
  } catch (const json::exception&) {
    return absl::InvalidArgumentError("a tensor name is not valid UTF-8");
  }
  if (entries_.count(name)) {
    return absl::InvalidArgumentError(absl::StrFormat("tensor \"%s\" was added twice", name));
  }
  uint64_t numel, nbytes;
  if (!ByteCount(shape, dtype, &numel, &nbytes)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor \"%s\": shape %s has a negative dimension or overflows", name, ShapeString(shape)));
  }
  if (bytes.size() != nbytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor \"%s\": shape %s of %s needs %d bytes, got %d", name,
                        ShapeString(shape), DtypeName(dtype), nbytes, bytes.size()));
  }
  entries_.emplace(std::move(name), Entry{dtype, std::move(shape), std::move(bytes)});
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Add(std::string name, Dtype dtype, std::vector<int64_t> shape,
                                    const void* data, size_t size) {
  return Add(std::move(name), dtype, std::move(shape),
             std::string(static_cast<const char*>(data), size));
}

std::string SafetensorsWriter::Serialize() const {
  std::vector<const std::pair<const std::string, Entry>*> order;
  for (const auto& kv : entries_) order.push_back(&kv);
  // entries_ is sorted by name, so a stable sort by element size keeps names in order within it.
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return DtypeSize(a->second.dtype) > DtypeSize(b->second.dtype);
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto* kv : order) {
    const Entry& e = kv->second;
    header[kv->first] = {{"dtype", DtypeName(e.dtype)},
                         {"shape", e.shape},
                         {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  // Replace rather than throw on invalid UTF-8 in metadata (names were checked by Add).
  std::string text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + text.size() + offset);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xff));
  out += text;
  for (const auto* kv : order) out += kv->second.bytes;
  return out;
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  return WriteFileAtomic(path, Serialize());
}

}  // namespace herd
