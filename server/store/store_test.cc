// The Store contract, run against every backend (StoreTest: SQLite in memory, and
// PostgreSQL when I2S_TEST_POSTGRES names a database: tests/with_postgres starts a
// server on loopback for the store_test_postgres entry), then what is particular to
// each backend (files and migrations of SQLite; reconnection, concurrent migration and
// two replicas of PostgreSQL).
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/store/postgres_store.h"
#include "server/store/sqlite_store.h"

namespace i2s {
namespace {

// A fresh directory under the test's temp dir, removed (with its files) on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = ::testing::TempDir() + "store_test_XXXXXX";
    char* dir = mkdtemp(pattern.data());
    EXPECT_NE(dir, nullptr);
    path_ = pattern;
  }
  ~ScratchDir() {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
      std::remove((path_ + "/db.sqlite" + suffix).c_str());
    }
    std::remove((path_ + "/garbage").c_str());
    rmdir(path_.c_str());
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::unique_ptr<SqliteStore> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(path);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

// A latent with every field set (values with awkward floats, binary noise, metrics).
LatentRecord FullLatent(const std::string& id, int64_t created_unix_ms = 1000) {
  LatentRecord r;
  r.id = id;
  r.tenant = "team-a";
  r.model = "ffhq";
  r.fingerprint = "fp_ffhq";
  r.num_layers = 3;
  r.latent_size = 4;
  r.values = {0.0f,
              -0.0f,
              1.5f,
              -2.25f,
              std::numeric_limits<float>::infinity(),
              1e-38f,
              3.4e38f,
              7.0f,
              std::numeric_limits<float>::denorm_min(),
              -1.0f,
              0.1f,
              42.0f};
  r.noise_npz = std::string("PK\x03\x04\0\x01\xff", 7);
  r.noise_seed = 0xfedcba9876543210ull;  // above INT64_MAX: tests the int64 storage
  r.source = "embed";
  r.job_id = "job_1";
  r.parents = {"lat_a", "lat_b", "lat_a"};
  r.params_json = R"({"alpha": 0.5})";
  r.metrics = LatentMetrics{0.25, 0.125, 0.0625, 31.5, 1000, 0.1875};
  r.created_unix_ms = created_unix_ms;
  r.labels = {{"owner", "ana"}, {"tag", "smile \xc3\xa9"}, {"", "empty key"}};
  return r;
}

// The minimum: empty optional fields.
LatentRecord BareLatent(const std::string& id, int64_t created_unix_ms,
                        const std::string& fingerprint = "fp_ffhq") {
  LatentRecord r;
  r.id = id;
  r.fingerprint = fingerprint;
  r.num_layers = 1;
  r.latent_size = 2;
  r.values = {1.0f, 2.0f};
  r.source = "import";
  r.created_unix_ms = created_unix_ms;
  return r;
}

void ExpectSameLatent(const LatentRecord& a, const LatentRecord& b, bool with_values) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.latent_size, b.latent_size);
  if (with_values) {
    ASSERT_EQ(a.values.size(), b.values.size());
    for (size_t i = 0; i < a.values.size(); ++i) {
      // Bit-exact, so -0.0 and 0.0 differ.
      EXPECT_EQ(std::signbit(a.values[i]), std::signbit(b.values[i])) << i;
      EXPECT_EQ(a.values[i], b.values[i]) << i;
    }
    EXPECT_EQ(a.noise_npz, b.noise_npz);
  }
  EXPECT_EQ(a.noise_seed, b.noise_seed);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.job_id, b.job_id);
  EXPECT_EQ(a.parents, b.parents);
  EXPECT_EQ(a.params_json, b.params_json);
  ASSERT_EQ(a.metrics.has_value(), b.metrics.has_value());
  if (a.metrics.has_value()) {
    EXPECT_EQ(a.metrics->loss, b.metrics->loss);
    EXPECT_EQ(a.metrics->mse, b.metrics->mse);
    EXPECT_EQ(a.metrics->perceptual, b.metrics->perceptual);
    EXPECT_EQ(a.metrics->psnr, b.metrics->psnr);
    EXPECT_EQ(a.metrics->steps, b.metrics->steps);
    EXPECT_EQ(a.metrics->lpips, b.metrics->lpips);
  }
  EXPECT_EQ(a.created_unix_ms, b.created_unix_ms);
  EXPECT_EQ(a.labels, b.labels);
}

JobRecord FullJob(const std::string& id, int64_t created_unix_ms = 2000) {
  JobRecord r;
  r.id = id;
  r.tenant = "team-a";
  r.request_id = "req_" + id;
  r.model = "ffhq";
  r.state = JobState::kRunning;
  r.spec = std::string("spec\0bytes\xff", 11);
  r.checkpoint = std::string("ckpt\0", 5);
  r.checkpoint_step = 100;
  r.result = std::string("res\0", 4);
  r.latent_id = "lat_9";
  r.error_code = 13;
  r.error_message = "boom";
  r.next_sequence = 77;
  r.total_steps = 1300;
  r.created_unix_ms = created_unix_ms;
  r.started_unix_ms = created_unix_ms + 1;
  r.finished_unix_ms = created_unix_ms + 2;
  return r;
}

void ExpectSameJob(const JobRecord& a, const JobRecord& b, bool with_blobs) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.state, b.state);
  if (with_blobs) {
    EXPECT_EQ(a.spec, b.spec);
    EXPECT_EQ(a.checkpoint, b.checkpoint);
  }
  EXPECT_EQ(a.result, b.result);
  EXPECT_EQ(a.checkpoint_step, b.checkpoint_step);
  EXPECT_EQ(a.latent_id, b.latent_id);
  EXPECT_EQ(a.error_code, b.error_code);
  EXPECT_EQ(a.error_message, b.error_message);
  EXPECT_EQ(a.next_sequence, b.next_sequence);
  EXPECT_EQ(a.created_unix_ms, b.created_unix_ms);
  EXPECT_EQ(a.started_unix_ms, b.started_unix_ms);
  EXPECT_EQ(a.finished_unix_ms, b.finished_unix_ms);
  EXPECT_EQ(a.owner, b.owner);
  EXPECT_EQ(a.lease_expires_unix_ms, b.lease_expires_unix_ms);
  EXPECT_EQ(a.lease_epoch, b.lease_epoch);
  EXPECT_EQ(a.progress, b.progress);
  EXPECT_EQ(a.total_steps, b.total_steps);
}

// A direction with every field set; values with awkward floats (-0, inf, a denormal).
DirectionRecord MakeDirection(const std::string& tenant, const std::string& fingerprint,
                              const std::string& name, int num_layers = 2, int latent_size = 3) {
  DirectionRecord r;
  r.tenant = tenant;
  r.fingerprint = fingerprint;
  r.name = name;
  r.model = "ffhq";
  r.num_layers = num_layers;
  r.latent_size = latent_size;
  const float awkward[] = {-0.0f,
                           std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::denorm_min(),
                           0.1f,
                           -3.4e38f,
                           7.0f};
  for (int i = 0; i < num_layers * latent_size; ++i) r.values.push_back(awkward[i % 6]);
  r.sigma = 2.75;
  r.source = "interfacegan_npy";
  r.params_json = R"({"sha256":"ab12"})";
  r.created_unix_ms = 4321;
  return r;
}

void ExpectSameDirection(const DirectionRecord& a, const DirectionRecord& b, bool with_values) {
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.latent_size, b.latent_size);
  if (with_values) {
    ASSERT_EQ(a.values.size(), b.values.size());
    for (size_t i = 0; i < a.values.size(); ++i) {
      EXPECT_EQ(std::signbit(a.values[i]), std::signbit(b.values[i])) << i;
      EXPECT_EQ(a.values[i], b.values[i]) << i;
    }
  } else {
    EXPECT_TRUE(b.values.empty());
  }
  EXPECT_EQ(a.sigma, b.sigma);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.params_json, b.params_json);
  EXPECT_EQ(a.created_unix_ms, b.created_unix_ms);
}

// "tenant/fingerprint/name" of each direction of every page of a listing.
std::vector<std::string> AllDirectionKeys(Store& store, int page_size,
                                          const std::string& fingerprint = "",
                                          const std::optional<std::string>& tenant = std::nullopt) {
  std::vector<std::string> keys;
  std::string token;
  for (int pages = 0; pages < 1000; ++pages) {
    absl::StatusOr<DirectionPage> page =
        store.ListDirections(Page{page_size, token}, fingerprint, tenant);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    EXPECT_LE(static_cast<int>(page->directions.size()), page_size);
    for (const DirectionRecord& d : page->directions) {
      EXPECT_TRUE(d.values.empty());
      keys.push_back(absl::StrCat(d.tenant, "/", d.fingerprint, "/", d.name));
    }
    token = page->next_page_token;
    if (token.empty()) break;
  }
  return keys;
}

// The PostgreSQL database of the postgres runs (a connection string), or nullptr.
const char* PostgresUnderTest() { return std::getenv("I2S_TEST_POSTGRES"); }

// Runs `sql` (no parameters) on a fresh connection to `conninfo`; the error message, or
// "" when it worked.
std::string RunSql(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  std::string error;
  if (PQstatus(conn) != CONNECTION_OK) {
    error = PQerrorMessage(conn);
  } else {
    PGresult* res = PQexec(conn, sql.c_str());
    const ExecStatusType status = PQresultStatus(res);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) error = PQresultErrorMessage(res);
    PQclear(res);
  }
  PQfinish(conn);
  return error;
}

// The first column of the first row of `sql`, as text ("" if none).
std::string QuerySql(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb(conninfo.c_str());
  std::string value;
  if (PQstatus(conn) == CONNECTION_OK) {
    PGresult* res = PQexec(conn, sql.c_str());
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0) value = PQgetvalue(res, 0, 0);
    PQclear(res);
  }
  PQfinish(conn);
  return value;
}

// An empty database: every table of an earlier test dropped.
void ResetPostgres(const std::string& conninfo) {
  ASSERT_EQ(RunSql(conninfo,
                   "SET client_min_messages = warning;"
                   " DROP SCHEMA public CASCADE; CREATE SCHEMA public;"),
            "");
}

std::unique_ptr<PostgresStore> OpenPostgresOrDie(const std::string& conninfo,
                                                 const PostgresOptions& options = {}) {
  absl::StatusOr<std::unique_ptr<PostgresStore>> store = PostgresStore::Open(conninfo, options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

// The contract of store.h, for each backend.
class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      store_ = OpenOrDie(":memory:");
    } else {
      if (PostgresUnderTest() == nullptr) {
        GTEST_SKIP() << "I2S_TEST_POSTGRES is not set (ctest's store_test_postgres sets it)";
      }
      ResetPostgres(PostgresUnderTest());
      // The contract's lease cases drive time themselves: the callers' clock here
      // (PostgresTest.LeasesFollowTheDatabaseClock checks the production one).
      PostgresOptions options;
      options.database_clock = false;
      store_ = OpenPostgresOrDie(PostgresUnderTest(), options);
    }
    ASSERT_NE(store_, nullptr);
  }
  std::unique_ptr<Store> store_;
};

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(JobStateTest, NamesAndTerminal) {
  EXPECT_STREQ(JobStateName(JobState::kQueued), "queued");
  EXPECT_STREQ(JobStateName(JobState::kRunning), "running");
  EXPECT_STREQ(JobStateName(JobState::kSucceeded), "succeeded");
  EXPECT_STREQ(JobStateName(JobState::kFailed), "failed");
  EXPECT_STREQ(JobStateName(JobState::kCancelled), "cancelled");
  EXPECT_STREQ(JobStateName(static_cast<JobState>(9)), "unknown");
  EXPECT_FALSE(IsTerminal(JobState::kQueued));
  EXPECT_FALSE(IsTerminal(JobState::kRunning));
  EXPECT_TRUE(IsTerminal(JobState::kSucceeded));
  EXPECT_TRUE(IsTerminal(JobState::kFailed));
  EXPECT_TRUE(IsTerminal(JobState::kCancelled));
}

TEST_P(StoreTest, LatentRoundTripAllFields) {
  const LatentRecord in = FullLatent("lat_full");
  ASSERT_TRUE(store_->PutLatent(in).ok());
  absl::StatusOr<LatentRecord> out = store_->GetLatent("lat_full");
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectSameLatent(in, *out, /*with_values=*/true);
}

TEST_P(StoreTest, LatentRoundTripOptionalFieldsAbsent) {
  const LatentRecord in = BareLatent("lat_bare", 5);
  ASSERT_TRUE(store_->PutLatent(in).ok());
  absl::StatusOr<LatentRecord> out = store_->GetLatent("lat_bare");
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectSameLatent(in, *out, /*with_values=*/true);
  EXPECT_FALSE(out->metrics.has_value());
  EXPECT_TRUE(out->parents.empty());
  EXPECT_TRUE(out->labels.empty());
  EXPECT_TRUE(out->noise_npz.empty());
  EXPECT_FALSE(out->has_noise);
}

TEST_P(StoreTest, LatentMetricsNaNAndZeroSurvive) {
  // SQLite stores a NaN REAL as NULL; a diverged embedding still reads back NaN.
  LatentRecord in = BareLatent("lat_nan", 1);
  in.metrics = LatentMetrics{std::nan(""), 0.0, -0.0, std::numeric_limits<double>::infinity(), 0};
  ASSERT_TRUE(store_->PutLatent(in).ok());
  absl::StatusOr<LatentRecord> out = store_->GetLatent("lat_nan");
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->metrics.has_value());
  EXPECT_TRUE(std::isnan(out->metrics->loss));
  EXPECT_EQ(out->metrics->mse, 0.0);
  EXPECT_TRUE(std::isinf(out->metrics->psnr));
  EXPECT_EQ(out->metrics->steps, 0);
}

TEST_P(StoreTest, GetLatentWithoutValues) {
  const LatentRecord in = FullLatent("lat_full");
  ASSERT_TRUE(store_->PutLatent(in).ok());
  absl::StatusOr<LatentRecord> out = store_->GetLatent("lat_full", /*with_values=*/false);
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectSameLatent(in, *out, /*with_values=*/false);
  EXPECT_TRUE(out->values.empty());
  EXPECT_TRUE(out->noise_npz.empty());
  EXPECT_TRUE(out->has_noise);  // told without reading the maps
}

TEST_P(StoreTest, PutLatentErrors) {
  ASSERT_TRUE(store_->PutLatent(FullLatent("lat_1")).ok());
  absl::Status dup = store_->PutLatent(FullLatent("lat_1"));
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(dup.message(), "\"lat_1\"")) << dup;

  LatentRecord wrong_size = FullLatent("lat_2");
  wrong_size.values.pop_back();
  absl::Status size = store_->PutLatent(wrong_size);
  EXPECT_EQ(size.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(size.message(), "values")) << size;

  LatentRecord bad_label = FullLatent("lat_3");
  bad_label.labels["k"] = "\xff\xfe";  // not UTF-8
  absl::Status label = store_->PutLatent(bad_label);
  EXPECT_EQ(label.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(label.message(), "labels")) << label;

  EXPECT_EQ(store_->PutLatent(BareLatent("", 1)).code(), absl::StatusCode::kInvalidArgument);
  // Nothing of the failed puts was stored.
  EXPECT_EQ(store_->GetLatent("lat_2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetLatent("lat_3").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(StoreTest, GetAndDeleteLatentNotFound) {
  absl::Status get = store_->GetLatent("lat_x").status();
  EXPECT_EQ(get.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(get.message(), "latent \"lat_x\" not found");
  EXPECT_EQ(store_->DeleteLatent("lat_x").code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(store_->PutLatent(BareLatent("lat_1", 1)).ok());
  EXPECT_TRUE(store_->DeleteLatent("lat_1").ok());
  EXPECT_EQ(store_->GetLatent("lat_1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteLatent("lat_1").code(), absl::StatusCode::kNotFound);
  // The ID is free again.
  EXPECT_TRUE(store_->PutLatent(BareLatent("lat_1", 2)).ok());
}

TEST_P(StoreTest, ListLatentsLeavesBlobsEmptyAndFiltersByFingerprint) {
  ASSERT_TRUE(store_->PutLatent(FullLatent("lat_a", 10)).ok());
  ASSERT_TRUE(store_->PutLatent(BareLatent("lat_b", 20, "fp_other")).ok());
  ASSERT_TRUE(store_->PutLatent(BareLatent("lat_c", 30)).ok());

  absl::StatusOr<LatentPage> all = store_->ListLatents(Page{});
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->latents.size(), 3u);
  EXPECT_EQ(all->latents[0].id, "lat_c");  // newest first
  EXPECT_EQ(all->latents[1].id, "lat_b");
  EXPECT_EQ(all->latents[2].id, "lat_a");
  EXPECT_TRUE(all->next_page_token.empty());
  ExpectSameLatent(FullLatent("lat_a", 10), all->latents[2], /*with_values=*/false);
  for (const LatentRecord& r : all->latents) {
    EXPECT_TRUE(r.values.empty()) << r.id;
    EXPECT_TRUE(r.noise_npz.empty()) << r.id;
    EXPECT_EQ(r.has_noise, r.id == "lat_a") << r.id;  // told without reading the maps
  }

  absl::StatusOr<LatentPage> ffhq = store_->ListLatents(Page{}, "fp_ffhq");
  ASSERT_TRUE(ffhq.ok()) << ffhq.status();
  ASSERT_EQ(ffhq->latents.size(), 2u);
  EXPECT_EQ(ffhq->latents[0].id, "lat_c");
  EXPECT_EQ(ffhq->latents[1].id, "lat_a");

  absl::StatusOr<LatentPage> none = store_->ListLatents(Page{}, "fp_none");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->latents.empty());
  EXPECT_TRUE(none->next_page_token.empty());
}

// Walks every page of size `page_size` and returns the IDs in order.
std::vector<std::string> AllLatentIds(Store& store, int page_size,
                                      const std::string& fingerprint = "") {
  std::vector<std::string> ids;
  Page page;
  page.page_size = page_size;
  for (int guard = 0; guard < 1000; ++guard) {
    absl::StatusOr<LatentPage> result = store.ListLatents(page, fingerprint);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) break;
    EXPECT_LE(static_cast<int>(result->latents.size()), page_size);
    for (const LatentRecord& r : result->latents) ids.push_back(r.id);
    if (result->next_page_token.empty()) break;
    EXPECT_EQ(static_cast<int>(result->latents.size()), page_size);
    page.page_token = result->next_page_token;
  }
  return ids;
}

TEST_P(StoreTest, ListLatentsPagesWithoutGapOrDuplicate) {
  // 23 latents; timestamps repeat (t = i / 3) so ties are broken by ID, descending. IDs
  // contain ':' to check the token keeps them whole.
  std::vector<std::string> want;
  for (int i = 0; i < 23; ++i) {
    const std::string id = absl::StrCat("lat:", 100 + i);
    ASSERT_TRUE(store_->PutLatent(BareLatent(id, i / 3)).ok());
    want.insert(want.begin(), id);  // newest (and, on a tie, largest ID) first
  }
  for (int page_size : {1, 2, 3, 5, 22, 23, 24, 1000}) {
    EXPECT_EQ(AllLatentIds(*store_, page_size), want) << "page_size " << page_size;
  }
  // Page size 0 means 50: everything in one page.
  absl::StatusOr<LatentPage> page = store_->ListLatents(Page{0, ""});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->latents.size(), 23u);
  EXPECT_TRUE(page->next_page_token.empty());
}

TEST_P(StoreTest, ListLatentsDefaultPageSizeIs50) {
  for (int i = 0; i < 51; ++i) {
    ASSERT_TRUE(store_->PutLatent(BareLatent(absl::StrCat("lat_", 100 + i), i)).ok());
  }
  absl::StatusOr<LatentPage> page = store_->ListLatents(Page{0, ""});
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->latents.size(), 50u);
  EXPECT_FALSE(page->next_page_token.empty());
  absl::StatusOr<LatentPage> rest = store_->ListLatents(Page{0, page->next_page_token});
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->latents.size(), 1u);
  EXPECT_EQ(rest->latents[0].id, "lat_100");
  EXPECT_TRUE(rest->next_page_token.empty());
}

TEST_P(StoreTest, ListLatentsPagesStableUnderWrites) {
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(store_->PutLatent(BareLatent(absl::StrCat("lat_", i), 10 * i)).ok());
  }
  absl::StatusOr<LatentPage> first = store_->ListLatents(Page{2, ""});
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->latents.size(), 2u);  // lat_5, lat_4
  // A newer latent and the deletion of an already listed one do not shift the next page.
  ASSERT_TRUE(store_->PutLatent(BareLatent("lat_new", 1000)).ok());
  ASSERT_TRUE(store_->DeleteLatent("lat_5").ok());
  absl::StatusOr<LatentPage> second = store_->ListLatents(Page{2, first->next_page_token});
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->latents.size(), 2u);
  EXPECT_EQ(second->latents[0].id, "lat_3");
  EXPECT_EQ(second->latents[1].id, "lat_2");
}

TEST_P(StoreTest, ListLatentsPaginationWithFingerprint) {
  std::vector<std::string> want;
  for (int i = 0; i < 10; ++i) {
    const std::string id = absl::StrCat("lat_", 10 + i);
    const bool mine = i % 2 == 0;
    ASSERT_TRUE(store_->PutLatent(BareLatent(id, 7, mine ? "fp_a" : "fp_b")).ok());
    if (mine) want.insert(want.begin(), id);
  }
  EXPECT_EQ(AllLatentIds(*store_, 2, "fp_a"), want);
}

TEST_P(StoreTest, BadPageSizeAndToken) {
  for (int size : {-1, 1001}) {
    absl::Status latents = store_->ListLatents(Page{size, ""}).status();
    EXPECT_EQ(latents.code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_TRUE(absl::StrContains(latents.message(), "page_size")) << latents;
    absl::Status jobs = store_->ListJobs(Page{size, ""}, {}).status();
    EXPECT_EQ(jobs.code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_TRUE(absl::StrContains(jobs.message(), "page_size")) << jobs;
  }
  EXPECT_TRUE(store_->ListLatents(Page{1000, ""}).ok());

  for (const std::string token : {"!!!", "bm90IGEgdG9rZW4", "TDp4OmxhdF8x" /* L:x:lat_1 */,
                                  "TDoxMA" /* L:10 */, "TDoxMDo" /* L:10: */}) {
    absl::Status status = store_->ListLatents(Page{10, token}).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << token;
    EXPECT_TRUE(absl::StrContains(status.message(), "page_token")) << status << token;
  }

  // A token of one listing is refused by the other.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store_->PutLatent(BareLatent(absl::StrCat("lat_", i), i)).ok());
    ASSERT_TRUE(store_->CreateJob(FullJob(absl::StrCat("job_", i), i)).ok());
  }
  absl::StatusOr<LatentPage> latents = store_->ListLatents(Page{1, ""});
  ASSERT_TRUE(latents.ok());
  ASSERT_FALSE(latents->next_page_token.empty());
  EXPECT_EQ(store_->ListJobs(Page{1, latents->next_page_token}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<JobPage> jobs = store_->ListJobs(Page{1, ""}, {});
  ASSERT_TRUE(jobs.ok());
  ASSERT_FALSE(jobs->next_page_token.empty());
  EXPECT_EQ(store_->ListLatents(Page{1, jobs->next_page_token}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, JobRoundTripAllFields) {
  JobRecord in = FullJob("job_full");
  in.owner = "replica-a";
  in.lease_expires_unix_ms = 12345;
  in.lease_epoch = 7;  // stored as given
  in.progress = R"({"step":3})";
  ASSERT_TRUE(store_->CreateJob(in).ok());
  absl::StatusOr<JobRecord> out = store_->GetJob("job_full");
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectSameJob(in, *out, /*with_blobs=*/true);

  JobRecord empty;  // defaults: queued, empty blobs
  empty.id = "job_empty";
  ASSERT_TRUE(store_->CreateJob(empty).ok());
  absl::StatusOr<JobRecord> out_empty = store_->GetJob("job_empty");
  ASSERT_TRUE(out_empty.ok()) << out_empty.status();
  ExpectSameJob(empty, *out_empty, /*with_blobs=*/true);
}

TEST_P(StoreTest, JobErrors) {
  ASSERT_TRUE(store_->CreateJob(FullJob("job_1")).ok());
  absl::Status dup = store_->CreateJob(FullJob("job_1"));
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(dup.message(), "\"job_1\"")) << dup;

  absl::Status get = store_->GetJob("job_x").status();
  EXPECT_EQ(get.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(get.message(), "job \"job_x\" not found");
  EXPECT_EQ(store_->UpdateJob(FullJob("job_x")).code(), absl::StatusCode::kNotFound);
  absl::Status ckpt = store_->SaveCheckpoint("job_x", 1, "c", 2, "", 0);
  EXPECT_EQ(ckpt.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(ckpt.message(), "\"job_x\"")) << ckpt;

  JobRecord bad_state = FullJob("job_2");
  bad_state.state = static_cast<JobState>(0);
  EXPECT_EQ(store_->CreateJob(bad_state).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListJobs(Page{}, {static_cast<JobState>(6)}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, UpdateJobKeepsSpecAndCheckpoint) {
  const JobRecord created = FullJob("job_1");
  ASSERT_TRUE(store_->CreateJob(created).ok());

  JobRecord update;
  update.id = "job_1";
  update.request_id = "req_other";
  update.model = "cars";
  update.state = JobState::kRunning;  // a finished job drops its checkpoint (below)
  update.spec = "IGNORED SPEC";
  update.checkpoint = "IGNORED CHECKPOINT";
  update.checkpoint_step = 999;  // goes with the checkpoint: ignored too
  update.result = std::string("final\0metrics", 13);
  update.latent_id = "lat_result";
  update.error_code = 0;
  update.error_message = "";
  update.next_sequence = 500;
  update.created_unix_ms = 3;
  update.started_unix_ms = 4;
  update.finished_unix_ms = 5;
  ASSERT_TRUE(store_->UpdateJob(update).ok());

  absl::StatusOr<JobRecord> out = store_->GetJob("job_1");
  ASSERT_TRUE(out.ok()) << out.status();
  JobRecord want = update;
  want.spec = created.spec;
  want.checkpoint = created.checkpoint;
  want.checkpoint_step = created.checkpoint_step;
  want.total_steps = created.total_steps;  // written by CreateJob only
  want.tenant = created.tenant;            // the owner never changes
  ExpectSameJob(want, *out, /*with_blobs=*/true);
}

TEST_P(StoreTest, SaveCheckpoint) {
  const JobRecord created = FullJob("job_1");
  ASSERT_TRUE(store_->CreateJob(created).ok());
  const std::string bytes(100000, '\x7f');  // larger than a page: overflow pages
  ASSERT_TRUE(store_->SaveCheckpoint("job_1", 250, bytes, 1234, "", 0).ok());

  absl::StatusOr<JobRecord> out = store_->GetJob("job_1");
  ASSERT_TRUE(out.ok()) << out.status();
  JobRecord want = created;
  want.checkpoint = bytes;
  want.checkpoint_step = 250;
  want.next_sequence = 1234;
  ExpectSameJob(want, *out, /*with_blobs=*/true);

  // An empty checkpoint clears it.
  ASSERT_TRUE(store_->SaveCheckpoint("job_1", 0, "", 1235, "", 0).ok());
  out = store_->GetJob("job_1");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->checkpoint, "");
  EXPECT_EQ(out->checkpoint_step, 0);
  EXPECT_EQ(out->next_sequence, 1235);
  EXPECT_EQ(out->spec, created.spec);
}

TEST_P(StoreTest, ListJobsStateFilterAndBlobsEmpty) {
  const JobState states[] = {JobState::kQueued, JobState::kRunning,   JobState::kSucceeded,
                             JobState::kFailed, JobState::kCancelled, JobState::kSucceeded};
  for (int i = 0; i < 6; ++i) {
    JobRecord job = FullJob(absl::StrCat("job_", i), 100 + i);
    job.state = states[i];
    ASSERT_TRUE(store_->CreateJob(job).ok());
  }
  const auto ids = [this](const std::vector<JobState>& filter) {
    std::vector<std::string> out;
    absl::StatusOr<JobPage> page = store_->ListJobs(Page{}, filter);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) return out;
    for (const JobRecord& job : page->jobs) {
      // The result (a few hundred bytes of metrics) comes with the summary: a listing
      // shows how far each job got without reading its blobs.
      EXPECT_TRUE(job.spec.empty() && job.checkpoint.empty()) << job.id;
      EXPECT_EQ(job.result, FullJob(job.id).result) << job.id;
      out.push_back(job.id);
    }
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids({}), (V{"job_5", "job_4", "job_3", "job_2", "job_1", "job_0"}));
  EXPECT_EQ(ids({JobState::kSucceeded}), (V{"job_5", "job_2"}));
  EXPECT_EQ(ids({JobState::kQueued, JobState::kCancelled}), (V{"job_4", "job_0"}));
  EXPECT_EQ(ids({JobState::kRunning, JobState::kRunning}), (V{"job_1"}));

  // The listing keeps every other field.
  absl::StatusOr<JobPage> page = store_->ListJobs(Page{1, ""}, {JobState::kFailed});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 1u);
  JobRecord want = FullJob("job_3", 103);
  want.state = JobState::kFailed;
  ExpectSameJob(want, page->jobs[0], /*with_blobs=*/false);
}

TEST_P(StoreTest, ListJobsPagesWithFilter) {
  std::vector<std::string> want;
  for (int i = 0; i < 17; ++i) {
    JobRecord job = FullJob(absl::StrCat("job_", 100 + i), i / 4);  // ties broken by ID
    job.state = i % 3 == 0 ? JobState::kFailed : JobState::kQueued;
    ASSERT_TRUE(store_->CreateJob(job).ok());
    if (job.state == JobState::kQueued) want.insert(want.begin(), job.id);
  }
  std::vector<std::string> got;
  Page page{3, ""};
  for (int guard = 0; guard < 100; ++guard) {
    absl::StatusOr<JobPage> result = store_->ListJobs(page, {JobState::kQueued});
    ASSERT_TRUE(result.ok()) << result.status();
    for (const JobRecord& job : result->jobs) got.push_back(job.id);
    if (result->next_page_token.empty()) break;
    page.page_token = result->next_page_token;
  }
  EXPECT_EQ(got, want);
}

TEST_P(StoreTest, UnfinishedJobsOldestFirstWithBlobs) {
  struct Row {
    const char* id;
    int64_t created;
    JobState state;
  };
  const Row rows[] = {{"job_d", 40, JobState::kRunning},   {"job_a", 10, JobState::kSucceeded},
                      {"job_c", 30, JobState::kQueued},    {"job_b", 30, JobState::kRunning},
                      {"job_e", 20, JobState::kCancelled}, {"job_f", 5, JobState::kFailed},
                      {"job_g", 50, JobState::kQueued}};
  for (const Row& row : rows) {
    JobRecord job = FullJob(row.id, row.created);
    job.state = row.state;
    ASSERT_TRUE(store_->CreateJob(job).ok());
  }
  absl::StatusOr<std::vector<JobRecord>> jobs = store_->UnfinishedJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  std::vector<std::string> ids;
  for (const JobRecord& job : *jobs) ids.push_back(job.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"job_b", "job_c", "job_d", "job_g"}));
  JobRecord want = FullJob("job_c", 30);
  want.state = JobState::kQueued;
  ASSERT_EQ(jobs->size(), 4u);
  ExpectSameJob(want, (*jobs)[1], /*with_blobs=*/true);

  // Finishing one takes it off the list.
  JobRecord done = (*jobs)[0];
  done.state = JobState::kSucceeded;
  ASSERT_TRUE(store_->UpdateJob(done).ok());
  jobs = store_->UnfinishedJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->size(), 3u);
}

// The request ID and its record in one transaction: a new key writes both, a repeat
// writes nothing and names the first, another request is refused, and a record that
// cannot be written leaves no key behind (a retry then creates it).
TEST_P(StoreTest, ClaimAndRecordAreWrittenTogether) {
  const RequestClaim claim{"Embed@team-a", "key-1", "hash_a"};
  absl::StatusOr<std::string> first = store_->CreateJobWithClaim(FullJob("job_a"), claim);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, "job_a");
  EXPECT_TRUE(store_->GetJob("job_a").ok());
  absl::StatusOr<std::string> again = store_->CreateJobWithClaim(FullJob("job_b"), claim);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "job_a");
  EXPECT_EQ(store_->GetJob("job_b").status().code(), absl::StatusCode::kNotFound);
  const RequestClaim other{"Embed@team-a", "key-1", "hash_b"};
  EXPECT_EQ(store_->CreateJobWithClaim(FullJob("job_c"), other).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetJob("job_c").status().code(), absl::StatusCode::kNotFound);

  // The job's insert fails (its ID is taken): no key is left naming nothing.
  const RequestClaim fresh{"Embed@team-a", "key-2", "hash_a"};
  EXPECT_FALSE(store_->CreateJobWithClaim(FullJob("job_a"), fresh).ok());
  EXPECT_EQ(store_->FindRequest(fresh.method, fresh.request_id, fresh.request_hash).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> retry = store_->CreateJobWithClaim(FullJob("job_d"), fresh);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(*retry, "job_d");

  // Latents alike.
  const RequestClaim import{"ImportLatent@team-a", "key-3", "hash_a"};
  ASSERT_TRUE(store_->PutLatent(FullLatent("lat_taken")).ok());
  EXPECT_FALSE(store_->PutLatentWithClaim(FullLatent("lat_taken"), import).ok());
  EXPECT_EQ(
      store_->FindRequest(import.method, import.request_id, import.request_hash).status().code(),
      absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> put = store_->PutLatentWithClaim(FullLatent("lat_new"), import);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(*put, "lat_new");
  absl::StatusOr<std::string> put_again =
      store_->PutLatentWithClaim(FullLatent("lat_other"), import);
  ASSERT_TRUE(put_again.ok()) << put_again.status();
  EXPECT_EQ(*put_again, "lat_new");
  EXPECT_EQ(store_->GetLatent("lat_other").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(StoreTest, ClaimRequest) {
  // New: recorded and returned.
  absl::StatusOr<std::string> first = store_->ClaimRequest("CreateJob", "r1", "hash_a", "job_1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, "job_1");
  // Repeat with the same hash: the recorded result, whatever result_id is offered.
  absl::StatusOr<std::string> repeat = store_->ClaimRequest("CreateJob", "r1", "hash_a", "job_2");
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(*repeat, "job_1");
  // Same request_id, different request.
  absl::Status other = store_->ClaimRequest("CreateJob", "r1", "hash_b", "job_3").status();
  EXPECT_EQ(other.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(other.message(), "request_id")) << other;
  EXPECT_TRUE(absl::StrContains(other.message(), "different request")) << other;
  // Keys are per method.
  absl::StatusOr<std::string> other_method =
      store_->ClaimRequest("ImportLatent", "r1", "hash_b", "lat_1");
  ASSERT_TRUE(other_method.ok()) << other_method.status();
  EXPECT_EQ(*other_method, "lat_1");
  // Hashes compare as bytes.
  absl::StatusOr<std::string> binary =
      store_->ClaimRequest("CreateJob", "r2", std::string("\0\xff", 2), "job_4");
  ASSERT_TRUE(binary.ok());
  EXPECT_EQ(store_->ClaimRequest("CreateJob", "r2", std::string("\0\xfe", 2), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ClaimRequest("CreateJob", "", "h", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, FindRequest) {
  EXPECT_EQ(store_->FindRequest("CreateJob", "r1", "hash_a").status().code(),
            absl::StatusCode::kNotFound);
  // Looking up does not record.
  EXPECT_EQ(store_->FindRequest("CreateJob", "r1", "hash_a").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->ClaimRequest("CreateJob", "r1", "hash_a", "job_1").ok());
  absl::StatusOr<std::string> found = store_->FindRequest("CreateJob", "r1", "hash_a");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, "job_1");
  EXPECT_EQ(store_->FindRequest("CreateJob", "r1", "hash_b").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->FindRequest("ImportLatent", "r1", "hash_a").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SqliteStoreFileTest, PersistsAcrossReopen) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  const LatentRecord latent = FullLatent("lat_1");
  const JobRecord job = FullJob("job_1");
  {
    std::unique_ptr<SqliteStore> store = OpenOrDie(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->PutLatent(latent).ok());
    ASSERT_TRUE(store->CreateJob(job).ok());
    ASSERT_TRUE(store->ClaimRequest("CreateJob", "r1", "h", "job_1").ok());
  }
  std::unique_ptr<SqliteStore> store = OpenOrDie(path);  // schema exists: no migration
  ASSERT_NE(store, nullptr);
  absl::StatusOr<LatentRecord> got_latent = store->GetLatent("lat_1");
  ASSERT_TRUE(got_latent.ok()) << got_latent.status();
  ExpectSameLatent(latent, *got_latent, /*with_values=*/true);
  absl::StatusOr<JobRecord> got_job = store->GetJob("job_1");
  ASSERT_TRUE(got_job.ok()) << got_job.status();
  ExpectSameJob(job, *got_job, /*with_blobs=*/true);
  absl::StatusOr<std::string> request = store->FindRequest("CreateJob", "r1", "h");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(*request, "job_1");
  absl::StatusOr<std::vector<JobRecord>> unfinished = store->UnfinishedJobs();
  ASSERT_TRUE(unfinished.ok());
  EXPECT_EQ(unfinished->size(), 1u);
}

TEST(SqliteStoreFileTest, UsesWalAndRecordsSchemaVersion) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  ASSERT_NE(OpenOrDie(path), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const auto pragma = [db](const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    std::string value(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)));
    sqlite3_finalize(stmt);
    return value;
  };
  EXPECT_EQ(pragma("PRAGMA journal_mode"), "wal");  // persistent in the file
  EXPECT_EQ(pragma("PRAGMA user_version"), "8");
  EXPECT_EQ(pragma("PRAGMA auto_vacuum"), "2");  // INCREMENTAL: see ReclaimSpace
  sqlite3_close(db);
}

TEST_P(StoreTest, TenantFilterOnListingsAndUpdateKeepsTheTenant) {
  for (int i = 0; i < 6; ++i) {
    LatentRecord r = BareLatent(absl::StrCat("lat_", i), 100 + i, i % 3 == 0 ? "fp_x" : "fp_y");
    r.tenant = i % 2 == 0 ? "a" : "b";
    ASSERT_TRUE(store_->PutLatent(r).ok());
    JobRecord j = FullJob(absl::StrCat("job_", i), 100 + i);
    j.tenant = r.tenant;
    j.state = i < 3 ? JobState::kQueued : JobState::kSucceeded;
    ASSERT_TRUE(store_->CreateJob(j).ok());
  }
  const auto latent_ids = [&](const std::string& fp, std::optional<std::string> tenant) {
    Page page;
    page.page_size = 2;  // several pages, so the token keeps the filter's order
    std::vector<std::string> ids;
    while (true) {
      auto list = store_->ListLatents(page, fp, tenant);
      EXPECT_TRUE(list.ok()) << list.status();
      if (!list.ok()) return ids;
      for (const LatentRecord& r : list->latents) {
        if (tenant.has_value()) {
          EXPECT_EQ(r.tenant, *tenant);
        }
        ids.push_back(r.id);
      }
      if (list->next_page_token.empty()) return ids;
      page.page_token = list->next_page_token;
    }
  };
  EXPECT_EQ(latent_ids("", "a"), (std::vector<std::string>{"lat_4", "lat_2", "lat_0"}));
  EXPECT_EQ(latent_ids("", "b"), (std::vector<std::string>{"lat_5", "lat_3", "lat_1"}));
  EXPECT_EQ(latent_ids("fp_x", "b"), (std::vector<std::string>{"lat_3"}));
  EXPECT_EQ(latent_ids("", "nobody"), std::vector<std::string>{});
  EXPECT_EQ(latent_ids("", std::nullopt).size(), 6u);
  EXPECT_EQ(latent_ids("", "").size(), 0u);  // "" is a tenant like any other

  auto queued_a = store_->ListJobs(Page{}, {JobState::kQueued}, "a");
  ASSERT_TRUE(queued_a.ok());
  ASSERT_EQ(queued_a->jobs.size(), 2u);  // job_2, job_0
  EXPECT_EQ(queued_a->jobs[0].id, "job_2");
  EXPECT_EQ(queued_a->jobs[0].tenant, "a");
  auto all = store_->ListJobs(Page{}, {}, std::nullopt);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->jobs.size(), 6u);

  // UpdateJob cannot move a job to another tenant.
  JobRecord moved = FullJob("job_1", 101);
  moved.tenant = "a";
  ASSERT_TRUE(store_->UpdateJob(moved).ok());
  auto got = store_->GetJob("job_1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->tenant, "b");
}

TEST_P(StoreTest, CancelRequestIsKeptUntilTheEnd) {
  JobRecord job = FullJob("job_c");
  job.state = JobState::kRunning;
  ASSERT_TRUE(store_->CreateJob(job).ok());
  EXPECT_FALSE(store_->GetJob("job_c")->cancel_requested);
  ASSERT_TRUE(store_->MarkCancelRequested("job_c").ok());
  EXPECT_TRUE(store_->GetJob("job_c")->cancel_requested);
  // A later update from a copy taken before the request does not clear it.
  job.checkpoint_step = 5;
  ASSERT_TRUE(store_->UpdateJob(job).ok());
  auto got = store_->GetJob("job_c");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->cancel_requested);
  auto unfinished = store_->UnfinishedJobs();
  ASSERT_TRUE(unfinished.ok());
  ASSERT_EQ(unfinished->size(), 1u);
  EXPECT_TRUE((*unfinished)[0].cancel_requested);
  EXPECT_EQ(store_->MarkCancelRequested("job_none").code(), absl::StatusCode::kNotFound);
}

TEST(RequestScopeTest, KeysArePerTenant) {
  EXPECT_EQ(RequestScope("Embed", ""), "Embed");
  EXPECT_EQ(RequestScope("Embed", "alpha"), "Embed@alpha");
}

TEST(SqliteStoreFileTest, MigratesAVersion1DatabaseIntoTenantEmpty) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  // The released version-1 schema (as in kMigrations[0]) with one latent and one job.
  const char* v1 = R"sql(
CREATE TABLE latents (id TEXT PRIMARY KEY NOT NULL, model TEXT NOT NULL,
  fingerprint TEXT NOT NULL, num_layers INTEGER NOT NULL, latent_size INTEGER NOT NULL,
  noise_seed INTEGER NOT NULL, source TEXT NOT NULL, job_id TEXT NOT NULL,
  parents_json TEXT NOT NULL, params_json TEXT NOT NULL, has_metrics INTEGER NOT NULL,
  metrics_loss REAL, metrics_mse REAL, metrics_perceptual REAL, metrics_psnr REAL,
  metrics_steps INTEGER, created_unix_ms INTEGER NOT NULL, labels_json TEXT NOT NULL,
  values_f32 BLOB NOT NULL, noise_npz BLOB NOT NULL);
CREATE INDEX latents_by_created ON latents (created_unix_ms DESC, id DESC);
CREATE INDEX latents_by_fingerprint ON latents (fingerprint, created_unix_ms DESC, id DESC);
CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, request_id TEXT NOT NULL,
  model TEXT NOT NULL, state INTEGER NOT NULL, checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL, error_code INTEGER NOT NULL, error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL, finished_unix_ms INTEGER NOT NULL, result BLOB NOT NULL,
  spec BLOB NOT NULL, checkpoint BLOB NOT NULL);
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE TABLE requests (method TEXT NOT NULL, request_id TEXT NOT NULL,
  request_hash BLOB NOT NULL, result_id TEXT NOT NULL, created_unix_ms INTEGER NOT NULL,
  PRIMARY KEY (method, request_id)) WITHOUT ROWID;
INSERT INTO latents VALUES ('lat_old', 'ffhq', 'fp', 1, 2, 7, 'import', '', '[]', '', 1,
  0.5, 0.25, 0.125, 30.0, 10, 1234, '{"k":"v"}', X'0000803F00000040', X'');
INSERT INTO jobs VALUES ('job_old', 'req', 'ffhq', 2, 40, '', 0, '', 9, 1000, 1001, 0,
  X'', X'5350', X'434B');
INSERT INTO requests VALUES ('Embed', 'req', X'68', 'job_old', 1000);
PRAGMA user_version = 1;
)sql";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  std::unique_ptr<SqliteStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  auto latent = store->GetLatent("lat_old");
  ASSERT_TRUE(latent.ok()) << latent.status();
  EXPECT_EQ(latent->tenant, "");
  EXPECT_EQ(latent->values, (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(latent->noise_seed, 7u);
  ASSERT_TRUE(latent->metrics.has_value());
  EXPECT_EQ(latent->metrics->psnr, 30.0);
  EXPECT_EQ(latent->metrics->lpips, -1);  // version 4: not measured
  EXPECT_EQ(latent->labels.at("k"), "v");
  auto job = store->GetJob("job_old");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->tenant, "");
  EXPECT_EQ(job->state, JobState::kRunning);
  EXPECT_EQ(job->checkpoint_step, 40);
  EXPECT_EQ(job->spec, "SP");
  EXPECT_EQ(job->checkpoint, "CK");
  EXPECT_EQ(job->owner, "");  // version 3: no owner yet, so the next start claims it
  EXPECT_EQ(job->progress, "");
  EXPECT_EQ(job->lease_epoch, 0);  // version 6: never claimed yet
  auto claimed = store->ClaimJobs("replica-a", 5000, 1000, ClaimScope::kExpiredAndOwn);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].spec, "SP");
  EXPECT_EQ((*claimed)[0].lease_epoch, 1);
  auto unfinished = store->UnfinishedJobs();
  ASSERT_TRUE(unfinished.ok());
  EXPECT_EQ(unfinished->size(), 1u);
  auto mine = store->ListLatents(Page{}, "", std::string());
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->latents.size(), 1u);
  EXPECT_EQ(*store->FindRequest("Embed", "req", "h"), "job_old");
}

// The first column of the first row of `sql` on `db`, as text ("" if no row).
std::string QueryText(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
  std::string value;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    value = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  return value;
}

TEST(SqliteStoreFileTest, MigratesAVersion5DatabaseToLeaseEpochs) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  ASSERT_NE(OpenOrDie(path), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  // The released version-5 jobs table and its indexes (and no directions table), with an
  // unfinished job that replica "a" holds and a finished one.
  const char* v5 = R"sql(
DROP TABLE directions;
DROP TABLE jobs;
CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL,
  request_id TEXT NOT NULL, model TEXT NOT NULL, state INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL, checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL, error_code INTEGER NOT NULL, error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL, finished_unix_ms INTEGER NOT NULL, owner TEXT NOT NULL,
  lease_expires_unix_ms INTEGER NOT NULL, progress TEXT NOT NULL, result BLOB NOT NULL,
  spec BLOB NOT NULL, checkpoint BLOB NOT NULL);
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_unix_ms DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_unix_ms) WHERE state IN (3, 4, 5);
INSERT INTO jobs VALUES ('job_run', 't', '', 'ffhq', 2, 0, 40, '', 0, '', 9, 1000, 1001, 0,
  'a', 7000, '{"step":40}', X'', X'5350', X'434B');
INSERT INTO jobs VALUES ('job_done', 't', '', 'ffhq', 3, 0, 0, 'lat_1', 0, '', 12, 900, 901,
  950, 'a', 5000, '', X'52', X'5350', X'');
PRAGMA user_version = 5;
)sql";
  ASSERT_EQ(sqlite3_exec(db, v5, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  std::unique_ptr<SqliteStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  auto job = store->GetJob("job_run");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->owner, "a");
  EXPECT_EQ(job->lease_expires_unix_ms, 7000);
  EXPECT_EQ(job->lease_epoch, 0);  // never claimed with an epoch
  EXPECT_EQ(job->progress, R"({"step":40})");
  EXPECT_EQ(job->spec, "SP");
  EXPECT_EQ(job->checkpoint, "CK");
  EXPECT_EQ(store->GetJob("job_done")->state, JobState::kSucceeded);

  // A process of "a" from before the upgrade (epoch 0) writes until the job is claimed
  // again; then only the claimer's epoch does.
  EXPECT_TRUE(store->SaveProgress("job_run", "a", 0, R"({"step":41})").ok());
  auto claimed = store->ClaimJobs("a", 100, 1000, ClaimScope::kExpiredAndOwn);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].lease_epoch, 1);
  EXPECT_EQ(store->SaveProgress("job_run", "a", 0, "{}").code(),
            absl::StatusCode::kFailedPrecondition);

  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const auto query = [db](const std::string& sql) { return QueryText(db, sql); };
  EXPECT_EQ(query("PRAGMA user_version"), "8");
  // The rebuilt table keeps every index, and the new column sits ahead of the blobs.
  EXPECT_EQ(query("SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_master"
                  " WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL"
                  " ORDER BY name)"),
            "jobs_by_created jobs_by_tenant jobs_finished jobs_unfinished "
            "jobs_without_total_steps");
  EXPECT_LT(
      std::stoi(query("SELECT cid FROM pragma_table_info('jobs') WHERE name = 'lease_epoch'")),
      std::stoi(query("SELECT cid FROM pragma_table_info('jobs') WHERE name = 'result'")));
  sqlite3_close(db);
}

// Version 6 -> 7: total_steps (-1 until the scheduler reads it from the spec), ahead of the
// blobs; the file turns to incremental vacuum (rewritten once).
TEST(SqliteStoreFileTest, MigratesAVersion6DatabaseToTotalSteps) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  ASSERT_NE(OpenOrDie(path), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  // The released version-6 jobs table (and no directions table), in a file without
  // auto_vacuum (as that release made them), with a finished job.
  const char* v6 = R"sql(
DROP TABLE directions;
DROP TABLE jobs;
CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL, tenant TEXT NOT NULL,
  request_id TEXT NOT NULL, model TEXT NOT NULL, state INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL, checkpoint_step INTEGER NOT NULL,
  latent_id TEXT NOT NULL, error_code INTEGER NOT NULL, error_message TEXT NOT NULL,
  next_sequence INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL, finished_unix_ms INTEGER NOT NULL, owner TEXT NOT NULL,
  lease_expires_unix_ms INTEGER NOT NULL, lease_epoch INTEGER NOT NULL,
  progress TEXT NOT NULL, result BLOB NOT NULL, spec BLOB NOT NULL, checkpoint BLOB NOT NULL);
CREATE INDEX jobs_by_created ON jobs (created_unix_ms DESC, id DESC);
CREATE INDEX jobs_unfinished ON jobs (created_unix_ms, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_unix_ms DESC, id DESC);
CREATE INDEX jobs_finished ON jobs (finished_unix_ms) WHERE state IN (3, 4, 5);
INSERT INTO jobs VALUES ('job_done', 't', '', 'ffhq', 3, 0, 0, 'lat_1', 0, '', 12, 900, 901,
  950, 'a', 5000, 2, '', X'52', X'5350', X'');
PRAGMA user_version = 6;
)sql";
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA auto_vacuum = NONE; VACUUM;", nullptr, nullptr, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, v6, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);

  std::unique_ptr<SqliteStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  auto job = store->GetJob("job_done");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->total_steps, -1);
  EXPECT_EQ(job->lease_epoch, 2);
  EXPECT_EQ(job->spec, "SP");
  auto missing = store->JobsWithoutTotalSteps(10);
  ASSERT_TRUE(missing.ok()) << missing.status();
  ASSERT_EQ(missing->size(), 1u);

  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const auto query = [db](const std::string& sql) { return QueryText(db, sql); };
  EXPECT_EQ(query("PRAGMA user_version"), "8");
  EXPECT_EQ(query("PRAGMA auto_vacuum"), "2");  // INCREMENTAL
  EXPECT_LT(
      std::stoi(query("SELECT cid FROM pragma_table_info('jobs') WHERE name = 'total_steps'")),
      std::stoi(query("SELECT cid FROM pragma_table_info('jobs') WHERE name = 'result'")));
  sqlite3_close(db);
}

// Version 7 -> 8: the directions table; what the file kept is unchanged.
TEST(SqliteStoreFileTest, MigratesAVersion7DatabaseToDirections) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  {
    std::unique_ptr<SqliteStore> store = OpenOrDie(path);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->PutLatent(FullLatent("lat_old")).ok());
    ASSERT_TRUE(store->CreateJob(FullJob("job_old")).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE directions; PRAGMA user_version = 7;", nullptr, nullptr,
                         nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);

  std::unique_ptr<SqliteStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  auto latent = store->GetLatent("lat_old");
  ASSERT_TRUE(latent.ok()) << latent.status();
  ExpectSameLatent(FullLatent("lat_old"), *latent, /*with_values=*/true);
  auto job = store->GetJob("job_old");
  ASSERT_TRUE(job.ok()) << job.status();
  ExpectSameJob(FullJob("job_old"), *job, /*with_blobs=*/true);
  const DirectionRecord smile = MakeDirection("team-a", "fp_ffhq", "smile");
  ASSERT_TRUE(store->PutDirection(smile).ok());
  ExpectSameDirection(smile, *store->GetDirection("team-a", "fp_ffhq", "smile"), true);

  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(QueryText(db, "PRAGMA user_version"), "8");
  EXPECT_EQ(QueryText(db,
                      "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_master"
                      " WHERE type = 'index' AND tbl_name = 'directions'"
                      " AND sql IS NOT NULL ORDER BY name)"),
            "directions_by_name directions_by_tenant_name");
  // The blob is the row's last column (listings stop before it).
  EXPECT_EQ(QueryText(db, "SELECT name FROM pragma_table_info('directions') ORDER BY cid DESC"),
            "values_f32");
  sqlite3_close(db);
}

// What finished jobs released goes back to the file system at ReclaimSpace.
TEST(SqliteStoreFileTest, ReclaimSpaceShrinksTheFileByWhatFinishedJobsReleased) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  std::unique_ptr<SqliteStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  const auto pages = [&path] {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &stmt, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    const int64_t n = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return n;
  };
  constexpr int kJobs = 8;
  for (int i = 0; i < kJobs; ++i) {
    JobRecord r = FullJob(absl::StrCat("job_", i));
    r.spec.assign(1 << 20, 's');  // 1 MiB each
    r.checkpoint.assign(1 << 20, 'c');
    ASSERT_TRUE(store->CreateJob(r).ok());
  }
  const int64_t full = pages();
  EXPECT_GT(full * 4096, int64_t{kJobs} * (2 << 20)) << full;
  for (int i = 0; i < kJobs; ++i) {
    JobRecord done = FullJob(absl::StrCat("job_", i));
    done.state = JobState::kSucceeded;
    ASSERT_TRUE(store->UpdateJob(done).ok());
  }
  EXPECT_GE(pages(), full);  // released to SQLite's free list, not yet to the file system
  ASSERT_TRUE(store->ReclaimSpace().ok());
  const int64_t after = pages();
  EXPECT_LT(after * 4096, 256 << 10) << "pages: " << full << " -> " << after;
  ASSERT_TRUE(store->ReclaimSpace().ok());  // nothing left to do
}

TEST(SqliteStoreFileTest, RefusesNewerSchema) {
  ScratchDir dir;
  const std::string path = dir.File("db.sqlite");
  ASSERT_NE(OpenOrDie(path), nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  absl::Status status = SqliteStore::Open(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "99")) << status;
}

TEST(SqliteStoreFileTest, NotADatabaseIsAnInternalError) {
  ScratchDir dir;
  const std::string path = dir.File("garbage");
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(4096, 'x');
  }
  absl::Status status = SqliteStore::Open(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(status.message(), "not a database")) << status;
  EXPECT_EQ(SqliteStore::Open(dir.File("no/such/dir/db")).status().code(),
            absl::StatusCode::kInternal);
}

TEST_P(StoreTest, ConcurrentUseFromFourThreads) {
  Store* store = store_.get();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([store, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = absl::StrCat("lat_", t, "_", i);
        EXPECT_TRUE(store->PutLatent(FullLatent(id, i)).ok()) << id;
        EXPECT_TRUE(store->GetLatent(id).ok()) << id;
        EXPECT_TRUE(store->ListLatents(Page{5, ""}).ok());
        const std::string job = absl::StrCat("job_", t, "_", i);
        EXPECT_TRUE(store->CreateJob(FullJob(job, i)).ok()) << job;
        EXPECT_TRUE(store->SaveCheckpoint(job, i, "ckpt", i, "", 0).ok()) << job;
        // All threads race for the same keys; exactly one result wins per key.
        absl::StatusOr<std::string> claimed =
            store->ClaimRequest("CreateJob", absl::StrCat("r", i), "h", job);
        EXPECT_TRUE(claimed.ok()) << claimed.status();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  std::set<std::string> ids;
  for (const std::string& id : AllLatentIds(*store, 7)) ids.insert(id);
  EXPECT_EQ(ids.size(), static_cast<size_t>(kThreads * kPerThread));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      EXPECT_EQ(ids.count(absl::StrCat("lat_", t, "_", i)), 1u);
    }
  }
  absl::StatusOr<JobPage> jobs = store->ListJobs(Page{1000, ""}, {});
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->jobs.size(), static_cast<size_t>(kThreads * kPerThread));
  for (int i = 0; i < kPerThread; ++i) {
    absl::StatusOr<std::string> winner = store->FindRequest("CreateJob", absl::StrCat("r", i), "h");
    ASSERT_TRUE(winner.ok());
    EXPECT_EQ(winner->substr(winner->size() - absl::StrCat("_", i).size()), absl::StrCat("_", i));
  }
}

// ---- Leases (several replicas on one store) ----

JobRecord QueuedJob(const std::string& id, int64_t created, const std::string& owner,
                    int64_t lease_expires) {
  JobRecord r = FullJob(id, created);
  r.state = JobState::kQueued;
  r.owner = owner;
  r.lease_expires_unix_ms = lease_expires;
  return r;
}

std::vector<std::string> IdsOf(const std::vector<JobRecord>& jobs) {
  std::vector<std::string> ids;
  for (const JobRecord& j : jobs) ids.push_back(j.id);
  return ids;
}

TEST_P(StoreTest, ClaimJobsTakesOwnFreeAndExpiredJobsOnly) {
  ASSERT_TRUE(store_->CreateJob(QueuedJob("job_mine", 10, "a", 100)).ok());
  ASSERT_TRUE(store_->CreateJob(QueuedJob("job_free", 11, "", 0)).ok());
  ASSERT_TRUE(store_->CreateJob(QueuedJob("job_expired", 12, "b", 499)).ok());
  ASSERT_TRUE(store_->CreateJob(QueuedJob("job_held", 13, "b", 501)).ok());
  JobRecord done = QueuedJob("job_done", 14, "b", 0);
  done.state = JobState::kSucceeded;
  ASSERT_TRUE(store_->CreateJob(done).ok());

  auto claimed = store_->ClaimJobs("a", /*now=*/500, /*lease_ms=*/1000, ClaimScope::kExpiredAndOwn);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(IdsOf(*claimed), (std::vector<std::string>{"job_mine", "job_free", "job_expired"}));
  for (const JobRecord& j : *claimed) {
    EXPECT_EQ(j.owner, "a");
    EXPECT_EQ(j.lease_expires_unix_ms, 1500);
    EXPECT_EQ(j.spec, std::string("spec\0bytes\xff", 11));  // with blobs, for resuming
  }
  EXPECT_EQ(store_->GetJob("job_held")->owner, "b");
  EXPECT_EQ(store_->GetJob("job_done")->owner, "b");

  // take_all: a store nobody else uses.
  claimed = store_->ClaimJobs("c", 600, 1000, ClaimScope::kAll);
  ASSERT_TRUE(claimed.ok());
  EXPECT_EQ(claimed->size(), 4u);
}

TEST_P(StoreTest, RenewLeasesReportsCancelsAndLostJobs) {
  ASSERT_TRUE(store_->CreateJob(QueuedJob("job_1", 10, "a", 100)).ok());
  ASSERT_TRUE(store_->CreateJob(QueuedJob("job_2", 11, "a", 100)).ok());
  ASSERT_TRUE(store_->CreateJob(QueuedJob("job_3", 12, "b", 100)).ok());
  ASSERT_TRUE(store_->MarkCancelRequested("job_2").ok());  // from any replica
  auto leases = store_->RenewLeases("a", 1000, 500);
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_EQ(leases->size(), 2u);
  std::map<std::string, bool> cancel;
  for (const JobLease& l : *leases) {
    cancel[l.id] = l.cancel_requested;
    EXPECT_EQ(l.state, JobState::kQueued);
  }
  EXPECT_EQ(cancel, (std::map<std::string, bool>{{"job_1", false}, {"job_2", true}}));
  EXPECT_EQ(store_->GetJob("job_1")->lease_expires_unix_ms, 1500);
  EXPECT_EQ(store_->GetJob("job_3")->lease_expires_unix_ms, 100);

  // b's lease on job_3 ran out and a took it over: b's renewal no longer lists it.
  ASSERT_EQ(store_->ClaimJobs("a", 2000, 500, ClaimScope::kExpiredAndOwn)->size(), 3u);
  leases = store_->RenewLeases("b", 2001, 500);
  ASSERT_TRUE(leases.ok());
  EXPECT_TRUE(leases->empty());
}

TEST_P(StoreTest, WritesAreFencedByOwner) {
  JobRecord created = QueuedJob("job_1", 10, "a", 100);
  created.lease_epoch = 1;
  ASSERT_TRUE(store_->CreateJob(created).ok());
  auto claimed = store_->ClaimJobs("b", 1000, 500, ClaimScope::kExpired);  // a's lease expired
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  const int64_t epoch = (*claimed)[0].lease_epoch;
  EXPECT_EQ(epoch, 2);
  JobRecord stale = QueuedJob("job_1", 10, "a", 0);
  stale.state = JobState::kSucceeded;
  stale.lease_epoch = 1;
  absl::Status update = store_->UpdateJob(stale);
  EXPECT_EQ(update.code(), absl::StatusCode::kFailedPrecondition) << update;
  EXPECT_TRUE(absl::StrContains(update.message(), "replica \"a\"")) << update;
  EXPECT_EQ(store_->SaveCheckpoint("job_1", 5, "old", 9, "a", 1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->SaveProgress("job_1", "a", 1, "{}").code(),
            absl::StatusCode::kFailedPrecondition);
  // a's name with b's epoch is no better.
  EXPECT_EQ(store_->SaveProgress("job_1", "a", epoch, "{}").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetJob("job_1")->state, JobState::kQueued);  // nothing of a's landed

  stale.owner = "b";
  stale.lease_epoch = epoch;
  EXPECT_TRUE(store_->UpdateJob(stale).ok());
  EXPECT_TRUE(store_->SaveCheckpoint("job_1", 5, "new", 9, "b", epoch).ok());
  ASSERT_TRUE(store_->SaveProgress("job_1", "b", epoch, R"({"step":5})").ok());
  auto job = store_->GetJob("job_1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kSucceeded);
  EXPECT_EQ(job->checkpoint, "new");
  EXPECT_EQ(job->progress, R"({"step":5})");
  EXPECT_EQ(job->owner, "b");
  // A job that does not exist is NotFound, not a fencing refusal.
  EXPECT_EQ(store_->SaveProgress("job_x", "b", epoch, "{}").code(), absl::StatusCode::kNotFound);
}

// ---- Lease epochs (fencing of a replica's earlier process) ----

// The embedding that job `job_id` made (FinishJobWithLatent's latent).
LatentRecord ResultLatent(const std::string& id, const std::string& job_id) {
  LatentRecord r = FullLatent(id);
  r.source = "embed";
  r.job_id = job_id;
  return r;
}

TEST_P(StoreTest, ClaimsMoveTheLeaseEpochOnAndRenewalsReportIt) {
  JobRecord created = QueuedJob("job_1", 10, "a", 100);
  created.lease_epoch = 1;
  ASSERT_TRUE(store_->CreateJob(created).ok());
  EXPECT_EQ(store_->GetJob("job_1")->lease_epoch, 1);

  // A running replica's adoption never takes its own live jobs (it runs them, or another
  // process under its name does), so their epoch stays.
  auto claimed = store_->ClaimJobs("a", 50, 1000, ClaimScope::kExpired);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_TRUE(claimed->empty());
  // A renewal extends the lease, keeps the epoch and reports it.
  auto leases = store_->RenewLeases("a", 60, 1000);
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].lease_epoch, 1);
  EXPECT_EQ(store_->GetJob("job_1")->lease_epoch, 1);
  EXPECT_EQ(store_->GetJob("job_1")->lease_expires_unix_ms, 1060);

  // A start under the same name takes its live job back, at the next epoch.
  claimed = store_->ClaimJobs("a", 70, 1000, ClaimScope::kExpiredAndOwn);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].lease_epoch, 2);
  leases = store_->RenewLeases("a", 80, 1000);
  ASSERT_TRUE(leases.ok());
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ((*leases)[0].lease_epoch, 2);  // the earlier process sees it is not its own now

  // Every claim moves it on: another replica's once the lease ran out, and kAll's.
  claimed = store_->ClaimJobs("b", 5000, 1000, ClaimScope::kExpired);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].owner, "b");
  EXPECT_EQ((*claimed)[0].lease_epoch, 3);
  claimed = store_->ClaimJobs("c", 5001, 1000, ClaimScope::kAll);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].lease_epoch, 4);
  // Every read of the job tells it.
  auto listed = store_->ListJobs(Page{}, {});
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->jobs.size(), 1u);
  EXPECT_EQ(listed->jobs[0].lease_epoch, 4);
  auto unfinished = store_->UnfinishedJobs();
  ASSERT_TRUE(unfinished.ok());
  ASSERT_EQ(unfinished->size(), 1u);
  EXPECT_EQ((*unfinished)[0].lease_epoch, 4);
}

TEST_P(StoreTest, AStaleEpochWritesNothingAfterAReclaimBySameOwner) {
  JobRecord job = QueuedJob("job_1", 10, "a", 100);
  job.state = JobState::kRunning;
  job.lease_epoch = 1;
  ASSERT_TRUE(store_->CreateJob(job).ok());
  // Replica "a" restarts while its earlier process still runs the job: the new process
  // takes it back under the same name.
  auto claimed = store_->ClaimJobs("a", 50, 1000, ClaimScope::kExpiredAndOwn);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  ASSERT_EQ((*claimed)[0].lease_epoch, 2);

  // The earlier process, epoch 1, writes nothing any more.
  JobRecord stale = job;
  stale.state = JobState::kSucceeded;
  stale.latent_id = "lat_r";
  stale.finished_unix_ms = 99;
  absl::Status update = store_->UpdateJob(stale);
  EXPECT_EQ(update.code(), absl::StatusCode::kFailedPrecondition) << update;
  EXPECT_TRUE(absl::StrContains(update.message(), "replica \"a\" at lease epoch 1")) << update;
  absl::Status checkpoint = store_->SaveCheckpoint("job_1", 5, "old", 9, "a", 1);
  EXPECT_EQ(checkpoint.code(), absl::StatusCode::kFailedPrecondition) << checkpoint;
  EXPECT_TRUE(absl::StrContains(checkpoint.message(), "lease epoch 1")) << checkpoint;
  EXPECT_EQ(store_->SaveProgress("job_1", "a", 1, R"({"step":5})").code(),
            absl::StatusCode::kFailedPrecondition);
  absl::Status finish = store_->FinishJobWithLatent(stale, ResultLatent("lat_r", "job_1"));
  EXPECT_EQ(finish.code(), absl::StatusCode::kFailedPrecondition) << finish;
  EXPECT_TRUE(absl::StrContains(finish.message(), "lease epoch 1")) << finish;
  EXPECT_EQ(store_->GetLatent("lat_r").status().code(), absl::StatusCode::kNotFound);
  auto got = store_->GetJob("job_1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, JobState::kRunning);
  EXPECT_EQ(got->checkpoint, job.checkpoint);
  EXPECT_EQ(got->next_sequence, job.next_sequence);
  EXPECT_EQ(got->progress, "");
  EXPECT_EQ(got->latent_id, job.latent_id);

  // The new process, epoch 2, writes.
  EXPECT_TRUE(store_->SaveCheckpoint("job_1", 5, "new", 9, "a", 2).ok());
  EXPECT_TRUE(store_->SaveProgress("job_1", "a", 2, R"({"step":5})").ok());
  JobRecord current = stale;
  current.lease_epoch = 2;
  absl::Status finished = store_->FinishJobWithLatent(current, ResultLatent("lat_r", "job_1"));
  ASSERT_TRUE(finished.ok()) << finished;
  got = store_->GetJob("job_1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, JobState::kSucceeded);
  EXPECT_EQ(got->latent_id, "lat_r");
  EXPECT_EQ(got->progress, R"({"step":5})");
  EXPECT_TRUE(store_->GetLatent("lat_r").ok());
  // Finished, the job is claimed by nobody, and the old epoch stays refused.
  EXPECT_TRUE(store_->ClaimJobs("a", 60, 1000, ClaimScope::kAll)->empty());
  EXPECT_EQ(store_->UpdateJob(stale).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_P(StoreTest, FencedFinishWritesTheLatentAndTheRecordTogetherOrNothing) {
  JobRecord job = QueuedJob("job_1", 10, "a", 100);
  job.state = JobState::kRunning;
  job.lease_epoch = 1;
  ASSERT_TRUE(store_->CreateJob(job).ok());
  JobRecord done = job;
  done.state = JobState::kSucceeded;
  done.latent_id = "lat_r";
  done.result = "final metrics";
  done.error_code = 0;
  done.error_message = "";
  done.finished_unix_ms = 99;
  const LatentRecord latent = ResultLatent("lat_r", "job_1");
  const auto untouched = [&] {
    auto got = store_->GetJob("job_1");
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->state, JobState::kRunning);
    EXPECT_EQ(got->result, job.result);
    EXPECT_EQ(got->checkpoint, job.checkpoint);
  };

  // A latent the store refuses: neither is written.
  LatentRecord bad = latent;
  bad.values.pop_back();
  EXPECT_EQ(store_->FinishJobWithLatent(done, bad).code(), absl::StatusCode::kInvalidArgument);
  LatentRecord not_its_own = latent;
  not_its_own.job_id = "job_2";
  EXPECT_EQ(store_->FinishJobWithLatent(done, not_its_own).code(),
            absl::StatusCode::kInvalidArgument);
  untouched();
  EXPECT_EQ(store_->GetLatent("lat_r").status().code(), absl::StatusCode::kNotFound);

  // The latent's ID taken by another job's latent: AlreadyExists, and the record is not
  // written either.
  ASSERT_TRUE(store_->PutLatent(ResultLatent("lat_r", "job_2")).ok());
  absl::Status taken = store_->FinishJobWithLatent(done, latent);
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists) << taken;
  untouched();
  EXPECT_EQ(store_->GetLatent("lat_r")->job_id, "job_2");
  ASSERT_TRUE(store_->DeleteLatent("lat_r").ok());

  // A job that does not exist: NotFound, and no latent.
  JobRecord missing = done;
  missing.id = "job_x";
  EXPECT_EQ(store_->FinishJobWithLatent(missing, ResultLatent("lat_x", "job_x")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetLatent("lat_x").status().code(), absl::StatusCode::kNotFound);

  // Both, in one go: the finished record (without its checkpoint) and the latent.
  ASSERT_TRUE(store_->FinishJobWithLatent(done, latent).ok());
  auto got = store_->GetJob("job_1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, JobState::kSucceeded);
  EXPECT_EQ(got->latent_id, "lat_r");
  EXPECT_EQ(got->result, "final metrics");
  EXPECT_EQ(got->finished_unix_ms, 99);
  EXPECT_EQ(got->checkpoint, "");
  auto stored = store_->GetLatent("lat_r");
  ASSERT_TRUE(stored.ok()) << stored.status();
  ExpectSameLatent(latent, *stored, /*with_values=*/true);

  // A retry whose first answer was lost: this job's latent counts as stored.
  absl::Status again = store_->FinishJobWithLatent(done, latent);
  EXPECT_TRUE(again.ok()) << again;
  EXPECT_EQ(store_->GetJob("job_1")->state, JobState::kSucceeded);
}

// ---- Quotas, usage and expiry ----

TEST_P(StoreTest, AFinishedJobDropsItsCheckpointAndSpec) {
  const JobRecord created = FullJob("job_1");
  ASSERT_TRUE(store_->CreateJob(created).ok());
  JobRecord running = created;
  running.state = JobState::kRunning;
  ASSERT_TRUE(store_->UpdateJob(running).ok());
  EXPECT_EQ(store_->GetJob("job_1")->spec, created.spec);  // kept while it may resume
  for (JobState end : {JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    const std::string id = absl::StrCat("job_", static_cast<int>(end));
    ASSERT_TRUE(store_->CreateJob(FullJob(id)).ok());
    JobRecord done = FullJob(id);
    done.state = end;
    ASSERT_TRUE(store_->UpdateJob(done).ok());
    absl::StatusOr<JobRecord> out = store_->GetJob(id);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->checkpoint, "") << id;
    EXPECT_EQ(out->spec, "") << id;
    EXPECT_EQ(out->result, done.result) << id;
    EXPECT_EQ(out->total_steps, done.total_steps) << id;
  }
  // The tenant's usage counts the running job whole and of the finished ones their
  // results alone.
  const JobRecord& r = created;
  auto usage = store_->Usage(created.tenant);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->job_bytes,
            static_cast<int64_t>(r.spec.size() + r.checkpoint.size() + 4 * r.result.size()));
}

// Jobs stored before total_steps was a column (-1 after the migration): listed with their
// specs, oldest first, until SetTotalSteps records it; a finished one's spec goes with it.
TEST_P(StoreTest, JobsWithoutTotalStepsAreListedUntilSet) {
  JobRecord queued = FullJob("job_q", 1000);
  queued.state = JobState::kQueued;
  queued.total_steps = -1;
  JobRecord done = FullJob("job_d", 900);
  done.state = JobState::kSucceeded;
  done.total_steps = -1;
  JobRecord known = FullJob("job_k", 800);
  for (const JobRecord& r : {queued, done, known}) ASSERT_TRUE(store_->CreateJob(r).ok());
  auto missing = store_->JobsWithoutTotalSteps(10);
  ASSERT_TRUE(missing.ok()) << missing.status();
  ASSERT_EQ(missing->size(), 2u);
  EXPECT_EQ((*missing)[0].id, "job_d");  // oldest first
  EXPECT_EQ((*missing)[0].spec, done.spec);
  EXPECT_EQ((*missing)[1].id, "job_q");
  EXPECT_EQ(store_->JobsWithoutTotalSteps(1)->size(), 1u);

  ASSERT_TRUE(store_->SetTotalSteps("job_d", 300).ok());
  ASSERT_TRUE(store_->SetTotalSteps("job_q", 0).ok());
  EXPECT_TRUE(store_->JobsWithoutTotalSteps(10)->empty());
  EXPECT_EQ(store_->GetJob("job_d", /*with_blobs=*/false)->total_steps, 300);
  EXPECT_EQ(store_->GetJob("job_d")->spec, "");           // finished: released
  EXPECT_EQ(store_->GetJob("job_q")->spec, queued.spec);  // may still run: kept
  EXPECT_EQ(store_->GetJob("job_k")->total_steps, 1300);
  EXPECT_EQ(store_->SetTotalSteps("job_none", 1).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->ReclaimSpace().ok());
}

LatentRecord TenantLatent(const std::string& id, const std::string& tenant, int floats,
                          const std::string& source = "import") {
  LatentRecord r = BareLatent(id, 1000);
  r.tenant = tenant;
  r.num_layers = 1;
  r.latent_size = floats;
  r.values.assign(floats, 0.5f);
  r.source = source;
  return r;
}

JobRecord TenantJob(const std::string& id, const std::string& tenant, JobState state,
                    int spec_bytes = 10) {
  JobRecord r = FullJob(id);
  r.tenant = tenant;
  r.state = state;
  r.spec.assign(spec_bytes, 's');
  r.checkpoint.clear();
  r.result.clear();
  return r;
}

TEST_P(StoreTest, QuotaOnLatentsCountsTheTenantsOwnAndReservedOnes) {
  StorageQuota quota;
  quota.max_latents = 3;
  store_->set_quota(quota);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store_->PutLatent(TenantLatent(absl::StrCat("lat_a", i), "a", 2)).ok());
  }
  absl::Status refused = store_->PutLatent(TenantLatent("lat_a3", "a", 2));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "latent quota")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "keeps 3 latents")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "limit is 3")) << refused;
  EXPECT_EQ(store_->GetLatent("lat_a3").status().code(), absl::StatusCode::kNotFound);
  // Another tenant has its own quota.
  EXPECT_TRUE(store_->PutLatent(TenantLatent("lat_b0", "b", 2)).ok());
  // A job reserves a latent for its result: b has 1 latent + 1 job, room for one more.
  ASSERT_TRUE(store_->CreateJob(TenantJob("job_b1", "b", JobState::kQueued)).ok());
  EXPECT_TRUE(store_->PutLatent(TenantLatent("lat_b1", "b", 2)).ok());
  EXPECT_EQ(store_->PutLatent(TenantLatent("lat_b2", "b", 2)).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->CreateJob(TenantJob("job_b2", "b", JobState::kQueued)).code(),
            absl::StatusCode::kResourceExhausted);
  // ...and the job's own result is never refused: it was reserved.
  EXPECT_TRUE(store_->PutLatent(TenantLatent("lat_b_result", "b", 2, "embed")).ok());
  // A refused write with a request ID leaves no key.
  const RequestClaim claim{"ImportLatent@a", "key-1", "hash"};
  EXPECT_EQ(store_->PutLatentWithClaim(TenantLatent("lat_a4", "a", 2), claim).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->FindRequest(claim.method, claim.request_id, claim.request_hash).status().code(),
            absl::StatusCode::kNotFound);
  // Room again once one is deleted.
  ASSERT_TRUE(store_->DeleteLatent("lat_a0").ok());
  absl::StatusOr<std::string> put =
      store_->PutLatentWithClaim(TenantLatent("lat_a4", "a", 2), claim);
  EXPECT_TRUE(put.ok()) << put.status();
}

TEST_P(StoreTest, DeleteLatentDropsTheRequestIdsNamingIt) {
  const RequestClaim claim{"ImportLatent@a", "key-1", "hash"};
  ASSERT_TRUE(store_->PutLatentWithClaim(TenantLatent("lat_1", "a", 2), claim).ok());
  ASSERT_TRUE(
      store_->PutLatentWithClaim(TenantLatent("lat_2", "a", 2), {"StyleMix@a", "key-2", "hash"})
          .ok());
  ASSERT_TRUE(store_->DeleteLatent("lat_1").ok());
  EXPECT_EQ(store_->FindRequest(claim.method, claim.request_id, claim.request_hash).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->FindRequest("StyleMix@a", "key-2", "hash").ok());
  EXPECT_EQ(store_->DeleteLatent("lat_1").code(), absl::StatusCode::kNotFound);
  // The key is free again: a repeat makes a new latent.
  absl::StatusOr<std::string> again =
      store_->PutLatentWithClaim(TenantLatent("lat_3", "a", 2), claim);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "lat_3");
}

TEST_P(StoreTest, QuotaOnBytesAndJobs) {
  StorageQuota quota;
  quota.max_latent_bytes = 100;  // 25 floats
  quota.max_jobs = 2;
  quota.max_job_bytes = 50;
  store_->set_quota(quota);
  ASSERT_TRUE(store_->PutLatent(TenantLatent("lat_1", "a", 20)).ok());      // 80 bytes
  absl::Status refused = store_->PutLatent(TenantLatent("lat_2", "a", 6));  // 80 + 24 > 100
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "latent bytes quota")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "keeps 80 bytes")) << refused;
  EXPECT_TRUE(store_->PutLatent(TenantLatent("lat_2", "a", 5)).ok());  // exactly 100
  // Full: a job has no room for its result.
  EXPECT_EQ(store_->CreateJob(TenantJob("job_1", "a", JobState::kQueued)).code(),
            absl::StatusCode::kResourceExhausted);

  ASSERT_TRUE(store_->CreateJob(TenantJob("job_1", "b", JobState::kSucceeded, 20)).ok());
  absl::Status big = store_->CreateJob(TenantJob("job_2", "b", JobState::kQueued, 31));
  EXPECT_EQ(big.code(), absl::StatusCode::kResourceExhausted) << big;
  EXPECT_TRUE(absl::StrContains(big.message(), "job bytes quota")) << big;
  ASSERT_TRUE(store_->CreateJob(TenantJob("job_2", "b", JobState::kQueued, 30)).ok());
  absl::Status third = store_->CreateJob(TenantJob("job_3", "b", JobState::kQueued, 0));
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted) << third;
  EXPECT_TRUE(absl::StrContains(third.message(), "job quota")) << third;
  const RequestClaim claim{"Embed@b", "key-1", "hash"};
  EXPECT_EQ(store_->CreateJobWithClaim(TenantJob("job_3", "b", JobState::kQueued, 0), claim)
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->FindRequest(claim.method, claim.request_id, claim.request_hash).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(StoreTest, ConcurrentWritersCannotPassAQuotaTogether) {
  StorageQuota quota;
  quota.max_latents = 15;
  store_->set_quota(quota);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 10; ++i) {
        absl::Status s = store_->PutLatent(TenantLatent(absl::StrCat("lat_", t, "_", i), "a", 2));
        EXPECT_TRUE(s.ok() || absl::IsResourceExhausted(s)) << s;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  absl::StatusOr<TenantUsage> usage = store_->Usage("a");
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->latents, 15);
}

TEST_P(StoreTest, UsagePerTenant) {
  ASSERT_TRUE(store_->PutLatent(TenantLatent("lat_1", "a", 4)).ok());
  LatentRecord noisy = TenantLatent("lat_2", "a", 2);
  noisy.noise_npz = std::string(7, 'n');
  ASSERT_TRUE(store_->PutLatent(noisy).ok());
  ASSERT_TRUE(store_->PutLatent(TenantLatent("lat_3", "", 1)).ok());
  ASSERT_TRUE(store_->CreateJob(TenantJob("job_1", "a", JobState::kRunning, 12)).ok());
  ASSERT_TRUE(store_->CreateJob(TenantJob("job_2", "a", JobState::kFailed, 3)).ok());
  ASSERT_TRUE(store_->CreateJob(TenantJob("job_3", "c", JobState::kQueued, 1)).ok());
  ASSERT_TRUE(store_->ClaimRequest(RequestScope("Embed", "a"), "k1", "h", "job_1").ok());
  ASSERT_TRUE(store_->ClaimRequest(RequestScope("ImportLatent", "a"), "k1", "h", "lat_1").ok());
  ASSERT_TRUE(store_->ClaimRequest(RequestScope("ImportLatent", ""), "k1", "h", "lat_3").ok());

  absl::StatusOr<TenantUsage> a = store_->Usage("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->tenant, "a");
  EXPECT_EQ(a->latents, 2);
  EXPECT_EQ(a->latent_bytes, 4 * 4 + 2 * 4 + 7);
  EXPECT_EQ(a->jobs, 2);
  EXPECT_EQ(a->unfinished_jobs, 1);
  EXPECT_EQ(a->job_bytes, 15);
  EXPECT_EQ(a->request_ids, 2);
  absl::StatusOr<TenantUsage> nobody = store_->Usage("nobody");
  ASSERT_TRUE(nobody.ok());
  EXPECT_EQ(nobody->latents + nobody->jobs + nobody->request_ids, 0);

  absl::StatusOr<std::vector<TenantUsage>> all = store_->AllUsage();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].tenant, "");
  EXPECT_EQ((*all)[0].latents, 1);
  EXPECT_EQ((*all)[0].request_ids, 1);
  EXPECT_EQ((*all)[1].tenant, "a");
  EXPECT_EQ((*all)[1].latent_bytes, a->latent_bytes);
  EXPECT_EQ((*all)[1].job_bytes, 15);
  EXPECT_EQ((*all)[1].unfinished_jobs, 1);
  EXPECT_EQ((*all)[1].request_ids, 2);
  EXPECT_EQ((*all)[2].tenant, "c");
  EXPECT_EQ((*all)[2].jobs, 1);
  EXPECT_EQ((*all)[2].latents, 0);
}

TEST_P(StoreTest, ExpireOldDropsFinishedJobsWithTheirKeysAndOldKeys) {
  for (const auto& [id, state, finished] : std::vector<std::tuple<std::string, JobState, int64_t>>{
           {"job_old_done", JobState::kSucceeded, 100},
           {"job_old_failed", JobState::kFailed, 200},
           {"job_new_done", JobState::kCancelled, 5000},
           {"job_running", JobState::kRunning, 0}}) {
    JobRecord r = TenantJob(id, "a", state);
    r.finished_unix_ms = finished;
    ASSERT_TRUE(store_->CreateJob(r).ok());
    ASSERT_TRUE(store_->ClaimRequest("Embed@a", "key_" + id, "h", id).ok());
  }
  ASSERT_TRUE(store_->PutLatent(TenantLatent("lat_1", "a", 2)).ok());
  ASSERT_TRUE(store_->ClaimRequest("ImportLatent@a", "key_lat", "h", "lat_1").ok());

  // One job per call: the caller repeats while batches come back full.
  absl::StatusOr<Expired> first = store_->ExpireOld(1000, 0, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->jobs, 1);
  EXPECT_EQ(first->request_ids, 1);
  EXPECT_EQ(store_->GetJob("job_old_done").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->FindRequest("Embed@a", "key_job_old_done", "h").status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<Expired> second = store_->ExpireOld(1000, 0, 100);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->jobs, 1);
  EXPECT_EQ(store_->GetJob("job_old_failed").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetJob("job_new_done").ok());
  EXPECT_TRUE(store_->GetJob("job_running").ok());  // unfinished: never expired
  EXPECT_TRUE(store_->GetLatent("lat_1").ok());     // latents: never expired
  EXPECT_TRUE(store_->FindRequest("ImportLatent@a", "key_lat", "h").ok());

  // Keys by age (all were claimed just now).
  absl::StatusOr<Expired> keys = store_->ExpireOld(0, absl::ToUnixMillis(absl::Now()) + 60000, 100);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->jobs, 0);
  EXPECT_EQ(keys->request_ids, 3);
  EXPECT_EQ(store_->FindRequest("ImportLatent@a", "key_lat", "h").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetJob("job_new_done").ok());
  EXPECT_EQ(store_->ExpireOld(0, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Directions ----

TEST_P(StoreTest, DirectionRoundTripAndRepeats) {
  const DirectionRecord smile = MakeDirection("a", "fp_ffhq", "smile", 18, 4);
  ASSERT_TRUE(store_->PutDirection(smile).ok());
  absl::StatusOr<DirectionRecord> got = store_->GetDirection("a", "fp_ffhq", "smile");
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameDirection(smile, *got, /*with_values=*/true);
  absl::StatusOr<DirectionRecord> summary =
      store_->GetDirection("a", "fp_ffhq", "smile", /*with_values=*/false);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ExpectSameDirection(smile, *summary, /*with_values=*/false);

  // The same content again (a repeated call; model, provenance and time may differ): OK,
  // and the stored one is kept as it was.
  DirectionRecord repeat = smile;
  repeat.model = "ffhq-renamed";
  repeat.params_json = "{}";
  repeat.created_unix_ms = 9999;
  EXPECT_TRUE(store_->PutDirection(repeat).ok());
  ExpectSameDirection(smile, *store_->GetDirection("a", "fp_ffhq", "smile"), true);

  // Other content under the key: AlreadyExists naming it, nothing changed.
  DirectionRecord other_values = smile;
  other_values.values[5] = 0.5f;
  DirectionRecord signed_zero = smile;
  signed_zero.values[0] = 0.0f;  // bitwise: +0 is not -0
  DirectionRecord other_sigma = smile;
  other_sigma.sigma = 1;
  DirectionRecord other_source = smile;
  other_source.source = "wplus_npy";
  DirectionRecord other_shape = smile;
  other_shape.num_layers = 4;
  other_shape.latent_size = 18;
  for (const DirectionRecord& other :
       {other_values, signed_zero, other_sigma, other_source, other_shape}) {
    absl::Status status = store_->PutDirection(other);
    EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
    EXPECT_EQ(status.message(),
              R"(direction "smile" already exists for this model (delete it first))");
  }
  ExpectSameDirection(smile, *store_->GetDirection("a", "fp_ffhq", "smile"), true);

  // Deleted: gone, and the key is free for other content.
  ASSERT_TRUE(store_->DeleteDirection("a", "fp_ffhq", "smile").ok());
  absl::Status gone = store_->GetDirection("a", "fp_ffhq", "smile").status();
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound) << gone;
  EXPECT_EQ(gone.message(), R"(direction "smile" not found)");
  absl::Status again = store_->DeleteDirection("a", "fp_ffhq", "smile");
  EXPECT_EQ(again.code(), absl::StatusCode::kNotFound) << again;
  EXPECT_EQ(again.message(), R"(direction "smile" not found)");
  ASSERT_TRUE(store_->PutDirection(other_sigma).ok());
  EXPECT_EQ(store_->GetDirection("a", "fp_ffhq", "smile")->sigma, 1);
}

TEST_P(StoreTest, PutDirectionChecksTheShape) {
  DirectionRecord short_values = MakeDirection("a", "fp", "d");
  short_values.values.pop_back();
  DirectionRecord no_layers = MakeDirection("a", "fp", "d");
  no_layers.num_layers = 0;
  no_layers.values.clear();
  DirectionRecord negative = MakeDirection("a", "fp", "d");
  negative.num_layers = -2;
  negative.latent_size = -3;
  DirectionRecord no_name = MakeDirection("a", "fp", "");
  DirectionRecord nan_sigma = MakeDirection("a", "fp", "d");
  nan_sigma.sigma = std::numeric_limits<double>::quiet_NaN();
  for (const DirectionRecord& bad : {short_values, no_layers, negative, no_name, nan_sigma}) {
    absl::Status status = store_->PutDirection(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
  EXPECT_TRUE(absl::StrContains(store_->PutDirection(short_values).message(), "values has 5"));
  absl::StatusOr<DirectionPage> page = store_->ListDirections(Page{});
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->directions.empty());
  // A W direction: one row.
  EXPECT_TRUE(store_->PutDirection(MakeDirection("a", "fp", "w", 1, 512)).ok());
  EXPECT_EQ(store_->GetDirection("a", "fp", "w")->values.size(), 512u);
}

TEST_P(StoreTest, DirectionsArePerTenantAndModel) {
  // The same name under another tenant or another model is another direction.
  const DirectionRecord a_ffhq = MakeDirection("a", "fp_ffhq", "age");
  DirectionRecord a_cats = MakeDirection("a", "fp_cats", "age");
  a_cats.sigma = 5;
  DirectionRecord b_ffhq = MakeDirection("b", "fp_ffhq", "age", 1, 6);
  b_ffhq.source = "ganspace";
  ASSERT_TRUE(store_->PutDirection(a_ffhq).ok());
  ASSERT_TRUE(store_->PutDirection(a_cats).ok());
  ASSERT_TRUE(store_->PutDirection(b_ffhq).ok());
  ASSERT_TRUE(store_->PutDirection(MakeDirection("", "fp_ffhq", "pose")).ok());
  ExpectSameDirection(a_cats, *store_->GetDirection("a", "fp_cats", "age"), true);
  ExpectSameDirection(b_ffhq, *store_->GetDirection("b", "fp_ffhq", "age"), true);
  // Invisible to the others.
  EXPECT_EQ(store_->GetDirection("b", "fp_cats", "age").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetDirection("a", "fp_ffhq", "pose").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteDirection("c", "fp_ffhq", "age").code(), absl::StatusCode::kNotFound);

  using Keys = std::vector<std::string>;
  EXPECT_EQ(AllDirectionKeys(*store_, 10, "", std::string("a")),
            (Keys{"a/fp_cats/age", "a/fp_ffhq/age"}));
  EXPECT_EQ(AllDirectionKeys(*store_, 10, "fp_ffhq", std::string("a")), (Keys{"a/fp_ffhq/age"}));
  EXPECT_EQ(AllDirectionKeys(*store_, 10, "", std::string("b")), (Keys{"b/fp_ffhq/age"}));
  EXPECT_EQ(AllDirectionKeys(*store_, 10, "", std::string("")), (Keys{"/fp_ffhq/pose"}));
  EXPECT_TRUE(AllDirectionKeys(*store_, 10, "", std::string("c")).empty());
  // Every tenant's: by name, then fingerprint (then tenant).
  EXPECT_EQ(AllDirectionKeys(*store_, 10),
            (Keys{"a/fp_cats/age", "a/fp_ffhq/age", "b/fp_ffhq/age", "/fp_ffhq/pose"}));
  EXPECT_EQ(AllDirectionKeys(*store_, 10, "fp_ffhq"),
            (Keys{"a/fp_ffhq/age", "b/fp_ffhq/age", "/fp_ffhq/pose"}));

  // A delete takes that one only.
  ASSERT_TRUE(store_->DeleteDirection("a", "fp_ffhq", "age").ok());
  EXPECT_TRUE(store_->GetDirection("a", "fp_cats", "age").ok());
  EXPECT_TRUE(store_->GetDirection("b", "fp_ffhq", "age").ok());
}

TEST_P(StoreTest, ListDirectionsPagesByNameThenFingerprint) {
  // Names and fingerprints with ':' and bytes above 0x7f (ordered bytewise), two
  // fingerprints per name, in two tenants (ties on name and fingerprint across tenants).
  std::vector<std::string> names = {"b:1", "a", "\xc3\xa9t\xc3\xa9", "a:b", "Z", "b", "a:"};
  std::vector<std::string> want_a, want_all;
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  for (const std::string& name : names) {
    for (const std::string fp : {"fp:2", "fp:1"}) {
      ASSERT_TRUE(store_->PutDirection(MakeDirection("a", fp, name)).ok());
      ASSERT_TRUE(store_->PutDirection(MakeDirection("a:b", fp, name)).ok());
    }
  }
  for (const std::string& name : sorted) {
    for (const std::string fp : {"fp:1", "fp:2"}) {
      want_a.push_back(absl::StrCat("a/", fp, "/", name));
      want_all.push_back(absl::StrCat("a/", fp, "/", name));
      want_all.push_back(absl::StrCat("a:b/", fp, "/", name));
    }
  }
  for (int page_size : {1, 2, 3, 13, 14, 15, 1000}) {
    EXPECT_EQ(AllDirectionKeys(*store_, page_size, "", std::string("a")), want_a) << page_size;
    EXPECT_EQ(AllDirectionKeys(*store_, page_size), want_all) << page_size;
  }
  std::vector<std::string> want_fp1;
  for (const std::string& key : want_a) {
    if (absl::StrContains(key, "/fp:1/")) want_fp1.push_back(key);
  }
  EXPECT_EQ(AllDirectionKeys(*store_, 2, "fp:1", std::string("a")), want_fp1);

  // Stable under writes: a new direction ahead of the cursor and the deletion of a listed
  // one shift nothing.
  absl::StatusOr<DirectionPage> first = store_->ListDirections(Page{3, ""}, "", std::string("a"));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->directions.size(), 3u);
  ASSERT_TRUE(store_->PutDirection(MakeDirection("a", "fp:0", "A")).ok());
  ASSERT_TRUE(store_->DeleteDirection("a", "fp:1", "Z").ok());
  absl::StatusOr<DirectionPage> second =
      store_->ListDirections(Page{2, first->next_page_token}, "", std::string("a"));
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->directions.size(), 2u);
  EXPECT_EQ(second->directions[0].name, "a");
  EXPECT_EQ(second->directions[0].fingerprint, "fp:2");
  EXPECT_EQ(second->directions[1].name, "a:");

  // Page size 0 is 50; bad sizes and tokens are InvalidArgument.
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(store_->PutDirection(MakeDirection("c", "fp", absl::StrCat("d", 100 + i))).ok());
  }
  absl::StatusOr<DirectionPage> all = store_->ListDirections(Page{0, ""});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->directions.size(), 50u);
  EXPECT_FALSE(all->next_page_token.empty());
  for (int size : {-1, 1001}) {
    absl::Status status = store_->ListDirections(Page{size, ""}).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_TRUE(absl::StrContains(status.message(), "page_size")) << status;
  }
  EXPECT_TRUE(store_->ListDirections(Page{1000, ""}).ok());
  for (const std::string token :
       {"!!!", "bm90IGEgdG9rZW4", "RDox" /* D:1 */, "RDoxOmE" /* D:1:a */,
        "RDoxOmExOmIxOmM6" /* D:1:a1:b1:c: (trailing) */, "RDo5OmE" /* D:9:a */}) {
    absl::Status status = store_->ListDirections(Page{10, token}).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << token;
    EXPECT_TRUE(absl::StrContains(status.message(), "page_token")) << status << token;
  }
  // A token of another listing is refused, both ways.
  ASSERT_TRUE(store_->PutLatent(BareLatent("lat_1", 1)).ok());
  ASSERT_TRUE(store_->PutLatent(BareLatent("lat_2", 2)).ok());
  absl::StatusOr<LatentPage> latents = store_->ListLatents(Page{1, ""});
  ASSERT_TRUE(latents.ok());
  EXPECT_EQ(store_->ListDirections(Page{1, latents->next_page_token}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListLatents(Page{1, all->next_page_token}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, QuotaOnDirectionsCountsEveryModelOfTheTenant) {
  StorageQuota quota;
  quota.max_directions = 3;
  quota.max_latents = 1;  // another quota: does not count directions
  store_->set_quota(quota);
  ASSERT_TRUE(store_->PutDirection(MakeDirection("a", "fp_1", "d0")).ok());
  ASSERT_TRUE(store_->PutDirection(MakeDirection("a", "fp_2", "d1")).ok());
  ASSERT_TRUE(store_->PutDirection(MakeDirection("a", "fp_2", "d2")).ok());
  absl::Status refused = store_->PutDirection(MakeDirection("a", "fp_3", "d3"));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "direction quota")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "tenant \"a\" keeps 3 directions")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "limit is 3")) << refused;
  EXPECT_EQ(store_->GetDirection("a", "fp_3", "d3").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<TenantUsage> usage = store_->Usage("a");
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->directions, 3);
  // At the limit, a repeat of a stored one is still OK, and other content AlreadyExists.
  EXPECT_TRUE(store_->PutDirection(MakeDirection("a", "fp_1", "d0")).ok());
  DirectionRecord changed = MakeDirection("a", "fp_1", "d0");
  changed.sigma = 9;
  EXPECT_EQ(store_->PutDirection(changed).code(), absl::StatusCode::kAlreadyExists);
  // Other tenants have their own; latents are counted apart.
  EXPECT_TRUE(store_->PutDirection(MakeDirection("b", "fp_3", "d3")).ok());
  EXPECT_TRUE(store_->PutLatent(TenantLatent("lat_a", "a", 2)).ok());
  // Room again once one is deleted.
  ASSERT_TRUE(store_->DeleteDirection("a", "fp_2", "d1").ok());
  EXPECT_TRUE(store_->PutDirection(MakeDirection("a", "fp_3", "d3")).ok());
}

TEST_P(StoreTest, ConcurrentDirectionWritersCannotPassTheQuotaNorOverwrite) {
  StorageQuota quota;
  quota.max_directions = 15;
  store_->set_quota(quota);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 10; ++i) {
        absl::Status s =
            store_->PutDirection(MakeDirection("a", "fp", absl::StrCat("d", t, "_", i)));
        EXPECT_TRUE(s.ok() || absl::IsResourceExhausted(s)) << s;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  absl::StatusOr<TenantUsage> usage = store_->Usage("a");
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->directions, 15);

  // Without a quota: racing puts of one key with different content store one of them,
  // and every other gets AlreadyExists; with the same content, every one gets OK.
  store_->set_quota(StorageQuota{});
  for (const bool same : {false, true}) {
    const std::string name = same ? "same" : "different";
    std::vector<absl::Status> results(4);
    threads.clear();
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([this, t, same, &name, &results] {
        DirectionRecord d = MakeDirection("b", "fp", name);
        if (!same) d.sigma = t + 1;
        results[t] = store_->PutDirection(d);
      });
    }
    for (std::thread& t : threads) t.join();
    int ok = 0;
    for (const absl::Status& s : results) {
      if (s.ok()) {
        ++ok;
      } else {
        EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
      }
    }
    EXPECT_EQ(ok, same ? 4 : 1) << name;
    absl::StatusOr<DirectionRecord> stored = store_->GetDirection("b", "fp", name);
    ASSERT_TRUE(stored.ok()) << stored.status();
    if (!same) {
      // The one stored is the winner's.
      const int winner = static_cast<int>(stored->sigma) - 1;
      ASSERT_GE(winner, 0);
      ASSERT_LT(winner, 4);
      EXPECT_TRUE(results[winner].ok()) << results[winner];
    }
  }
}

TEST_P(StoreTest, UsageCountsDirections) {
  ASSERT_TRUE(store_->PutDirection(MakeDirection("a", "fp_1", "d0", 2, 3)).ok());
  ASSERT_TRUE(store_->PutDirection(MakeDirection("a", "fp_2", "d0", 1, 5)).ok());
  ASSERT_TRUE(store_->PutLatent(TenantLatent("lat_1", "a", 4)).ok());
  // A tenant that keeps nothing but a direction.
  ASSERT_TRUE(store_->PutDirection(MakeDirection("only_dirs", "fp_1", "d0", 18, 2)).ok());

  absl::StatusOr<TenantUsage> a = store_->Usage("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->directions, 2);
  EXPECT_EQ(a->direction_bytes, (2 * 3 + 1 * 5) * 4);
  EXPECT_EQ(a->latents, 1);
  EXPECT_EQ(a->latent_bytes, 4 * 4);  // directions are not latent bytes
  absl::StatusOr<TenantUsage> nobody = store_->Usage("nobody");
  ASSERT_TRUE(nobody.ok());
  EXPECT_EQ(nobody->directions, 0);
  EXPECT_EQ(nobody->direction_bytes, 0);

  absl::StatusOr<std::vector<TenantUsage>> all = store_->AllUsage();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].tenant, "a");
  EXPECT_EQ((*all)[0].directions, 2);
  EXPECT_EQ((*all)[0].direction_bytes, a->direction_bytes);
  EXPECT_EQ((*all)[0].latents, 1);
  EXPECT_EQ((*all)[1].tenant, "only_dirs");
  EXPECT_EQ((*all)[1].directions, 1);
  EXPECT_EQ((*all)[1].direction_bytes, 18 * 2 * 4);
  EXPECT_EQ((*all)[1].latents + (*all)[1].jobs + (*all)[1].request_ids, 0);

  ASSERT_TRUE(store_->DeleteDirection("a", "fp_1", "d0").ok());
  EXPECT_EQ(store_->Usage("a")->directions, 1);
  EXPECT_EQ(store_->Usage("a")->direction_bytes, 5 * 4);
}

// ---- PostgreSQL only ----

class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (PostgresUnderTest() == nullptr) {
      GTEST_SKIP() << "I2S_TEST_POSTGRES is not set (ctest's store_test_postgres sets it)";
    }
    conninfo_ = PostgresUnderTest();
    ResetPostgres(conninfo_);
  }
  std::string conninfo_;
};

TEST_F(PostgresTest, ReplicasStartingTogetherMigrateOnce) {
  constexpr int kReplicas = 4;
  std::vector<absl::Status> results(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back(
        [this, &results, i] { results[i] = PostgresStore::Open(conninfo_).status(); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(QuerySql(conninfo_, "SELECT count(*) FROM i2s_schema"), "1");
  EXPECT_EQ(QuerySql(conninfo_, "SELECT version FROM i2s_schema"), "6");
}

TEST_F(PostgresTest, RefusesNewerSchema) {
  ASSERT_NE(OpenPostgresOrDie(conninfo_), nullptr);
  ASSERT_EQ(RunSql(conninfo_, "UPDATE i2s_schema SET version = 99"), "");
  absl::Status status = PostgresStore::Open(conninfo_).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(status.message(), "99")) << status;
}

TEST_F(PostgresTest, UnreachableServerIsUnavailableWithoutThePassword) {
  // Port 1 on loopback: nothing listens there.
  absl::Status status =
      PostgresStore::Open("postgresql://i2s:s3cret-pw@127.0.0.1:1/i2s?connect_timeout=2").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "127.0.0.1:1/i2s")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "s3cret-pw")) << status;
}

TEST_F(PostgresTest, ReconnectsAfterTheServerDroppedEveryConnection) {
  std::unique_ptr<PostgresStore> store = OpenPostgresOrDie(conninfo_);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutLatent(FullLatent("lat_1")).ok());
  // What a restart of the server does to open connections.
  ASSERT_EQ(RunSql(conninfo_,
                   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE application_name = 'i2s_server'"),
            "");
  // The next calls find their connection broken and retry on a fresh one.
  absl::StatusOr<LatentRecord> got = store->GetLatent("lat_1");
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameLatent(FullLatent("lat_1"), *got, /*with_values=*/true);
  EXPECT_TRUE(store->PutLatent(FullLatent("lat_2")).ok());
  EXPECT_EQ(store->PutLatent(FullLatent("lat_2")).code(), absl::StatusCode::kAlreadyExists);
  // An INSERT cut off by the break: retried after checking that it did not land.
  const std::string terminate =
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
      " WHERE application_name = 'i2s_server'";
  ASSERT_EQ(RunSql(conninfo_, terminate), "");
  EXPECT_TRUE(store->PutLatent(FullLatent("lat_3")).ok());
  ASSERT_EQ(RunSql(conninfo_, terminate), "");
  EXPECT_TRUE(store->CreateJob(FullJob("job_1")).ok());
  EXPECT_TRUE(store->GetLatent("lat_3").ok());
  EXPECT_TRUE(store->GetJob("job_1").ok());
}

TEST_F(PostgresTest, NonUtf8TextIsInvalidArgument) {
  std::unique_ptr<PostgresStore> store = OpenPostgresOrDie(conninfo_);
  ASSERT_NE(store, nullptr);
  LatentRecord r = FullLatent("lat_1");
  r.model = "bad \xff byte";
  EXPECT_EQ(store->PutLatent(r).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PostgresTest, LeasesFollowTheDatabaseClock) {
  // Two replicas whose clocks are an hour off, one slow and one fast: leases are set and
  // judged by the database's clock, so neither skew takes a live job or keeps a dead one.
  std::unique_ptr<PostgresStore> slow = OpenPostgresOrDie(conninfo_);
  std::unique_ptr<PostgresStore> fast = OpenPostgresOrDie(conninfo_);
  ASSERT_NE(slow, nullptr);
  ASSERT_NE(fast, nullptr);
  constexpr int64_t kHour = 3600 * 1000, kLease = 60 * 1000;
  ASSERT_TRUE(slow->CreateJob(QueuedJob("job_1", 1, "", 0)).ok());
  const int64_t real = absl::ToUnixMillis(absl::Now());  // the server runs on this machine
  auto claimed = slow->ClaimJobs("slow", real - kHour, kLease, ClaimScope::kExpiredAndOwn);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_NEAR(claimed->front().lease_expires_unix_ms, real + kLease, 30 * 1000);
  // The fast replica's clock is past the lease, the database's is not: not taken.
  auto stolen = fast->ClaimJobs("fast", real + kHour, kLease, ClaimScope::kExpired);
  ASSERT_TRUE(stolen.ok()) << stolen.status();
  EXPECT_TRUE(stolen->empty());
  EXPECT_EQ(fast->GetJob("job_1")->owner, "slow");
  // A renewal by the slow clock still runs a lease from the database's now.
  ASSERT_EQ(slow->RenewLeases("slow", real - kHour, kLease)->size(), 1u);
  EXPECT_NEAR(slow->GetJob("job_1")->lease_expires_unix_ms, real + kLease, 30 * 1000);
  // A lease the database sees as run out is taken, whatever the taker's clock says.
  ASSERT_EQ(slow->RenewLeases("slow", real, -kLease)->size(), 1u);
  auto taken = fast->ClaimJobs("fast", real - kHour, kLease, ClaimScope::kExpired);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(taken->size(), 1u);
}

TEST_F(PostgresTest, ANewJobsFirstLeaseFollowsTheDatabaseClock) {
  // A replica whose clock is an hour slow creates jobs with a lease of a minute: by its
  // clock that lease ran out long ago. The database's clock sets it instead, so a replica
  // whose clock is right does not take the job from its creator.
  std::unique_ptr<PostgresStore> slow = OpenPostgresOrDie(conninfo_);
  std::unique_ptr<PostgresStore> right = OpenPostgresOrDie(conninfo_);
  ASSERT_NE(slow, nullptr);
  ASSERT_NE(right, nullptr);
  constexpr int64_t kHour = 3600 * 1000, kLease = 60 * 1000;
  const int64_t real = absl::ToUnixMillis(absl::Now());  // the server runs on this machine
  JobRecord job = QueuedJob("job_1", real - kHour, "slow", real - kHour + kLease);
  job.lease_epoch = 1;
  ASSERT_TRUE(slow->CreateJob(job).ok());
  JobRecord keyed = QueuedJob("job_2", real - kHour, "slow", real - kHour + kLease);
  keyed.lease_epoch = 1;
  auto created = slow->CreateJobWithClaim(keyed, RequestClaim{"Embed", "key_2", "h"});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(*created, "job_2");
  // Nobody holds a job without an owner: stored as given, and claimable at once.
  ASSERT_TRUE(slow->CreateJob(QueuedJob("job_free", real, "", 0)).ok());
  for (const char* id : {"job_1", "job_2"}) {
    auto got = right->GetJob(id);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_NEAR(got->lease_expires_unix_ms, real + kLease, 30 * 1000) << id;
    EXPECT_EQ(got->created_unix_ms, real - kHour) << id;  // the creator's, as given
    EXPECT_EQ(got->lease_epoch, 1) << id;
  }
  EXPECT_EQ(right->GetJob("job_free")->lease_expires_unix_ms, 0);
  auto claimed = right->ClaimJobs("right", real, kLease, ClaimScope::kExpired);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_EQ(IdsOf(*claimed), std::vector<std::string>{"job_free"});
  EXPECT_EQ(right->GetJob("job_1")->owner, "slow");
}

TEST_F(PostgresTest, MigratesAVersion3DatabaseToLeaseEpochs) {
  PostgresOptions options;
  options.database_clock = false;  // this test drives time itself
  {
    std::unique_ptr<PostgresStore> store = OpenPostgresOrDie(conninfo_, options);
    ASSERT_NE(store, nullptr);
    JobRecord job = QueuedJob("job_old", 10, "a", 7000);
    job.progress = R"({"step":40})";
    ASSERT_TRUE(store->CreateJob(job).ok());
  }
  // Back to the released version-3 schema: no lease_epoch or total_steps column, no
  // directions table.
  ASSERT_EQ(RunSql(conninfo_,
                   "DROP TABLE directions;"
                   " ALTER TABLE jobs DROP COLUMN lease_epoch;"
                   " ALTER TABLE jobs DROP COLUMN total_steps;"
                   " UPDATE i2s_schema SET version = 3;"),
            "");
  std::unique_ptr<PostgresStore> store = OpenPostgresOrDie(conninfo_, options);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(QuerySql(conninfo_, "SELECT version FROM i2s_schema"), "6");
  auto job = store->GetJob("job_old");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->owner, "a");
  EXPECT_EQ(job->lease_expires_unix_ms, 7000);
  EXPECT_EQ(job->lease_epoch, 0);
  EXPECT_EQ(job->progress, R"({"step":40})");
  EXPECT_EQ(job->spec, FullJob("job_old").spec);
  EXPECT_EQ(job->total_steps, -1);  // until the scheduler reads it from the spec
  // A replica of the previous release, still running, creates jobs without the column.
  EXPECT_EQ(RunSql(conninfo_,
                   "INSERT INTO jobs (id, tenant, request_id, model, state, cancel_requested,"
                   " checkpoint_step, latent_id, error_code, error_message, next_sequence,"
                   " created_unix_ms, started_unix_ms, finished_unix_ms, owner,"
                   " lease_expires_unix_ms, progress, result, spec, checkpoint) VALUES"
                   " ('job_older', '', '', 'ffhq', 1, FALSE, 0, '', 0, '', 1, 20, 0, 0, 'b',"
                   " 9000, '', ''::bytea, ''::bytea, ''::bytea)"),
            "");
  EXPECT_EQ(store->GetJob("job_older")->lease_epoch, 0);
  auto claimed = store->ClaimJobs("a", 100, 1000, ClaimScope::kExpiredAndOwn);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].lease_epoch, 1);
  EXPECT_EQ(store->SaveProgress("job_old", "a", 0, "{}").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(PostgresTest, MigratesAVersion5DatabaseToDirections) {
  {
    std::unique_ptr<PostgresStore> store = OpenPostgresOrDie(conninfo_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->PutLatent(FullLatent("lat_old")).ok());
  }
  // Back to the released version-5 schema: no directions table.
  ASSERT_EQ(RunSql(conninfo_, "DROP TABLE directions; UPDATE i2s_schema SET version = 5;"), "");
  std::unique_ptr<PostgresStore> store = OpenPostgresOrDie(conninfo_);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(QuerySql(conninfo_, "SELECT version FROM i2s_schema"), "6");
  auto latent = store->GetLatent("lat_old");
  ASSERT_TRUE(latent.ok()) << latent.status();
  ExpectSameLatent(FullLatent("lat_old"), *latent, /*with_values=*/true);
  const DirectionRecord smile = MakeDirection("team-a", "fp_ffhq", "smile");
  ASSERT_TRUE(store->PutDirection(smile).ok());
  ExpectSameDirection(smile, *store->GetDirection("team-a", "fp_ffhq", "smile"), true);
}

// Two replicas (two pools) putting one tenant's directions at once stay within its quota:
// the quota lock is the database's, not the process's.
TEST_F(PostgresTest, TwoReplicasCannotPassADirectionQuotaTogether) {
  std::unique_ptr<PostgresStore> a = OpenPostgresOrDie(conninfo_);
  std::unique_ptr<PostgresStore> b = OpenPostgresOrDie(conninfo_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  StorageQuota quota;
  quota.max_directions = 7;
  a->set_quota(quota);
  b->set_quota(quota);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      PostgresStore& store = t % 2 == 0 ? *a : *b;
      for (int i = 0; i < 5; ++i) {
        absl::Status s = store.PutDirection(MakeDirection("a", "fp", absl::StrCat("d", t, "_", i)));
        EXPECT_TRUE(s.ok() || absl::IsResourceExhausted(s)) << s;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(QuerySql(conninfo_, "SELECT count(*) FROM directions WHERE tenant = 'a'"), "7");
}

TEST_F(PostgresTest, TwoReplicasNeverClaimTheSameJob) {
  std::unique_ptr<PostgresStore> a = OpenPostgresOrDie(conninfo_);
  std::unique_ptr<PostgresStore> b = OpenPostgresOrDie(conninfo_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  constexpr int kJobs = 200;
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(a->CreateJob(QueuedJob(absl::StrCat("job_", i), i, "dead", 0)).ok());
  }
  std::vector<JobRecord> got_a, got_b;
  std::thread ta([&] { got_a = *a->ClaimJobs("a", 1000, 60000, ClaimScope::kExpired); });
  std::thread tb([&] { got_b = *b->ClaimJobs("b", 1000, 60000, ClaimScope::kExpired); });
  ta.join();
  tb.join();
  std::set<std::string> ids;
  for (const JobRecord& j : got_a) ids.insert(j.id);
  for (const JobRecord& j : got_b) EXPECT_TRUE(ids.insert(j.id).second) << j.id << " twice";
  EXPECT_EQ(ids.size(), static_cast<size_t>(kJobs));
  // And what one replica wrote, the other reads.
  ASSERT_TRUE(a->PutLatent(FullLatent("lat_shared")).ok());
  auto seen = b->GetLatent("lat_shared");
  ASSERT_TRUE(seen.ok()) << seen.status();
  ExpectSameLatent(FullLatent("lat_shared"), *seen, /*with_values=*/true);
}

}  // namespace
}  // namespace i2s
