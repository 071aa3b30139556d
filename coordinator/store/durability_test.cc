// Crash durability: a child process writes jobs, datasets, blobs and uploads and reports each
// acknowledged write to the parent through a pipe; the parent SIGKILLs it mid-way (often inside
// a blob write or a transaction), reopens the data dir and checks that every acknowledged write
// is there, that every blob matches its digest, and that no temp file is visible as a blob.
// Several rounds reuse one data dir, so recovery of a recovered store is exercised too.
//
// SIGKILL loses the process, not the page cache, so this tests the ordering of writes, renames
// and commits (what a process crash can expose); power loss additionally relies on the fsyncs,
// which the code issues at the same points.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "common/sha256.h"
#include "coordinator/store/store.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::TempDir;

constexpr char kTenant[] = "acme";

// One acknowledged unit of work, as the child reports it.
struct Ack {
  int round = 0;
  int index = 0;
  std::string job_id, dataset_id, blob_sha256, upload_id;
  int64_t upload_offset = 0;
};

[[noreturn]] void ChildFail(const absl::Status& status) {
  std::fprintf(stderr, "child: %s\n", status.ToString().c_str());
  ::_exit(2);
}

// The child: writes forever until killed; one line per acknowledged unit.
[[noreturn]] void Child(const std::string& data_dir, int round, int fd) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  StoreOptions options;
  options.data_dir = data_dir;
  options.max_open_uploads_per_tenant = 100000;
  auto opened = Store::Open(options);
  if (!opened.ok()) ChildFail(opened.status());
  Store& store = **opened;
  if (absl::Status s = store.tokens().EnsureTenant(kTenant); !s.ok()) ChildFail(s);
  for (int i = 0;; ++i) {
    // A blob big enough that the kill often lands inside its write.
    std::string content = herd::StrCat("round ", round, " blob ", i, "\n");
    content += std::string(64 * 1024 + i * 997 % 5000, static_cast<char>('a' + i % 26));
    auto blob = store.blobs().Put(content);
    if (!blob.ok()) ChildFail(blob.status());
    NewDataset nd{herd::StrCat("d-", round, "-", i), *blob, 1, "text", false, "{}"};
    auto ds = store.datasets().Create(kTenant, nd);
    if (!ds.ok()) ChildFail(ds.status());
    JobSpec spec;
    spec.name = herd::StrCat("job-", round, "-", i);
    spec.base_model = "tiny-llama";
    spec.dataset = ds->id;
    auto job = store.jobs().Create(kTenant, spec, herd::StrCat("key-", round, "-", i));
    if (!job.ok()) ChildFail(job.status());
    auto queued = store.jobs().Transition(job->id, JobState::kQueued);
    if (!queued.ok()) ChildFail(queued.status());
    auto cancelled = store.jobs().Cancel(kTenant, job->id, "done");  // frees the unfinished quota
    if (!cancelled.ok()) ChildFail(cancelled.status());
    std::string upload_data(20000, 'u');
    UploadParams params{herd::StrCat("up-", round, "-", i), "text", false,
                        static_cast<int64_t>(upload_data.size()), Sha256Hex(upload_data)};
    auto up = store.uploads().Start(kTenant, params);
    if (!up.ok()) ChildFail(up.status());
    auto writer = store.uploads().OpenWriter(kTenant, up->id);
    if (!writer.ok()) ChildFail(writer.status());
    if (absl::Status s = (*writer)->Append(0, upload_data.substr(0, 12345)); !s.ok()) ChildFail(s);
    if (absl::Status s = (*writer)->Commit(); !s.ok()) ChildFail(s);
    // Bytes past the commit that must not count after the crash.
    if (absl::Status s = (*writer)->Append(12345, upload_data.substr(12345, 100)); !s.ok()) ChildFail(s);
    std::string line = herd::StrCat(round, " ", i, " ", job->id, " ", ds->id, " ", blob->sha256,
                                    " ", up->id, " ", (*writer)->committed_offset(), "\n");
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) ::_exit(3);
    // More work after the ack, so the kill can land anywhere.
    auto more = store.blobs().Put(herd::StrCat("unacknowledged ", round, " ", i, std::string(100000, 'z')));
    (void)more;
  }
}

// Runs one round: starts the child, waits for `acks_wanted` acknowledgements, kills it.
std::vector<Ack> RunRound(const std::string& data_dir, int round, int acks_wanted) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    Child(data_dir, round, fds[1]);
  }
  ::close(fds[1]);
  std::vector<Ack> acks;
  std::string buffer;
  char chunk[4096];
  while (static_cast<int>(acks.size()) < acks_wanted) {
    ssize_t n = ::read(fds[0], chunk, sizeof(chunk));
    if (n <= 0) break;  // the child died on its own: reported below
    buffer.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      std::istringstream line(buffer.substr(0, nl));
      buffer.erase(0, nl + 1);
      Ack a;
      line >> a.round >> a.index >> a.job_id >> a.dataset_id >> a.blob_sha256 >> a.upload_id >>
          a.upload_offset;
      acks.push_back(a);
    }
  }
  // Let it run on into its next unit of work for a moment, then kill it mid-flight.
  ::usleep(static_cast<useconds_t>(1000 * (round * 7 % 5)));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the child ended by itself (status " << status << "); see its stderr";
  EXPECT_GE(static_cast<int>(acks.size()), acks_wanted);
  // What the kill left behind (for the log: whether it landed inside a blob write).
  int leftovers = 0;
  std::error_code ec;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(data_dir + "/blobs/tmp", ec)) {
    ++leftovers;
  }
  ::testing::Test::RecordProperty(herd::StrCat("round", round, "_blob_temp_files_after_kill"), leftovers);
  return acks;
}

void CheckEverythingAcknowledged(const std::string& data_dir, const std::vector<Ack>& acks) {
  StoreOptions options;
  options.data_dir = data_dir;
  auto opened = Store::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Store& store = **opened;
  // The database is intact.
  HERD_ASSERT_OK(store.db().Read([](Tx& tx) -> absl::Status {
    auto row = tx.QueryOne("PRAGMA integrity_check");
    if (!row.ok()) return row.status();
    EXPECT_EQ((*row)->Text(0), "ok");
    return absl::OkStatus();
  }));
  for (const Ack& a : acks) {
    SCOPED_TRACE(herd::StrCat("round ", a.round, " unit ", a.index));
    auto job = store.jobs().Get(kTenant, a.job_id);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state, JobState::kCancelled);
    EXPECT_EQ(job->spec.name, herd::StrCat("job-", a.round, "-", a.index));
    EXPECT_EQ(store.jobs().Events(a.job_id, 0)->size(), 3u);
    auto ds = store.datasets().Get(kTenant, a.dataset_id);
    ASSERT_TRUE(ds.ok()) << ds.status();
    EXPECT_EQ(ds->sha256, a.blob_sha256);
    HERD_EXPECT_OK(store.blobs().Verify(a.blob_sha256));
    auto up = store.uploads().Get(kTenant, a.upload_id);
    ASSERT_TRUE(up.ok()) << up.status();
    EXPECT_EQ(up->committed_offset, a.upload_offset);
    struct stat st;
    std::string part = herd::StrCat(data_dir, "/uploads/", a.upload_id, ".part");
    ASSERT_EQ(::stat(part.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, a.upload_offset) << "uncommitted bytes are cut off";
  }
  // Every file under blobs/sha256 holds the bytes of its name; nothing is left in tmp.
  auto blobs = store.blobs().List();
  ASSERT_TRUE(blobs.ok());
  for (const auto& info : *blobs) HERD_EXPECT_OK(store.blobs().Verify(info.ref.sha256));
  int stray = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(data_dir + "/blobs/sha256")) {
    if (entry.is_regular_file() && !IsSha256Hex(entry.path().filename().string())) ++stray;
  }
  EXPECT_EQ(stray, 0);
  EXPECT_TRUE(std::filesystem::is_empty(store.blobs().tmp_dir()));
}

TEST(DurabilityTest, AcknowledgedWritesSurviveSigkill) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  std::vector<Ack> all;
  const int wanted[] = {3, 17, 40};
  for (int round = 0; round < 3; ++round) {
    std::vector<Ack> acks = RunRound(data_dir, round, wanted[round]);
    all.insert(all.end(), acks.begin(), acks.end());
    CheckEverythingAcknowledged(data_dir, all);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// A deterministic kill: the child stops inside an uncommitted blob write and inside an open
// write transaction; neither may be visible afterwards.
TEST(DurabilityTest, KillInsideABlobWriteAndATransaction) {
  TempDir dir;
  const std::string data_dir = dir.path() + "/data";
  const std::string acked = "acknowledged before the kill";
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(fds[0]);
    StoreOptions options;
    options.data_dir = data_dir;
    auto opened = Store::Open(options);
    if (!opened.ok()) ChildFail(opened.status());
    Store& store = **opened;
    if (absl::Status s = store.tokens().EnsureTenant(kTenant); !s.ok()) ChildFail(s);
    auto blob = store.blobs().Put(acked);
    if (!blob.ok()) ChildFail(blob.status());
    auto writer = store.blobs().NewWriter();
    if (!writer.ok()) ChildFail(writer.status());
    if (absl::Status s = (*writer)->Append(std::string(1 << 20, 'w')); !s.ok()) ChildFail(s);
    absl::Status s = store.db().Write([&](Tx&) -> absl::Status {
      NewDataset nd{"uncommitted", *blob, 1, "text", false, "{}"};
      auto ds = store.datasets().Create(kTenant, nd);  // joins this transaction
      if (!ds.ok()) return ds.status();
      if (::write(fds[1], "ready\n", 6) != 6) ::_exit(3);
      for (;;) ::pause();
    });
    ChildFail(s);
  }
  ::close(fds[1]);
  char buf[6];
  ASSERT_EQ(::read(fds[0], buf, sizeof(buf)), 6);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(std::filesystem::is_empty(data_dir + "/blobs/tmp")) << "the kill left a temp file";

  StoreOptions options;
  options.data_dir = data_dir;
  auto opened = Store::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Store& store = **opened;
  EXPECT_TRUE(std::filesystem::is_empty(store.blobs().tmp_dir()));
  auto blobs = store.blobs().List();
  ASSERT_EQ(blobs->size(), 1u) << "only the committed blob is visible";
  EXPECT_EQ(blobs->at(0).ref.sha256, Sha256Hex(acked));
  HERD_EXPECT_OK(store.blobs().Verify(Sha256Hex(acked)));
  EXPECT_TRUE(store.datasets().List(kTenant, {})->datasets.empty()) << "the transaction never committed";
  EXPECT_TRUE(store.tokens().ListTenants()->size() == 1u) << "what committed before is there";
}

}  // namespace
}  // namespace herd::coordinator::store
