// Safetensors reader/writer: round trips for every dtype, a table of corrupt files with the error
// each must give, and interop with Hugging Face's `safetensors` package in both directions.
#include "common/safetensors.h"

#include <stdio.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "gtest/gtest.h"
#include "tests/testing/python_script.h"

namespace herd {
namespace {

// A substring check without gmock, which herd_test does not link.
#define EXPECT_CONTAINS(text, sub)                                               \
  EXPECT_NE(std::string(text).find(sub), std::string::npos)                      \
      << "expected \"" << (sub) << "\" in: " << (text)

// Little-endian bytes of a value (the test machines are little-endian, as is the format).
template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// float -> IEEE half for values exactly representable as normal halves or zero (all the test
// values are).
uint16_t HalfBits(float f) {
  uint32_t u = FloatBits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  if ((u & 0x7fffffff) == 0) return sign;
  int exp = static_cast<int>((u >> 23) & 0xff) - 127 + 15;
  return static_cast<uint16_t>(sign | (exp << 10) | ((u >> 13) & 0x3ff));
}

// The value pattern both sides of the interop test generate; tests/python/safetensors_interop.py
// spells the same formulas. Every float value is exact in F16 and BF16.
std::string Pattern(Dtype dtype, int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) {
    const double f = static_cast<double>((i * 5) % 17 - 8) * 0.25;
    switch (dtype) {
      case Dtype::kF64: Put<double>(&out, f); break;
      case Dtype::kF32: Put<float>(&out, static_cast<float>(f)); break;
      case Dtype::kF16: Put<uint16_t>(&out, HalfBits(static_cast<float>(f))); break;
      case Dtype::kBF16:
        Put<uint16_t>(&out, static_cast<uint16_t>(FloatBits(static_cast<float>(f)) >> 16));
        break;
      case Dtype::kI64: Put<int64_t>(&out, i * 3000000019LL - 7000000000LL); break;
      case Dtype::kI32: Put<int32_t>(&out, static_cast<int32_t>(i * 100003 - 50000)); break;
      case Dtype::kI16: Put<int16_t>(&out, static_cast<int16_t>((i * 251) % 65536 - 32768)); break;
      case Dtype::kI8: Put<int8_t>(&out, static_cast<int8_t>((i * 7) % 256 - 128)); break;
      case Dtype::kU8: Put<uint8_t>(&out, static_cast<uint8_t>((i * 13) % 256)); break;
      case Dtype::kBool: Put<uint8_t>(&out, i % 3 == 0 ? 1 : 0); break;
    }
  }
  return out;
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Bytes(std::span<const uint8_t> s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

const Dtype kAllDtypes[] = {Dtype::kF64, Dtype::kF32, Dtype::kF16, Dtype::kBF16, Dtype::kI64,
                            Dtype::kI32, Dtype::kI16, Dtype::kI8,  Dtype::kU8,   Dtype::kBool};

// A fresh directory under the test's temp dir, removed when the test ends.
class TempDir {
 public:
  TempDir() : path_(::testing::TempDir() + "/herd_safetensors_XXXXXX") {
    EXPECT_NE(::mkdtemp(path_.data()), nullptr) << std::strerror(errno);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(SafetensorsTest, DtypeNamesRoundTrip) {
  for (Dtype d : kAllDtypes) {
    auto parsed = DtypeFromName(DtypeName(d));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_CONTAINS(DtypeFromName("U32").status().message(), "unsupported dtype \"U32\"");
}

TEST(SafetensorsTest, RoundTripEveryDtypeAndShape) {
  const std::vector<std::vector<int64_t>> kShapes = {{}, {0}, {1}, {5}, {2, 3}, {0, 4}, {2, 0, 3}};
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  writer.SetMetadata("note", "h\xc3\xa9");
  for (Dtype d : kAllDtypes) {
    for (size_t s = 0; s < kShapes.size(); ++s) {
      std::string name = absl::StrFormat("%s.%d", DtypeName(d), s);
      ASSERT_TRUE(writer.Add(name, d, kShapes[s], Pattern(d, Numel(kShapes[s]))).ok());
    }
  }
  const std::string image = writer.Serialize();
  TempDir tmp;
  const std::string& dir = tmp.path();
  ASSERT_TRUE(writer.Write(dir + "/m.safetensors").ok());

  auto parsed = SafetensorsFile::Parse(image, "image");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto opened = SafetensorsFile::Open(dir + "/m.safetensors");
  ASSERT_TRUE(opened.ok()) << opened.status();
  for (const SafetensorsFile* f : {parsed->get(), opened->get()}) {
    EXPECT_EQ(f->tensors().size(), std::size(kAllDtypes) * kShapes.size());
    EXPECT_EQ(f->metadata().at("format"), "pt");
    EXPECT_EQ(f->metadata().at("note"), "h\xc3\xa9");
    for (Dtype d : kAllDtypes) {
      for (size_t s = 0; s < kShapes.size(); ++s) {
        std::string name = absl::StrFormat("%s.%d", DtypeName(d), s);
        const SafetensorsTensor* t = f->Find(name);
        ASSERT_NE(t, nullptr) << name;
        EXPECT_EQ(t->dtype, d) << name;
        EXPECT_EQ(t->shape, kShapes[s]) << name;
        EXPECT_EQ(t->numel(), Numel(kShapes[s])) << name;
        EXPECT_EQ(Bytes(t->data), Pattern(d, Numel(kShapes[s]))) << name;
        // The writer lays tensors out largest element first, so each is naturally aligned.
        EXPECT_EQ(t->begin % DtypeSize(d), 0u) << name;
      }
    }
  }
  uint64_t header_len;
  std::memcpy(&header_len, image.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
}

TEST(SafetensorsTest, FileOrderLookupAndEmptyFile) {
  SafetensorsWriter writer;
  ASSERT_TRUE(writer.Add("b", Dtype::kF32, {2}, Pattern(Dtype::kF32, 2)).ok());
  ASSERT_TRUE(writer.Add("a", Dtype::kU8, {3}, Pattern(Dtype::kU8, 3)).ok());
  ASSERT_TRUE(writer.Add("c", Dtype::kF64, {1}, Pattern(Dtype::kF64, 1)).ok());
  auto f = SafetensorsFile::Parse(writer.Serialize(), "x.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->names(), (std::vector<std::string>{"c", "b", "a"}));
  EXPECT_EQ((*f)->Find("nope"), nullptr);
  EXPECT_EQ((*f)->Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_CONTAINS((*f)->Get("nope").status().message(), "x.safetensors");
  ASSERT_TRUE((*f)->Get("a").ok());
  EXPECT_TRUE((*f)->metadata().empty());

  auto empty = SafetensorsFile::Parse(SafetensorsWriter().Serialize(), "empty");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE((*empty)->tensors().empty());
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  TempDir tmp;
  auto f = SafetensorsFile::Open(tmp.path() + "/absent.safetensors");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, WriterRejectsBadTensors) {
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("a", Dtype::kF32, {2}, Pattern(Dtype::kF32, 2)).ok());
  struct Case {
    std::string name;
    std::vector<int64_t> shape;
    size_t bytes;
    std::string error;
  };
  const Case kCases[] = {
      {"a", {2}, 8, "added twice"},
      {"__metadata__", {2}, 8, "reserved"},
      {"b", {-1}, 0, "negative dimension"},
      {"c", {3}, 8, "needs 12 bytes, got 8"},
      {"\xff", {}, 4, "not valid UTF-8"},
  };
  for (const Case& c : kCases) {
    absl::Status s = w.Add(c.name, Dtype::kF32, c.shape, std::string(c.bytes, '\0'));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_CONTAINS(s.message(), c.error) << c.name;
  }
}

// A file image from raw header text and a zero-filled buffer.
std::string Image(const std::string& header, size_t buffer_size, uint64_t header_len = ~0ull) {
  std::string out;
  Put<uint64_t>(&out, header_len == ~0ull ? header.size() : header_len);
  return out + header + std::string(buffer_size, '\0');
}

TEST(SafetensorsTest, RejectsCorruptFiles) {
  const std::string kA = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  struct Case {
    std::string what;
    std::string image;
    std::vector<std::string> errors;  // substrings of the message
  };
  const Case kCases[] = {
      {"too short", "abc", {"3 bytes, too short"}},
      {"truncated header", Image("{" + kA + "}", 8, 1000), {"header length 1000 runs past"}},
      {"header too big", Image("{}", 0, 200'000'000), {"exceeds the limit"}},
      {"not json", Image("{nope", 0), {"not valid JSON"}},
      {"non-object json", Image("[1,2]", 0), {"not a JSON object"}},
      {"trailing junk", Image("{} x", 0), {"not valid JSON"}},
      {"empty header", Image("", 0), {"not valid JSON"}},
      {"overlap",
       Image("{" + kA + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"hole between",
       Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12),
       {"tensor \"b\"", "bytes [4, 8)", "hole"}},
      {"hole at start", Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       {"tensor \"a\"", "hole"}},
      {"hole at end", Image("{" + kA + "}", 12), {"bytes [8, 12) at the end", "hole"}},
      {"bad dtype", Image(R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", 8),
       {"tensor \"a\"", "unsupported dtype \"F8_E4M3\""}},
      {"dtype not string", Image(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
       {"tensor \"a\"", "\"dtype\" is missing"}},
      {"missing shape", Image(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8),
       {"tensor \"a\"", "\"shape\" is missing"}},
      {"negative dim", Image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       {"tensor \"a\"", "not a non-negative integer"}},
      {"float dim", Image(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
       {"tensor \"a\"", "not a non-negative integer"}},
      {"size mismatch", Image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       {"tensor \"a\"", "needs 12 bytes", "span 8"}},
      {"shape overflow",
       Image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})",
             8),
       {"tensor \"a\"", "overflows"}},
      {"offsets past end", Image("{" + kA + "}", 4), {"tensor \"a\"", "run past the end of the 4-byte"}},
      {"offsets reversed", Image(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8),
       {"tensor \"a\"", "end before they begin"}},
      {"offsets not a pair",
       Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", 8),
       {"tensor \"a\"", "data_offsets"}},
      {"entry not object", Image(R"({"a":[1]})", 0), {"tensor \"a\"", "not a JSON object"}},
      {"duplicate key", Image("{" + kA + "," + kA + "}", 8), {"repeats the key \"a\""}},
      {"duplicate field",
       Image(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       {"repeats the key \"dtype\""}},
      {"metadata not strings", Image(R"({"__metadata__":{"k":1}})", 0),
       {"__metadata__ value for \"k\" is not a string"}},
      {"metadata not object", Image(R"({"__metadata__":"x"})", 0),
       {"__metadata__ is not a JSON object"}},
      {"invalid utf-8", Image("{\"\xff\":1}", 0), {"not valid JSON"}},
  };
  for (const Case& c : kCases) {
    auto f = SafetensorsFile::Parse(c.image, "bad.safetensors");
    ASSERT_FALSE(f.ok()) << c.what;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_CONTAINS(f.status().message(), "bad.safetensors: ") << c.what;
    for (const std::string& e : c.errors) {
      EXPECT_CONTAINS(f.status().message(), e) << c.what;
    }
  }
}

// The tensors both sides of the interop test write; the Python script has the same table.
struct InteropTensor {
  const char* name;
  Dtype dtype;
  std::vector<int64_t> shape;
};
const InteropTensor kInterop[] = {
    {"f64", Dtype::kF64, {2, 3}},     {"f32", Dtype::kF32, {4, 5}},
    {"f32_scalar", Dtype::kF32, {}},  {"f32_empty", Dtype::kF32, {0, 3}},
    {"f16", Dtype::kF16, {7}},        {"bf16", Dtype::kBF16, {3, 3}},
    {"bf16_scalar", Dtype::kBF16, {}}, {"i64", Dtype::kI64, {5}},
    {"i32", Dtype::kI32, {2, 2}},     {"i16", Dtype::kI16, {10}},
    {"i8", Dtype::kI8, {300}},        {"u8", Dtype::kU8, {256}},
    {"bool", Dtype::kBool, {10}},
};


TEST(SafetensorsTest, InteropWithHuggingFaceSafetensors) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  writer.SetMetadata("writer", "herd");
  for (const InteropTensor& t : kInterop) {
    ASSERT_TRUE(writer.Add(t.name, t.dtype, t.shape, Pattern(t.dtype, Numel(t.shape))).ok());
  }
  ASSERT_TRUE(writer.Write(dir + "/herd.safetensors").ok());

  auto output = herd::testing::RunPythonScript("tests/python/safetensors_interop.py",
                                         {"--herd-file", dir + "/herd.safetensors", "--out", dir + "/python.safetensors"});
  ASSERT_TRUE(output.ok()) << output.status();

  auto f = SafetensorsFile::Open(dir + "/python.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata(), (std::map<std::string, std::string>{{"format", "pt"},
                                                                   {"writer", "python"}}));
  EXPECT_EQ((*f)->tensors().size(), std::size(kInterop));
  for (const InteropTensor& t : kInterop) {
    const SafetensorsTensor* got = (*f)->Find(t.name);
    ASSERT_NE(got, nullptr) << t.name;
    EXPECT_EQ(got->dtype, t.dtype) << t.name;
    EXPECT_EQ(got->shape, t.shape) << t.name;
    EXPECT_EQ(Bytes(got->data), Pattern(t.dtype, Numel(t.shape))) << t.name;
  }
}

}  // namespace
}  // namespace herd
