// The counter-based LoRA dropout masks: determinism per key, a different mask per key part, the
// keep fraction, bit equality with a plain uint32_t implementation of the same hash, and that the
// mask is made on the device of its keys (CUDA against the CPU when a GPU is present).
#include "trainer/engine/model/lora_dropout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace herd::engine {
namespace {

at::Tensor Mask(const DropoutKey& key, const std::vector<int64_t>& seqs, int layer, int proj, int64_t tokens,
                int64_t features, double keep, at::Device device = at::kCPU) {
  at::Tensor table = DropoutKeyTable(key, seqs, static_cast<int64_t>(seqs.size()), /*layers=*/4,
                                     /*projections=*/7, device);
  return DropoutKeepMask(table.select(0, layer).select(0, proj), tokens, features, keep);
}

// The hash as written in lora_dropout.h, with native unsigned wrap-around arithmetic.
uint32_t Mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x21f0aaadu;
  x ^= x >> 15;
  x *= 0x735a2d97u;
  x ^= x >> 15;
  return x;
}

bool KeepReference(uint64_t row_key, int64_t t, int64_t f, int64_t features, double keep) {
  const uint64_t pairs = static_cast<uint64_t>((features + 1) / 2);
  const uint64_t c = static_cast<uint64_t>(t) * pairs + static_cast<uint64_t>(f / 2);
  uint32_t h = Mix32(static_cast<uint32_t>(c) ^ static_cast<uint32_t>(row_key));
  h = Mix32(h ^ static_cast<uint32_t>(row_key >> 32) ^ static_cast<uint32_t>(c >> 32));
  const uint32_t u = f % 2 == 0 ? (h & 0xffffu) : (h >> 16);
  return u < static_cast<uint32_t>(std::llround(keep * 65536.0));
}

TEST(LoraDropout, SameKeySameMask) {
  const DropoutKey key{.seed = 42, .step = 3};
  at::Tensor a = Mask(key, {5, 9}, 1, 2, 16, 64, 0.7);
  at::Tensor b = Mask(key, {5, 9}, 1, 2, 16, 64, 0.7);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 16, 64}));
  EXPECT_EQ(a.scalar_type(), at::kBool);
  EXPECT_TRUE(a.equal(b));
}

TEST(LoraDropout, EveryKeyPartChangesTheMask) {
  const DropoutKey key{.seed = 42, .step = 3};
  at::Tensor base = Mask(key, {5}, 1, 2, 16, 64, 0.5);
  EXPECT_FALSE(base.equal(Mask({.seed = 43, .step = 3}, {5}, 1, 2, 16, 64, 0.5))) << "seed";
  EXPECT_FALSE(base.equal(Mask({.seed = 42, .step = 4}, {5}, 1, 2, 16, 64, 0.5))) << "step";
  EXPECT_FALSE(base.equal(Mask(key, {6}, 1, 2, 16, 64, 0.5))) << "sequence";
  EXPECT_FALSE(base.equal(Mask(key, {5}, 0, 2, 16, 64, 0.5))) << "layer";
  EXPECT_FALSE(base.equal(Mask(key, {5}, 1, 3, 16, 64, 0.5))) << "projection";
  // Positions within a row get different bits too: no two tokens share a row of the mask.
  for (int64_t t = 1; t < 16; ++t) EXPECT_FALSE(base[0][0].equal(base[0][t])) << "token " << t;
}

TEST(LoraDropout, MaskDependsOnTheSequenceNotTheRow) {
  // What sharding and packing rely on: a sequence's mask is the same in any row of any batch.
  const DropoutKey key{.seed = 7, .step = 11};
  at::Tensor two = Mask(key, {5, 9}, 3, 6, 8, 40, 0.8);
  at::Tensor one = Mask(key, {9}, 3, 6, 8, 40, 0.8);
  EXPECT_TRUE(two[1].equal(one[0]));
  EXPECT_FALSE(two[0].equal(two[1]));
  // Rows without a sequence index fall back to their row number.
  EXPECT_TRUE(Mask(key, {}, 3, 6, 8, 40, 0.8).numel() == 0);
  at::Tensor table = DropoutKeyTable(key, {}, 2, 4, 7, at::kCPU);
  EXPECT_TRUE(DropoutKeepMask(table[3][6], 8, 40, 0.8)[1].equal(Mask(key, {0, 1}, 3, 6, 8, 40, 0.8)[1]));
}

TEST(LoraDropout, KeepFractionIsOneMinusP) {
  for (double p : {0.05, 0.1, 0.3, 0.5}) {
    const double keep = 1.0 - p;
    at::Tensor m = Mask({.seed = 1, .step = 0}, {0, 1}, 0, 0, 512, 1024, keep);  // 2^20 elements
    const double n = static_cast<double>(m.numel());
    const double tol = 5 * std::sqrt(keep * p / n);  // five standard deviations
    EXPECT_NEAR(m.to(at::kDouble).mean().item<double>(), keep, tol) << "p " << p;
    // Even and odd features (the two halves of one hash) each keep 1 - p, and independently.
    at::Tensor even = m.narrow(-1, 0, 512).to(at::kDouble), odd = m.narrow(-1, 512, 512).to(at::kDouble);
    at::Tensor lo = m.slice(-1, 0, 1024, 2).to(at::kDouble), hi = m.slice(-1, 1, 1024, 2).to(at::kDouble);
    EXPECT_NEAR(lo.mean().item<double>(), keep, 2 * tol) << "p " << p;
    EXPECT_NEAR(hi.mean().item<double>(), keep, 2 * tol) << "p " << p;
    EXPECT_NEAR((lo * hi).mean().item<double>(), keep * keep, 2 * tol) << "pair, p " << p;
    EXPECT_NEAR((even * odd).mean().item<double>(), keep * keep, 2 * tol) << "far apart, p " << p;
  }
  EXPECT_TRUE(Mask({.seed = 1, .step = 0}, {0}, 0, 0, 8, 64, 1.0).all().item<bool>());
}

TEST(LoraDropout, MatchesAPlainUint32Implementation) {
  // The int64 tensor emulation is exact: every bit as unsigned 32-bit C++ arithmetic gives it.
  const DropoutKey key{.seed = 0xdeadbeefcafef00dULL, .step = 123456};
  const std::vector<int64_t> seqs = {0, 77, int64_t{1} << 40};
  for (int64_t features : {1, 37, 64}) {
    at::Tensor m = Mask(key, seqs, 2, 5, 9, features, 0.73);
    ASSERT_EQ(m.sizes(), (std::vector<int64_t>{3, 9, features}));
    auto acc = m.contiguous();
    for (size_t b = 0; b < seqs.size(); ++b) {
      const uint64_t row_key = DropoutRowKey(key, seqs[b], 2, 5);
      int mismatches = 0;
      for (int64_t t = 0; t < 9; ++t) {
        for (int64_t f = 0; f < features; ++f) {
          mismatches += acc[b][t][f].item<bool>() != KeepReference(row_key, t, f, features, 0.73);
        }
      }
      EXPECT_EQ(mismatches, 0) << "row " << b << ", features " << features;
    }
  }
}

TEST(LoraDropout, PinnedValues) {
  // Changing the hash changes every run with dropout: do it on purpose, and update these.
  at::Tensor m = Mask({.seed = 42, .step = 3}, {5}, 1, 2, 4, 16, 0.5);
  EXPECT_EQ(DropoutRowKey({.seed = 42, .step = 3}, 5, 1, 2), uint64_t{0xab7382ab89ac103b});
  EXPECT_EQ(m.sum().item<int64_t>(), 39);
}

TEST(LoraDropout, MadeOnTheKeysDevice) {
  // The generic path (a device by name) against a tensor made on "cpu"; on a machine with CUDA,
  // the CUDA mask against the CPU one. The result stays on the keys' device: no host round trip.
  const DropoutKey key{.seed = 9, .step = 2};
  at::Tensor cpu = Mask(key, {3, 4}, 0, 1, 32, 96, 0.9, at::Device("cpu"));
  EXPECT_EQ(cpu.device(), at::Device("cpu"));
  std::vector<at::Device> devices = {at::Device(at::kCPU)};
  if (at::hasCUDA()) devices.push_back(at::Device("cuda:0"));
  for (const at::Device& d : devices) {
    at::Tensor table = DropoutKeyTable(key, {3, 4}, 2, 4, 7, d);
    EXPECT_EQ(table.device(), d);
    at::Tensor m = DropoutKeepMask(table[0][1], 32, 96, 0.9);
    EXPECT_EQ(m.device(), d) << d.str();
    EXPECT_TRUE(m.to(at::kCPU).equal(cpu)) << d.str();
  }
}

TEST(LoraDropout, RejectsBadKeys) {
  EXPECT_THROW(DropoutKeepMask(at::zeros({2, 3}, at::kLong), 4, 4, 0.5), c10::Error);
  EXPECT_THROW(DropoutKeepMask(at::zeros({2, 2}, at::kFloat), 4, 4, 0.5), c10::Error);
}

}  // namespace
}  // namespace herd::engine
