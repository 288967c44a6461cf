// PostgresStore: the Store backend that several server replicas share (issue 7).
#ifndef I2S_SERVER_STORE_POSTGRES_STORE_H_
#define I2S_SERVER_STORE_POSTGRES_STORE_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/store/store.h"

// From <libpq-fe.h>, which only postgres_store.cc includes.
struct pg_conn;

namespace i2s {

struct PostgresOptions {
  int pool_size = 4;          // connections, opened on demand
  int connect_timeout_s = 5;  // per connection attempt (libpq connect_timeout)
  int statement_timeout_ms = 30000;
  // Whose clock judges and sets job leases: the database's (statement_timestamp()), the
  // one clock every replica shares, so a replica whose clock runs fast cannot take a live
  // job nor one whose clock runs slow keep a dead one; the callers' `now_unix_ms` is then
  // not used, and a new job's first lease (CreateJob, CreateJobWithClaim) runs from the
  // database's now for the length its record gives (lease_expires_unix_ms -
  // created_unix_ms). false: the callers' clock, as SqliteStore does (the store contract
  // tests drive time themselves with it).
  bool database_clock = true;
};

// Latents, directions, jobs and request IDs in one PostgreSQL database, through libpq.
//
// Leases (ClaimJobs, RenewLeases, and a new job's first lease: CreateJob,
// CreateJobWithClaim) follow the database's clock (PostgresOptions).
//
// Schema: created and migrated at Open, inside a transaction that holds an advisory lock,
// so replicas starting together apply each migration once; the version is the single
// row of table i2s_schema, and a database from a newer release is refused. Columns and
// semantics are SqliteStore's (the same contract tests run against both): IDs and
// tenants are TEXT COLLATE "C", so listings order and page exactly as SQLite's do;
// blobs are BYTEA (TOASTed out of line, so listings never read them); every value
// travels as a binary parameter, never inside SQL text.
//
// Connections: a pool of up to pool_size, each opened on first need. A connection that
// breaks (the server restarted, the network dropped) is reopened at the next call; a
// statement cut off by the break is retried once on a fresh connection when that is safe
// (every statement here is idempotent, and an INSERT that may have landed is checked
// for first). If the database stays unreachable, calls fail with Unavailable, which the
// scheduler and clients retry. Messages name the host and database, never the password.
//
// Thread-safe; calls run in parallel up to the pool size.
class PostgresStore final : public Store {
 public:
  // `conninfo`: a postgres:// URI or libpq key=value string. Connects once (Unavailable
  // if the server cannot be reached, naming host and database), then migrates the schema
  // (FailedPrecondition for a schema newer than this code).
  static absl::StatusOr<std::unique_ptr<PostgresStore>> Open(const std::string& conninfo,
                                                             const PostgresOptions& options = {});

  ~PostgresStore() override;
  PostgresStore(const PostgresStore&) = delete;
  PostgresStore& operator=(const PostgresStore&) = delete;

  // LatentStore.
  absl::Status PutLatent(const LatentRecord& record) override;
  absl::StatusOr<LatentRecord> GetLatent(const std::string& id, bool with_values = true) override;
  absl::StatusOr<LatentPage> ListLatents(
      const Page& page, const std::string& fingerprint = "",
      const std::optional<std::string>& tenant = std::nullopt) override;
  absl::Status DeleteLatent(const std::string& id) override;

  // DirectionStore.
  absl::Status PutDirection(const DirectionRecord& record) override;
  absl::StatusOr<DirectionRecord> GetDirection(const std::string& tenant,
                                               const std::string& fingerprint,
                                               const std::string& name,
                                               bool with_values = true) override;
  absl::StatusOr<DirectionPage> ListDirections(
      const Page& page, const std::string& fingerprint = "",
      const std::optional<std::string>& tenant = std::nullopt) override;
  absl::Status DeleteDirection(const std::string& tenant, const std::string& fingerprint,
                               const std::string& name) override;

  // JobStore.
  absl::Status CreateJob(const JobRecord& record) override;
  absl::Status UpdateJob(const JobRecord& record) override;
  absl::Status MarkCancelRequested(const std::string& id) override;
  absl::Status SaveCheckpoint(const std::string& id, int step, const std::string& bytes,
                              int64_t next_sequence, const std::string& owner,
                              int64_t lease_epoch) override;
  absl::StatusOr<JobRecord> GetJob(const std::string& id, bool with_blobs = true) override;
  absl::StatusOr<JobPage> ListJobs(
      const Page& page, const std::vector<JobState>& states,
      const std::optional<std::string>& tenant = std::nullopt) override;
  absl::StatusOr<std::vector<JobRecord>> UnfinishedJobs() override;
  absl::StatusOr<std::vector<JobRecord>> JobsWithoutTotalSteps(int limit) override;
  absl::Status SetTotalSteps(const std::string& id, int total_steps) override;
  absl::StatusOr<std::vector<JobRecord>> ClaimJobs(const std::string& owner, int64_t now_unix_ms,
                                                   int64_t lease_ms, ClaimScope scope) override;
  absl::StatusOr<std::vector<JobLease>> RenewLeases(const std::string& owner, int64_t now_unix_ms,
                                                    int64_t lease_ms) override;
  absl::Status SaveProgress(const std::string& id, const std::string& owner, int64_t lease_epoch,
                            const std::string& progress) override;

  // RequestStore.
  absl::StatusOr<std::string> CreateJobWithClaim(const JobRecord& record,
                                                 const RequestClaim& claim) override;
  absl::StatusOr<std::string> PutLatentWithClaim(const LatentRecord& record,
                                                 const RequestClaim& claim) override;
  absl::Status FinishJobWithLatent(const JobRecord& record, const LatentRecord& latent) override;
  absl::StatusOr<std::string> ClaimRequest(const std::string& method, const std::string& request_id,
                                           const std::string& request_hash,
                                           const std::string& result_id) override;
  absl::StatusOr<std::string> FindRequest(const std::string& method, const std::string& request_id,
                                          const std::string& request_hash) override;

  absl::StatusOr<TenantUsage> Usage(const std::string& tenant) override;
  absl::StatusOr<std::vector<TenantUsage>> AllUsage() override;
  absl::StatusOr<Expired> ExpireOld(int64_t jobs_before_unix_ms, int64_t requests_before_unix_ms,
                                    int limit) override;

  absl::Status ReclaimSpace() override;
  bool shared() const override { return true; }
  const char* backend() const override { return "postgres"; }

  // "host:port/dbname as user", for logs and messages (no password).
  const std::string& description() const { return description_; }

  // Internal: one execution against the pool (defined in postgres_store.cc).
  class Statement;
  class Result;
  class Transaction;

 private:
  PostgresStore(std::string conninfo, std::string description, const PostgresOptions& options);

  // A pooled connection, checked out for one call.
  struct Connection;
  class Checkout;
  // Blocks until a connection is free; opens it if it is not open or broken.
  absl::StatusOr<Checkout> Acquire();
  void Release(Connection* connection);
  absl::Status Connect(Connection& connection);
  absl::Status Migrate();
  // Runs `statement` on a pooled connection; see the class comment for the retry.
  absl::StatusOr<Result> Run(const Statement& statement);
  // A quota's judgement of a write by the tenant's usage before it; null: no quota applies.
  using QuotaCheck = std::function<absl::Status(const TenantUsage&)>;
  QuotaCheck LatentQuotaCheck(const LatentRecord& record) const;
  QuotaCheck JobQuotaCheck(const JobRecord& record) const;
  // Run, or with a check: in one transaction holding the tenant's quota lock
  // (pg_advisory_xact_lock), the usage read, `check`, then `write`; without Run's retry.
  absl::StatusOr<Result> RunWithinQuota(const std::string& tenant, const QuotaCheck& check,
                                        const Statement& write);
  // Runs `body` in one transaction on one pooled connection: BEGIN, body, COMMIT, or
  // ROLLBACK when body or the commit fails. Without Run's retry: a broken connection is
  // Unavailable (the commit may or may not have landed).
  absl::Status InTransaction(const std::function<absl::Status(Transaction&)>& body);
  // The time a lease statement compares and sets leases by (PostgresOptions::database_clock).
  std::string LeaseClock(Statement* st, int64_t now_unix_ms) const;
  // Why a fenced write of job `id` by `owner` at `lease_epoch` changed no row: NotFound or
  // NotTheOwner.
  absl::Status NotUpdated(const std::string& id, const std::string& owner, int64_t lease_epoch);

  const std::string conninfo_;  // never logged: it may hold a password
  const std::string description_;
  const PostgresOptions options_;

  std::mutex mu_;  // guards connections_ and free_
  std::condition_variable freed_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<Connection*> free_;
};

}  // namespace i2s

#endif  // I2S_SERVER_STORE_POSTGRES_STORE_H_
