// store_bench: the cost of the store operations the service makes, for SQLite and
// PostgreSQL side by side (the same calls on both). One thread, then `--threads` threads
// sharing the store. Latents are the size of an FFHQ W+ (18 x 512 float32, 36 KiB).
//
//   store_bench [--ops 2000] [--threads 4] [--sqlite DIR] [--postgres URL]
//   tests/with_postgres sh -c 'build/bench/store_bench --postgres "$I2S_TEST_POSTGRES"'
//
// Prints one table row per backend and operation: operations per second and the mean
// latency of one call.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/store/postgres_store.h"
#include "server/store/sqlite_store.h"

namespace {

using Clock = std::chrono::steady_clock;

i2s::LatentRecord Latent(const std::string& id, int64_t created) {
  i2s::LatentRecord r;
  r.id = id;
  r.tenant = "bench";
  r.model = "ffhq";
  r.fingerprint = "fp";
  r.num_layers = 18;
  r.latent_size = 512;
  r.values.assign(18 * 512, 0.25f);
  r.source = "import";
  r.created_unix_ms = created;
  return r;
}

// Runs `op(thread, i)` ops times in total over `threads` threads; returns seconds.
double Time(int ops, int threads, const std::function<void(int, int)>& op) {
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = t; i < ops; i += threads) op(t, i);
    });
  }
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void Row(const char* backend, const std::string& what, int threads, int ops, double seconds) {
  std::printf("| %s | %s | %d | %d | %.0f | %.3f |\n", backend, what.c_str(), threads, ops,
              ops / seconds, 1000.0 * seconds * threads / ops);
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "store_bench: %s: %s\n", what, std::string(s.message()).c_str());
    std::exit(1);
  }
}

void Bench(const char* backend, i2s::Store& store, int ops, int threads) {
  for (int n : {1, threads}) {
    const std::string run = absl::StrCat(backend, n);
    Row(backend, "PutLatent (36 KiB)", n, ops, Time(ops, n, [&](int, int i) {
          Check(store.PutLatent(Latent(absl::StrCat(run, "_", i), i)), "PutLatent");
        }));
    Row(backend, "GetLatent with values", n, ops, Time(ops, n, [&](int, int i) {
          Check(store.GetLatent(absl::StrCat(run, "_", i)).status(), "GetLatent");
        }));
    Row(backend, "ListLatents (page of 50)", n, ops / 10, Time(ops / 10, n, [&](int, int) {
          Check(store.ListLatents(i2s::Page{50, ""}).status(), "ListLatents");
        }));
    // A job's life: create, a checkpoint (a W+ plus Adam moments, ~110 KiB), progress,
    // the final record.
    const std::string checkpoint(110 * 1024, 'c');
    Row(backend, "job: Create+Checkpoint+Progress+Update", n, ops / 4,
        Time(ops / 4, n, [&](int, int i) {
          i2s::JobRecord j;
          j.id = absl::StrCat("job_", run, "_", i);
          j.tenant = "bench";
          j.owner = "r";
          j.lease_epoch = 1;
          j.spec = std::string(2048, 's');
          j.created_unix_ms = i;
          Check(store.CreateJob(j), "CreateJob");
          Check(store.SaveCheckpoint(j.id, 10, checkpoint, 20, "r", 1), "SaveCheckpoint");
          Check(store.SaveProgress(j.id, "r", 1, R"({"step":10})"), "SaveProgress");
          j.state = i2s::JobState::kSucceeded;
          Check(store.UpdateJob(j), "UpdateJob");
        }));
  }
  Row(backend, "RenewLeases (no unfinished jobs)", 1, ops, Time(ops, 1, [&](int, int i) {
        Check(store.RenewLeases("r", i, 15000).status(), "RenewLeases");
      }));
}

}  // namespace

int main(int argc, char** argv) {
  int ops = 2000, threads = 4;
  std::string sqlite_dir, postgres;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--ops") {
      ops = std::atoi(value.c_str());
    } else if (flag == "--threads") {
      threads = std::atoi(value.c_str());
    } else if (flag == "--sqlite") {
      sqlite_dir = value;
    } else if (flag == "--postgres") {
      postgres = value;
    } else {
      std::fprintf(stderr, "store_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (ops < 40 || threads < 1) {
    std::fprintf(stderr, "store_bench: --ops must be >= 40 and --threads >= 1\n");
    return 2;
  }
  std::printf("| backend | operation | threads | calls | calls/s | ms per call |\n");
  std::printf("|---|---|---:|---:|---:|---:|\n");
  {
    const std::string dir =
        sqlite_dir.empty() ? (std::filesystem::temp_directory_path() / "i2s-store-bench").string()
                           : sqlite_dir;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto store = i2s::SqliteStore::Open(dir + "/i2s.sqlite");
    Check(store.status(), "opening SQLite");
    Bench("SQLite", **store, ops, threads);
    std::filesystem::remove_all(dir);
  }
  if (!postgres.empty()) {
    i2s::PostgresOptions options;
    options.pool_size = threads;
    auto store = i2s::PostgresStore::Open(postgres, options);
    Check(store.status(), "opening PostgreSQL");
    Bench("PostgreSQL", **store, ops, threads);
  }
  return 0;
}
