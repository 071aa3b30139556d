// TCP star all-reduce with deadlines on every byte moved.
#include "trainer/engine/dist/tcp_communicator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "common/strings.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace herd::engine {
namespace {

constexpr uint32_t kMagic = 0x48524431;  // "HRD1"

// Sent by every non-zero rank when it connects, and before each collective's payload.
struct Hello {
  uint32_t magic;
  int32_t rank;
  int32_t world_size;
  int32_t pad;
  int64_t generation;
};
struct Frame {
  uint64_t sequence;
  uint64_t bytes;
};

absl::Status Errno(std::string_view what) {
  return absl::UnavailableError(herd::StrCat(what, ": ", std::strerror(errno)));
}

// Waits for `events` on fd until `deadline`.
absl::Status WaitFd(int fd, short events, absl::Time deadline, std::string_view what) {
  while (true) {
    int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return absl::DeadlineExceededError(herd::StrCat(what, " timed out"));
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1000)));
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) return Errno(what);
  }
}

absl::Status SendAll(int fd, const void* buf, size_t size, absl::Time deadline) {
  const char* p = static_cast<const char*>(buf);
  while (size > 0) {
    ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return Errno("send to peer");
    HERD_RETURN_IF_ERROR(WaitFd(fd, POLLOUT, deadline, "send to peer"));
  }
  return absl::OkStatus();
}

absl::Status RecvAll(int fd, void* buf, size_t size, absl::Time deadline) {
  char* p = static_cast<char*>(buf);
  while (size > 0) {
    ssize_t n = ::recv(fd, p, size, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return absl::UnavailableError("peer closed the connection");
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return Errno("receive from peer");
    HERD_RETURN_IF_ERROR(WaitFd(fd, POLLIN, deadline, "receive from peer"));
  }
  return absl::OkStatus();
}

void SetNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

absl::StatusOr<sockaddr_in> ParseAddress(const std::string& host, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(herd::StrCat("not an IPv4 address: '", host, "'"));
  }
  return addr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpCommunicator>> TcpCommunicator::Create(
    const TcpGroupOptions& o, Rendezvous& rendezvous) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(herd::StrCat("bad rank ", o.rank, " of world ", o.world_size));
  }
  const absl::Time deadline = absl::Now() + o.connect_timeout;
  std::vector<int> fds(static_cast<size_t>(o.world_size), -1);
  auto close_all = [&fds] {
    for (int& fd : fds) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  };
  if (o.world_size == 1) return std::unique_ptr<TcpCommunicator>(new TcpCommunicator(0, 1, fds));

  if (o.rank == 0) {
    HERD_ASSIGN_OR_RETURN(sockaddr_in addr, ParseAddress(o.bind_host, 0));
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) return Errno("socket");
    auto close_listener = [listener] { ::close(listener); };
    if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener, o.world_size) != 0) {
      absl::Status s = Errno(herd::StrCat("listen on ", o.bind_host));
      close_listener();
      return s;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
    const std::string& host = o.advertise_host.empty() ? o.bind_host : o.advertise_host;
    absl::Status put = rendezvous.Put(o.key, herd::StrCat(host, ":", ntohs(addr.sin_port)));
    if (!put.ok()) {
      close_listener();
      return put;
    }
    for (int joined = 1; joined < o.world_size;) {
      absl::Status ready = WaitFd(listener, POLLIN, deadline, "waiting for peers to connect");
      if (!ready.ok()) {
        close_listener();
        close_all();
        return absl::DeadlineExceededError(herd::StrCat("only ", joined, " of ", o.world_size,
                                                        " ranks joined the CPU group"));
      }
      int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      Hello hello{};
      absl::Status got = RecvAll(fd, &hello, sizeof(hello), deadline);
      if (!got.ok() || hello.magic != kMagic || hello.world_size != o.world_size ||
          hello.generation != o.generation || hello.rank <= 0 || hello.rank >= o.world_size ||
          fds[static_cast<size_t>(hello.rank)] >= 0) {
        ::close(fd);  // a stray or stale peer: refuse it and keep waiting for the real one
        continue;
      }
      SetNoDelay(fd);
      fds[static_cast<size_t>(hello.rank)] = fd;
      ++joined;
    }
    close_listener();
  } else {
    HERD_ASSIGN_OR_RETURN(std::string value,
                          rendezvous.Get(o.key, deadline - absl::Now()));
    std::vector<std::string> parts = absl::StrSplit(value, absl::MaxSplits(':', 1));
    int port = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) {
      return absl::InvalidArgumentError(herd::StrCat("bad CPU group address '", value, "'"));
    }
    HERD_ASSIGN_OR_RETURN(sockaddr_in addr, ParseAddress(parts[0], port));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Errno("socket");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      absl::Status s = Errno(herd::StrCat("connect to rank 0 at ", value));
      ::close(fd);
      return s;
    }
    SetNoDelay(fd);
    fds[0] = fd;
    Hello hello{kMagic, o.rank, o.world_size, 0, o.generation};
    absl::Status sent = SendAll(fd, &hello, sizeof(hello), deadline);
    if (!sent.ok()) {
      close_all();
      return sent;
    }
  }
  return std::unique_ptr<TcpCommunicator>(new TcpCommunicator(o.rank, o.world_size, std::move(fds)));
}

TcpCommunicator::~TcpCommunicator() { Abort(); }

void TcpCommunicator::Abort() {
  for (int& fd : fds_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  aborted_ = true;
}

template <typename T>
absl::Status TcpCommunicator::AllReduce(std::span<T> data, absl::Duration timeout) {
  if (world_size_ == 1) {
    ++stats_.sequence;
    return absl::OkStatus();
  }
  if (aborted_) return absl::FailedPreconditionError("communicator was aborted after an earlier failure");
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  const size_t bytes = data.size_bytes();
  const Frame frame{stats_.sequence, bytes};
  absl::Status status;
  if (rank_ == 0) {
    // Sum in rank order: data = data_0 + data_1 + ... + data_{W-1}.
    std::vector<T> incoming(data.size());
    for (int r = 1; r < world_size_ && status.ok(); ++r) {
      int fd = fds_[static_cast<size_t>(r)];
      Frame got{};
      status = RecvAll(fd, &got, sizeof(got), deadline);
      if (status.ok() && (got.sequence != frame.sequence || got.bytes != frame.bytes)) {
        status = absl::InternalError(herd::StrCat("rank ", r, " is at collective ", got.sequence, " with ",
                                                  got.bytes, " bytes; rank 0 at ", frame.sequence,
                                                  " with ", frame.bytes));
      }
      if (status.ok()) status = RecvAll(fd, incoming.data(), bytes, deadline);
      if (status.ok()) {
        for (size_t i = 0; i < data.size(); ++i) data[i] += incoming[i];
      }
    }
    for (int r = 1; r < world_size_ && status.ok(); ++r) {
      status = SendAll(fds_[static_cast<size_t>(r)], data.data(), bytes, deadline);
    }
  } else {
    status = SendAll(fds_[0], &frame, sizeof(frame), deadline);
    if (status.ok()) status = SendAll(fds_[0], data.data(), bytes, deadline);
    if (status.ok()) status = RecvAll(fds_[0], data.data(), bytes, deadline);
  }
  if (!status.ok()) {
    Abort();
    return Annotate(status, herd::StrCat("all-reduce #", frame.sequence, " on rank ", rank_));
  }
  ++stats_.sequence;
  stats_.bytes += bytes;
  stats_.seconds += absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

absl::Status TcpCommunicator::AllReduceSum(std::span<float> data, absl::Duration timeout) {
  return AllReduce(data, timeout);
}
absl::Status TcpCommunicator::AllReduceSum(std::span<double> data, absl::Duration timeout) {
  return AllReduce(data, timeout);
}

}  // namespace herd::engine
