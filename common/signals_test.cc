#include "common/signals.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace i2s {
namespace {

// A thread with every signal unblocked, as the pthread OpenBLAS starts from its load-time
// constructor: the kernel may deliver a process-directed signal to it.
class ForeignThread {
 public:
  ForeignThread() {
    sigset_t none;
    sigemptyset(&none);
    sigset_t old;
    pthread_sigmask(SIG_SETMASK, &none, &old);
    thread_ = std::thread([this] {
      while (!stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  ~ForeignThread() {
    stop_.store(true);
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(SignalQueueTest, ASignalDeliveredToAnotherThreadIsQueuedNotFatal) {
  ForeignThread foreign;  // started before the queue, like a library's threads before main
  auto queue = SignalQueue::Install({SIGINT, SIGTERM, SIGHUP});
  ASSERT_TRUE(queue.ok()) << queue.status();
  // This thread blocks them (Install), so the kernel must pick the foreign thread; before
  // the handlers existed its default action ended the process.
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  EXPECT_EQ((*queue)->NextFor(absl::Seconds(10)), SIGTERM);
  ASSERT_EQ(kill(getpid(), SIGINT), 0);
  EXPECT_EQ((*queue)->NextFor(absl::Seconds(10)), SIGINT);
  ASSERT_EQ(kill(getpid(), SIGHUP), 0);
  EXPECT_EQ((*queue)->Next(), SIGHUP);
}

TEST(SignalQueueTest, ASignalPendingWhileEveryThreadBlocksItArrivesWhenTheReaderWaits) {
  auto queue = SignalQueue::Install({SIGINT, SIGTERM});
  ASSERT_TRUE(queue.ok()) << queue.status();
  ASSERT_EQ(kill(getpid(), SIGINT), 0);  // pending: no thread of this process takes it
  sigset_t pending;
  sigpending(&pending);
  EXPECT_TRUE(sigismember(&pending, SIGINT));
  EXPECT_EQ((*queue)->NextFor(absl::Seconds(10)), SIGINT);
  // Blocked again after the wait.
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  EXPECT_TRUE(sigismember(&mask, SIGINT));
  EXPECT_TRUE(sigismember(&mask, SIGTERM));
}

TEST(SignalQueueTest, SignalsFromSeveralThreadsAreAllCounted) {
  ForeignThread foreign;
  auto queue = SignalQueue::Install({SIGTERM});
  ASSERT_TRUE(queue.ok()) << queue.status();
  int received = 0;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(kill(getpid(), SIGTERM), 0);
    if ((*queue)->NextFor(absl::Seconds(10)) == SIGTERM) ++received;
  }
  EXPECT_EQ(received, 20);
}

TEST(SignalQueueTest, NextForGivesUpAfterItsTimeout) {
  auto queue = SignalQueue::Install({SIGHUP});
  ASSERT_TRUE(queue.ok()) << queue.status();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ((*queue)->NextFor(absl::Milliseconds(150)), std::nullopt);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 0.149);
  EXPECT_LT(waited, 5.0);
}

TEST(SignalQueueTest, OneQueueAtATimeAndTheOldHandlersComeBack) {
  struct sigaction before {};
  sigaction(SIGHUP, nullptr, &before);
  {
    auto first = SignalQueue::Install({SIGHUP});
    ASSERT_TRUE(first.ok()) << first.status();
    auto second = SignalQueue::Install({SIGHUP});
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    struct sigaction during {};
    sigaction(SIGHUP, nullptr, &during);
    EXPECT_NE(during.sa_handler, before.sa_handler);
    EXPECT_TRUE(during.sa_flags & SA_RESTART);
  }
  struct sigaction after {};
  sigaction(SIGHUP, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  auto again = SignalQueue::Install({SIGHUP});
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST(SignalQueueTest, Names) {
  EXPECT_STREQ(SignalName(SIGINT), "SIGINT");
  EXPECT_STREQ(SignalName(SIGTERM), "SIGTERM");
  EXPECT_STREQ(SignalName(SIGHUP), "SIGHUP");
  EXPECT_STREQ(SignalName(SIGUSR1), "signal");
}

}  // namespace
}  // namespace i2s
