// The SQLite store's schema, as the steps that build it (see schema.h).
#include <iterator>

#include "server/store/schema.h"

namespace i2s::store_internal {
namespace {

// kMigrations[v] takes a database from PRAGMA user_version v to v + 1.
// Append only; never edit a released step. The state values in the jobs index are
// JobState's (persisted, so the enum values must never change).
//
// Big blobs are the last columns of their rows: SQLite stores a long row as a chain of
// overflow pages, and a query that reads only the columns before the blobs stops before
// that chain, so listings never read them.
constexpr const char* kMigrations[] = {
    // 0 -> 1: the initial schema.
    R"sql(
CREATE TABLE latents (
  id TEXT PRIMARY KEY NOT NULL,
  model TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  num_layers INTEGER NOT NULL,
  latent_size INTEGER NOT NULL,
  noise_seed INTEGER NOT NULL,  -- uint64 stored as the int64 with the same bits
  source TEXT NOT NULL,
  job_id TEXT NOT NULL,
  parents_json TEXT NOT NULL,   -- JSON array of latent IDs
  params_json TEXT NOT NULL,
  has_metrics INTEGER NOT NULL,
  metrics_loss REAL,            -- NULL when absent, or NaN (SQLite stores NaN as NULL)
  metrics_mse REAL,
  metrics_perceptual REAL,
  metrics_psnr REAL,
  metrics_steps INTEGER,
  created_unix_ms INTEGER NOT NULL,
  labels_json TEXT NOT NULL,    -- JSON object
  values_f32 BLOB NOT NULL,     -- float32 little-endian, row-major [num_layers, latent_size]
  noise_npz BLOB NOT NULL
);
CREATE INDEX latents_by_created ON latents (created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_fingerprint ON latents (fingerprint, created_unix_ms DESC, id DESC);

CREATE TABLE jobs (
  id TEXT PRIMARY KEY NOT NULL,
  request_id TEXT NOT NULL,
  model TEXT NOT NULL,
  state INTEGER NOT NULL,
  checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL,
  error_code INTEGER NOT NULL,
  error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL,
  result BLOB NOT NULL,
  spec BLOB NOT NULL,
  checkpoint BLOB NOT NULL
);
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);

CREATE TABLE requests (
  method TEXT NOT NULL,
  request_id TEXT NOT NULL,
  request_hash BLOB NOT NULL,
  result_id TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL,  -- for a future expiry of old keys (AIP-155)
  PRIMARY KEY (method, request_id)
) WITHOUT ROWID;
)sql",
    // 1 -> 2: every latent and job belongs to a tenant, and a job records an acknowledged
    // cancel request (issue 8). The tables are rebuilt
    // so that the new column sits with the summaries, ahead of the blobs; rows from
    // version 1 belong to tenant "" (a server without authentication).
    R"sql(
CREATE TABLE latents_v2 (
  id TEXT PRIMARY KEY NOT NULL,
  tenant TEXT NOT NULL,
  model TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  num_layers INTEGER NOT NULL,
  latent_size INTEGER NOT NULL,
  noise_seed INTEGER NOT NULL,
  source TEXT NOT NULL,
  job_id TEXT NOT NULL,
  parents_json TEXT NOT NULL,
  params_json TEXT NOT NULL,
  has_metrics INTEGER NOT NULL,
  metrics_loss REAL,
  metrics_mse REAL,
  metrics_perceptual REAL,
  metrics_psnr REAL,
  metrics_steps INTEGER,
  created_unix_ms INTEGER NOT NULL,
  labels_json TEXT NOT NULL,
  values_f32 BLOB NOT NULL,
  noise_npz BLOB NOT NULL
);
INSERT INTO latents_v2 SELECT id, '', model, fingerprint, num_layers, latent_size, noise_seed,
  source, job_id, parents_json, params_json, has_metrics, metrics_loss, metrics_mse,
  metrics_perceptual, metrics_psnr, metrics_steps, created_unix_ms, labels_json, values_f32,
  noise_npz FROM latents;
DROP TABLE latents;
ALTER TABLE latents_v2 RENAME TO latents;
CREATE INDEX latents_by_created ON latents (created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_fingerprint ON latents (fingerprint, created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_tenant ON latents (tenant, created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_tenant_fingerprint
  ON latents (tenant, fingerprint, created_unix_ms DESC, id DESC);

CREATE TABLE jobs_v2 (
  id TEXT PRIMARY KEY NOT NULL,
  tenant TEXT NOT NULL,
  request_id TEXT NOT NULL,
  model TEXT NOT NULL,
  state INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL,  -- 1: a CancelJob was acknowledged while it ran
  checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL,
  error_code INTEGER NOT NULL,
  error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL,
  result BLOB NOT NULL,
  spec BLOB NOT NULL,
  checkpoint BLOB NOT NULL
);
INSERT INTO jobs_v2 SELECT id, '', request_id, model, state, 0, checkpoint_step, latent_id,
  error_code, error_message, next_sequence, created_unix_ms, started_unix_ms,
  finished_unix_ms, result, spec, checkpoint FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v2 RENAME TO jobs;
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_unix_ms DESC, id DESC);
)sql",
    // 2 -> 3: job leases (owner, lease_expires_unix_ms) and published progress, for
    // several replicas on one store (issue 7). Rebuilt so the new columns sit ahead of the
    // blobs; unfinished jobs from version 2 have no owner, so the next start claims them.
    R"sql(
CREATE TABLE jobs_v3 (
  id TEXT PRIMARY KEY NOT NULL,
  tenant TEXT NOT NULL,
  request_id TEXT NOT NULL,
  model TEXT NOT NULL,
  state INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL,
  checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL,
  error_code INTEGER NOT NULL,
  error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL,
  owner TEXT NOT NULL,
  lease_expires_unix_ms INTEGER NOT NULL,
  progress TEXT NOT NULL,
  result BLOB NOT NULL,
  spec BLOB NOT NULL,
  checkpoint BLOB NOT NULL
);
INSERT INTO jobs_v3 SELECT id, tenant, request_id, model, state, cancel_requested,
  checkpoint_step, latent_id, error_code, error_message, next_sequence, created_unix_ms,
  started_unix_ms, finished_unix_ms, '', 0, '', result, spec, checkpoint FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v3 RENAME TO jobs;
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_unix_ms DESC, id DESC);
)sql",
    // 3 -> 4: metrics_lpips (NULL = not measured), rebuilt so that it sits with the
    // summaries, ahead of the blobs.
    R"sql(
CREATE TABLE latents_v4 (
  id TEXT PRIMARY KEY NOT NULL,
  tenant TEXT NOT NULL,
  model TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  num_layers INTEGER NOT NULL,
  latent_size INTEGER NOT NULL,
  noise_seed INTEGER NOT NULL,
  source TEXT NOT NULL,
  job_id TEXT NOT NULL,
  parents_json TEXT NOT NULL,
  params_json TEXT NOT NULL,
  has_metrics INTEGER NOT NULL,
  metrics_loss REAL,
  metrics_mse REAL,
  metrics_perceptual REAL,
  metrics_psnr REAL,
  metrics_steps INTEGER,
  metrics_lpips REAL,
  created_unix_ms INTEGER NOT NULL,
  labels_json TEXT NOT NULL,
  values_f32 BLOB NOT NULL,
  noise_npz BLOB NOT NULL
);
INSERT INTO latents_v4 SELECT id, tenant, model, fingerprint, num_layers, latent_size,
  noise_seed, source, job_id, parents_json, params_json, has_metrics, metrics_loss,
  metrics_mse, metrics_perceptual, metrics_psnr, metrics_steps, NULL, created_unix_ms,
  labels_json, values_f32, noise_npz FROM latents;
DROP TABLE latents;
ALTER TABLE latents_v4 RENAME TO latents;
CREATE INDEX latents_by_created ON latents (created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_fingerprint ON latents (fingerprint, created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_tenant ON latents (tenant, created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_tenant_fingerprint
  ON latents (tenant, fingerprint, created_unix_ms DESC, id DESC);
)sql",
    // 4 -> 5: what ExpireOld looks up (finished jobs by end time, request IDs by age and
    // by the record they name).
    R"sql(
CREATE INDEX jobs_finished ON jobs (finished_unix_ms) WHERE state IN (3, 4, 5);
CREATE INDEX requests_by_created ON requests (created_unix_ms);
CREATE INDEX requests_by_result ON requests (result_id);
)sql",
    // 5 -> 6: the lease epoch that fences a job's writes along with its owner (ClaimJobs
    // adds one per claim). Rebuilt so the column sits with the summaries, ahead of the
    // blobs; jobs from version 5 have epoch 0, and their next claim gives them 1.
    R"sql(
CREATE TABLE jobs_v6 (
  id TEXT PRIMARY KEY NOT NULL,
  tenant TEXT NOT NULL,
  request_id TEXT NOT NULL,
  model TEXT NOT NULL,
  state INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL,
  checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL,
  error_code INTEGER NOT NULL,
  error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL,
  owner TEXT NOT NULL,
  lease_expires_unix_ms INTEGER NOT NULL,
  lease_epoch INTEGER NOT NULL,
  progress TEXT NOT NULL,
  result BLOB NOT NULL,
  spec BLOB NOT NULL,
  checkpoint BLOB NOT NULL
);
INSERT INTO jobs_v6 SELECT id, tenant, request_id, model, state, cancel_requested,
  checkpoint_step, latent_id, error_code, error_message, next_sequence, created_unix_ms,
  started_unix_ms, finished_unix_ms, owner, lease_expires_unix_ms, 0, progress, result, spec,
  checkpoint FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v6 RENAME TO jobs;
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_unix_ms DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_unix_ms) WHERE state IN (3, 4, 5);
)sql",
    // 6 -> 7: total_steps, so that reading a job needs none of its blobs (issue 20).
    // Rebuilt so the column sits with the summaries, ahead of the blobs. Jobs from version 6
    // get -1: the spec they still carry is opaque here, so the scheduler fills the column in
    // at its start (JobsWithoutTotalSteps, SetTotalSteps), which also releases the spec
    // of the finished ones.
    R"sql(
CREATE TABLE jobs_v7 (
  id TEXT PRIMARY KEY NOT NULL,
  tenant TEXT NOT NULL,
  request_id TEXT NOT NULL,
  model TEXT NOT NULL,
  state INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL,
  checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL,
  error_code INTEGER NOT NULL,
  error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL,
  owner TEXT NOT NULL,
  lease_expires_unix_ms INTEGER NOT NULL,
  lease_epoch INTEGER NOT NULL,
  progress TEXT NOT NULL,
  total_steps INTEGER NOT NULL,
  result BLOB NOT NULL,
  spec BLOB NOT NULL,
  checkpoint BLOB NOT NULL
);
INSERT INTO jobs_v7 SELECT id, tenant, request_id, model, state, cancel_requested,
  checkpoint_step, latent_id, error_code, error_message, next_sequence, created_unix_ms,
  started_unix_ms, finished_unix_ms, owner, lease_expires_unix_ms, lease_epoch, progress, -1,
  result, spec, checkpoint FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v7 RENAME TO jobs;
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_unix_ms DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_unix_ms) WHERE state IN (3, 4, 5);
CREATE INDEX jobs_without_total_steps ON jobs (created_unix_ms, id) WHERE total_steps < 0;
)sql",
    // 7 -> 8: semantic directions, per tenant and model (DirectionStore). The primary key
    // serves lookups, a tenant's count and a listing of one model; the indexes the listings
    // by name (of one tenant, and of every tenant).
    R"sql(
CREATE TABLE directions (
  tenant TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  name TEXT NOT NULL,
  model TEXT NOT NULL,
  num_layers INTEGER NOT NULL,
  latent_size INTEGER NOT NULL,
  sigma REAL NOT NULL,
  source TEXT NOT NULL,
  params_json TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  values_f32 BLOB NOT NULL,  -- float32 little-endian, row-major [num_layers, latent_size]
  PRIMARY KEY (tenant, fingerprint, name)
);
CREATE INDEX directions_by_tenant_name ON directions (tenant, name, fingerprint);
CREATE INDEX directions_by_name ON directions (name, fingerprint, tenant);
)sql",
};

}  // namespace

absl::Span<const char* const> SqliteMigrations() { return kMigrations; }

}  // namespace i2s::store_internal
