// Test support for the store tests: a temporary data dir, a Store on a FakeClock with two
// tenants, and shortcuts to make datasets and jobs.
#ifndef HERD_COORDINATOR_STORE_TEST_UTIL_H_
#define HERD_COORDINATOR_STORE_TEST_UTIL_H_

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "common/job_spec.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/clock.h"
#include "coordinator/store/store.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store::testing {

#define HERD_ASSERT_OK(expr)                            \
  do {                                                  \
    const ::absl::Status herd_s_ = (expr);              \
    ASSERT_TRUE(herd_s_.ok()) << herd_s_;               \
  } while (0)
#define HERD_EXPECT_OK(expr)                            \
  do {                                                  \
    const ::absl::Status herd_s_ = (expr);              \
    EXPECT_TRUE(herd_s_.ok()) << herd_s_;               \
  } while (0)
// EXPECT_EQ on a status code; more context may be streamed after it.
#define HERD_EXPECT_CODE(expr, code_name)                                  \
  switch (0)                                                               \
  case 0:                                                                  \
  default:                                                                 \
    if (const ::absl::Status herd_s_ = (expr); false) {                    \
    } else                                                                 \
      EXPECT_EQ(herd_s_.code(), ::absl::StatusCode::code_name) << herd_s_ << " "

// Whether a status message contains `part` (absl::string_view and std::string_view differ in
// Debian's Abseil, so tests go through std::string).
inline bool MessageHas(const absl::Status& status, std::string_view part) {
  return std::string(status.message()).find(part) != std::string::npos;
}

// A fresh directory, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern = herd::StrCat(base != nullptr && *base ? base : "/tmp", "/herd-store-XXXXXX");
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << "mkdtemp " << pattern;
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    // Blobs are read-only files; the folders are writable, so remove_all works.
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline constexpr char kTenantA[] = "acme";
inline constexpr char kTenantB[] = "globex";

// A Store in a temp dir with tenants kTenantA and kTenantB.
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  // Closes the store (if open) and opens it again on the same dir.
  void Reopen(StoreOptions options = {}) {
    store_.reset();
    options.data_dir = dir_.path() + "/data";
    options.clock = &clock_;
    auto store = Store::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    HERD_ASSERT_OK(store_->tokens().EnsureTenant(kTenantA));
    HERD_ASSERT_OK(store_->tokens().EnsureTenant(kTenantB));
  }

  // A READY dataset of `tenant` holding `content`.
  DatasetRecord MakeDataset(std::string_view tenant, std::string_view name = "data.jsonl",
                            std::string content = "{\"text\": \"hello\"}\n") {
    auto blob = store_->blobs().Put(content);
    EXPECT_TRUE(blob.ok()) << blob.status();
    NewDataset d;
    d.name = std::string(name);
    d.blob = *blob;
    d.record_count = 1;
    d.format = "text";
    d.validation_json = "{}";
    auto ds = store_->datasets().Create(tenant, d);
    EXPECT_TRUE(ds.ok()) << ds.status();
    return ds.ok() ? *ds : DatasetRecord{};
  }

  static JobSpec Spec(const std::string& dataset, const std::string& name = "job") {
    JobSpec spec;
    spec.name = name;
    spec.base_model = "tiny-llama";
    spec.dataset = dataset;
    return spec;
  }

  // A job of `tenant` on a fresh dataset.
  JobRecord MakeJob(std::string_view tenant, const std::string& name = "job",
                    std::string_view key = "") {
    std::string ds = MakeDataset(tenant).id;
    auto job = store_->jobs().Create(tenant, Spec(ds, name), key);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : JobRecord{};
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
};

}  // namespace herd::coordinator::store::testing

#endif  // HERD_COORDINATOR_STORE_TEST_UTIL_H_
