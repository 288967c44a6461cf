#include "server/store/postgres_store.h"

#include <libpq-fe.h>

#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "server/base/private_detail.h"
#include "server/store/schema.h"
#include "server/store/store_util.h"

namespace i2s {

using store_internal::CheckDirectionQuota;
using store_internal::CheckJobQuota;
using store_internal::CheckLatentQuota;
using store_internal::DirectionExists;
using store_internal::DirectionNotFound;
using store_internal::DirectionPageQuery;
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

namespace {

// Built-in type OIDs (pg_type.dat; stable since PostgreSQL 7).
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kFloat8Oid = 701;

// pg_advisory_xact_lock key held while migrating ("i2s" schema).
constexpr int64_t kMigrationLockKey = 0x693273'00000001;

// Read after the summary columns (without reading the blob): whether it has noise maps.
constexpr const char* kLatentHasNoise = "octet_length(noise_npz) > 0";

uint64_t ReadBigEndian(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

void AppendBigEndian(std::string& out, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The database's "now" in milliseconds since the epoch, as SQL (PostgresOptions::
// database_clock).
constexpr char kDatabaseNowSql[] = "(extract(epoch FROM statement_timestamp()) * 1000)::bigint";

// "host:port/dbname as user" from a conninfo, without the password.
std::string Describe(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    return "(unparsable connection string)";
  }
  std::string host = "localhost", port = "5432", dbname, user;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    const absl::string_view key = o->keyword;
    if (key == "host" || (key == "hostaddr" && host == "localhost")) host = o->val;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
    if (key == "user") user = o->val;
  }
  PQconninfoFree(options);
  std::string out = absl::StrCat(host, ":", port, "/", dbname.empty() ? user : dbname);
  if (!user.empty()) absl::StrAppend(&out, " as ", user);
  return out;
}

}  // namespace

// Parameters of one statement, sent in binary: placeholders come from the adders, so the
// SQL text is built from constant fragments and "$n" only.
class PostgresStore::Statement {
 public:
  explicit Statement(const char* what) : what_(what) {}

  std::string Int(int64_t v) {
    std::string bytes;
    AppendBigEndian(bytes, static_cast<uint64_t>(v), 8);
    return Add(kInt8Oid, std::move(bytes));
  }
  std::string Double(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    std::string bytes;
    AppendBigEndian(bytes, bits, 8);
    return Add(kFloat8Oid, std::move(bytes));
  }
  std::string Bool(bool v) { return Add(kBoolOid, std::string(1, v ? '\1' : '\0')); }
  std::string Text(absl::string_view v) { return Add(kTextOid, std::string(v)); }
  std::string Bytes(absl::string_view v) { return Add(kByteaOid, std::string(v)); }
  // A NULL of type `oid`.
  std::string Null(Oid oid) {
    values_.emplace_back();
    null_.push_back(true);
    oids_.push_back(oid);
    return absl::StrCat("$", oids_.size());
  }

  void set_sql(std::string sql) { sql_ = std::move(sql); }
  const std::string& sql() const { return sql_; }
  const char* what() const { return what_; }
  // An INSERT whose row may have landed when the connection broke: Run checks for the
  // row `exists_sql` (with the same parameters) before retrying.
  void set_exists_sql(std::string sql) { exists_sql_ = std::move(sql); }
  const std::string& exists_sql() const { return exists_sql_; }

  PGresult* Exec(PGconn* conn, const std::string& sql) const {
    std::vector<const char*> values(values_.size());
    std::vector<int> lengths(values_.size()), formats(values_.size(), 1);
    for (size_t i = 0; i < values_.size(); ++i) {
      values[i] = null_[i] ? nullptr : values_[i].data();
      lengths[i] = static_cast<int>(values_[i].size());
    }
    return PQexecParams(conn, sql.c_str(), static_cast<int>(values_.size()), oids_.data(),
                        values.data(), lengths.data(), formats.data(), /*resultFormat=*/1);
  }

 private:
  std::string Add(Oid oid, std::string bytes) {
    values_.push_back(std::move(bytes));
    null_.push_back(false);
    oids_.push_back(oid);
    return absl::StrCat("$", oids_.size());
  }

  const char* what_;
  std::string sql_, exists_sql_;
  std::deque<std::string> values_;  // stable addresses
  std::vector<bool> null_;
  std::vector<Oid> oids_;
};

// A statement's rows, in binary format. Owns the PGresult.
class PostgresStore::Result {
 public:
  explicit Result(PGresult* res) : res_(res, PQclear) {}
  // An INSERT that landed before the connection broke (found by Run's check).
  static Result Landed() {
    Result r(nullptr);
    r.landed_ = true;
    return r;
  }
  const PGresult* get() const { return res_.get(); }
  int rows() const { return PQntuples(res_.get()); }
  // Rows an INSERT/UPDATE/DELETE changed.
  int changed() const {
    if (landed_) return 1;
    const char* n = PQcmdTuples(res_.get());
    return n == nullptr || *n == '\0' ? 0 : std::atoi(n);
  }
  bool IsNull(int row, int col) const { return PQgetisnull(res_.get(), row, col) != 0; }
  int64_t Int(int row, int col) const {
    if (IsNull(row, col)) return 0;
    const int n = PQgetlength(res_.get(), row, col);
    const uint64_t v = ReadBigEndian(PQgetvalue(res_.get(), row, col), n);
    if (n == 4) return static_cast<int32_t>(static_cast<uint32_t>(v));
    if (n == 1) return static_cast<int64_t>(v);  // BOOLEAN
    return static_cast<int64_t>(v);
  }
  double Double(int row, int col) const {
    if (IsNull(row, col)) return std::numeric_limits<double>::quiet_NaN();
    const uint64_t bits = ReadBigEndian(PQgetvalue(res_.get(), row, col), 8);
    double v;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  }
  std::string Bytes(int row, int col) const {
    return std::string(PQgetvalue(res_.get(), row, col), PQgetlength(res_.get(), row, col));
  }

 private:
  std::unique_ptr<PGresult, void (*)(PGresult*)> res_;
  bool landed_ = false;
};

struct PostgresStore::Connection {
  PGconn* conn = nullptr;  // owned; null until first opened
  ~Connection() {
    if (conn != nullptr) PQfinish(conn);
  }
};

// A connection checked out of the pool; returns it on destruction.
class PostgresStore::Checkout {
 public:
  Checkout(PostgresStore* store, Connection* connection) : store_(store), connection_(connection) {}
  Checkout(Checkout&& other) noexcept
      : store_(other.store_), connection_(std::exchange(other.connection_, nullptr)) {}
  Checkout& operator=(Checkout&&) = delete;
  ~Checkout() {
    if (connection_ != nullptr) store_->Release(connection_);
  }
  Connection& operator*() const { return *connection_; }

 private:
  PostgresStore* store_;
  Connection* connection_;
};

namespace {

// A failed statement as a status. SQLSTATE classes: 08 (connection) and 57P0x (the
// server shutting down or starting) are Unavailable, so callers retry; 53 (disk full, out
// of memory) ResourceExhausted; 22 (bad data, e.g. a string that is not UTF-8)
// InvalidArgument; 40 (serialization failure, deadlock) Aborted; 25006 (a read-only
// standby) Unavailable. The rest are Internal.
absl::Status StatementError(const PGresult* res, PGconn* conn, absl::string_view what,
                            absl::string_view where) {
  const char* state_field = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const std::string sqlstate = state_field != nullptr ? state_field : "";
  std::string detail = res != nullptr ? PQresultErrorMessage(res) : "";
  if (detail.empty()) detail = PQerrorMessage(conn);
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
  const std::string message =
      absl::StrCat("postgres (", where, "): ", what, ": ", detail,
                   sqlstate.empty() ? "" : " [SQLSTATE ", sqlstate, sqlstate.empty() ? "" : "]");
  // libpq's text names the host, port, database and user: for the log, not for callers.
  if (PQstatus(conn) == CONNECTION_BAD || absl::StartsWith(sqlstate, "08") ||
      absl::StartsWith(sqlstate, "57P") || sqlstate == "25006") {
    return WithPrivateDetail(absl::UnavailableError(message));
  }
  if (absl::StartsWith(sqlstate, "53")) {
    return WithPrivateDetail(absl::ResourceExhaustedError(message));
  }
  if (absl::StartsWith(sqlstate, "22")) {
    return WithPrivateDetail(absl::InvalidArgumentError(message));
  }
  if (absl::StartsWith(sqlstate, "40")) return WithPrivateDetail(absl::AbortedError(message));
  return WithPrivateDetail(absl::InternalError(message));
}

bool ResultOk(const PGresult* res) {
  const ExecStatusType s = PQresultStatus(res);
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresStore>> PostgresStore::Open(const std::string& conninfo,
                                                                   const PostgresOptions& options) {
  if (options.pool_size < 1) {
    return absl::InvalidArgumentError("postgres: the pool needs at least one connection");
  }
  auto store =
      std::unique_ptr<PostgresStore>(new PostgresStore(conninfo, Describe(conninfo), options));
  RETURN_IF_ERROR(store->Migrate());
  return store;
}

PostgresStore::PostgresStore(std::string conninfo, std::string description,
                             const PostgresOptions& options)
    : conninfo_(std::move(conninfo)), description_(std::move(description)), options_(options) {
  for (int i = 0; i < options_.pool_size; ++i) {
    connections_.push_back(std::make_unique<Connection>());
    free_.push_back(connections_.back().get());
  }
}

PostgresStore::~PostgresStore() = default;

absl::Status PostgresStore::Connect(Connection& c) {
  if (c.conn != nullptr) {
    PQfinish(c.conn);
    c.conn = nullptr;
  }
  // Our defaults first: the caller's conninfo (expanded from "dbname") overrides them.
  const std::string timeout = absl::StrCat(options_.connect_timeout_s);
  const std::string startup = absl::StrCat("-c statement_timeout=", options_.statement_timeout_ms);
  const char* keys[] = {"connect_timeout",  "application_name", "client_encoding",
                        "options",          "keepalives_idle",  "keepalives_interval",
                        "keepalives_count", "dbname",           nullptr};
  const char* values[] = {timeout.c_str(),   "i2s_server", "UTF8", startup.c_str(), "10", "5", "3",
                          conninfo_.c_str(), nullptr};
  c.conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (c.conn == nullptr) return absl::ResourceExhaustedError("postgres: out of memory");
  if (PQstatus(c.conn) != CONNECTION_OK) {
    std::string detail = PQerrorMessage(c.conn);
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    PQfinish(c.conn);
    c.conn = nullptr;
    return WithPrivateDetail(absl::UnavailableError(
        absl::StrCat("postgres (", description_, "): cannot connect: ", detail)));
  }
  return absl::OkStatus();
}

absl::StatusOr<PostgresStore::Checkout> PostgresStore::Acquire() {
  Connection* c;
  {
    std::unique_lock<std::mutex> lock(mu_);
    freed_.wait(lock, [this] { return !free_.empty(); });
    c = free_.back();
    free_.pop_back();
  }
  Checkout checkout(this, c);
  if (c->conn == nullptr || PQstatus(c->conn) != CONNECTION_OK) RETURN_IF_ERROR(Connect(*c));
  return checkout;
}

void PostgresStore::Release(Connection* connection) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(connection);
  }
  freed_.notify_one();
}

absl::StatusOr<PostgresStore::Result> PostgresStore::Run(const Statement& statement) {
  for (int attempt = 0;; ++attempt) {
    ASSIGN_OR_RETURN(Checkout checkout, Acquire());
    Connection& c = *checkout;
    if (attempt > 0 && !statement.exists_sql().empty()) {
      // The first attempt's INSERT may have committed before the break.
      Result probe(statement.Exec(c.conn, statement.exists_sql()));
      if (!ResultOk(probe.get())) {
        return StatementError(probe.get(), c.conn, statement.what(), description_);
      }
      if (probe.rows() > 0) return Result::Landed();
    }
    Result result(statement.Exec(c.conn, statement.sql()));
    if (ResultOk(result.get())) return result;
    absl::Status error = StatementError(result.get(), c.conn, statement.what(), description_);
    const bool broken = PQstatus(c.conn) != CONNECTION_OK;
    if (broken) {  // reopened at the next Acquire
      PQfinish(c.conn);
      c.conn = nullptr;
    }
    if (!broken || attempt > 0) return error;
  }
}

absl::Status PostgresStore::Migrate() {
  ASSIGN_OR_RETURN(Checkout checkout, Acquire());
  PGconn* conn = (*checkout).conn;
  auto exec = [&](const std::string& sql, absl::string_view what) -> absl::StatusOr<Result> {
    Result r(PQexec(conn, sql.c_str()));  // text results; several statements allowed
    if (!ResultOk(r.get())) return StatementError(r.get(), conn, what, description_);
    return r;
  };
  // The schema's steps: postgres_schema.cc.
  const absl::Span<const char* const> migrations = store_internal::PostgresMigrations();
  const int64_t schema_version = static_cast<int64_t>(migrations.size());
  RETURN_IF_ERROR(exec("BEGIN", "begin migration").status());
  auto migrate = [&]() -> absl::Status {
    // Replicas starting together wait here for the first one's migration.
    RETURN_IF_ERROR(exec(absl::StrCat("SELECT pg_advisory_xact_lock(", kMigrationLockKey, ")"),
                         "locking the schema")
                        .status());
    RETURN_IF_ERROR(
        exec("CREATE TABLE IF NOT EXISTS i2s_schema (version BIGINT NOT NULL)", "i2s_schema")
            .status());
    ASSIGN_OR_RETURN(Result rows, exec("SELECT version FROM i2s_schema", "reading the version"));
    int64_t version = 0;
    if (rows.rows() > 0 && !absl::SimpleAtoi(PQgetvalue(rows.get(), 0, 0), &version)) {
      return absl::InternalError("postgres: i2s_schema.version is not a number");
    }
    if (version > schema_version) {
      return absl::FailedPreconditionError(absl::StrCat("database schema version ", version,
                                                        " is newer than this server's (",
                                                        schema_version, "); use a newer server"));
    }
    for (int64_t v = version; v < schema_version; ++v) {
      RETURN_IF_ERROR(exec(migrations[v], absl::StrCat("migration to version ", v + 1)).status());
    }
    if (version < schema_version) {
      // The version is our own constant, not a value from outside.
      RETURN_IF_ERROR(
          exec(rows.rows() == 0
                   ? absl::StrCat("INSERT INTO i2s_schema VALUES (", schema_version, ")")
                   : absl::StrCat("UPDATE i2s_schema SET version = ", schema_version),
               "recording the version")
              .status());
    }
    return absl::OkStatus();
  };
  absl::Status status = migrate();
  if (!status.ok()) {
    exec("ROLLBACK", "rollback migration").IgnoreError();  // the first error matters
    return status;
  }
  return exec("COMMIT", "commit migration").status();
}

namespace {

// One row of a result, for the shared row readers (store_util.h).
class ResultRow final : public Row {
 public:
  ResultRow(const PostgresStore::Result& r, int row) : r_(r), row_(row) {}
  bool IsNull(int col) const override { return r_.IsNull(row_, col); }
  int64_t Int(int col) const override { return r_.Int(row_, col); }
  double Double(int col) const override { return r_.Double(row_, col); }
  std::string Bytes(int col) const override { return r_.Bytes(row_, col); }

 private:
  const PostgresStore::Result& r_;
  const int row_;
};

absl::StatusOr<LatentRecord> ReadLatent(const PostgresStore::Result& q, int row, bool with_values) {
  return ReadLatentRow(ResultRow(q, row), with_values);
}

absl::StatusOr<JobRecord> ReadJob(const PostgresStore::Result& q, int row, bool with_blobs) {
  return ReadJobRow(ResultRow(q, row), with_blobs);
}

// A listing's tail, binding the page's parameters to `st`.
std::string ListingTail(PostgresStore::Statement& st, std::vector<std::string> filters,
                        const PageQuery& page) {
  const std::string created = page.has_after ? st.Int(page.after_created_unix_ms) : "";
  const std::string id = page.has_after ? st.Text(page.after_id) : "";
  return store_internal::ListingTail(std::move(filters), page, created, id, st.Int(page.limit + 1));
}

absl::StatusOr<std::vector<JobRecord>> ReadJobs(const PostgresStore::Result& q) {
  std::vector<JobRecord> jobs;
  for (int row = 0; row < q.rows(); ++row) {
    ASSIGN_OR_RETURN(JobRecord record, ReadJob(q, row, /*with_blobs=*/true));
    jobs.push_back(std::move(record));
  }
  SortOldestFirst(jobs);
  return jobs;
}

}  // namespace

// ---- LatentStore ----

namespace {

// The values of a latent row, in kLatentSummaryColumns then kLatentBlobColumns order.
std::vector<std::string> LatentRowParams(PostgresStore::Statement& st, const LatentRecord& record,
                                         const std::string& parents_json,
                                         const std::string& labels_json) {
  return {
      st.Text(record.id),
      st.Text(record.tenant),
      st.Text(record.model),
      st.Text(record.fingerprint),
      st.Int(record.num_layers),
      st.Int(record.latent_size),
      st.Int(static_cast<int64_t>(record.noise_seed)),
      st.Text(record.source),
      st.Text(record.job_id),
      st.Text(parents_json),
      st.Text(record.params_json),
      st.Bool(record.metrics.has_value()),
      record.metrics ? st.Double(record.metrics->loss) : st.Null(kFloat8Oid),
      record.metrics ? st.Double(record.metrics->mse) : st.Null(kFloat8Oid),
      record.metrics ? st.Double(record.metrics->perceptual) : st.Null(kFloat8Oid),
      record.metrics ? st.Double(record.metrics->psnr) : st.Null(kFloat8Oid),
      record.metrics ? st.Int(record.metrics->steps) : st.Null(kInt8Oid),
      record.metrics && record.metrics->lpips >= 0 ? st.Double(record.metrics->lpips)
                                                   : st.Null(kFloat8Oid),
      st.Int(record.created_unix_ms),
      st.Text(labels_json),
      st.Bytes(store_internal::EncodeFloats(record.values)),
      st.Bytes(record.noise_npz),
  };
}

// The values of a job row, in kJobSummaryColumns then kJobBlobColumns order. With
// `database_clock`, the lease of a record with an owner runs from the database's now for
// the length the record gives (store.h, CreateJob).
std::vector<std::string> JobRowParams(PostgresStore::Statement& st, const JobRecord& record,
                                      bool database_clock) {
  const auto lease_expires = [&] {
    if (!database_clock || record.owner.empty()) return st.Int(record.lease_expires_unix_ms);
    return absl::StrCat("(", kDatabaseNowSql, " + ",
                        st.Int(record.lease_expires_unix_ms - record.created_unix_ms), ")");
  };
  return {
      st.Text(record.id),
      st.Text(record.tenant),
      st.Text(record.request_id),
      st.Text(record.model),
      st.Int(static_cast<int>(record.state)),
      st.Bool(record.cancel_requested),
      st.Int(record.checkpoint_step),
      st.Text(record.latent_id),
      st.Int(record.error_code),
      st.Text(record.error_message),
      st.Int(record.next_sequence),
      st.Int(record.created_unix_ms),
      st.Int(record.started_unix_ms),
      st.Int(record.finished_unix_ms),
      st.Text(record.owner),
      lease_expires(),
      st.Int(record.lease_epoch),
      st.Text(record.progress),
      st.Int(record.total_steps),
      st.Bytes(record.result),
      st.Bytes(record.spec),
      st.Bytes(record.checkpoint),
  };
}

// "WITH claim AS (...)": inserts the request row if its key is new and yields a row only
// then; $1 method, $2 request_id, $3 hash, $4 result_id, $5 time (added to `st` first).
std::string ClaimCte(PostgresStore::Statement& st, const RequestClaim& claim,
                     const std::string& result_id, int64_t now_unix_ms) {
  return absl::StrCat(
      "WITH claim AS (INSERT INTO requests (method, request_id, request_hash, result_id, "
      "created_unix_ms) VALUES (",
      st.Text(claim.method), ", ", st.Text(claim.request_id), ", ", st.Bytes(claim.request_hash),
      ", ", st.Text(result_id), ", ", st.Int(now_unix_ms),
      ") ON CONFLICT (method, request_id) DO NOTHING RETURNING 1) ");
}

constexpr char kClaimLandedSql[] =
    "SELECT 1 FROM requests WHERE method = $1 AND request_id = $2 AND result_id = $4";

// UpdateJob's statement: the columns it writes, fenced by owner and epoch.
std::string UpdateJobSql(PostgresStore::Statement& st, const JobRecord& r) {
  return absl::StrCat(
      "UPDATE jobs SET request_id = ", st.Text(r.request_id), ", model = ", st.Text(r.model),
      ", state = ", st.Int(static_cast<int>(r.state)), ", cancel_requested = cancel_requested OR ",
      st.Bool(r.cancel_requested), ", latent_id = ", st.Text(r.latent_id),
      ", error_code = ", st.Int(r.error_code), ", error_message = ", st.Text(r.error_message),
      ", next_sequence = ", st.Int(r.next_sequence),
      ", created_unix_ms = ", st.Int(r.created_unix_ms),
      ", started_unix_ms = ", st.Int(r.started_unix_ms),
      ", finished_unix_ms = ", st.Int(r.finished_unix_ms), ", result = ", st.Bytes(r.result),
      IsTerminal(r.state) ? ", spec = ''::bytea, checkpoint = ''::bytea" : "",
      " WHERE id = ", st.Text(r.id), " AND owner = ", st.Text(r.owner),
      " AND lease_epoch = ", st.Int(r.lease_epoch));
}

}  // namespace

absl::Status PostgresStore::PutLatent(const LatentRecord& record) {
  RETURN_IF_ERROR(ValidateLatent(record));
  ASSIGN_OR_RETURN(std::string parents_json, ParentsToJson(record));
  ASSIGN_OR_RETURN(std::string labels_json, LabelsToJson(record));
  Statement st("PutLatent");
  const std::vector<std::string> p = LatentRowParams(st, record, parents_json, labels_json);
  st.set_sql(absl::StrCat("INSERT INTO latents (", kLatentSummaryColumns, ", ", kLatentBlobColumns,
                          ") VALUES (", absl::StrJoin(p, ", "), ") ON CONFLICT (id) DO NOTHING"));
  st.set_exists_sql(
      "SELECT 1 FROM latents WHERE id = $1 AND tenant = $2 AND created_unix_ms = $19");
  ASSIGN_OR_RETURN(Result r, RunWithinQuota(record.tenant, LatentQuotaCheck(record), st));
  if (r.changed() == 0) {
    return absl::AlreadyExistsError(absl::StrCat("latent \"", record.id, "\" already exists"));
  }
  return absl::OkStatus();
}

absl::StatusOr<LatentRecord> PostgresStore::GetLatent(const std::string& id, bool with_values) {
  Statement st("GetLatent");
  st.set_sql(absl::StrCat("SELECT ", kLatentSummaryColumns, ", ", kLatentHasNoise,
                          with_values ? absl::StrCat(", ", kLatentBlobColumns) : "",
                          " FROM latents WHERE id = ", st.Text(id)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.rows() == 0) return LatentNotFound(id);
  return ReadLatent(r, 0, with_values);
}

absl::StatusOr<LatentPage> PostgresStore::ListLatents(const Page& page,
                                                      const std::string& fingerprint,
                                                      const std::optional<std::string>& tenant) {
  ASSIGN_OR_RETURN(PageQuery page_query, ParsePage(page, 'L'));
  Statement st("ListLatents");
  std::vector<std::string> filters;
  if (tenant.has_value()) filters.push_back(absl::StrCat("tenant = ", st.Text(*tenant)));
  if (!fingerprint.empty()) {
    filters.push_back(absl::StrCat("fingerprint = ", st.Text(fingerprint)));
  }
  st.set_sql(absl::StrCat("SELECT ", kLatentSummaryColumns, ", ", kLatentHasNoise, " FROM latents",
                          ListingTail(st, std::move(filters), page_query)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  LatentPage result;
  for (int row = 0; row < r.rows(); ++row) {
    ASSIGN_OR_RETURN(LatentRecord record, ReadLatent(r, row, /*with_values=*/false));
    result.latents.push_back(std::move(record));
  }
  result.next_page_token = NextPageToken(result.latents, page_query, 'L');
  return result;
}

absl::Status PostgresStore::DeleteLatent(const std::string& id) {
  Statement st("DeleteLatent");
  // One statement: the latent and the request IDs naming it go together.
  const std::string key = st.Text(id);
  st.set_sql(absl::StrCat("WITH gone AS (DELETE FROM latents WHERE id = ", key,
                          " RETURNING id), keys AS (DELETE FROM requests WHERE result_id IN"
                          " (SELECT id FROM gone)) SELECT count(*) FROM gone"));
  ASSIGN_OR_RETURN(Result r, Run(st));
  // A retried DELETE whose first attempt landed reports NotFound: the latent is gone
  // either way, which is what the caller asked for.
  if (r.Int(0, 0) == 0) return LatentNotFound(id);
  return absl::OkStatus();
}

// ---- JobStore ----

absl::Status PostgresStore::CreateJob(const JobRecord& record) {
  if (record.id.empty()) return absl::InvalidArgumentError("job id is empty");
  RETURN_IF_ERROR(
      store_internal::CheckJobState(record.state, absl::StrCat("job \"", record.id, "\"")));
  Statement st("CreateJob");
  const std::vector<std::string> p = JobRowParams(st, record, options_.database_clock);
  st.set_sql(absl::StrCat("INSERT INTO jobs (", kJobSummaryColumns, ", ", kJobBlobColumns,
                          ") VALUES (", absl::StrJoin(p, ", "), ") ON CONFLICT (id) DO NOTHING"));
  st.set_exists_sql("SELECT 1 FROM jobs WHERE id = $1 AND tenant = $2 AND created_unix_ms = $12");
  ASSIGN_OR_RETURN(Result r, RunWithinQuota(record.tenant, JobQuotaCheck(record), st));
  if (r.changed() == 0) {
    return absl::AlreadyExistsError(absl::StrCat("job \"", record.id, "\" already exists"));
  }
  return absl::OkStatus();
}

absl::Status PostgresStore::UpdateJob(const JobRecord& r) {
  RETURN_IF_ERROR(store_internal::CheckJobState(r.state, absl::StrCat("job \"", r.id, "\"")));
  Statement st("UpdateJob");
  st.set_sql(UpdateJobSql(st, r));
  ASSIGN_OR_RETURN(Result result, Run(st));
  if (result.changed() == 0) return NotUpdated(r.id, r.owner, r.lease_epoch);
  return absl::OkStatus();
}

absl::Status PostgresStore::NotUpdated(const std::string& id, const std::string& owner,
                                       int64_t lease_epoch) {
  Statement st("finding a job");
  st.set_sql(absl::StrCat("SELECT 1 FROM jobs WHERE id = ", st.Text(id)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  return r.rows() > 0 ? NotTheOwner(id, owner, lease_epoch) : JobNotFound(id);
}

absl::Status PostgresStore::MarkCancelRequested(const std::string& id) {
  Statement st("MarkCancelRequested");
  st.set_sql(absl::StrCat("UPDATE jobs SET cancel_requested = TRUE WHERE id = ", st.Text(id)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.changed() == 0) return JobNotFound(id);
  return absl::OkStatus();
}

absl::Status PostgresStore::SaveCheckpoint(const std::string& id, int step,
                                           const std::string& bytes, int64_t next_sequence,
                                           const std::string& owner, int64_t lease_epoch) {
  Statement st("SaveCheckpoint");
  st.set_sql(absl::StrCat(
      "UPDATE jobs SET checkpoint = ", st.Bytes(bytes), ", checkpoint_step = ", st.Int(step),
      ", next_sequence = ", st.Int(next_sequence), " WHERE id = ", st.Text(id),
      " AND owner = ", st.Text(owner), " AND lease_epoch = ", st.Int(lease_epoch)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.changed() == 0) return NotUpdated(id, owner, lease_epoch);
  return absl::OkStatus();
}

absl::StatusOr<JobRecord> PostgresStore::GetJob(const std::string& id, bool with_blobs) {
  Statement st("GetJob");
  st.set_sql(absl::StrCat("SELECT ", kJobSummaryColumns,
                          with_blobs ? absl::StrCat(", ", kJobBlobColumns) : "",
                          " FROM jobs WHERE id = ", st.Text(id)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.rows() == 0) return JobNotFound(id);
  return ReadJob(r, 0, with_blobs);
}

absl::StatusOr<JobPage> PostgresStore::ListJobs(const Page& page,
                                                const std::vector<JobState>& states,
                                                const std::optional<std::string>& tenant) {
  ASSIGN_OR_RETURN(PageQuery page_query, ParsePage(page, 'J'));
  ASSIGN_OR_RETURN(const int64_t state_mask, StateMask(states));
  Statement st("ListJobs");
  std::vector<std::string> filters;
  if (tenant.has_value()) filters.push_back(absl::StrCat("tenant = ", st.Text(*tenant)));
  if (state_mask != 0) {
    filters.push_back(absl::StrCat("((", st.Int(state_mask), " >> state::integer) & 1) = 1"));
  }
  st.set_sql(absl::StrCat("SELECT ", kJobSummaryColumns, " FROM jobs",
                          ListingTail(st, std::move(filters), page_query)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  JobPage result;
  for (int row = 0; row < r.rows(); ++row) {
    ASSIGN_OR_RETURN(JobRecord record, ReadJob(r, row, /*with_blobs=*/false));
    result.jobs.push_back(std::move(record));
  }
  result.next_page_token = NextPageToken(result.jobs, page_query, 'J');
  return result;
}

absl::StatusOr<std::vector<JobRecord>> PostgresStore::UnfinishedJobs() {
  Statement st("UnfinishedJobs");
  st.set_sql(absl::StrCat("SELECT ", kJobSummaryColumns, ", ", kJobBlobColumns,
                          " FROM jobs WHERE state IN (1, 2) ORDER BY created_unix_ms, id"));
  ASSIGN_OR_RETURN(Result r, Run(st));
  return ReadJobs(r);
}

absl::StatusOr<std::vector<JobRecord>> PostgresStore::JobsWithoutTotalSteps(int limit) {
  Statement st("JobsWithoutTotalSteps");
  // Same condition as the partial index jobs_without_total_steps.
  st.set_sql(absl::StrCat("SELECT ", kJobSummaryColumns, ", ", kJobBlobColumns,
                          " FROM jobs WHERE total_steps < 0 ORDER BY created_unix_ms, id LIMIT ",
                          st.Int(limit)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  return ReadJobs(r);
}

absl::Status PostgresStore::SetTotalSteps(const std::string& id, int total_steps) {
  Statement st("SetTotalSteps");
  st.set_sql(absl::StrCat("UPDATE jobs SET total_steps = ", st.Int(total_steps),
                          ", spec = CASE WHEN state IN (3, 4, 5) THEN ''::bytea ELSE spec END"
                          " WHERE id = ",
                          st.Text(id)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.changed() == 0) return JobNotFound(id);
  return absl::OkStatus();
}

// The "now" of a lease statement, in milliseconds since the epoch: the database's clock
// (one for every replica), or the caller's.
std::string PostgresStore::LeaseClock(Statement* st, int64_t now_unix_ms) const {
  if (!options_.database_clock) return st->Int(now_unix_ms);
  return kDatabaseNowSql;
}

absl::StatusOr<std::vector<JobRecord>> PostgresStore::ClaimJobs(const std::string& owner,
                                                                int64_t now_unix_ms,
                                                                int64_t lease_ms,
                                                                ClaimScope scope) {
  Statement st("ClaimJobs");
  const std::string me = st.Text(owner), now = LeaseClock(&st, now_unix_ms);
  // Row locks make concurrent claims safe: a replica that finds a row another one just
  // claimed re-checks the condition on the new row (READ COMMITTED) and skips it.
  st.set_sql(absl::StrCat(
      "UPDATE jobs SET owner = ", me, ", lease_expires_unix_ms = ", now, " + ", st.Int(lease_ms),
      ", lease_epoch = lease_epoch + 1 WHERE state IN (1, 2) AND (",
      st.Bool(scope == ClaimScope::kAll), " OR (", st.Bool(scope == ClaimScope::kExpiredAndOwn),
      " AND owner = ", me, ") OR owner = '' OR lease_expires_unix_ms < ", now, ") RETURNING ",
      kJobSummaryColumns, ", ", kJobBlobColumns));
  ASSIGN_OR_RETURN(Result r, Run(st));
  return ReadJobs(r);
}

absl::StatusOr<std::vector<JobLease>> PostgresStore::RenewLeases(const std::string& owner,
                                                                 int64_t now_unix_ms,
                                                                 int64_t lease_ms) {
  Statement st("RenewLeases");
  const std::string now = LeaseClock(&st, now_unix_ms);
  st.set_sql(absl::StrCat("UPDATE jobs SET lease_expires_unix_ms = ", now, " + ", st.Int(lease_ms),
                          " WHERE owner = ", st.Text(owner),
                          " AND state IN (1, 2) RETURNING id, state, cancel_requested,"
                          " lease_epoch"));
  ASSIGN_OR_RETURN(Result r, Run(st));
  std::vector<JobLease> leases;
  for (int row = 0; row < r.rows(); ++row) {
    JobLease lease;
    lease.id = r.Bytes(row, 0);
    ASSIGN_OR_RETURN(lease.state, JobStateFromColumn(r.Int(row, 1), lease.id));
    lease.cancel_requested = r.Int(row, 2) != 0;
    lease.lease_epoch = r.Int(row, 3);
    leases.push_back(std::move(lease));
  }
  return leases;
}

absl::Status PostgresStore::SaveProgress(const std::string& id, const std::string& owner,
                                         int64_t lease_epoch, const std::string& progress) {
  Statement st("SaveProgress");
  st.set_sql(absl::StrCat("UPDATE jobs SET progress = ", st.Text(progress),
                          " WHERE id = ", st.Text(id), " AND owner = ", st.Text(owner),
                          " AND lease_epoch = ", st.Int(lease_epoch)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.changed() == 0) return NotUpdated(id, owner, lease_epoch);
  return absl::OkStatus();
}

absl::StatusOr<std::string> PostgresStore::CreateJobWithClaim(const JobRecord& record,
                                                              const RequestClaim& claim) {
  if (claim.request_id.empty()) return absl::InvalidArgumentError("request_id is empty");
  if (record.id.empty()) return absl::InvalidArgumentError("job id is empty");
  RETURN_IF_ERROR(
      store_internal::CheckJobState(record.state, absl::StrCat("job \"", record.id, "\"")));
  // One statement, so one transaction: the job row is inserted only where the claim was,
  // and a failing job insert (a taken ID) takes the claim with it.
  Statement st("CreateJobWithClaim");
  const std::string cte = ClaimCte(st, claim, record.id, NowUnixMs());
  const std::vector<std::string> p = JobRowParams(st, record, options_.database_clock);
  st.set_sql(absl::StrCat(cte, "INSERT INTO jobs (", kJobSummaryColumns, ", ", kJobBlobColumns,
                          ") SELECT ", absl::StrJoin(p, ", "),
                          " WHERE EXISTS (SELECT 1 FROM claim)"));
  st.set_exists_sql(kClaimLandedSql);
  RETURN_IF_ERROR(RunWithinQuota(record.tenant, JobQuotaCheck(record), st).status());
  return FindRequest(claim.method, claim.request_id, claim.request_hash);
}

absl::StatusOr<std::string> PostgresStore::PutLatentWithClaim(const LatentRecord& record,
                                                              const RequestClaim& claim) {
  if (claim.request_id.empty()) return absl::InvalidArgumentError("request_id is empty");
  RETURN_IF_ERROR(ValidateLatent(record));
  ASSIGN_OR_RETURN(std::string parents_json, ParentsToJson(record));
  ASSIGN_OR_RETURN(std::string labels_json, LabelsToJson(record));
  Statement st("PutLatentWithClaim");
  const std::string cte = ClaimCte(st, claim, record.id, NowUnixMs());
  const std::vector<std::string> p = LatentRowParams(st, record, parents_json, labels_json);
  st.set_sql(absl::StrCat(cte, "INSERT INTO latents (", kLatentSummaryColumns, ", ",
                          kLatentBlobColumns, ") SELECT ", absl::StrJoin(p, ", "),
                          " WHERE EXISTS (SELECT 1 FROM claim)"));
  st.set_exists_sql(kClaimLandedSql);
  RETURN_IF_ERROR(RunWithinQuota(record.tenant, LatentQuotaCheck(record), st).status());
  return FindRequest(claim.method, claim.request_id, claim.request_hash);
}

// One transaction on one pooled connection (InTransaction).
class PostgresStore::Transaction {
 public:
  Transaction(PGconn* conn, const std::string& where) : conn_(conn), where_(where) {}
  // Runs one statement in the transaction; an error names the statement.
  absl::StatusOr<Result> Exec(const Statement& st) {
    Result r(st.Exec(conn_, st.sql()));
    if (!ResultOk(r.get())) return StatementError(r.get(), conn_, st.what(), where_);
    return r;
  }

 private:
  PGconn* conn_;
  const std::string& where_;
};

absl::Status PostgresStore::InTransaction(const std::function<absl::Status(Transaction&)>& body) {
  ASSIGN_OR_RETURN(Checkout checkout, Acquire());
  Connection& c = *checkout;
  absl::Status status;
  {
    Result begin(PQexec(c.conn, "BEGIN"));
    if (!ResultOk(begin.get())) status = StatementError(begin.get(), c.conn, "begin", description_);
  }
  if (status.ok()) {
    Transaction tx(c.conn, description_);
    status = body(tx);
  }
  if (status.ok()) {
    Result commit(PQexec(c.conn, "COMMIT"));
    if (!ResultOk(commit.get())) {
      status = StatementError(commit.get(), c.conn, "commit", description_);
    }
  }
  if (!status.ok()) {
    if (PQstatus(c.conn) != CONNECTION_OK) {
      PQfinish(c.conn);  // reopened at the next Acquire
      c.conn = nullptr;
    } else {
      Result rollback(PQexec(c.conn, "ROLLBACK"));
    }
  }
  return status;
}

absl::Status PostgresStore::FinishJobWithLatent(const JobRecord& record,
                                                const LatentRecord& latent) {
  RETURN_IF_ERROR(
      store_internal::CheckJobState(record.state, absl::StrCat("job \"", record.id, "\"")));
  RETURN_IF_ERROR(store_internal::CheckJobResult(record, latent));
  RETURN_IF_ERROR(ValidateLatent(latent));
  ASSIGN_OR_RETURN(std::string parents_json, ParentsToJson(latent));
  ASSIGN_OR_RETURN(std::string labels_json, LabelsToJson(latent));
  Statement update("FinishJobWithLatent (the job)");
  update.set_sql(UpdateJobSql(update, record));
  Statement put("FinishJobWithLatent (the latent)");
  const std::vector<std::string> p = LatentRowParams(put, latent, parents_json, labels_json);
  put.set_sql(absl::StrCat("INSERT INTO latents (", kLatentSummaryColumns, ", ", kLatentBlobColumns,
                           ") VALUES (", absl::StrJoin(p, ", "), ") ON CONFLICT (id) DO NOTHING"));
  // No retry of a broken connection here (the commit may have landed): Unavailable, and
  // the caller's next try finds the latent stored for this job, which counts as stored.
  return InTransaction([&](Transaction& tx) -> absl::Status {
    // The fence first, holding the job's row lock to the commit: a replica that lost the
    // job writes nothing, not even the latent.
    ASSIGN_OR_RETURN(Result updated, tx.Exec(update));
    if (updated.changed() == 0) {
      Statement find("finding a job");
      find.set_sql(absl::StrCat("SELECT 1 FROM jobs WHERE id = ", find.Text(record.id)));
      ASSIGN_OR_RETURN(Result found, tx.Exec(find));
      return found.rows() > 0 ? NotTheOwner(record.id, record.owner, record.lease_epoch)
                              : JobNotFound(record.id);
    }
    ASSIGN_OR_RETURN(Result inserted, tx.Exec(put));
    if (inserted.changed() == 0) {
      Statement owner("finding the job of a latent");
      owner.set_sql(absl::StrCat("SELECT job_id FROM latents WHERE id = ", owner.Text(latent.id)));
      ASSIGN_OR_RETURN(Result found, tx.Exec(owner));
      // Stored by an earlier try of this job's finish: counts as stored.
      if (found.rows() == 0 || found.Bytes(0, 0) != record.id) {
        return absl::AlreadyExistsError(absl::StrCat("latent \"", latent.id, "\" already exists"));
      }
    }
    return absl::OkStatus();
  });
}

// ---- RequestStore ----

absl::StatusOr<std::string> PostgresStore::ClaimRequest(const std::string& method,
                                                        const std::string& request_id,
                                                        const std::string& request_hash,
                                                        const std::string& result_id) {
  if (request_id.empty()) return absl::InvalidArgumentError("request_id is empty");
  {
    // Insert if new; a row never changes once written, so the read below sees the winner.
    Statement st("ClaimRequest");
    st.set_sql(absl::StrCat(
        "INSERT INTO requests (method, request_id, request_hash, result_id, created_unix_ms) "
        "VALUES (",
        st.Text(method), ", ", st.Text(request_id), ", ", st.Bytes(request_hash), ", ",
        st.Text(result_id), ", ", st.Int(NowUnixMs()),
        ") ON CONFLICT (method, request_id) DO NOTHING"));
    RETURN_IF_ERROR(Run(st).status());
  }
  absl::StatusOr<std::string> found = FindRequest(method, request_id, request_hash);
  if (absl::IsNotFound(found.status())) {
    return absl::InternalError("postgres: ClaimRequest: the request row vanished");
  }
  return found;
}

absl::StatusOr<std::string> PostgresStore::FindRequest(const std::string& method,
                                                       const std::string& request_id,
                                                       const std::string& request_hash) {
  Statement st("FindRequest");
  st.set_sql(absl::StrCat("SELECT request_hash, result_id FROM requests WHERE method = ",
                          st.Text(method), " AND request_id = ", st.Text(request_id)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.rows() == 0) return RequestNotFound(method, request_id);
  if (r.Bytes(0, 0) != request_hash) return RequestUsedForAnother(request_id);
  return r.Bytes(0, 1);
}

// ---- Quotas, usage and expiry ----

namespace {

// The tenant of a request row's method (RequestScope: "Embed@alpha" is alpha's).
constexpr const char* kRequestTenant =
    "CASE WHEN strpos(method, '@') > 0 THEN substr(method, strpos(method, '@') + 1) ELSE '' END";

// A tenant's latents, jobs and directions: $1 is the tenant.
constexpr const char* kUsageSql = R"sql(SELECT
    (SELECT count(*) FROM latents WHERE tenant = $1),
    (SELECT coalesce(sum(octet_length(values_f32) + octet_length(noise_npz)), 0)::bigint
       FROM latents WHERE tenant = $1),
    (SELECT count(*) FROM jobs WHERE tenant = $1),
    (SELECT count(*) FROM jobs WHERE tenant = $1 AND state IN (1, 2)),
    (SELECT coalesce(sum(octet_length(spec) + octet_length(checkpoint) + octet_length(result)),
                     0)::bigint FROM jobs WHERE tenant = $1),
    (SELECT count(*) FROM directions WHERE tenant = $1),
    (SELECT coalesce(sum(octet_length(values_f32)), 0)::bigint FROM directions
       WHERE tenant = $1))sql";

// pg_advisory_xact_lock's first key: the quota locks' own space (any constant other code
// on the database does not use; "i2sq").
constexpr int kQuotaLockSpace = 0x69327371;

TenantUsage ReadUsage(const PostgresStore::Result& r, const std::string& tenant) {
  TenantUsage u;
  u.tenant = tenant;
  u.latents = r.Int(0, 0);
  u.latent_bytes = r.Int(0, 1);
  u.jobs = r.Int(0, 2);
  u.unfinished_jobs = r.Int(0, 3);
  u.job_bytes = r.Int(0, 4);
  u.directions = r.Int(0, 5);
  u.direction_bytes = r.Int(0, 6);
  return u;
}

// The statement that takes `tenant`'s quota lock until the end of the transaction
// (pg_advisory_xact_lock): every write a quota judges holds it from before it reads the
// usage to its commit.
std::string QuotaLockSql(PostgresStore::Statement& st, const std::string& tenant) {
  return absl::StrCat("SELECT pg_advisory_xact_lock(", st.Int(kQuotaLockSpace),
                      "::integer, hashtext(", st.Text(tenant), "))");
}

}  // namespace

PostgresStore::QuotaCheck PostgresStore::LatentQuotaCheck(const LatentRecord& record) const {
  if (!HasLimits(quota_) || record.source == "embed") return nullptr;
  return
      [this, &record](const TenantUsage& usage) { return CheckLatentQuota(quota_, usage, record); };
}

PostgresStore::QuotaCheck PostgresStore::JobQuotaCheck(const JobRecord& record) const {
  if (!HasLimits(quota_)) return nullptr;
  return [this, &record](const TenantUsage& usage) { return CheckJobQuota(quota_, usage, record); };
}

absl::StatusOr<PostgresStore::Result> PostgresStore::RunWithinQuota(const std::string& tenant,
                                                                    const QuotaCheck& check,
                                                                    const Statement& write) {
  if (check == nullptr) return Run(write);
  // One transaction that holds the tenant's quota lock from before it reads the usage to
  // its commit: two writes of one tenant, on any replicas, are judged one after the other.
  // No retry on a broken connection (the write may or may not have landed): Unavailable.
  ASSIGN_OR_RETURN(Checkout checkout, Acquire());
  Connection& c = *checkout;
  const auto fail = [&](const PGresult* res, absl::string_view what) {
    absl::Status error = StatementError(res, c.conn, what, description_);
    if (PQstatus(c.conn) != CONNECTION_OK) {
      PQfinish(c.conn);  // reopened at the next Acquire
      c.conn = nullptr;
    } else {
      Result rollback(PQexec(c.conn, "ROLLBACK"));
    }
    return error;
  };
  {
    Result begin(PQexec(c.conn, "BEGIN"));
    if (!ResultOk(begin.get())) return fail(begin.get(), "begin");
  }
  {
    Statement lock("quota lock");
    lock.set_sql(QuotaLockSql(lock, tenant));
    Result r(lock.Exec(c.conn, lock.sql()));
    if (!ResultOk(r.get())) return fail(r.get(), lock.what());
  }
  {
    Statement usage("reading a tenant's usage");
    usage.Text(tenant);
    Result r(usage.Exec(c.conn, kUsageSql));
    if (!ResultOk(r.get())) return fail(r.get(), usage.what());
    absl::Status refused = check(ReadUsage(r, tenant));
    if (!refused.ok()) {
      Result rollback(PQexec(c.conn, "ROLLBACK"));
      return refused;
    }
  }
  Result result(write.Exec(c.conn, write.sql()));
  if (!ResultOk(result.get())) return fail(result.get(), write.what());
  Result commit(PQexec(c.conn, "COMMIT"));
  if (!ResultOk(commit.get())) return fail(commit.get(), "commit");
  return result;
}

absl::StatusOr<TenantUsage> PostgresStore::Usage(const std::string& tenant) {
  Statement st("Usage");
  st.Text(tenant);
  st.set_sql(kUsageSql);
  ASSIGN_OR_RETURN(Result r, Run(st));
  TenantUsage u = ReadUsage(r, tenant);
  Statement requests("Usage of request IDs");
  requests.set_sql(absl::StrCat("SELECT count(*) FROM requests WHERE ", kRequestTenant, " = ",
                                requests.Text(tenant)));
  ASSIGN_OR_RETURN(Result counted, Run(requests));
  u.request_ids = counted.Int(0, 0);
  return u;
}

absl::StatusOr<std::vector<TenantUsage>> PostgresStore::AllUsage() {
  std::map<std::string, TenantUsage> by_tenant;
  const auto add =
      [&](const std::string& sql, const char* what,
          const std::function<void(const Result&, int, TenantUsage&)>& read) -> absl::Status {
    Statement st(what);
    st.set_sql(sql);
    ASSIGN_OR_RETURN(Result r, Run(st));
    for (int row = 0; row < r.rows(); ++row) {
      const std::string tenant = r.Bytes(row, 0);
      TenantUsage& u = by_tenant[tenant];
      u.tenant = tenant;
      read(r, row, u);
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(
      add("SELECT tenant, count(*),"
          " coalesce(sum(octet_length(values_f32) + octet_length(noise_npz)), 0)::bigint"
          " FROM latents GROUP BY tenant",
          "usage of latents", [](const Result& r, int row, TenantUsage& u) {
            u.latents = r.Int(row, 1);
            u.latent_bytes = r.Int(row, 2);
          }));
  RETURN_IF_ERROR(
      add("SELECT tenant, count(*), count(*) FILTER (WHERE state IN (1, 2)),"
          " coalesce(sum(octet_length(spec) + octet_length(checkpoint) + octet_length(result)),"
          " 0)::bigint FROM jobs GROUP BY tenant",
          "usage of jobs", [](const Result& r, int row, TenantUsage& u) {
            u.jobs = r.Int(row, 1);
            u.unfinished_jobs = r.Int(row, 2);
            u.job_bytes = r.Int(row, 3);
          }));
  RETURN_IF_ERROR(
      add("SELECT tenant, count(*), coalesce(sum(octet_length(values_f32)), 0)::bigint"
          " FROM directions GROUP BY tenant",
          "usage of directions", [](const Result& r, int row, TenantUsage& u) {
            u.directions = r.Int(row, 1);
            u.direction_bytes = r.Int(row, 2);
          }));
  RETURN_IF_ERROR(
      add(absl::StrCat("SELECT ", kRequestTenant, ", count(*) FROM requests GROUP BY 1"),
          "usage of request IDs",
          [](const Result& r, int row, TenantUsage& u) { u.request_ids = r.Int(row, 1); }));
  std::vector<TenantUsage> out;
  for (auto& [tenant, usage] : by_tenant) out.push_back(std::move(usage));
  return out;
}

absl::StatusOr<Expired> PostgresStore::ExpireOld(int64_t jobs_before_unix_ms,
                                                 int64_t requests_before_unix_ms, int limit) {
  if (limit < 1) return absl::InvalidArgumentError("ExpireOld: limit must be at least 1");
  Expired expired;
  if (jobs_before_unix_ms > 0) {
    // One statement: the jobs and the keys naming them go together.
    Statement st("ExpireOld (jobs)");
    st.set_sql(absl::StrCat(
        "WITH gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
        " WHERE state IN (3, 4, 5) AND finished_unix_ms < ",
        st.Int(jobs_before_unix_ms), " ORDER BY finished_unix_ms, id LIMIT ", st.Int(limit),
        " FOR UPDATE SKIP LOCKED) RETURNING id),"
        " keys AS (DELETE FROM requests WHERE result_id IN (SELECT id FROM gone) RETURNING 1)"
        " SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM keys)"));
    ASSIGN_OR_RETURN(Result r, Run(st));
    expired.jobs = r.Int(0, 0);
    expired.request_ids += r.Int(0, 1);
  }
  if (requests_before_unix_ms > 0) {
    Statement st("ExpireOld (request IDs)");
    st.set_sql(
        absl::StrCat("DELETE FROM requests WHERE (method, request_id) IN (SELECT method, request_id"
                     " FROM requests WHERE created_unix_ms < ",
                     st.Int(requests_before_unix_ms), " ORDER BY created_unix_ms LIMIT ",
                     st.Int(limit), " FOR UPDATE SKIP LOCKED)"));
    ASSIGN_OR_RETURN(Result r, Run(st));
    expired.request_ids += r.changed();
  }
  return expired;
}

// ---- DirectionStore ----

namespace {

// The WHERE clause of one direction's key.
std::string DirectionKey(PostgresStore::Statement& st, const std::string& tenant,
                         const std::string& fingerprint, const std::string& name) {
  return absl::StrCat(" WHERE tenant = ", st.Text(tenant),
                      " AND fingerprint = ", st.Text(fingerprint), " AND name = ", st.Text(name));
}

absl::StatusOr<DirectionRecord> ReadDirection(const PostgresStore::Result& q, int row,
                                              bool with_values) {
  return store_internal::ReadDirectionRow(ResultRow(q, row), with_values);
}

}  // namespace

absl::Status PostgresStore::PutDirection(const DirectionRecord& record) {
  RETURN_IF_ERROR(ValidateDirection(record));
  const std::string values_f32 = store_internal::EncodeFloats(record.values);
  Statement find("PutDirection (looking up the key)");
  find.set_sql(absl::StrCat("SELECT num_layers, latent_size, sigma, source, values_f32",
                            " FROM directions",
                            DirectionKey(find, record.tenant, record.fingerprint, record.name)));
  // The stored direction of the key: OK if it is this one, AlreadyExists if another.
  const auto judge = [&](const Result& found) -> absl::Status {
    if (store_internal::SameDirectionContent(record, found.Int(0, 0), found.Int(0, 1),
                                             found.Double(0, 2), found.Bytes(0, 3),
                                             found.Bytes(0, 4))) {
      return absl::OkStatus();  // a repeat of the call that stored it: nothing to write
    }
    return DirectionExists(record.name);
  };
  Statement insert("PutDirection");
  insert.set_sql(absl::StrCat(
      "INSERT INTO directions (", kDirectionSummaryColumns, ", ", kDirectionBlobColumns,
      ") VALUES (",
      absl::StrJoin(
          {insert.Text(record.tenant), insert.Text(record.fingerprint), insert.Text(record.name),
           insert.Text(record.model), insert.Int(record.num_layers), insert.Int(record.latent_size),
           insert.Double(record.sigma), insert.Text(record.source), insert.Text(record.params_json),
           insert.Int(record.created_unix_ms), insert.Bytes(values_f32)},
          ", "),
      ") ON CONFLICT (tenant, fingerprint, name) DO NOTHING"));
  // One transaction, without Run's retry: a broken connection is Unavailable, and the
  // caller's repeat finds the direction stored if the commit landed (same content: OK).
  return InTransaction([&](Transaction& tx) -> absl::Status {
    if (quota_.max_directions > 0) {
      // The tenant's quota lock (the one latents and jobs take), held to the commit: two
      // puts of one tenant, on any replicas, count one after the other.
      Statement lock("quota lock");
      lock.set_sql(QuotaLockSql(lock, record.tenant));
      RETURN_IF_ERROR(tx.Exec(lock).status());
    }
    ASSIGN_OR_RETURN(Result found, tx.Exec(find));
    if (found.rows() > 0) return judge(found);
    if (quota_.max_directions > 0) {
      Statement count("counting a tenant's directions");
      count.set_sql(absl::StrCat("SELECT count(*) FROM directions WHERE tenant = ",
                                 count.Text(record.tenant)));
      ASSIGN_OR_RETURN(Result counted, tx.Exec(count));
      TenantUsage usage;
      usage.tenant = record.tenant;
      usage.directions = counted.Int(0, 0);
      RETURN_IF_ERROR(CheckDirectionQuota(quota_, usage));
    }
    ASSIGN_OR_RETURN(Result inserted, tx.Exec(insert));
    if (inserted.changed() > 0) return absl::OkStatus();
    // Without a quota no lock is held: a concurrent put of the key committed between the
    // look-up and the insert (which waited for it). READ COMMITTED: this statement sees it.
    ASSIGN_OR_RETURN(Result winner, tx.Exec(find));
    if (winner.rows() == 0) {  // and deleted since: the caller may try again
      return absl::AbortedError(absl::StrCat("direction \"", record.name,
                                             "\" was written and deleted concurrently; try again"));
    }
    return judge(winner);
  });
}

absl::StatusOr<DirectionRecord> PostgresStore::GetDirection(const std::string& tenant,
                                                            const std::string& fingerprint,
                                                            const std::string& name,
                                                            bool with_values) {
  Statement st("GetDirection");
  st.set_sql(absl::StrCat("SELECT ", kDirectionSummaryColumns,
                          with_values ? absl::StrCat(", ", kDirectionBlobColumns) : "",
                          " FROM directions", DirectionKey(st, tenant, fingerprint, name)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  if (r.rows() == 0) return DirectionNotFound(name);
  return ReadDirection(r, 0, with_values);
}

absl::StatusOr<DirectionPage> PostgresStore::ListDirections(
    const Page& page, const std::string& fingerprint, const std::optional<std::string>& tenant) {
  ASSIGN_OR_RETURN(DirectionPageQuery page_query, store_internal::ParseDirectionPage(page));
  Statement st("ListDirections");
  std::vector<std::string> filters;
  if (tenant.has_value()) filters.push_back(absl::StrCat("tenant = ", st.Text(*tenant)));
  if (!fingerprint.empty()) {
    filters.push_back(absl::StrCat("fingerprint = ", st.Text(fingerprint)));
  }
  std::string after_name, after_fingerprint, after_tenant;
  if (page_query.has_after) {
    after_name = st.Text(page_query.after_name);
    after_fingerprint = st.Text(page_query.after_fingerprint);
    after_tenant = st.Text(page_query.after_tenant);
  }
  st.set_sql(absl::StrCat("SELECT ", kDirectionSummaryColumns, " FROM directions",
                          store_internal::DirectionListingTail(
                              std::move(filters), page_query, after_name, after_fingerprint,
                              after_tenant, st.Int(page_query.limit + 1))));
  ASSIGN_OR_RETURN(Result r, Run(st));
  DirectionPage result;
  for (int row = 0; row < r.rows(); ++row) {
    ASSIGN_OR_RETURN(DirectionRecord record, ReadDirection(r, row, /*with_values=*/false));
    result.directions.push_back(std::move(record));
  }
  result.next_page_token = store_internal::NextDirectionPageToken(result.directions, page_query);
  return result;
}

absl::Status PostgresStore::DeleteDirection(const std::string& tenant,
                                            const std::string& fingerprint,
                                            const std::string& name) {
  Statement st("DeleteDirection");
  st.set_sql(absl::StrCat("DELETE FROM directions", DirectionKey(st, tenant, fingerprint, name)));
  ASSIGN_OR_RETURN(Result r, Run(st));
  // A retried DELETE whose first attempt landed reports NotFound, as DeleteLatent's does.
  if (r.changed() == 0) return DirectionNotFound(name);
  return absl::OkStatus();
}

absl::Status PostgresStore::ReclaimSpace() {
  // Autovacuum makes the space of deleted rows and released blobs (TOAST) reusable by
  // new rows; giving it back to the file system would take VACUUM FULL, which locks the
  // table, so that is left to the operator (docs/OPERATIONS.md).
  return absl::OkStatus();
}

}  // namespace i2s
