// The PostgreSQL store's schema, as the steps that build it (see schema.h).
#include <iterator>

#include "server/store/schema.h"

namespace i2s::store_internal {
namespace {

// kMigrations[v] takes the schema from version v to v + 1. Append only; never edit a
// released step. The columns are SqliteStore's; JobState values are persisted.
constexpr const char* kMigrations[] = {
    // 0 -> 1: the schema of SqliteStore version 3.
    R"sql(
CREATE TABLE latents (
  id TEXT COLLATE "C" PRIMARY KEY,
  tenant TEXT COLLATE "C" NOT NULL,
  model TEXT NOT NULL,
  fingerprint TEXT COLLATE "C" NOT NULL,
  num_layers BIGINT NOT NULL,
  latent_size BIGINT NOT NULL,
  noise_seed BIGINT NOT NULL,  -- uint64 stored as the int64 with the same bits
  source TEXT NOT NULL,
  job_id TEXT NOT NULL,
  parents_json TEXT NOT NULL,
  params_json TEXT NOT NULL,
  has_metrics BOOLEAN NOT NULL,
  metrics_loss DOUBLE PRECISION,
  metrics_mse DOUBLE PRECISION,
  metrics_perceptual DOUBLE PRECISION,
  metrics_psnr DOUBLE PRECISION,
  metrics_steps BIGINT,
  created_unix_ms BIGINT NOT NULL,
  labels_json TEXT NOT NULL,
  values_f32 BYTEA NOT NULL,
  noise_npz BYTEA NOT NULL
);
CREATE INDEX latents_by_created ON latents (created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_fingerprint ON latents (fingerprint, created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_tenant ON latents (tenant, created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_tenant_fingerprint
  ON latents (tenant, fingerprint, created_unix_ms DESC, id DESC);

CREATE TABLE jobs (
  id TEXT COLLATE "C" PRIMARY KEY,
  tenant TEXT COLLATE "C" NOT NULL,
  request_id TEXT NOT NULL,
  model TEXT NOT NULL,
  state BIGINT NOT NULL,
  cancel_requested BOOLEAN NOT NULL,
  checkpoint_step BIGINT NOT NULL,
  latent_id TEXT NOT NULL,
  error_code BIGINT NOT NULL,
  error_message TEXT NOT NULL,
  next_sequence BIGINT NOT NULL,
  created_unix_ms BIGINT NOT NULL,
  started_unix_ms BIGINT NOT NULL,
  finished_unix_ms BIGINT NOT NULL,
  owner TEXT COLLATE "C" NOT NULL,
  lease_expires_unix_ms BIGINT NOT NULL,
  progress TEXT NOT NULL,
  result BYTEA NOT NULL,
  spec BYTEA NOT NULL,
  checkpoint BYTEA NOT NULL
);
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_owner ON jobs (owner) WHERE state IN (1, 2);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_unix_ms DESC, id DESC);

CREATE TABLE requests (
  method TEXT COLLATE "C" NOT NULL,
  request_id TEXT COLLATE "C" NOT NULL,
  request_hash BYTEA NOT NULL,
  result_id TEXT NOT NULL,
  created_unix_ms BIGINT NOT NULL,
  PRIMARY KEY (method, request_id)
);
)sql",
    // 1 -> 2: metrics_lpips (NULL = not measured).
    R"sql(
ALTER TABLE latents ADD COLUMN metrics_lpips DOUBLE PRECISION;
)sql",
    // 2 -> 3: what ExpireOld looks up (finished jobs by end time, request IDs by age and
    // by the record they name).
    R"sql(
CREATE INDEX jobs_finished ON jobs (finished_unix_ms) WHERE state IN (3, 4, 5);
CREATE INDEX requests_by_created ON requests (created_unix_ms);
CREATE INDEX requests_by_result ON requests (result_id);
)sql",
    // 3 -> 4: the lease epoch that fences a job's writes along with its owner (ClaimJobs
    // adds one per claim). Existing jobs have epoch 0 and their next claim gives them 1;
    // the default also lets a replica of the previous release, still running while this
    // one migrates, create jobs until it is replaced.
    R"sql(
ALTER TABLE jobs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
)sql",
    // 4 -> 5: total_steps, so that reading a job needs none of its blobs. Existing jobs get
    // -1: their spec is opaque here, so the scheduler fills the column in at its start
    // (JobsWithoutTotalSteps, SetTotalSteps), which also releases the spec of the finished
    // ones. The default lets a replica of the previous release create jobs until it is
    // replaced (those are filled in at the next start too).
    R"sql(
ALTER TABLE jobs ADD COLUMN total_steps INTEGER NOT NULL DEFAULT -1;
CREATE INDEX jobs_without_total_steps ON jobs (created_unix_ms, id) WHERE total_steps < 0;
)sql",
    // 5 -> 6: semantic directions, per tenant and model (DirectionStore), as SqliteStore's
    // version 8. Keys COLLATE "C", so listings order and page as SQLite's do.
    R"sql(
CREATE TABLE directions (
  tenant TEXT COLLATE "C" NOT NULL,
  fingerprint TEXT COLLATE "C" NOT NULL,
  name TEXT COLLATE "C" NOT NULL,
  model TEXT NOT NULL,
  num_layers BIGINT NOT NULL,
  latent_size BIGINT NOT NULL,
  sigma DOUBLE PRECISION NOT NULL,
  source TEXT NOT NULL,
  params_json TEXT NOT NULL,
  created_unix_ms BIGINT NOT NULL,
  values_f32 BYTEA NOT NULL,
  PRIMARY KEY (tenant, fingerprint, name)
);
CREATE INDEX directions_by_tenant_name ON directions (tenant, name, fingerprint);
CREATE INDEX directions_by_name ON directions (name, fingerprint, tenant);
)sql",
};

}  // namespace

absl::Span<const char* const> PostgresMigrations() { return kMigrations; }

}  // namespace i2s::store_internal
