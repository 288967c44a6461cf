// ForwardingStore: a Store that passes every call to another one. Tests derive from it and
// override the calls they make fail or slow down; everything else reaches a real store.
#ifndef I2S_SERVER_STORE_FORWARDING_STORE_H_
#define I2S_SERVER_STORE_FORWARDING_STORE_H_

#include <optional>
#include <string>
#include <vector>

#include "server/store/store.h"

namespace i2s {

class ForwardingStore : public Store {
 public:
  explicit ForwardingStore(Store* inner) : inner_(inner) {}

  absl::Status PutLatent(const LatentRecord& r) override { return inner_->PutLatent(r); }
  absl::StatusOr<LatentRecord> GetLatent(const std::string& id, bool v) override {
    return inner_->GetLatent(id, v);
  }
  absl::StatusOr<LatentPage> ListLatents(const Page& p, const std::string& f,
                                         const std::optional<std::string>& t) override {
    return inner_->ListLatents(p, f, t);
  }
  absl::Status DeleteLatent(const std::string& id) override { return inner_->DeleteLatent(id); }
  absl::Status PutDirection(const DirectionRecord& r) override { return inner_->PutDirection(r); }
  absl::StatusOr<DirectionRecord> GetDirection(const std::string& t, const std::string& f,
                                               const std::string& n, bool v) override {
    return inner_->GetDirection(t, f, n, v);
  }
  absl::StatusOr<DirectionPage> ListDirections(const Page& p, const std::string& f,
                                               const std::optional<std::string>& t) override {
    return inner_->ListDirections(p, f, t);
  }
  absl::Status DeleteDirection(const std::string& t, const std::string& f,
                               const std::string& n) override {
    return inner_->DeleteDirection(t, f, n);
  }
  absl::Status CreateJob(const JobRecord& r) override { return inner_->CreateJob(r); }
  absl::Status UpdateJob(const JobRecord& r) override { return inner_->UpdateJob(r); }
  absl::Status MarkCancelRequested(const std::string& id) override {
    return inner_->MarkCancelRequested(id);
  }
  absl::Status SaveCheckpoint(const std::string& id, int step, const std::string& bytes,
                              int64_t next, const std::string& owner, int64_t epoch) override {
    return inner_->SaveCheckpoint(id, step, bytes, next, owner, epoch);
  }
  absl::StatusOr<std::vector<JobRecord>> ClaimJobs(const std::string& o, int64_t now, int64_t ms,
                                                   ClaimScope scope) override {
    return inner_->ClaimJobs(o, now, ms, scope);
  }
  absl::StatusOr<std::vector<JobLease>> RenewLeases(const std::string& o, int64_t now,
                                                    int64_t ms) override {
    return inner_->RenewLeases(o, now, ms);
  }
  absl::Status SaveProgress(const std::string& id, const std::string& o, int64_t epoch,
                            const std::string& p) override {
    return inner_->SaveProgress(id, o, epoch, p);
  }
  absl::StatusOr<JobRecord> GetJob(const std::string& id, bool b) override {
    return inner_->GetJob(id, b);
  }
  absl::StatusOr<JobPage> ListJobs(const Page& p, const std::vector<JobState>& st,
                                   const std::optional<std::string>& t) override {
    return inner_->ListJobs(p, st, t);
  }
  absl::StatusOr<std::vector<JobRecord>> UnfinishedJobs() override {
    return inner_->UnfinishedJobs();
  }
  absl::StatusOr<std::vector<JobRecord>> JobsWithoutTotalSteps(int limit) override {
    return inner_->JobsWithoutTotalSteps(limit);
  }
  absl::Status SetTotalSteps(const std::string& id, int total_steps) override {
    return inner_->SetTotalSteps(id, total_steps);
  }
  absl::StatusOr<std::string> ClaimRequest(const std::string& m, const std::string& id,
                                           const std::string& h, const std::string& r) override {
    return inner_->ClaimRequest(m, id, h, r);
  }
  absl::StatusOr<std::string> FindRequest(const std::string& m, const std::string& id,
                                          const std::string& h) override {
    return inner_->FindRequest(m, id, h);
  }
  absl::StatusOr<std::string> CreateJobWithClaim(const JobRecord& r,
                                                 const RequestClaim& c) override {
    return inner_->CreateJobWithClaim(r, c);
  }
  absl::StatusOr<std::string> PutLatentWithClaim(const LatentRecord& r,
                                                 const RequestClaim& c) override {
    return inner_->PutLatentWithClaim(r, c);
  }
  absl::Status FinishJobWithLatent(const JobRecord& r, const LatentRecord& l) override {
    return inner_->FinishJobWithLatent(r, l);
  }
  absl::StatusOr<TenantUsage> Usage(const std::string& t) override { return inner_->Usage(t); }
  absl::StatusOr<std::vector<TenantUsage>> AllUsage() override { return inner_->AllUsage(); }
  absl::StatusOr<Expired> ExpireOld(int64_t jobs, int64_t requests, int limit) override {
    return inner_->ExpireOld(jobs, requests, limit);
  }
  absl::Status ReclaimSpace() override { return inner_->ReclaimSpace(); }
  bool shared() const override { return inner_->shared(); }
  const char* backend() const override { return inner_->backend(); }

 private:
  Store* inner_;
};

}  // namespace i2s

#endif  // I2S_SERVER_STORE_FORWARDING_STORE_H_
