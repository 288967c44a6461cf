// Persistent state of the service: latents (by ID) and embedding jobs (by ID), plus the
// request_id table behind idempotent creating calls. Domain types only: no protobuf, no
// gRPC, no LibTorch. Opaque byte fields (job spec, checkpoint, result) are serialised by
// their owner (server/jobs) and stored as blobs.
//
// Implementations are thread-safe: every method may be called from any thread.
// Backends: SqliteStore (sqlite_store.h, the embedded default, one server) and
// PostgresStore (postgres_store.h, shared by several replicas).
#ifndef I2S_SERVER_STORE_STORE_H_
#define I2S_SERVER_STORE_STORE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace i2s {

// Final metrics of the embedding that produced a latent (absent for imports and edits).
struct LatentMetrics {
  double loss = 0, mse = 0, perceptual = 0, psnr = 0;
  int steps = 0;
  double lpips = -1;  // LPIPS of the result where the server measured it; -1 = not measured
};

struct LatentRecord {
  std::string id;      // unique, chosen by the caller (the service makes "lat_<hex>")
  std::string tenant;  // the owner ("" on a server without authentication); never changes
  std::string model;   // name of the model it was made with (informational)
  std::string
      fingerprint;      // WeightsFingerprint() of that model: a latent means nothing under another
  int num_layers = 0;   // rows of W+
  int latent_size = 0;  // 512 for the published models
  std::vector<float>
      values;               // row-major [num_layers, latent_size]; empty when listed without values
  std::string noise_npz;    // optional per-layer noise maps as .npz bytes; empty = none
  uint64_t noise_seed = 0;  // seed of the maps when noise_npz is empty (generated on use)
  bool has_noise = false;   // read back: noise_npz is not empty (also when it is not read)
  // Provenance: how the latent came to be.
  std::string source;                // "embed", "import", "morph", "stylemix", "expression"
  std::string job_id;                // for "embed"
  std::vector<std::string> parents;  // input latent IDs of an edit
  std::string params_json;           // the edit's parameters, as a JSON object
  std::optional<LatentMetrics> metrics;
  int64_t created_unix_ms = 0;
  std::map<std::string, std::string> labels;
};

struct Page {
  int page_size = 50;      // 1..1000; 0 means the default (50)
  std::string page_token;  // empty for the first page; else next_page_token of the last call
};

struct LatentPage {
  std::vector<LatentRecord> latents;  // newest first; values and noise_npz left empty
  std::string next_page_token;        // empty on the last page
};

class LatentStore {
 public:
  virtual ~LatentStore() = default;
  // AlreadyExists if the ID is taken; InvalidArgument if values.size() !=
  // num_layers * latent_size.
  virtual absl::Status PutLatent(const LatentRecord& record) = 0;
  // NotFound naming the ID. Without values, `values` and `noise_npz` are left empty.
  virtual absl::StatusOr<LatentRecord> GetLatent(const std::string& id,
                                                 bool with_values = true) = 0;
  // Newest first (created_unix_ms, then ID). InvalidArgument for a bad page token/size.
  // `fingerprint` non-empty keeps only latents of that model.
  // `tenant` set keeps only that tenant's latents (nullopt: every tenant's).
  virtual absl::StatusOr<LatentPage> ListLatents(
      const Page& page, const std::string& fingerprint = "",
      const std::optional<std::string>& tenant = std::nullopt) = 0;
  // NotFound if absent. The request IDs naming it go with it (Store's RequestStore), so a
  // repeat of the call that made it makes a new one.
  virtual absl::Status DeleteLatent(const std::string& id) = 0;
};

// A semantic direction (InterFaceGAN boundary, GANSpace component, mean difference of
// latents) kept for one tenant and one model: the key is (tenant, fingerprint, name).
struct DirectionRecord {
  std::string tenant;
  std::string fingerprint;  // WeightsFingerprint() of the model it is for
  std::string name;         // unique per (tenant, fingerprint); checked by the service
  std::string model;        // the model's name when stored (informational)
  int num_layers = 0;       // rows of the vector: 1 for a W direction ([D]), else the model's L
  int latent_size = 0;
  std::vector<float> values;  // row-major [num_layers, latent_size]; empty when listed
  double sigma = 1;           // alpha = 1 steps sigma * vector (GANSpace: the component's stdev)
  std::string source;         // how it was made: "interfacegan_npy", "wplus_npy", ...
  std::string params_json;    // provenance (file hash, component, latent IDs), a JSON object
  int64_t created_unix_ms = 0;
};

struct DirectionPage {
  std::vector<DirectionRecord> directions;  // by name, then fingerprint; values left empty
  std::string next_page_token;              // empty on the last page
};

class DirectionStore {
 public:
  virtual ~DirectionStore() = default;
  // Writes a new direction. Its key taken by one with the same content (num_layers,
  // latent_size, values, sigma, source): OK, nothing written (a repeated call). By another:
  // AlreadyExists naming the name. InvalidArgument if values.size() != num_layers *
  // latent_size. Over StorageQuota::max_directions (in the write's transaction):
  // ResourceExhausted naming the quota, the usage and the limit.
  virtual absl::Status PutDirection(const DirectionRecord& record) = 0;
  // NotFound naming the name.
  virtual absl::StatusOr<DirectionRecord> GetDirection(const std::string& tenant,
                                                       const std::string& fingerprint,
                                                       const std::string& name,
                                                       bool with_values = true) = 0;
  // One tenant's directions (nullopt: every tenant's), by name then fingerprint;
  // `fingerprint` non-empty keeps only that model's. InvalidArgument for a bad page.
  virtual absl::StatusOr<DirectionPage> ListDirections(
      const Page& page, const std::string& fingerprint = "",
      const std::optional<std::string>& tenant = std::nullopt) = 0;
  // NotFound naming the name if absent.
  virtual absl::Status DeleteDirection(const std::string& tenant, const std::string& fingerprint,
                                       const std::string& name) = 0;
};

enum class JobState { kQueued = 1, kRunning = 2, kSucceeded = 3, kFailed = 4, kCancelled = 5 };
const char* JobStateName(JobState state);  // "queued", "running", ...
bool IsTerminal(JobState state);

struct JobRecord {
  std::string id;          // unique ("job_<hex>")
  std::string request_id;  // the client's idempotency key, may be empty
  std::string tenant;      // the owner (see LatentRecord::tenant); never changes
  std::string model;       // model name
  JobState state = JobState::kQueued;
  // A CancelJob acknowledged while the job ran: a restart ends the job as cancelled
  // instead of resuming it. Once set, UpdateJob never clears it.
  bool cancel_requested = false;
  std::string spec;        // opaque: everything needed to run the job (inputs, options)
  std::string checkpoint;  // opaque: last checkpoint; empty = none
  int checkpoint_step = 0;
  std::string result;     // opaque: final metrics etc. once terminal
  std::string latent_id;  // the stored result once succeeded
  int error_code = 0;     // absl::StatusCode of a failed/cancelled job
  std::string error_message;
  int64_t next_sequence = 1;  // first event sequence number not yet used
  int64_t created_unix_ms = 0, started_unix_ms = 0, finished_unix_ms = 0;
  // The replica that runs the job, and until when its lease holds (see JobStore).
  std::string owner;
  int64_t lease_expires_unix_ms = 0;
  // Which claim of the job this is (see JobStore): ClaimJobs adds one each time it hands
  // the job to a claimer, so two processes under one owner name (a replica restarted with
  // the same --replica-id) hold different epochs. Fenced writes name it.
  int64_t lease_epoch = 0;
  // Opaque: the owner's latest progress (step, metrics), for other replicas' GetJob and
  // WatchJob; empty = none published.
  std::string progress;
  // The most steps the job can take, written by CreateJob (and SetTotalSteps), so that
  // reading a job needs none of its blobs. -1: not known yet (a job stored by a release
  // before the column existed; see JobsWithoutTotalSteps).
  int total_steps = 0;
};

struct JobPage {
  std::vector<JobRecord> jobs;  // newest first; spec and checkpoint left empty
  std::string next_page_token;
};

// Leases: an unfinished job is run by one replica, its owner, whose lease on it must be
// renewed before lease_expires_unix_ms. A replica claims the jobs it created, and those
// whose owner's lease ran out (the owner died, or lost the database).
//
// Fencing: every write of a job's state (UpdateJob, SaveCheckpoint, SaveProgress,
// FinishJobWithLatent) names the owner and the lease epoch it holds, and changes nothing
// unless both are still the job's (FailedPrecondition, NotTheOwner, otherwise). The epoch
// goes up with every claim, the owner's own re-claims included, so neither a replica that
// lost a job nor an earlier process under the same owner name (restarted with the same
// --replica-id, or one that lost the job and claimed it again) can overwrite the work of
// the one that holds it now. A new job's epoch is the one its creator gives CreateJob
// (the scheduler gives 1); jobs stored before epochs existed have 0.
struct JobLease {
  std::string id;
  JobState state = JobState::kQueued;
  bool cancel_requested = false;
  // The job's epoch now: one other than the renewer holds means that another process
  // under the same owner name claimed the job since.
  int64_t lease_epoch = 0;
};

// Which unfinished jobs ClaimJobs takes.
enum class ClaimScope {
  // Those without an owner and those whose lease expired: what a running replica adopts
  // (never the jobs under its own name that hold a live lease: it runs them, or another
  // process under that name does).
  kExpired,
  // Those, and every job the claimer's name owns already, whatever its lease says: what a
  // replica takes at its start (its previous process's jobs).
  kExpiredAndOwn,
  // Every unfinished job: a store no other replica uses.
  kAll,
};

class JobStore {
 public:
  virtual ~JobStore() = default;
  // AlreadyExists if the ID is taken. Stores owner and lease_epoch as given (the job's
  // first lease: the scheduler gives its own name and epoch 1). The lease runs until
  // lease_expires_unix_ms, by the creator's clock; a PostgresStore with database_clock
  // sets it by the database's clock instead, for the lease length the record gives:
  // lease_expires_unix_ms - created_unix_ms (for a record with an owner; one without is
  // stored as given).
  virtual absl::Status CreateJob(const JobRecord& record) = 0;
  // Replaces every field of the job with `record` except tenant, spec, checkpoint,
  // checkpoint_step, total_steps (which only CreateJob, SaveCheckpoint and SetTotalSteps
  // write), owner, lease, epoch and progress (ClaimJobs, RenewLeases, SaveProgress). A
  // terminal state releases the spec and checkpoint: a finished job keeps only its
  // summary and result (its latent keeps what it needs). NotFound if absent;
  // FailedPrecondition (NotTheOwner) unless record.owner and record.lease_epoch are the
  // job's owner and epoch.
  virtual absl::Status UpdateJob(const JobRecord& record) = 0;
  // Records an acknowledged cancel request (sets cancel_requested, nothing else), from any
  // replica: the owner sees it at its next RenewLeases. NotFound if absent.
  virtual absl::Status MarkCancelRequested(const std::string& id) = 0;
  // NotFound if absent; FailedPrecondition unless `owner` and `lease_epoch` are the job's.
  virtual absl::Status SaveCheckpoint(const std::string& id, int step, const std::string& bytes,
                                      int64_t next_sequence, const std::string& owner,
                                      int64_t lease_epoch) = 0;
  // Makes `owner` the owner of the unfinished jobs `scope` names (ClaimScope), with a
  // lease until now_unix_ms + lease_ms and the next lease epoch (one more than the job's).
  // Returns those jobs, oldest first, with all blobs and their new epochs. Two replicas
  // never claim the same job.
  virtual absl::StatusOr<std::vector<JobRecord>> ClaimJobs(const std::string& owner,
                                                           int64_t now_unix_ms, int64_t lease_ms,
                                                           ClaimScope scope) = 0;
  // Extends the lease of every unfinished job `owner` owns to now_unix_ms + lease_ms,
  // whatever its epoch; returns those jobs with their epochs (a job missing from the
  // answer is not the caller's any more; one with another epoch than the caller holds is
  // another process's under the same name).
  virtual absl::StatusOr<std::vector<JobLease>> RenewLeases(const std::string& owner,
                                                            int64_t now_unix_ms,
                                                            int64_t lease_ms) = 0;
  // Publishes the owner's progress of a job. FailedPrecondition unless `owner` and
  // `lease_epoch` are the job's (NotFound if absent).
  virtual absl::Status SaveProgress(const std::string& id, const std::string& owner,
                                    int64_t lease_epoch, const std::string& progress) = 0;
  // With all blobs, or (with_blobs false) with spec and checkpoint left empty (the result,
  // a few hundred bytes of metrics, is always read).
  virtual absl::StatusOr<JobRecord> GetJob(const std::string& id, bool with_blobs = true) = 0;
  // Newest first; `states` empty = all states; `tenant` as in ListLatents.
  virtual absl::StatusOr<JobPage> ListJobs(
      const Page& page, const std::vector<JobState>& states,
      const std::optional<std::string>& tenant = std::nullopt) = 0;
  // Jobs in kQueued or kRunning, oldest first, with all blobs: what a restart resumes.
  virtual absl::StatusOr<std::vector<JobRecord>> UnfinishedJobs() = 0;
  // The migration of jobs stored before total_steps was a column: at most `limit` of the
  // jobs whose total_steps is -1, oldest first, with all blobs (the spec says it; the store
  // cannot read the spec, so the scheduler fills them in at its start).
  virtual absl::StatusOr<std::vector<JobRecord>> JobsWithoutTotalSteps(int limit) = 0;
  // Sets a job's total_steps; a finished job's spec is released with it (as UpdateJob
  // does when a job ends). NotFound if absent.
  virtual absl::Status SetTotalSteps(const std::string& id, int total_steps) = 0;
};

// Idempotency keys (AIP-155): the first call with a (method, request_id) records the
// result it created; a repeat gets that result back. Keys are per tenant: callers pass
// RequestScope(method, tenant) as the method.
class RequestStore {
 public:
  virtual ~RequestStore() = default;
  // If (method, request_id) is new, records (request_hash, result_id) and returns
  // result_id. If it exists with the same request_hash, returns the recorded result_id
  // (the caller then creates nothing). With another hash: InvalidArgument
  // ("request_id: ... was used for a different request").
  virtual absl::StatusOr<std::string> ClaimRequest(const std::string& method,
                                                   const std::string& request_id,
                                                   const std::string& request_hash,
                                                   const std::string& result_id) = 0;
  // Looks up without recording: NotFound if new.
  virtual absl::StatusOr<std::string> FindRequest(const std::string& method,
                                                  const std::string& request_id,
                                                  const std::string& request_hash) = 0;
};

// A request ID claimed together with the record it names (CreateJobWithClaim,
// PutLatentWithClaim). `method` is RequestScope(method, tenant).
struct RequestClaim {
  std::string method, request_id, request_hash;
};

// The `method` under which a tenant's request_ids are kept: "Embed" for tenant "",
// "Embed@alpha" for tenant "alpha" (tenant names cannot contain '@').
std::string RequestScope(const std::string& method, const std::string& tenant);

// What one tenant may keep in the store (0 = no limit). Enforced by the store in the
// transaction of the write, so concurrent calls (on any replica) cannot pass it together:
// - latents: PutLatent and PutLatentWithClaim, and CreateJob*, which reserves a latent for
//   the job's result: latents + unfinished jobs must stay within max_latents. An
//   embedding's own result (source "embed") was reserved so and is never refused.
// - latent bytes: values and noise maps of the tenant's latents. A new latent must fit;
//   a new job needs the tenant below the limit (its result's size is not known yet).
// - jobs: job records of any state (finished ones leave with ExpireFinished), and their
//   bytes (spec, checkpoint, result).
// Refusals are ResourceExhausted naming the quota, the usage and the limit.
struct StorageQuota {
  int64_t max_latents = 0;
  int64_t max_directions = 0;  // semantic directions of one tenant (PutDirection)
  int64_t max_latent_bytes = 0;
  int64_t max_jobs = 0;
  int64_t max_job_bytes = 0;
};

// What one tenant keeps in the store.
struct TenantUsage {
  std::string tenant;
  int64_t latents = 0, latent_bytes = 0;
  int64_t directions = 0, direction_bytes = 0;  // direction_bytes: their values
  int64_t jobs = 0, unfinished_jobs = 0, job_bytes = 0;
  int64_t request_ids = 0;  // idempotency keys held (until ExpireOld drops them)
};

// What one ExpireOld removed.
struct Expired {
  int64_t jobs = 0;         // finished jobs (with the request IDs naming them)
  int64_t request_ids = 0;  // request IDs older than the cutoff, and those of expired jobs
};

// All four behind one object (one database).
class Store : public LatentStore, public DirectionStore, public JobStore, public RequestStore {
 public:
  // Applies from the next write on; set before serving. Not thread-safe with writes.
  void set_quota(const StorageQuota& quota) { quota_ = quota; }
  const StorageQuota& quota() const { return quota_; }

  // What `tenant` keeps now.
  virtual absl::StatusOr<TenantUsage> Usage(const std::string& tenant) = 0;
  // Every tenant that keeps anything, by tenant name.
  virtual absl::StatusOr<std::vector<TenantUsage>> AllUsage() = 0;
  // Deletes finished jobs (succeeded, failed, cancelled) that ended before
  // jobs_before_unix_ms, together with the request IDs naming them, and every request ID
  // claimed before requests_before_unix_ms; at most `limit` jobs and `limit` request IDs
  // per call (the caller repeats while it gets full batches). A cutoff of 0 expires
  // nothing of its kind. Latents are never expired: they are the tenant's data.
  virtual absl::StatusOr<Expired> ExpireOld(int64_t jobs_before_unix_ms,
                                            int64_t requests_before_unix_ms, int limit) = 0;

  // The request ID and the record it names, written in one transaction, so no crash,
  // full disk or lost database ever leaves a key naming nothing. A new key: both are
  // written and record.id is returned. A key seen before with the same request_hash:
  // nothing is written and the first result's ID is returned (the caller answers with
  // that). Another hash: InvalidArgument, nothing written. Any error: nothing written.
  virtual absl::StatusOr<std::string> CreateJobWithClaim(const JobRecord& record,
                                                         const RequestClaim& claim) = 0;
  virtual absl::StatusOr<std::string> PutLatentWithClaim(const LatentRecord& record,
                                                         const RequestClaim& claim) = 0;
  // The final record of a job (as UpdateJob writes it) and the job's result latent, in one
  // transaction and fenced as UpdateJob (record.owner and record.lease_epoch): both are
  // written, or neither. The latent must be the job's embedding (latent.job_id ==
  // record.id, source "embed": InvalidArgument otherwise, as for a latent PutLatent
  // refuses); quotas never refuse it (the job reserved it, see StorageQuota). A latent of
  // that ID already stored for the same job (an earlier try whose answer was lost) counts
  // as stored: the record is still written. One of another job: AlreadyExists, nothing
  // written. NotFound / FailedPrecondition (NotTheOwner) as UpdateJob; any error: nothing
  // written.
  virtual absl::Status FinishJobWithLatent(const JobRecord& record, const LatentRecord& latent) = 0;
  // Gives the space of deleted rows and released blobs back to the file system where the
  // backend does not do it itself (SQLite: an incremental vacuum; PostgreSQL's autovacuum
  // makes it reusable on its own). Called now and then by the scheduler's housekeeping.
  virtual absl::Status ReclaimSpace() = 0;
  // True when other replicas may use the same database (PostgreSQL): jobs are then
  // claimed by lease, and progress is published for the other replicas.
  virtual bool shared() const = 0;
  // "sqlite" or "postgres", for logs and ServerInfo.
  virtual const char* backend() const = 0;

 protected:
  StorageQuota quota_;
};

}  // namespace i2s

#endif  // I2S_SERVER_STORE_STORE_H_
