// The CPU collectives route, proven the way it is used: separate processes on loopback, rank 0's
// address found through the rendezvous folder.
#include "trainer/engine/dist/tcp_communicator.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <vector>

#include "gtest/gtest.h"

namespace herd::engine {
namespace {

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/tcp_comm_" + name + "_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs `body` in a child process that dies with the test; returns its pid.
pid_t Spawn(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    std::_Exit(body());
  }
  return pid;
}

int ExitCode(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Each rank contributes values that depend on its rank; every rank must end with the sum.
int RunRank(const std::string& dir, int rank, int world, size_t n) {
  FileRendezvous rendezvous(dir);
  auto comm = TcpCommunicator::Create({.rank = rank, .world_size = world}, rendezvous);
  if (!comm.ok()) return 10;
  for (int round = 0; round < 3; ++round) {
    std::vector<float> f(n);
    std::vector<double> d(n);
    for (size_t i = 0; i < n; ++i) {
      f[i] = static_cast<float>((rank + 1) * (i % 97) + round);
      d[i] = (rank + 1) * 0.25 + static_cast<double>(i);
    }
    if (!(*comm)->AllReduceSum(std::span<float>(f), absl::Seconds(60)).ok()) return 11;
    if (!(*comm)->AllReduceSum(std::span<double>(d), absl::Seconds(60)).ok()) return 12;
    const double rank_sum = world * (world + 1) / 2.0;
    for (size_t i = 0; i < n; ++i) {
      if (f[i] != static_cast<float>(rank_sum * (i % 97) + world * round)) return 13;
      if (d[i] != rank_sum * 0.25 + world * static_cast<double>(i)) return 14;
    }
  }
  return (*comm)->stats().sequence == 6 ? 0 : 15;
}

TEST(TcpCommunicatorTest, TwoProcessesAllReduceOnLoopback) {
  const std::string dir = FreshDir("two");
  // 3M floats: large enough that every send and receive is split into partial writes.
  const size_t n = 3'000'000;
  pid_t r0 = Spawn([&] { return RunRank(dir, 0, 2, n); });
  pid_t r1 = Spawn([&] { return RunRank(dir, 1, 2, n); });
  EXPECT_EQ(ExitCode(r0), 0);
  EXPECT_EQ(ExitCode(r1), 0);
}

TEST(TcpCommunicatorTest, FourProcesses) {
  const std::string dir = FreshDir("four");
  std::vector<pid_t> pids;
  for (int r = 0; r < 4; ++r) pids.push_back(Spawn([&, r] { return RunRank(dir, r, 4, 1000); }));
  for (int r = 0; r < 4; ++r) EXPECT_EQ(ExitCode(pids[r]), 0) << "rank " << r;
}

TEST(TcpCommunicatorTest, SingleRankNeedsNoPeers) {
  FileRendezvous rendezvous(FreshDir("one"));
  auto comm = TcpCommunicator::Create({.rank = 0, .world_size = 1}, rendezvous);
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::vector<float> v = {1.5f, -2.0f};
  ASSERT_TRUE((*comm)->AllReduceSum(std::span<float>(v), absl::Seconds(1)).ok());
  EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f}));
}

TEST(TcpCommunicatorTest, HungPeerHitsTheDeadline) {
  const std::string dir = FreshDir("hang");
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  // Rank 1 joins the group and then blocks on a pipe that is never written: a hung rank.
  pid_t r1 = Spawn([&] {
    ::close(gate[1]);
    FileRendezvous rendezvous(dir);
    auto comm = TcpCommunicator::Create({.rank = 1, .world_size = 2}, rendezvous);
    char c;
    while (::read(gate[0], &c, 1) < 0) {
    }
    return comm.ok() ? 0 : 1;
  });
  ::close(gate[0]);
  FileRendezvous rendezvous(dir);
  auto comm = TcpCommunicator::Create({.rank = 0, .world_size = 2}, rendezvous);
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::vector<float> v(16, 1.0f);
  absl::Status s = (*comm)->AllReduceSum(std::span<float>(v), absl::Milliseconds(300));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  // Aborted for good: the engine must exit rather than carry on with a broken group.
  EXPECT_EQ((*comm)->AllReduceSum(std::span<float>(v), absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
  ::close(gate[1]);  // release rank 1
  EXPECT_EQ(ExitCode(r1), 0);
}

TEST(TcpCommunicatorTest, MissingRankZeroIsADeadlineNotAHang) {
  FileRendezvous rendezvous(FreshDir("norank0"));
  auto comm = TcpCommunicator::Create(
      {.rank = 1, .world_size = 2, .connect_timeout = absl::Milliseconds(200)}, rendezvous);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
}

}  // namespace
}  // namespace herd::engine
