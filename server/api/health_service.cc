#include "server/api/health_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/api/error_writer.h"

namespace i2s {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

// What Check and Watch answer for a service the server has (or, Watch only, has not).
HealthCheckResponse::ServingStatus StatusOf(bool known, bool serving) {
  if (!known) return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

}  // namespace

// One open Watch: writes the status when it is opened and whenever it changes, one write
// at a time (a change during a write is sent when that write is done, latest value only).
class HealthService::Watcher : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* owner, bool known) : owner_(owner), known_(known) {}

  // Called with owner_->mu_ held: the status to send, or the end of the stream.
  void Notify(bool serving) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = StatusOf(known_, serving);
    has_pending_ = true;
    WriteLocked();
  }
  void End() {
    std::lock_guard<std::mutex> lock(mu_);
    ending_ = true;
    if (!writing_) FinishLocked(grpc::Status::OK);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    if (ending_) {
      FinishLocked(grpc::Status::OK);
      return;
    }
    WriteLocked();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!writing_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
  }
  void OnDone() override {
    owner_->Remove(this);
    delete this;
  }

 private:
  void WriteLocked() {
    if (writing_ || finished_ || !has_pending_) return;
    // Only a change is news; the first status is always sent.
    if (sent_any_ && pending_ == last_sent_) {
      has_pending_ = false;
      return;
    }
    msg_.set_status(pending_);
    last_sent_ = pending_;
    sent_any_ = true;
    has_pending_ = false;
    writing_ = true;
    StartWrite(&msg_);
  }
  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  HealthService* const owner_;
  const bool known_;
  std::mutex mu_;
  HealthCheckResponse msg_;
  HealthCheckResponse::ServingStatus pending_ = HealthCheckResponse::UNKNOWN;
  HealthCheckResponse::ServingStatus last_sent_ = HealthCheckResponse::UNKNOWN;
  bool has_pending_ = false, sent_any_ = false, writing_ = false, ending_ = false,
       finished_ = false;
};

HealthService::HealthService(std::vector<std::string> services, int max_watchers)
    : services_(std::move(services)), max_watchers_(max_watchers) {}

bool HealthService::Known(const std::string& service) const {
  return service.empty() ||
         std::find(services_.begin(), services_.end(), service) != services_.end();
}

void HealthService::SetServing(bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  serving_ = serving;
  for (Watcher* w : watchers_) w->Notify(serving);
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shut_down_ = true;
  for (Watcher* w : watchers_) w->End();
}

void HealthService::Remove(Watcher* w) {
  std::lock_guard<std::mutex> lock(mu_);
  watchers_.erase(w);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* ctx,
                                               const HealthCheckRequest* req,
                                               HealthCheckResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  if (!Known(req->service())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 absl::StrCat("service \"", req->service(), "\" is not served")));
    return reactor;
  }
  std::lock_guard<std::mutex> lock(mu_);
  resp->set_status(StatusOf(/*known=*/true, serving_));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* /*ctx*/, const HealthCheckRequest* req) {
  std::lock_guard<std::mutex> lock(mu_);
  if (shut_down_) {
    return new ErrorWriter<HealthCheckResponse>(
        absl::UnavailableError("the server is shutting down"));
  }
  if (static_cast<int>(watchers_.size()) >= max_watchers_) {
    return new ErrorWriter<HealthCheckResponse>(absl::ResourceExhaustedError(
        absl::StrCat("health watchers: ", watchers_.size(),
                     " open, the limit (--max-health-watchers ", max_watchers_, ")")));
  }
  auto* w = new Watcher(this, Known(req->service()));
  watchers_.insert(w);
  w->Notify(serving_);
  return w;
}

}  // namespace i2s
