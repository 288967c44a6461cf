#include "server/store/sqlite_store.h"

#include <sqlite3.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/base/failpoint.h"
#include "server/store/schema.h"
#include "server/store/store_util.h"

namespace i2s {
namespace {

using store_internal::CheckDirectionQuota;
using store_internal::CheckJobQuota;
using store_internal::CheckJobState;
using store_internal::CheckLatentQuota;
using store_internal::Corrupt;
using store_internal::DirectionExists;
using store_internal::DirectionNotFound;
using store_internal::DirectionPageQuery;
using store_internal::EncodeFloats;
using store_internal::HasLimits;
using store_internal::JobNotFound;
using store_internal::JobStateFromColumn;
using store_internal::kDirectionBlobColumns;
using store_internal::kDirectionSummaryColumns;
using store_internal::kJobBlobColumns;
using store_internal::kJobSummaryColumns;
using store_internal::kLatentBlobColumns;
using store_internal::kLatentSummaryColumns;
using store_internal::LabelsToJson;
using store_internal::LatentNotFound;
using store_internal::NextPageToken;
using store_internal::NotTheOwner;
using store_internal::NowUnixMs;
using store_internal::PageQuery;
using store_internal::ParentsToJson;
using store_internal::ParsePage;
using store_internal::ReadJobRow;
using store_internal::ReadLatentRow;
using store_internal::RequestNotFound;
using store_internal::RequestUsedForAnother;
using store_internal::Row;
using store_internal::SortOldestFirst;
using store_internal::StateMask;
using store_internal::ValidateDirection;
using store_internal::ValidateLatent;

// How long a statement waits for a lock held by another connection (a second process,
// the sqlite3 shell, a backup) before failing with SQLITE_BUSY.
constexpr int kBusyTimeoutMs = 5000;

// Read after the summary columns (without reading the blob): whether it has noise maps.
constexpr const char* kLatentHasNoise = "length(noise_npz) > 0";

// SQLITE_FULL is ResourceExhausted and SQLITE_READONLY Unavailable, so callers (and
// clients) can tell a full or read-only data directory from a fault.
absl::Status SqliteError(sqlite3* db, absl::string_view what) {
  const std::string message = absl::StrCat("sqlite: ", what, ": ", sqlite3_errmsg(db));
  switch (sqlite3_errcode(db)) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(
          absl::StrCat(message, " (the disk of the data directory is full)"));
    case SQLITE_READONLY:
      return absl::UnavailableError(absl::StrCat(message, " (the data directory is read-only)"));
    default:
      return absl::InternalError(message);
  }
}

// Runs constant SQL (schema, pragmas, transaction control) that has no parameters.
absl::Status Exec(sqlite3* db, const std::string& sql, absl::string_view what) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message) == SQLITE_OK) {
    return absl::OkStatus();
  }
  absl::Status status = absl::InternalError(
      absl::StrCat("sqlite: ", what, ": ", message != nullptr ? message : "unknown error"));
  sqlite3_free(message);
  return status;
}

// One execution of a prepared statement: binds named parameters, steps through the rows
// and reads columns. Resets the statement and clears its bindings when destroyed, so the
// statement cache can hand it out again. A failed bind is reported by the next Step.
class Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* stmt, absl::string_view what)
      : db_(db), stmt_(stmt), what_(what) {}
  ~Query() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& Int(const char* name, int64_t value) {
    return Check(name, sqlite3_bind_int64(stmt_, Index(name), value));
  }
  Query& Double(const char* name, double value) {
    return Check(name, sqlite3_bind_double(stmt_, Index(name), value));
  }
  // The pointer is never null, so an empty string binds as '' (not NULL); SQLITE_TRANSIENT
  // makes SQLite copy the bytes, so temporaries are fine.
  Query& Text(const char* name, absl::string_view text) {
    return Check(name, sqlite3_bind_text64(stmt_, Index(name), text.empty() ? "" : text.data(),
                                           text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Query& Blob(const char* name, absl::string_view bytes) {
    return Check(name, sqlite3_bind_blob64(stmt_, Index(name), bytes.empty() ? "" : bytes.data(),
                                           bytes.size(), SQLITE_TRANSIENT));
  }

  // True when a row is ready, false when the statement is done.
  absl::StatusOr<bool> Step() {
    RETURN_IF_ERROR(bind_status_);
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, what_);
  }
  // Runs a statement that returns no rows; returns how many rows it changed.
  absl::StatusOr<int> Run() {
    ASSIGN_OR_RETURN(bool row, Step());
    if (row) return absl::InternalError(absl::StrCat("sqlite: ", what_, ": unexpected row"));
    return sqlite3_changes(db_);
  }

  // Column readers, for the current row.
  int64_t ColumnInt(int col) const { return sqlite3_column_int64(stmt_, col); }
  // NULL reads as NaN: SQLite stores a bound NaN as NULL.
  double ColumnDouble(int col) const {
    return IsNull(col) ? std::numeric_limits<double>::quiet_NaN()
                       : sqlite3_column_double(stmt_, col);
  }
  // TEXT and BLOB columns alike, byte for byte.
  std::string ColumnBytes(int col) const {
    const void* data = sqlite3_column_blob(stmt_, col);
    const int size = sqlite3_column_bytes(stmt_, col);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), size);
  }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

 private:
  int Index(const char* name) const { return sqlite3_bind_parameter_index(stmt_, name); }
  Query& Check(const char* name, int rc) {
    if (rc != SQLITE_OK && bind_status_.ok()) {
      // SQLITE_RANGE (no such parameter) is a bug here; the rest are resource errors.
      bind_status_ = absl::InternalError(
          absl::StrCat("sqlite: ", what_, ": binding ", name, ": ", sqlite3_errstr(rc)));
    }
    return *this;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  absl::string_view what_;
  absl::Status bind_status_;
};

// The current row of a query, for the shared row readers (store_util.h).
class QueryRow final : public Row {
 public:
  explicit QueryRow(const Query& q) : q_(q) {}
  bool IsNull(int col) const override { return q_.IsNull(col); }
  int64_t Int(int col) const override { return q_.ColumnInt(col); }
  double Double(int col) const override { return q_.ColumnDouble(col); }
  std::string Bytes(int col) const override { return q_.ColumnBytes(col); }

 private:
  const Query& q_;
};

absl::StatusOr<LatentRecord> ReadLatent(const Query& q, bool with_values) {
  return ReadLatentRow(QueryRow(q), with_values);
}

absl::StatusOr<JobRecord> ReadJob(const Query& q, bool with_blobs) {
  return ReadJobRow(QueryRow(q), with_blobs);
}

absl::StatusOr<DirectionRecord> ReadDirection(const Query& q, bool with_values) {
  return store_internal::ReadDirectionRow(QueryRow(q), with_values);
}

// A listing's tail with SQLite's named parameters (BindPage binds them).
std::string ListingTail(std::vector<std::string> filters, const PageQuery& page) {
  return store_internal::ListingTail(std::move(filters), page, ":after_created", ":after_id",
                                     ":limit");
}

void BindPage(Query& q, const PageQuery& page) {
  if (page.has_after) {
    q.Int(":after_created", page.after_created_unix_ms).Text(":after_id", page.after_id);
  }
  q.Int(":limit", page.limit + 1);  // one more row says whether there is a next page
}

// The job columns UpdateJob writes (all but spec, checkpoint and checkpoint_step), and
// the owner and epoch that fence it.
void BindJobMetadata(Query& q, const JobRecord& r) {
  q.Text(":id", r.id)
      .Text(":request_id", r.request_id)
      .Text(":model", r.model)
      .Int(":state", static_cast<int>(r.state))
      .Int(":cancel_requested", r.cancel_requested ? 1 : 0)
      .Text(":latent_id", r.latent_id)
      .Int(":error_code", r.error_code)
      .Text(":error_message", r.error_message)
      .Int(":next_sequence", r.next_sequence)
      .Int(":created_unix_ms", r.created_unix_ms)
      .Int(":started_unix_ms", r.started_unix_ms)
      .Int(":finished_unix_ms", r.finished_unix_ms)
      .Text(":owner", r.owner)
      .Int(":lease_epoch", r.lease_epoch)
      .Blob(":result", r.result);
}

// The result_id recorded for (method, request_id) by `stmt` (kFindRequestSql); nullopt
// if there is none; InvalidArgument if it was recorded with another request_hash.
constexpr const char* kFindRequestSql =
    "SELECT request_hash, result_id FROM requests"
    " WHERE method = :method AND request_id = :request_id";

absl::StatusOr<std::optional<std::string>> LookupRequest(sqlite3* db, sqlite3_stmt* stmt,
                                                         const std::string& method,
                                                         const std::string& request_id,
                                                         const std::string& request_hash) {
  Query q(db, stmt, "looking up a request_id");
  q.Text(":method", method).Text(":request_id", request_id);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::nullopt;
  if (q.ColumnBytes(0) != request_hash) return RequestUsedForAnother(request_id);
  return q.ColumnBytes(1);
}

// The value of an integer pragma (`name` is our own constant).
absl::StatusOr<int64_t> ReadPragmaInt(sqlite3* db, const std::string& name) {
  const std::string what = absl::StrCat("reading ", name);
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, absl::StrCat("PRAGMA ", name).c_str(), -1, &raw, nullptr) !=
      SQLITE_OK) {
    return SqliteError(db, what);
  }
  const std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(raw, sqlite3_finalize);
  Query q(db, stmt.get(), what);
  ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.ColumnInt(0) : 0;
}

// Creates or migrates the schema (sqlite_schema.cc) to this server's version, atomically:
// the version is read inside the write transaction, so two processes opening a new file at
// once do not both create it.
absl::Status Migrate(sqlite3* db) {
  const absl::Span<const char* const> migrations = store_internal::SqliteMigrations();
  const int64_t schema_version = static_cast<int64_t>(migrations.size());
  RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE", "begin migration"));
  auto migrate = [db, migrations, schema_version]() -> absl::Status {
    ASSIGN_OR_RETURN(int64_t version, ReadPragmaInt(db, "user_version"));
    if (version > schema_version) {
      return absl::FailedPreconditionError(absl::StrCat("database schema version ", version,
                                                        " is newer than this server's (",
                                                        schema_version, "); use a newer server"));
    }
    for (int64_t v = version; v < schema_version; ++v) {
      RETURN_IF_ERROR(Exec(db, migrations[v], absl::StrCat("migration to version ", v + 1)));
      // PRAGMA takes no bound parameters; the value is our own constant.
      RETURN_IF_ERROR(Exec(db, absl::StrCat("PRAGMA user_version = ", v + 1), "set user_version"));
    }
    return absl::OkStatus();
  };
  absl::Status status = migrate();
  if (!status.ok()) {
    Exec(db, "ROLLBACK", "rollback migration").IgnoreError();  // the first error matters
    return status;
  }
  return Exec(db, "COMMIT", "commit migration");
}

// Released blobs (a finished job's spec and checkpoint, deleted rows) go to SQLite's free
// list, where new rows reuse them; with auto_vacuum = INCREMENTAL, ReclaimSpace also
// gives them back to the file system. A new file takes the setting before anything is
// written to it; a file made by an earlier release (auto_vacuum = NONE) is rewritten once by
// VACUUM, which needs free disk about the size of the file. If that fails (a full disk),
// the file stays as it was: its free pages are still reused, just not returned.
absl::Status UseIncrementalVacuum(sqlite3* db) {
  constexpr int kIncremental = 2;
  ASSIGN_OR_RETURN(int64_t mode, ReadPragmaInt(db, "auto_vacuum"));
  if (mode == kIncremental) return absl::OkStatus();
  RETURN_IF_ERROR(Exec(db, "PRAGMA auto_vacuum = INCREMENTAL", "auto_vacuum"));
  ASSIGN_OR_RETURN(int64_t version, ReadPragmaInt(db, "user_version"));
  if (version > 0) Exec(db, "VACUUM", "vacuum").IgnoreError();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  // SQLITE_OPEN_NOMUTEX: the connection is serialised by mu_, SQLite's own lock is redundant.
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = absl::InternalError(
        absl::StrCat("sqlite: opening \"", path,
                     "\": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close_v2(db);
    return status;
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db));  // owns db from here on

  const auto annotate = [&path](const absl::Status& status) {
    return Annotate(status, absl::StrCat("database \"", path, "\""));
  };
  if (sqlite3_busy_timeout(db, kBusyTimeoutMs) != SQLITE_OK) {
    return annotate(SqliteError(db, "busy_timeout"));
  }
  // Before WAL, whose switch writes a new file's first page (after which auto_vacuum
  // takes a VACUUM to change).
  RETURN_IF_ERROR(annotate(UseIncrementalVacuum(db)));
  // WAL: readers in other processes do not block the writer, and a commit appends to
  // one file. An in-memory database stays in "memory" mode, which is fine.
  RETURN_IF_ERROR(annotate(Exec(db, "PRAGMA journal_mode = WAL", "journal_mode")));
  // FULL, not NORMAL: in WAL mode NORMAL never corrupts the file but may lose the last
  // commits on power loss or an OS crash. An acknowledged latent, job or request ID has
  // been handed to a client, so it must survive; the store writes a few rows a second at
  // most (checkpoints every few seconds per job), so one fsync per commit is cheap.
  RETURN_IF_ERROR(annotate(Exec(db, "PRAGMA synchronous = FULL", "synchronous")));
  RETURN_IF_ERROR(annotate(Migrate(db)));
  return store;
}

SqliteStore::SqliteStore(sqlite3* db) : db_(db) {}

SqliteStore::~SqliteStore() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  statements_.clear();
  sqlite3_close_v2(db_);
}

absl::StatusOr<sqlite3_stmt*> SqliteStore::Prepare(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it != statements_.end()) return it->second;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                         &stmt, nullptr) != SQLITE_OK) {
    return SqliteError(db_, absl::StrCat("preparing \"", sql, "\""));
  }
  statements_.emplace(sql, stmt);
  return stmt;
}

// ---- LatentStore ----

absl::Status SqliteStore::PutLatent(const LatentRecord& record) {
  RETURN_IF_ERROR(ValidateLatent(record));
  ASSIGN_OR_RETURN(std::string parents_json, ParentsToJson(record));
  ASSIGN_OR_RETURN(std::string labels_json, LabelsToJson(record));
  std::lock_guard<std::mutex> lock(mu_);
  return PutLatentLocked(record, parents_json, labels_json);
}

absl::Status SqliteStore::PutLatentLocked(const LatentRecord& record,
                                          const std::string& parents_json,
                                          const std::string& labels_json) {
  if (HasLimits(quota_) && record.source != "embed") {
    ASSIGN_OR_RETURN(TenantUsage usage, UsageLocked(record.tenant, /*with_requests=*/false));
    RETURN_IF_ERROR(CheckLatentQuota(quota_, usage, record));
  }
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare(absl::StrCat("INSERT INTO latents (", kLatentSummaryColumns, ", ",
                                        kLatentBlobColumns, R"sql() VALUES (
      :id, :tenant, :model, :fingerprint, :num_layers, :latent_size, :noise_seed, :source, :job_id,
      :parents_json, :params_json, :has_metrics, :metrics_loss, :metrics_mse,
      :metrics_perceptual, :metrics_psnr, :metrics_steps, :metrics_lpips, :created_unix_ms,
      :labels_json,
      :values_f32, :noise_npz)
    ON CONFLICT (id) DO NOTHING)sql")));
  Query q(db_, stmt, "PutLatent");
  q.Text(":id", record.id)
      .Text(":tenant", record.tenant)
      .Text(":model", record.model)
      .Text(":fingerprint", record.fingerprint)
      .Int(":num_layers", record.num_layers)
      .Int(":latent_size", record.latent_size)
      .Int(":noise_seed", static_cast<int64_t>(record.noise_seed))
      .Text(":source", record.source)
      .Text(":job_id", record.job_id)
      .Text(":parents_json", parents_json)
      .Text(":params_json", record.params_json)
      .Int(":has_metrics", record.metrics.has_value() ? 1 : 0)
      .Int(":created_unix_ms", record.created_unix_ms)
      .Text(":labels_json", labels_json)
      .Blob(":values_f32", EncodeFloats(record.values))
      .Blob(":noise_npz", record.noise_npz);
  if (record.metrics.has_value()) {
    q.Double(":metrics_loss", record.metrics->loss)
        .Double(":metrics_mse", record.metrics->mse)
        .Double(":metrics_perceptual", record.metrics->perceptual)
        .Double(":metrics_psnr", record.metrics->psnr)
        .Int(":metrics_steps", record.metrics->steps);
    if (record.metrics->lpips >= 0) q.Double(":metrics_lpips", record.metrics->lpips);
  }  // else the metrics_* parameters stay NULL
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) {
    return absl::AlreadyExistsError(absl::StrCat("latent \"", record.id, "\" already exists"));
  }
  return absl::OkStatus();
}

absl::StatusOr<LatentRecord> SqliteStore::GetLatent(const std::string& id, bool with_values) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare(absl::StrCat("SELECT ", kLatentSummaryColumns, ", ", kLatentHasNoise,
                                        with_values ? absl::StrCat(", ", kLatentBlobColumns) : "",
                                        " FROM latents WHERE id = :id")));
  Query q(db_, stmt, "GetLatent");
  q.Text(":id", id);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return LatentNotFound(id);
  return ReadLatent(q, with_values);
}

absl::StatusOr<LatentPage> SqliteStore::ListLatents(const Page& page,
                                                    const std::string& fingerprint,
                                                    const std::optional<std::string>& tenant) {
  ASSIGN_OR_RETURN(PageQuery page_query, ParsePage(page, 'L'));
  std::vector<std::string> filters;
  if (tenant.has_value()) filters.push_back("tenant = :tenant");
  if (!fingerprint.empty()) filters.push_back("fingerprint = :fingerprint");
  const std::string sql =
      absl::StrCat("SELECT ", kLatentSummaryColumns, ", ", kLatentHasNoise, " FROM latents",
                   ListingTail(std::move(filters), page_query));

  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(sql));
  Query q(db_, stmt, "ListLatents");
  if (tenant.has_value()) q.Text(":tenant", *tenant);
  if (!fingerprint.empty()) q.Text(":fingerprint", fingerprint);
  BindPage(q, page_query);
  LatentPage result;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(LatentRecord record, ReadLatent(q, /*with_values=*/false));
    result.latents.push_back(std::move(record));
  }
  result.next_page_token = NextPageToken(result.latents, page_query, 'L');
  return result;
}

absl::Status SqliteStore::DeleteLatent(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  // The latent and the request IDs naming it go together (no key names nothing).
  RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", "begin"));
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare("DELETE FROM latents WHERE id = :id"));
    Query q(db_, stmt, "DeleteLatent");
    q.Text(":id", id);
    ASSIGN_OR_RETURN(int changed, q.Run());
    if (changed == 0) return LatentNotFound(id);
    ASSIGN_OR_RETURN(sqlite3_stmt * keys, Prepare("DELETE FROM requests WHERE result_id = :id"));
    Query k(db_, keys, "DeleteLatent (request IDs)");
    k.Text(":id", id);
    RETURN_IF_ERROR(k.Run().status());
    return Exec(db_, "COMMIT", "commit");
  };
  absl::Status status = run();
  if (!status.ok()) Exec(db_, "ROLLBACK", "rollback").IgnoreError();
  return status;
}

// ---- DirectionStore ----

absl::Status SqliteStore::PutDirection(const DirectionRecord& record) {
  RETURN_IF_ERROR(ValidateDirection(record));
  const std::string values_f32 = EncodeFloats(record.values);
  std::lock_guard<std::mutex> lock(mu_);
  // One write transaction from the look-up to the insert, so neither a second process on
  // the file nor this one's other calls get between the check of the key, the quota's
  // count and the insert.
  RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", "begin"));
  auto run = [&]() -> absl::Status {
    {
      ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                       Prepare("SELECT num_layers, latent_size, sigma, source, values_f32"
                               " FROM directions WHERE tenant = :tenant"
                               " AND fingerprint = :fingerprint AND name = :name"));
      Query q(db_, stmt, "PutDirection (looking up the key)");
      q.Text(":tenant", record.tenant)
          .Text(":fingerprint", record.fingerprint)
          .Text(":name", record.name);
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (row) {
        // A repeat of the call that stored it: nothing to write.
        if (store_internal::SameDirectionContent(record, q.ColumnInt(0), q.ColumnInt(1),
                                                 q.ColumnDouble(2), q.ColumnBytes(3),
                                                 q.ColumnBytes(4))) {
          return absl::OkStatus();
        }
        return DirectionExists(record.name);
      }
    }
    if (quota_.max_directions > 0) {
      ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                       Prepare("SELECT count(*) FROM directions WHERE tenant = :tenant"));
      Query q(db_, stmt, "counting a tenant's directions");
      q.Text(":tenant", record.tenant);
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return absl::InternalError("sqlite: counting a tenant's directions: no row");
      TenantUsage usage;
      usage.tenant = record.tenant;
      usage.directions = q.ColumnInt(0);
      RETURN_IF_ERROR(CheckDirectionQuota(quota_, usage));
    }
    ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                     Prepare(absl::StrCat("INSERT INTO directions (", kDirectionSummaryColumns,
                                          ", ", kDirectionBlobColumns, R"sql() VALUES (
      :tenant, :fingerprint, :name, :model, :num_layers, :latent_size, :sigma, :source,
      :params_json, :created_unix_ms, :values_f32))sql")));
    Query q(db_, stmt, "PutDirection");
    q.Text(":tenant", record.tenant)
        .Text(":fingerprint", record.fingerprint)
        .Text(":name", record.name)
        .Text(":model", record.model)
        .Int(":num_layers", record.num_layers)
        .Int(":latent_size", record.latent_size)
        .Double(":sigma", record.sigma)
        .Text(":source", record.source)
        .Text(":params_json", record.params_json)
        .Int(":created_unix_ms", record.created_unix_ms)
        .Blob(":values_f32", values_f32);
    return q.Run().status();
  };
  absl::Status status = run();
  if (status.ok()) status = Exec(db_, "COMMIT", "commit");
  if (!status.ok()) Exec(db_, "ROLLBACK", "rollback").IgnoreError();  // the first error matters
  return status;
}

absl::StatusOr<DirectionRecord> SqliteStore::GetDirection(const std::string& tenant,
                                                          const std::string& fingerprint,
                                                          const std::string& name,
                                                          bool with_values) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(
      sqlite3_stmt * stmt,
      Prepare(absl::StrCat("SELECT ", kDirectionSummaryColumns,
                           with_values ? absl::StrCat(", ", kDirectionBlobColumns) : "",
                           " FROM directions WHERE tenant = :tenant"
                           " AND fingerprint = :fingerprint AND name = :name")));
  Query q(db_, stmt, "GetDirection");
  q.Text(":tenant", tenant).Text(":fingerprint", fingerprint).Text(":name", name);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return DirectionNotFound(name);
  return ReadDirection(q, with_values);
}

absl::StatusOr<DirectionPage> SqliteStore::ListDirections(
    const Page& page, const std::string& fingerprint, const std::optional<std::string>& tenant) {
  ASSIGN_OR_RETURN(DirectionPageQuery page_query, store_internal::ParseDirectionPage(page));
  std::vector<std::string> filters;
  if (tenant.has_value()) filters.push_back("tenant = :tenant");
  if (!fingerprint.empty()) filters.push_back("fingerprint = :fingerprint");
  const std::string sql = absl::StrCat(
      "SELECT ", kDirectionSummaryColumns, " FROM directions",
      store_internal::DirectionListingTail(std::move(filters), page_query, ":after_name",
                                           ":after_fingerprint", ":after_tenant", ":limit"));

  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(sql));
  Query q(db_, stmt, "ListDirections");
  if (tenant.has_value()) q.Text(":tenant", *tenant);
  if (!fingerprint.empty()) q.Text(":fingerprint", fingerprint);
  if (page_query.has_after) {
    q.Text(":after_name", page_query.after_name)
        .Text(":after_fingerprint", page_query.after_fingerprint)
        .Text(":after_tenant", page_query.after_tenant);
  }
  q.Int(":limit", page_query.limit + 1);  // one more row says whether there is a next page
  DirectionPage result;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(DirectionRecord record, ReadDirection(q, /*with_values=*/false));
    result.directions.push_back(std::move(record));
  }
  result.next_page_token = store_internal::NextDirectionPageToken(result.directions, page_query);
  return result;
}

absl::Status SqliteStore::DeleteDirection(const std::string& tenant, const std::string& fingerprint,
                                          const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare("DELETE FROM directions WHERE tenant = :tenant"
                           " AND fingerprint = :fingerprint AND name = :name"));
  Query q(db_, stmt, "DeleteDirection");
  q.Text(":tenant", tenant).Text(":fingerprint", fingerprint).Text(":name", name);
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) return DirectionNotFound(name);
  return absl::OkStatus();
}

// ---- JobStore ----

absl::Status SqliteStore::CreateJob(const JobRecord& record) {
  if (record.id.empty()) return absl::InvalidArgumentError("job id is empty");
  RETURN_IF_ERROR(CheckJobState(record.state, absl::StrCat("job \"", record.id, "\"")));
  std::lock_guard<std::mutex> lock(mu_);
  return CreateJobLocked(record);
}

absl::Status SqliteStore::CreateJobLocked(const JobRecord& record) {
  if (HasLimits(quota_)) {
    ASSIGN_OR_RETURN(TenantUsage usage, UsageLocked(record.tenant, /*with_requests=*/false));
    RETURN_IF_ERROR(CheckJobQuota(quota_, usage, record));
  }
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare(absl::StrCat("INSERT INTO jobs (", kJobSummaryColumns, ", ",
                                        kJobBlobColumns, R"sql() VALUES (
      :id, :tenant, :request_id, :model, :state, :cancel_requested, :checkpoint_step,
      :latent_id, :error_code, :error_message, :next_sequence, :created_unix_ms,
      :started_unix_ms, :finished_unix_ms, :owner, :lease_expires_unix_ms, :lease_epoch,
      :progress, :total_steps, :result, :spec, :checkpoint)
    ON CONFLICT (id) DO NOTHING)sql")));
  Query q(db_, stmt, "CreateJob");
  BindJobMetadata(q, record);
  q.Text(":tenant", record.tenant)
      .Int(":checkpoint_step", record.checkpoint_step)
      .Int(":lease_expires_unix_ms", record.lease_expires_unix_ms)
      .Text(":progress", record.progress)
      .Int(":total_steps", record.total_steps)
      .Blob(":spec", record.spec)
      .Blob(":checkpoint", record.checkpoint);
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) {
    return absl::AlreadyExistsError(absl::StrCat("job \"", record.id, "\" already exists"));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::UpdateJob(const JobRecord& record) {
  RETURN_IF_ERROR(CheckJobState(record.state, absl::StrCat("job \"", record.id, "\"")));
  std::lock_guard<std::mutex> lock(mu_);
  return UpdateJobLocked(record);
}

absl::Status SqliteStore::UpdateJobLocked(const JobRecord& record) {
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(R"sql(UPDATE jobs SET
      request_id = :request_id, model = :model, state = :state,
      cancel_requested = MAX(cancel_requested, :cancel_requested), latent_id = :latent_id,
      error_code = :error_code, error_message = :error_message, next_sequence = :next_sequence,
      created_unix_ms = :created_unix_ms, started_unix_ms = :started_unix_ms,
      finished_unix_ms = :finished_unix_ms, result = :result,
      spec = CASE WHEN :state IN (3, 4, 5) THEN x'' ELSE spec END,
      checkpoint = CASE WHEN :state IN (3, 4, 5) THEN x'' ELSE checkpoint END
    WHERE id = :id AND owner = :owner AND lease_epoch = :lease_epoch)sql"));
  Query q(db_, stmt, "UpdateJob");
  BindJobMetadata(q, record);
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) return NotUpdated(record.id, record.owner, record.lease_epoch);
  return absl::OkStatus();
}

absl::Status SqliteStore::MarkCancelRequested(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare("UPDATE jobs SET cancel_requested = 1 WHERE id = :id"));
  Query q(db_, stmt, "MarkCancelRequested");
  q.Text(":id", id);
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) return JobNotFound(id);
  return absl::OkStatus();
}

absl::Status SqliteStore::SaveCheckpoint(const std::string& id, int step, const std::string& bytes,
                                         int64_t next_sequence, const std::string& owner,
                                         int64_t lease_epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(R"sql(UPDATE jobs SET
      checkpoint = :checkpoint, checkpoint_step = :step, next_sequence = :next_sequence
    WHERE id = :id AND owner = :owner AND lease_epoch = :lease_epoch)sql"));
  Query q(db_, stmt, "SaveCheckpoint");
  q.Text(":id", id)
      .Int(":step", step)
      .Blob(":checkpoint", bytes)
      .Int(":next_sequence", next_sequence)
      .Text(":owner", owner)
      .Int(":lease_epoch", lease_epoch);
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) return NotUpdated(id, owner, lease_epoch);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobRecord>> SqliteStore::ClaimJobs(const std::string& owner,
                                                              int64_t now_unix_ms, int64_t lease_ms,
                                                              ClaimScope scope) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare(absl::StrCat(R"sql(UPDATE jobs SET
      owner = :owner, lease_expires_unix_ms = :now + :lease_ms, lease_epoch = lease_epoch + 1
    WHERE state IN (1, 2) AND (:take_all OR (:take_own AND owner = :owner) OR owner = ''
                               OR lease_expires_unix_ms < :now)
    RETURNING )sql",
                                        kJobSummaryColumns, ", ", kJobBlobColumns)));
  Query q(db_, stmt, "ClaimJobs");
  q.Text(":owner", owner)
      .Int(":now", now_unix_ms)
      .Int(":lease_ms", lease_ms)
      .Int(":take_all", scope == ClaimScope::kAll ? 1 : 0)
      .Int(":take_own", scope == ClaimScope::kExpiredAndOwn ? 1 : 0);
  std::vector<JobRecord> jobs;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(JobRecord record, ReadJob(q, /*with_blobs=*/true));
    jobs.push_back(std::move(record));
  }
  SortOldestFirst(jobs);
  return jobs;
}

absl::StatusOr<std::vector<JobLease>> SqliteStore::RenewLeases(const std::string& owner,
                                                               int64_t now_unix_ms,
                                                               int64_t lease_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(R"sql(UPDATE jobs SET
      lease_expires_unix_ms = :now + :lease_ms
    WHERE owner = :owner AND state IN (1, 2)
    RETURNING id, state, cancel_requested, lease_epoch)sql"));
  Query q(db_, stmt, "RenewLeases");
  q.Text(":owner", owner).Int(":now", now_unix_ms).Int(":lease_ms", lease_ms);
  std::vector<JobLease> leases;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    JobLease lease;
    lease.id = q.ColumnBytes(0);
    ASSIGN_OR_RETURN(lease.state, JobStateFromColumn(q.ColumnInt(1), lease.id));
    lease.cancel_requested = q.ColumnInt(2) != 0;
    lease.lease_epoch = q.ColumnInt(3);
    leases.push_back(std::move(lease));
  }
  return leases;
}

absl::Status SqliteStore::SaveProgress(const std::string& id, const std::string& owner,
                                       int64_t lease_epoch, const std::string& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare("UPDATE jobs SET progress = :progress"
                           " WHERE id = :id AND owner = :owner AND lease_epoch = :lease_epoch"));
  Query q(db_, stmt, "SaveProgress");
  q.Text(":id", id)
      .Text(":owner", owner)
      .Int(":lease_epoch", lease_epoch)
      .Text(":progress", progress);
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) return NotUpdated(id, owner, lease_epoch);
  return absl::OkStatus();
}

absl::Status SqliteStore::NotUpdated(const std::string& id, const std::string& owner,
                                     int64_t lease_epoch) {
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare("SELECT 1 FROM jobs WHERE id = :id"));
  Query q(db_, stmt, "finding a job");
  q.Text(":id", id);
  ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? NotTheOwner(id, owner, lease_epoch) : JobNotFound(id);
}

absl::StatusOr<JobRecord> SqliteStore::GetJob(const std::string& id, bool with_blobs) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare(absl::StrCat("SELECT ", kJobSummaryColumns,
                                        with_blobs ? absl::StrCat(", ", kJobBlobColumns) : "",
                                        " FROM jobs WHERE id = :id")));
  Query q(db_, stmt, "GetJob");
  q.Text(":id", id);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return JobNotFound(id);
  return ReadJob(q, with_blobs);
}

absl::StatusOr<JobPage> SqliteStore::ListJobs(const Page& page, const std::vector<JobState>& states,
                                              const std::optional<std::string>& tenant) {
  ASSIGN_OR_RETURN(PageQuery page_query, ParsePage(page, 'J'));
  // The state filter is a bit mask (bit s set = keep state s), so one statement serves
  // every combination of states.
  ASSIGN_OR_RETURN(const int64_t state_mask, StateMask(states));
  std::vector<std::string> filters;
  if (tenant.has_value()) filters.push_back("tenant = :tenant");
  if (state_mask != 0) filters.push_back("((:state_mask >> state) & 1) = 1");
  const std::string sql = absl::StrCat("SELECT ", kJobSummaryColumns, " FROM jobs",
                                       ListingTail(std::move(filters), page_query));

  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(sql));
  Query q(db_, stmt, "ListJobs");
  if (tenant.has_value()) q.Text(":tenant", *tenant);
  if (state_mask != 0) q.Int(":state_mask", state_mask);
  BindPage(q, page_query);
  JobPage result;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(JobRecord record, ReadJob(q, /*with_blobs=*/false));
    result.jobs.push_back(std::move(record));
  }
  result.next_page_token = NextPageToken(result.jobs, page_query, 'J');
  return result;
}

absl::StatusOr<std::vector<JobRecord>> SqliteStore::UnfinishedJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  // Same condition as the partial index jobs_unfinished, so SQLite uses it.
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare(absl::StrCat("SELECT ", kJobSummaryColumns, ", ", kJobBlobColumns,
                                        " FROM jobs WHERE state IN (1, 2)"
                                        " ORDER BY created_unix_ms, id")));
  static_assert(
      static_cast<int>(JobState::kQueued) == 1 && static_cast<int>(JobState::kRunning) == 2,
      "the SQL above and the jobs_unfinished index use these values");
  Query q(db_, stmt, "UnfinishedJobs");
  std::vector<JobRecord> jobs;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(JobRecord record, ReadJob(q, /*with_blobs=*/true));
    jobs.push_back(std::move(record));
  }
  return jobs;
}

absl::StatusOr<std::vector<JobRecord>> SqliteStore::JobsWithoutTotalSteps(int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  // Same condition as the partial index jobs_without_total_steps.
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                   Prepare(absl::StrCat("SELECT ", kJobSummaryColumns, ", ", kJobBlobColumns,
                                        " FROM jobs WHERE total_steps < 0"
                                        " ORDER BY created_unix_ms, id LIMIT :limit")));
  Query q(db_, stmt, "JobsWithoutTotalSteps");
  q.Int(":limit", limit);
  std::vector<JobRecord> jobs;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(JobRecord record, ReadJob(q, /*with_blobs=*/true));
    jobs.push_back(std::move(record));
  }
  return jobs;
}

absl::Status SqliteStore::SetTotalSteps(const std::string& id, int total_steps) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(R"sql(UPDATE jobs SET total_steps = :total_steps,
      spec = CASE WHEN state IN (3, 4, 5) THEN x'' ELSE spec END
    WHERE id = :id)sql"));
  Query q(db_, stmt, "SetTotalSteps");
  q.Text(":id", id).Int(":total_steps", total_steps);
  ASSIGN_OR_RETURN(int changed, q.Run());
  if (changed == 0) return JobNotFound(id);
  return absl::OkStatus();
}

// ---- RequestStore ----

absl::StatusOr<std::string> SqliteStore::ClaimRequest(const std::string& method,
                                                      const std::string& request_id,
                                                      const std::string& request_hash,
                                                      const std::string& result_id) {
  if (request_id.empty()) return absl::InvalidArgumentError("request_id is empty");
  std::lock_guard<std::mutex> lock(mu_);
  // Insert if new, then read back whichever row won. A row never changes once written,
  // so no transaction is needed, even with another process on the same file.
  const RequestClaim claim{method, request_id, request_hash};
  RETURN_IF_ERROR(InsertClaimLocked(claim, result_id).status());
  return ClaimedResultLocked(claim, "ClaimRequest: the request row vanished");
}

absl::StatusOr<std::string> SqliteStore::FindRequest(const std::string& method,
                                                     const std::string& request_id,
                                                     const std::string& request_hash) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kFindRequestSql));
  ASSIGN_OR_RETURN(std::optional<std::string> result,
                   LookupRequest(db_, stmt, method, request_id, request_hash));
  if (!result.has_value()) return RequestNotFound(method, request_id);
  return *std::move(result);
}

absl::StatusOr<bool> SqliteStore::InsertClaimLocked(const RequestClaim& claim,
                                                    const std::string& result_id) {
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(R"sql(INSERT INTO requests
      (method, request_id, request_hash, result_id, created_unix_ms)
      VALUES (:method, :request_id, :request_hash, :result_id, :created_unix_ms)
      ON CONFLICT (method, request_id) DO NOTHING)sql"));
  Query q(db_, stmt, "ClaimRequest");
  q.Text(":method", claim.method)
      .Text(":request_id", claim.request_id)
      .Blob(":request_hash", claim.request_hash)
      .Text(":result_id", result_id)
      .Int(":created_unix_ms", NowUnixMs());
  ASSIGN_OR_RETURN(int changed, q.Run());
  return changed > 0;
}

absl::StatusOr<std::string> SqliteStore::ClaimLocked(const RequestClaim& claim,
                                                     const std::string& result_id,
                                                     const std::function<absl::Status()>& write) {
  RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", "begin"));
  absl::StatusOr<bool> fresh = InsertClaimLocked(claim, result_id);
  absl::Status status = fresh.status();
  if (status.ok() && *fresh) status = write();
  if (status.ok()) {
    Failpoint("store.claim.before_commit");
    status = Exec(db_, "COMMIT", "commit");
  }
  if (!status.ok()) {
    Exec(db_, "ROLLBACK", "rollback").IgnoreError();  // the first error matters
    return status;
  }
  Failpoint("store.claim.after_commit");
  return ClaimedResultLocked(claim, "the request row vanished");
}

absl::StatusOr<std::string> SqliteStore::ClaimedResultLocked(const RequestClaim& claim,
                                                             absl::string_view what) {
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kFindRequestSql));
  ASSIGN_OR_RETURN(std::optional<std::string> result,
                   LookupRequest(db_, stmt, claim.method, claim.request_id, claim.request_hash));
  if (!result.has_value()) return absl::InternalError(absl::StrCat("sqlite: ", what));
  return *std::move(result);
}

absl::StatusOr<std::string> SqliteStore::CreateJobWithClaim(const JobRecord& record,
                                                            const RequestClaim& claim) {
  if (claim.request_id.empty()) return absl::InvalidArgumentError("request_id is empty");
  if (record.id.empty()) return absl::InvalidArgumentError("job id is empty");
  RETURN_IF_ERROR(CheckJobState(record.state, absl::StrCat("job \"", record.id, "\"")));
  std::lock_guard<std::mutex> lock(mu_);
  return ClaimLocked(claim, record.id, [&] { return CreateJobLocked(record); });
}

absl::StatusOr<std::string> SqliteStore::PutLatentWithClaim(const LatentRecord& record,
                                                            const RequestClaim& claim) {
  if (claim.request_id.empty()) return absl::InvalidArgumentError("request_id is empty");
  RETURN_IF_ERROR(ValidateLatent(record));
  ASSIGN_OR_RETURN(std::string parents_json, ParentsToJson(record));
  ASSIGN_OR_RETURN(std::string labels_json, LabelsToJson(record));
  std::lock_guard<std::mutex> lock(mu_);
  return ClaimLocked(claim, record.id,
                     [&] { return PutLatentLocked(record, parents_json, labels_json); });
}

absl::Status SqliteStore::FinishJobWithLatent(const JobRecord& record, const LatentRecord& latent) {
  RETURN_IF_ERROR(CheckJobState(record.state, absl::StrCat("job \"", record.id, "\"")));
  RETURN_IF_ERROR(store_internal::CheckJobResult(record, latent));
  RETURN_IF_ERROR(ValidateLatent(latent));
  ASSIGN_OR_RETURN(std::string parents_json, ParentsToJson(latent));
  ASSIGN_OR_RETURN(std::string labels_json, LabelsToJson(latent));
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", "begin"));
  auto run = [&]() -> absl::Status {
    // The fence first: a replica that lost the job writes nothing, not even the latent.
    RETURN_IF_ERROR(UpdateJobLocked(record));
    absl::Status put = PutLatentLocked(latent, parents_json, labels_json);
    if (absl::IsAlreadyExists(put)) {
      ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare("SELECT job_id FROM latents WHERE id = :id"));
      Query q(db_, stmt, "finding the job of a latent");
      q.Text(":id", latent.id);
      ASSIGN_OR_RETURN(bool row, q.Step());
      // Stored by an earlier try of this job's finish: counts as stored.
      if (row && q.ColumnBytes(0) == record.id) put = absl::OkStatus();
    }
    RETURN_IF_ERROR(put);
    return Exec(db_, "COMMIT", "commit");
  };
  absl::Status status = run();
  if (!status.ok()) Exec(db_, "ROLLBACK", "rollback").IgnoreError();  // the first error matters
  return status;
}

// ---- Usage and expiry ----

namespace {

// The tenant of a request row's method (RequestScope: "Embed@alpha" is alpha's, "Embed"
// tenant ""'s).
constexpr const char* kRequestTenant =
    "CASE WHEN instr(method, '@') > 0 THEN substr(method, instr(method, '@') + 1) ELSE '' END";

}  // namespace

absl::StatusOr<TenantUsage> SqliteStore::UsageLocked(const std::string& tenant,
                                                     bool with_requests) {
  // Index lookups by tenant (latents_by_tenant, jobs_by_tenant); length() of a blob reads
  // its size from the record header, not its pages.
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(R"sql(SELECT
      (SELECT count(*) FROM latents WHERE tenant = :tenant),
      (SELECT coalesce(sum(length(values_f32) + length(noise_npz)), 0) FROM latents
         WHERE tenant = :tenant),
      (SELECT count(*) FROM jobs WHERE tenant = :tenant),
      (SELECT count(*) FROM jobs WHERE tenant = :tenant AND state IN (1, 2)),
      (SELECT coalesce(sum(length(spec) + length(checkpoint) + length(result)), 0) FROM jobs
         WHERE tenant = :tenant),
      (SELECT count(*) FROM directions WHERE tenant = :tenant),
      (SELECT coalesce(sum(length(values_f32)), 0) FROM directions WHERE tenant = :tenant))sql"));
  Query q(db_, stmt, "reading a tenant's usage");
  q.Text(":tenant", tenant);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return absl::InternalError("sqlite: usage: no row");
  TenantUsage u;
  u.tenant = tenant;
  u.latents = q.ColumnInt(0);
  u.latent_bytes = q.ColumnInt(1);
  u.jobs = q.ColumnInt(2);
  u.unfinished_jobs = q.ColumnInt(3);
  u.job_bytes = q.ColumnInt(4);
  u.directions = q.ColumnInt(5);
  u.direction_bytes = q.ColumnInt(6);
  if (with_requests) {
    ASSIGN_OR_RETURN(sqlite3_stmt * count,
                     Prepare(absl::StrCat("SELECT count(*) FROM requests WHERE ", kRequestTenant,
                                          " = :tenant")));
    Query c(db_, count, "counting a tenant's request IDs");
    c.Text(":tenant", tenant);
    ASSIGN_OR_RETURN(bool counted, c.Step());
    if (counted) u.request_ids = c.ColumnInt(0);
  }
  return u;
}

absl::StatusOr<TenantUsage> SqliteStore::Usage(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  return UsageLocked(tenant, /*with_requests=*/true);
}

absl::StatusOr<std::vector<TenantUsage>> SqliteStore::AllUsage() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, TenantUsage> by_tenant;
  const auto add =
      [&](const std::string& sql, absl::string_view what,
          const std::function<void(const Query&, TenantUsage&)>& read) -> absl::Status {
    ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(sql));
    Query q(db_, stmt, what);
    while (true) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return absl::OkStatus();
      const std::string tenant = q.ColumnBytes(0);
      TenantUsage& u = by_tenant[tenant];
      u.tenant = tenant;
      read(q, u);
    }
  };
  RETURN_IF_ERROR(
      add("SELECT tenant, count(*), coalesce(sum(length(values_f32) + length(noise_npz)), 0)"
          " FROM latents GROUP BY tenant",
          "usage of latents", [](const Query& q, TenantUsage& u) {
            u.latents = q.ColumnInt(1);
            u.latent_bytes = q.ColumnInt(2);
          }));
  RETURN_IF_ERROR(
      add("SELECT tenant, count(*), coalesce(sum(state IN (1, 2)), 0),"
          " coalesce(sum(length(spec) + length(checkpoint) + length(result)), 0)"
          " FROM jobs GROUP BY tenant",
          "usage of jobs", [](const Query& q, TenantUsage& u) {
            u.jobs = q.ColumnInt(1);
            u.unfinished_jobs = q.ColumnInt(2);
            u.job_bytes = q.ColumnInt(3);
          }));
  RETURN_IF_ERROR(
      add("SELECT tenant, count(*), coalesce(sum(length(values_f32)), 0) FROM directions"
          " GROUP BY tenant",
          "usage of directions", [](const Query& q, TenantUsage& u) {
            u.directions = q.ColumnInt(1);
            u.direction_bytes = q.ColumnInt(2);
          }));
  RETURN_IF_ERROR(
      add(absl::StrCat("SELECT ", kRequestTenant, ", count(*) FROM requests GROUP BY 1"),
          "usage of request IDs",
          [](const Query& q, TenantUsage& u) { u.request_ids = q.ColumnInt(1); }));
  std::vector<TenantUsage> out;
  for (auto& [tenant, usage] : by_tenant) out.push_back(std::move(usage));
  return out;
}

absl::StatusOr<Expired> SqliteStore::ExpireOld(int64_t jobs_before_unix_ms,
                                               int64_t requests_before_unix_ms, int limit) {
  if (limit < 1) return absl::InvalidArgumentError("ExpireOld: limit must be at least 1");
  std::lock_guard<std::mutex> lock(mu_);
  Expired expired;
  RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", "begin"));
  auto run = [&]() -> absl::Status {
    if (jobs_before_unix_ms > 0) {
      // A job and the keys naming it go together: no key is left naming nothing. Both
      // statements pick the same jobs (one transaction, a total order).
      for (const char* sql : {
               "DELETE FROM requests WHERE result_id IN (SELECT id FROM jobs"
               " WHERE state IN (3, 4, 5) AND finished_unix_ms < :before"
               " ORDER BY finished_unix_ms, id LIMIT :limit)",
               "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
               " WHERE state IN (3, 4, 5) AND finished_unix_ms < :before"
               " ORDER BY finished_unix_ms, id LIMIT :limit)",
           }) {
        ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(sql));
        Query q(db_, stmt, "ExpireOld");
        q.Int(":before", jobs_before_unix_ms).Int(":limit", limit);
        ASSIGN_OR_RETURN(int changed, q.Run());
        if (absl::StartsWith(sql, "DELETE FROM requests")) {
          expired.request_ids += changed;
        } else {
          expired.jobs = changed;
        }
      }
    }
    if (requests_before_unix_ms > 0) {
      ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(R"sql(DELETE FROM requests
          WHERE (method, request_id) IN (SELECT method, request_id FROM requests
              WHERE created_unix_ms < :before ORDER BY created_unix_ms LIMIT :limit))sql"));
      Query q(db_, stmt, "ExpireOld");
      q.Int(":before", requests_before_unix_ms).Int(":limit", limit);
      ASSIGN_OR_RETURN(int changed, q.Run());
      expired.request_ids += changed;
    }
    return Exec(db_, "COMMIT", "commit");
  };
  absl::Status status = run();
  if (!status.ok()) {
    Exec(db_, "ROLLBACK", "rollback").IgnoreError();
    return status;
  }
  return expired;
}

absl::Status SqliteStore::ReclaimSpace() {
  std::lock_guard<std::mutex> lock(mu_);
  // Truncates the file by the pages on the free list (auto_vacuum = INCREMENTAL, see
  // Open); a no-op when there are none.
  return Exec(db_, "PRAGMA incremental_vacuum", "incremental_vacuum");
}

}  // namespace i2s
