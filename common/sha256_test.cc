// SHA-256 against the FIPS 180-4 / NIST test vectors, and chunking invariance.
#include "common/sha256.h"

#include <string>

#include "common/file_util.h"
#include "gtest/gtest.h"

namespace herd {
namespace {

struct Vector {
  std::string input;
  std::string hex;
};

TEST(Sha256Test, KnownVectors) {
  const Vector kVectors[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {std::string(1000000, 'a'),
       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (const Vector& v : kVectors) {
    EXPECT_EQ(Sha256Hex(v.input), v.hex) << "input of " << v.input.size() << " bytes";
  }
}

TEST(Sha256Test, ChunkingDoesNotMatter) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 7 + 3));
  const std::string whole = Sha256Hex(data);
  for (size_t chunk : {1, 3, 55, 56, 63, 64, 65, 127, 999}) {
    Sha256 h;
    for (size_t off = 0; off < data.size(); off += chunk) {
      h.Update(std::string_view(data).substr(off, chunk));
    }
    EXPECT_EQ(h.HexDigest(), whole) << "chunk " << chunk;
  }
}

TEST(Sha256Test, FileMatchesString) {
  std::string path = ::testing::TempDir() + "/sha256_test.bin";
  std::string data(200000, 'x');
  ASSERT_TRUE(WriteFileAtomic(path, data).ok());
  auto hex = Sha256File(path);
  ASSERT_TRUE(hex.ok()) << hex.status();
  EXPECT_EQ(*hex, Sha256Hex(data));
  EXPECT_EQ(Sha256File(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace herd
