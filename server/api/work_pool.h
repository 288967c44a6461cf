// WorkPool: CPU work of calls (image decoding, face alignment, paste-back) run off the gRPC
// threads, on a fixed set of worker threads, with bounded waiting. A call hands its work
// to the pool and returns its gRPC thread at once; the work answers the call when done.
//
// Bounds: `threads` tasks run at once (each may hold a decoded photo: that is the memory
// bound); at most `queue_limit` wait; one tenant may have at most `tenant_limit` tasks
// waiting or running, so one tenant cannot fill the queue. Beyond them Submit is
// ResourceExhausted naming the limit and its flag. Among waiting tasks, the pool takes
// tenants in turn (round robin), so a tenant with many queued decodes does not delay
// another tenant's one by more than one task per worker.
//
// Thread-safe. The destructor runs what is queued, then joins the workers.
#ifndef I2S_SERVER_API_WORK_POOL_H_
#define I2S_SERVER_API_WORK_POOL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

namespace i2s {

class WorkPool {
 public:
  struct Options {
    int threads = 4;
    int queue_limit = 64;
    int tenant_limit = 16;
    // Named in refusals.
    std::string what = "image decodes";
    std::string queue_flag = "--image-queue-limit";
    std::string tenant_flag = "--tenant-max-images";
  };
  explicit WorkPool(Options options);
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Queues `task` for `tenant`; it runs on a worker thread. ResourceExhausted when the
  // queue or the tenant's share is full; Unavailable once the pool is stopping.
  absl::Status Submit(const std::string& tenant, std::function<void()> task);

  int waiting() const;
  int running() const;
  const Options& options() const { return options_; }

 private:
  void Loop();

  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  // Waiting tasks per tenant, and the tenants with waiting tasks in turn order.
  std::map<std::string, std::deque<std::function<void()>>> waiting_;
  std::deque<std::string> turn_;
  int waiting_count_ = 0, running_ = 0;
  std::map<std::string, int> per_tenant_;  // waiting + running
  std::vector<std::thread> threads_;
};

}  // namespace i2s

#endif  // I2S_SERVER_API_WORK_POOL_H_
