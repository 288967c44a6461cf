#include "common/signals.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace i2s {
namespace {

// The pipe's write end, read by the handler (an int is written atomically, and the handler
// only reads it; -1 while no queue exists).
std::atomic<int> g_write_fd{-1};
static_assert(std::atomic<int>::is_always_lock_free, "the handler needs a lock-free fd");

extern "C" void OnSignal(int sig) {
  const int saved_errno = errno;
  const int fd = g_write_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const unsigned char byte = static_cast<unsigned char>(sig);
    // Non-blocking: a full pipe (65536 unread signals) drops this one rather than hang the
    // thread it interrupted.
    (void)!write(fd, &byte, 1);
  }
  errno = saved_errno;
}

absl::Status Errno(const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SignalQueue>> SignalQueue::Install(std::vector<int> signals) {
  if (g_write_fd.load() >= 0) {
    return absl::FailedPreconditionError("a SignalQueue is installed already");
  }
  int fds[2];
  // Both ends non-blocking: the handler must never wait, and NextFor polls before reading.
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return Errno("pipe2");
  std::unique_ptr<SignalQueue> queue(new SignalQueue());
  queue->read_fd_ = fds[0];
  queue->signals_ = signals;
  sigemptyset(&queue->set_);
  for (int sig : signals) sigaddset(&queue->set_, sig);
  // Blocked first in this thread, so nothing is delivered here between the handler's
  // installation and the first Next.
  pthread_sigmask(SIG_BLOCK, &queue->set_, nullptr);
  g_write_fd.store(fds[1]);
  for (int sig : signals) {
    struct sigaction action {};
    action.sa_handler = OnSignal;
    sigfillset(&action.sa_mask);  // the handler is never interrupted by another signal
    action.sa_flags = SA_RESTART;
    struct sigaction previous {};
    if (sigaction(sig, &action, &previous) != 0) {
      // The destructor restores the handlers installed so far.
      return Errno(absl::StrCat("sigaction(", SignalName(sig), ")").c_str());
    }
    queue->previous_.push_back(previous);
  }
  return queue;
}

SignalQueue::~SignalQueue() {
  for (size_t i = 0; i < previous_.size(); ++i) sigaction(signals_[i], &previous_[i], nullptr);
  const int write_fd = g_write_fd.exchange(-1);
  if (write_fd >= 0) close(write_fd);
  if (read_fd_ >= 0) close(read_fd_);
}

std::optional<int> SignalQueue::NextFor(absl::Duration timeout) {
  // Unblocked only while this thread waits: a signal pending for the process is delivered
  // here then, and the handler runs in this thread.
  pthread_sigmask(SIG_UNBLOCK, &set_, nullptr);
  const bool forever = timeout == absl::InfiniteDuration();
  const absl::Time deadline = forever ? absl::InfiniteFuture() : absl::Now() + timeout;
  std::optional<int> result;
  while (true) {
    unsigned char byte = 0;
    if (read(read_fd_, &byte, 1) == 1) {  // non-blocking
      result = byte;
      break;
    }
    int wait_ms = -1;
    if (!forever) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      wait_ms = static_cast<int>(std::min<int64_t>(
          absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))), INT32_MAX));
    }
    struct pollfd p {};
    p.fd = read_fd_;
    p.events = POLLIN;
    // Returns early with EINTR when the handler ran in this thread; the loop reads then.
    if (poll(&p, 1, wait_ms) < 0 && errno != EINTR) break;
  }
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  return result;
}

int SignalQueue::Next() {
  while (true) {
    std::optional<int> sig = NextFor(absl::InfiniteDuration());
    if (sig) return *sig;
  }
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    case SIGQUIT:
      return "SIGQUIT";
    default:
      return "signal";
  }
}

}  // namespace i2s
