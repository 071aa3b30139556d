// RendezvousStore: limits, idempotency, generations, blocking gets and many threads at once.
// No sleeps: blocked getters are detected with Waiters(); deadlines are generous.
#include "coordinator/rendezvous.h"

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

constexpr absl::Duration kLongWait = absl::Seconds(60);

std::unique_ptr<RendezvousStore> NewStore() { return *RendezvousStore::Create(); }

// Spins (yielding) until `n` getters are parked, so a test knows the Get really blocks.
void AwaitWaiters(const RendezvousStore& store, int64_t n) {
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (store.Waiters() < n) {
    ASSERT_LT(absl::Now(), give_up) << "getters never blocked";
    std::this_thread::yield();
  }
}

TEST(RendezvousTest, OptionsValidate) {
  EXPECT_TRUE(RendezvousOptions{}.Validate().ok());
  RendezvousOptions o;
  o.max_value_bytes = 0;
  EXPECT_EQ(RendezvousStore::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RendezvousTest, KeyAndValueLimits) {
  struct Case {
    std::string name;
    std::string key;
    std::string value;
    absl::StatusCode want;
  };
  const std::vector<Case> cases = {
      {"nccl id", "nccl_unique_id", "AgA3", absl::StatusCode::kOk},
      {"all allowed characters", "Az09._:-", "v", absl::StatusCode::kOk},
      {"128-byte key", std::string(128, 'k'), "v", absl::StatusCode::kOk},
      {"empty key", "", "v", absl::StatusCode::kInvalidArgument},
      {"129-byte key", std::string(129, 'k'), "v", absl::StatusCode::kInvalidArgument},
      {"space", "a b", "v", absl::StatusCode::kInvalidArgument},
      {"slash", "a/b", "v", absl::StatusCode::kInvalidArgument},
      {"non-ascii", "cl\xc3\xa9", "v", absl::StatusCode::kInvalidArgument},
      {"empty value", "k1", "", absl::StatusCode::kInvalidArgument},
      {"64 KiB value", "k2", std::string(64 << 10, 'x'), absl::StatusCode::kOk},
      {"64 KiB + 1 value", "k3", std::string((64 << 10) + 1, 'x'), absl::StatusCode::kResourceExhausted},
      {"binary value", "k4", std::string("\0\x01\xff", 3), absl::StatusCode::kOk},
  };
  auto store = NewStore();
  ASSERT_TRUE(store->BeginGeneration("job", 1).ok());
  for (const Case& c : cases) {
    EXPECT_EQ(store->Put("job", 1, c.key, c.value).status().code(), c.want) << c.name;
    if (c.want == absl::StatusCode::kOk) {
      absl::StatusOr<std::string> got = store->Get("job", 1, c.key, absl::ZeroDuration());
      ASSERT_TRUE(got.ok()) << c.name << ": " << got.status();
      EXPECT_EQ(*got, c.value) << c.name;
    } else if (c.want == absl::StatusCode::kInvalidArgument && !c.value.empty()) {
      EXPECT_EQ(store->Get("job", 1, c.key, absl::ZeroDuration()).status().code(), c.want) << c.name;
    }
  }
}

TEST(RendezvousTest, TooManyKeysInAGeneration) {
  RendezvousOptions o;
  o.max_keys_per_generation = 2;
  auto store = *RendezvousStore::Create(o);
  ASSERT_TRUE(store->BeginGeneration("job", 1).ok());
  EXPECT_TRUE(store->Put("job", 1, "a", "1").ok());
  EXPECT_TRUE(store->Put("job", 1, "b", "1").ok());
  EXPECT_EQ(store->Put("job", 1, "c", "1").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store->Put("job", 1, "a", "1").ok());  // a retry still answers
}

TEST(RendezvousTest, PutIsIdempotentForTheSameValueOnly) {
  auto store = NewStore();
  ASSERT_TRUE(store->BeginGeneration("job", 1).ok());
  EXPECT_EQ(*store->Put("job", 1, "cpu_group", "127.0.0.1:4000"), true);
  EXPECT_EQ(*store->Put("job", 1, "cpu_group", "127.0.0.1:4000"), false);
  EXPECT_EQ(store->Put("job", 1, "cpu_group", "127.0.0.1:4001").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*store->Get("job", 1, "cpu_group", absl::ZeroDuration()), "127.0.0.1:4000");
}

TEST(RendezvousTest, OnlyTheCurrentGenerationAnswers) {
  auto store = NewStore();
  EXPECT_EQ(store->Put("job", 1, "k", "v").status().code(), absl::StatusCode::kFailedPrecondition);  // no generation
  EXPECT_EQ(store->CurrentGeneration("job"), 0);
  ASSERT_TRUE(store->BeginGeneration("job", 1).ok());
  ASSERT_TRUE(store->Put("job", 1, "k", "one").ok());
  EXPECT_EQ(store->Put("job", 2, "k", "two").status().code(), absl::StatusCode::kFailedPrecondition);  // future

  ASSERT_TRUE(store->BeginGeneration("job", 2).ok());
  EXPECT_EQ(store->CurrentGeneration("job"), 2);
  EXPECT_EQ(store->Get("job", 1, "k", absl::ZeroDuration()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Put("job", 1, "k", "one").status().code(), absl::StatusCode::kFailedPrecondition);
  // Generation 1's values are gone.
  EXPECT_EQ(store->Get("job", 2, "k", absl::ZeroDuration()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Put("job", 2, "k", "two").ok());
  EXPECT_TRUE(store->BeginGeneration("job", 2).ok());  // again: no-op, values kept
  EXPECT_EQ(*store->Get("job", 2, "k", absl::ZeroDuration()), "two");
  EXPECT_EQ(store->BeginGeneration("job", 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->BeginGeneration("job", 0).code(), absl::StatusCode::kInvalidArgument);

  // Jobs are independent.
  ASSERT_TRUE(store->BeginGeneration("other", 1).ok());
  EXPECT_EQ(store->Get("other", 1, "k", absl::ZeroDuration()).status().code(), absl::StatusCode::kNotFound);

  store->EndJob("job");
  EXPECT_EQ(store->Get("job", 2, "k", absl::ZeroDuration()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->CurrentGeneration("job"), 0);
}

TEST(RendezvousTest, WaitLimitsAndTimeouts) {
  auto store = NewStore();
  ASSERT_TRUE(store->BeginGeneration("job", 1).ok());
  EXPECT_EQ(store->Get("job", 1, "k", absl::Seconds(-1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Get("job", 1, "k", absl::Seconds(61)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Get("job", 1, "k", absl::ZeroDuration()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Get("job", 1, "k", absl::Milliseconds(1)).status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(RendezvousTest, BlockedGetReturnsThePostedValue) {
  auto store = NewStore();
  ASSERT_TRUE(store->BeginGeneration("job", 3).ok());
  absl::StatusOr<std::string> got;
  std::thread getter([&] { got = store->Get("job", 3, "nccl_unique_id", kLongWait); });
  AwaitWaiters(*store, 1);
  ASSERT_TRUE(store->Put("job", 3, "other_key", "x").ok());  // wakes it, not for its key
  ASSERT_TRUE(store->Put("job", 3, "nccl_unique_id", "AgA3").ok());
  getter.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "AgA3");
  EXPECT_EQ(store->Waiters(), 0);
}

TEST(RendezvousTest, GenerationEndingDuringAWaitFailsTheWaiters) {
  struct Case {
    std::string name;
    std::function<void(RendezvousStore&)> end;
    absl::StatusCode want;
  };
  const std::vector<Case> cases = {
      {"new generation", [](RendezvousStore& s) { ASSERT_TRUE(s.BeginGeneration("job", 2).ok()); },
       absl::StatusCode::kFailedPrecondition},
      {"job ended", [](RendezvousStore& s) { s.EndJob("job"); }, absl::StatusCode::kFailedPrecondition},
      {"shutdown", [](RendezvousStore& s) { s.Shutdown(); }, absl::StatusCode::kUnavailable},
  };
  for (const Case& c : cases) {
    auto store = NewStore();
    ASSERT_TRUE(store->BeginGeneration("job", 1).ok());
    std::vector<absl::Status> results(3);
    std::vector<std::thread> getters;
    for (int i = 0; i < 3; ++i) {
      getters.emplace_back([&, i] { results[i] = store->Get("job", 1, "k", kLongWait).status(); });
    }
    AwaitWaiters(*store, 3);
    c.end(*store);
    for (std::thread& t : getters) t.join();
    for (const absl::Status& s : results) EXPECT_EQ(s.code(), c.want) << c.name << ": " << s;
  }
}

TEST(RendezvousTest, ManyThreadsPutAndGet) {
  constexpr int kKeys = 64;
  constexpr int kPutters = 8;
  constexpr int kGetters = 8;
  auto store = NewStore();
  ASSERT_TRUE(store->BeginGeneration("job", 1).ok());
  auto value_of = [](int k) { return "value-" + std::to_string(k); };
  std::atomic<int> newly_stored{0};
  std::atomic<int> put_errors{0};
  std::atomic<int> get_errors{0};
  std::vector<std::thread> threads;
  for (int g = 0; g < kGetters; ++g) {
    threads.emplace_back([&, g] {
      for (int i = 0; i < kKeys; ++i) {
        const int k = (i + g * 7) % kKeys;
        absl::StatusOr<std::string> got = store->Get("job", 1, "key-" + std::to_string(k), kLongWait);
        if (!got.ok() || *got != value_of(k)) ++get_errors;
      }
    });
  }
  for (int p = 0; p < kPutters; ++p) {
    threads.emplace_back([&, p] {
      // Every key is posted by two putters (a retry race), in different orders.
      for (int i = 0; i < kKeys; ++i) {
        const int k = p % 2 == 0 ? i : kKeys - 1 - i;
        if (k % (kPutters / 2) != p / 2) continue;
        absl::StatusOr<bool> put = store->Put("job", 1, "key-" + std::to_string(k), value_of(k));
        if (!put.ok()) {
          ++put_errors;
        } else if (*put) {
          ++newly_stored;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(put_errors.load(), 0);
  EXPECT_EQ(get_errors.load(), 0);
  EXPECT_EQ(newly_stored.load(), kKeys);  // exactly one Put per key stored it
}

}  // namespace
}  // namespace herd::coordinator
