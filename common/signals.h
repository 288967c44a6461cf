// Process signals (SIGINT, SIGTERM, SIGHUP) taken the same way whichever thread the
// kernel delivers them to.
//
// Why not sigwait: sigwait sees a signal only while every thread of the process blocks it.
// A library that starts threads before main (the pthread build of OpenBLAS does, from its
// load-time constructor) leaves those threads with the signals unblocked, so the kernel
// delivers SIGINT/SIGTERM to one of them and the default action kills the process; a mask
// set in main cannot reach threads that already exist.
//
// SignalQueue installs a sigaction handler for each signal. The handler runs in whatever
// thread received the signal and does only async-signal-safe work: it writes the signal
// number (one byte) to a non-blocking pipe, keeping errno. The program reads the pipe from
// a thread of its own (Next / NextFor) and acts there, where it may lock, log and allocate.
//
// Blocking the signals in main before other threads start is still useful (gRPC's and
// LibTorch's threads then never see EINTR for them), so the reading thread unblocks them
// for itself when it waits (Next does so). A signal that arrives while every thread of
// the program blocks it stays pending until the reader waits: it is never lost, and the
// handler is installed before anything else runs, so the default action never applies.
//
// One SignalQueue per process (Install fails on a second); the handlers stay until the
// object is destroyed, which restores the previous dispositions. Next and NextFor may be
// called from one thread at a time; Install and the destructor from the main thread.
#ifndef I2S_COMMON_SIGNALS_H_
#define I2S_COMMON_SIGNALS_H_

#include <signal.h>

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace i2s {

class SignalQueue {
 public:
  // Installs handlers for `signals` (SA_RESTART, so the threads they interrupt resume their
  // system calls) and blocks them in the calling thread, which new threads inherit.
  // FailedPrecondition if a SignalQueue exists already; Internal if a system call fails.
  static absl::StatusOr<std::unique_ptr<SignalQueue>> Install(std::vector<int> signals);

  SignalQueue(const SignalQueue&) = delete;
  SignalQueue& operator=(const SignalQueue&) = delete;
  ~SignalQueue();

  // The next signal received, in order of arrival; blocks until one arrives. The calling
  // thread has the signals unblocked while it waits and blocked again afterwards.
  int Next();
  // Like Next, but gives up after `timeout` (nullopt).
  std::optional<int> NextFor(absl::Duration timeout);

  // A set holding the queue's signals (for pthread_sigmask in threads the program starts).
  const sigset_t& signal_set() const { return set_; }

 private:
  SignalQueue() = default;

  std::vector<int> signals_;
  std::vector<struct sigaction> previous_;
  sigset_t set_{};
  int read_fd_ = -1;
};

// "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", or "signal" for any other.
const char* SignalName(int sig);

}  // namespace i2s

#endif  // I2S_COMMON_SIGNALS_H_
