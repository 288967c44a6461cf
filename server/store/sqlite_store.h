// SqliteStore: the embedded Store backend, one SQLite database file per server.
#ifndef I2S_SERVER_STORE_SQLITE_STORE_H_
#define I2S_SERVER_STORE_SQLITE_STORE_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/store/store.h"

// From <sqlite3.h>, which only sqlite_store.cc includes.
struct sqlite3;
struct sqlite3_stmt;

namespace i2s {

// Latents, directions, jobs and request IDs in one SQLite database (WAL journal, synchronous=FULL).
// The schema is created on first Open and versioned with PRAGMA user_version, so later
// releases can migrate it in place; a database from a newer release is refused.
//
// Storage: latent values are float32 little-endian blobs; parents and labels are JSON
// text (so they must be valid UTF-8, else PutLatent gives InvalidArgument); big blobs sit
// at the end of each row, so listings, which read only the columns before them, never
// touch their pages. Page tokens are opaque (web-safe base64 of the last row's
// "created_unix_ms:id" key, tagged with the table) and stay valid across writes: a listing
// neither skips nor repeats rows that existed when it started.
//
// UpdateJob writes neither spec nor checkpoint nor checkpoint_step (the step belongs to
// the checkpoint bytes, which only SaveCheckpoint writes).
//
// Ownership: owns the connection and its prepared statements; the destructor closes them.
// Thread-safe: one connection serialised by a mutex (SQLite's own mutex is not used). Other
// processes may open the same file (WAL plus a busy timeout), e.g. the sqlite3 shell for
// inspection or a backup.
class SqliteStore final : public Store {
 public:
  // Opens (creating if missing) the database at `path`; ":memory:" gives a private
  // in-memory database (for tests). Internal for SQLite errors (unwritable path, a file
  // that is not a database); FailedPrecondition for a schema newer than this code knows.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

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
  absl::StatusOr<std::vector<JobRecord>> ClaimJobs(const std::string& owner, int64_t now_unix_ms,
                                                   int64_t lease_ms, ClaimScope scope) override;
  absl::StatusOr<std::vector<JobLease>> RenewLeases(const std::string& owner, int64_t now_unix_ms,
                                                    int64_t lease_ms) override;
  absl::Status SaveProgress(const std::string& id, const std::string& owner, int64_t lease_epoch,
                            const std::string& progress) override;
  absl::StatusOr<JobRecord> GetJob(const std::string& id, bool with_blobs = true) override;
  absl::StatusOr<JobPage> ListJobs(
      const Page& page, const std::vector<JobState>& states,
      const std::optional<std::string>& tenant = std::nullopt) override;
  absl::StatusOr<std::vector<JobRecord>> UnfinishedJobs() override;
  absl::StatusOr<std::vector<JobRecord>> JobsWithoutTotalSteps(int limit) override;
  absl::Status SetTotalSteps(const std::string& id, int total_steps) override;

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

  // One server per file: leases are kept (so the schema is the same as PostgreSQL's) but
  // a start claims every unfinished job.
  absl::StatusOr<TenantUsage> Usage(const std::string& tenant) override;
  absl::StatusOr<std::vector<TenantUsage>> AllUsage() override;
  absl::StatusOr<Expired> ExpireOld(int64_t jobs_before_unix_ms, int64_t requests_before_unix_ms,
                                    int limit) override;

  absl::Status ReclaimSpace() override;
  bool shared() const override { return false; }
  const char* backend() const override { return "sqlite"; }

 private:
  explicit SqliteStore(sqlite3* db);

  // The cached prepared statement for `sql` (compiled on first use).
  // `sql` is built from constant fragments only; values are always bound parameters.
  // Call with mu_ held.
  absl::StatusOr<sqlite3_stmt*> Prepare(const std::string& sql);
  // Why a fenced write of job `id` by `owner` at `lease_epoch` changed no row: NotFound or
  // NotTheOwner. Call with mu_ held.
  absl::Status NotUpdated(const std::string& id, const std::string& owner, int64_t lease_epoch);
  // The bodies of PutLatent, CreateJob and the claim's insert, with mu_ held.
  // InsertClaimLocked returns whether the key was new.
  absl::Status PutLatentLocked(const LatentRecord& record, const std::string& parents_json,
                               const std::string& labels_json);
  absl::Status CreateJobLocked(const JobRecord& record);
  // UpdateJob's statement (fenced; NotUpdated when it changed nothing), mu_ held.
  absl::Status UpdateJobLocked(const JobRecord& record);
  // The tenant's usage (request IDs counted only `with_requests`: a scan), mu_ held.
  absl::StatusOr<TenantUsage> UsageLocked(const std::string& tenant, bool with_requests);
  absl::StatusOr<bool> InsertClaimLocked(const RequestClaim& claim, const std::string& result_id);
  // In one transaction (BEGIN IMMEDIATE .. COMMIT, ROLLBACK on any error): the claim of
  // `result_id`, then `write` if the key was new; returns the key's result, as
  // ClaimedResultLocked. mu_ held.
  absl::StatusOr<std::string> ClaimLocked(const RequestClaim& claim, const std::string& result_id,
                                          const std::function<absl::Status()>& write);
  // The result recorded for the claim's key (InvalidArgument for another hash); Internal
  // naming `what` if there is none. mu_ held.
  absl::StatusOr<std::string> ClaimedResultLocked(const RequestClaim& claim,
                                                  absl::string_view what);

  // std::mutex rather than absl::Mutex: ThreadSanitizer understands it without an
  // instrumented Abseil build.
  std::mutex mu_;      // guards db_ (every call on it) and statements_
  sqlite3* const db_;  // owned
  std::unordered_map<std::string, sqlite3_stmt*> statements_;  // owned, keyed by SQL text
};

}  // namespace i2s

#endif  // I2S_SERVER_STORE_SQLITE_STORE_H_
