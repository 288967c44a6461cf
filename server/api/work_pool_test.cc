#include "server/api/work_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace i2s {
namespace {

// A latch the tasks wait on, so the test decides when they end.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

void WaitFor(const std::function<bool()>& done) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!done() && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(done());
}

TEST(WorkPoolTest, RunsOffTheCallersThreadWithinItsBounds) {
  WorkPool::Options o;
  o.threads = 2;
  o.queue_limit = 3;
  o.tenant_limit = 4;
  Gate gate;  // before the pool: the pool's destructor runs tasks that wait on it
  WorkPool pool(o);
  std::atomic<int> ran{0};
  const std::thread::id me = std::this_thread::get_id();
  std::atomic<bool> on_caller{false};
  auto task = [&] {
    if (std::this_thread::get_id() == me) on_caller = true;
    gate.Wait();
    ++ran;
  };
  ASSERT_TRUE(pool.Submit("a", task).ok());
  ASSERT_TRUE(pool.Submit("b", task).ok());
  WaitFor([&] { return pool.running() == 2; });
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.Submit(i == 0 ? "a" : "c", task).ok());
  absl::Status full = pool.Submit("d", task);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(full.message(), "--image-queue-limit")) << full;
  EXPECT_EQ(pool.waiting(), 3);
  gate.Open();
  WaitFor([&] { return ran == 5; });
  EXPECT_FALSE(on_caller);
  EXPECT_TRUE(pool.Submit("d", task).ok());  // room again
  WaitFor([&] { return ran == 6; });
}

TEST(WorkPoolTest, OneTenantCannotTakeMoreThanItsShare) {
  WorkPool::Options o;
  o.threads = 1;
  o.queue_limit = 100;
  o.tenant_limit = 2;
  Gate gate;  // before the pool: the pool's destructor runs tasks that wait on it
  WorkPool pool(o);
  auto task = [&] { gate.Wait(); };
  ASSERT_TRUE(pool.Submit("a", task).ok());
  ASSERT_TRUE(pool.Submit("a", task).ok());
  absl::Status refused = pool.Submit("a", task);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(refused.message(), "tenant \"a\" has 2")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "--tenant-max-images")) << refused;
  EXPECT_TRUE(pool.Submit("b", task).ok());
  gate.Open();
}

TEST(WorkPoolTest, TenantsTakeTurnsAmongWaitingTasks) {
  WorkPool::Options o;
  o.threads = 1;
  o.queue_limit = 100;
  o.tenant_limit = 100;
  Gate gate;  // before the pool: the pool's destructor runs tasks that wait on it
  WorkPool pool(o);
  std::mutex mu;
  std::vector<std::string> order;
  ASSERT_TRUE(pool.Submit("blocker", [&] { gate.Wait(); }).ok());
  WaitFor([&] { return pool.running() == 1; });
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pool.Submit("a",
                            [&, i] {
                              std::lock_guard<std::mutex> lock(mu);
                              order.push_back("a" + std::to_string(i));
                            })
                    .ok());
  }
  ASSERT_TRUE(pool.Submit("b",
                          [&] {
                            std::lock_guard<std::mutex> lock(mu);
                            order.push_back("b0");
                          })
                  .ok());
  gate.Open();
  WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return order.size() == 4;
  });
  // b's one task runs second, not after all of a's.
  EXPECT_EQ(order, (std::vector<std::string>{"a0", "b0", "a1", "a2"}));
}

TEST(WorkPoolTest, TheDestructorRunsWhatIsQueued) {
  std::atomic<int> ran{0};
  {
    WorkPool::Options o;
    o.threads = 1;
    WorkPool pool(o);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(pool.Submit("a", [&] { ++ran; }).ok());
  }
  EXPECT_EQ(ran, 5);
}

}  // namespace
}  // namespace i2s
