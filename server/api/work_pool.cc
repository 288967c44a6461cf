#include "server/api/work_pool.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace i2s {

WorkPool::WorkPool(Options options) : options_(std::move(options)) {
  for (int i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { Loop(); });
}

WorkPool::~WorkPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

absl::Status WorkPool::Submit(const std::string& tenant, std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    if (waiting_count_ >= options_.queue_limit) {
      return absl::ResourceExhaustedError(absl::StrCat(options_.what, ": ", waiting_count_,
                                                       " waiting, the limit (", options_.queue_flag,
                                                       ") is ", options_.queue_limit));
    }
    int& mine = per_tenant_[tenant];
    if (options_.tenant_limit > 0 && mine >= options_.tenant_limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          options_.what, ": tenant \"", tenant, "\" has ", mine, " waiting or running, the limit (",
          options_.tenant_flag, ") is ", options_.tenant_limit));
    }
    ++mine;
    std::deque<std::function<void()>>& queue = waiting_[tenant];
    if (queue.empty()) turn_.push_back(tenant);
    queue.push_back(std::move(task));
    ++waiting_count_;
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void WorkPool::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return waiting_count_ > 0 || stopping_; });
    if (waiting_count_ == 0) return;  // stopping, and nothing left to run
    // The next tenant in turn; it goes to the back if it has more.
    const std::string tenant = turn_.front();
    turn_.pop_front();
    auto it = waiting_.find(tenant);
    std::function<void()> task = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) {
      waiting_.erase(it);
    } else {
      turn_.push_back(tenant);
    }
    --waiting_count_;
    ++running_;
    lock.unlock();
    task();
    task = nullptr;  // its captures are released before the slot is given back
    lock.lock();
    --running_;
    if (--per_tenant_[tenant] == 0) per_tenant_.erase(tenant);
  }
}

int WorkPool::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_count_;
}

int WorkPool::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

}  // namespace i2s
