#include "server/app/open_store.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/store/postgres_store.h"
#include "server/store/sqlite_store.h"

namespace i2s {

absl::StatusOr<OpenedStore> OpenStore(const std::string& store_flag, const std::string& data_dir,
                                      int pool_size) {
  OpenedStore opened;
  if (store_flag.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(data_dir, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("--data-dir ", data_dir, ": ", ec.message()));
    }
    auto sqlite = SqliteStore::Open((std::filesystem::path(data_dir) / "i2s.sqlite").string());
    if (!sqlite.ok()) return Annotate(sqlite.status(), "--data-dir");
    opened.store = *std::move(sqlite);
    opened.where = absl::StrCat("--data-dir ", data_dir);
    return opened;
  }
  if (!absl::StartsWith(store_flag, "postgres://") &&
      !absl::StartsWith(store_flag, "postgresql://") && !absl::StrContains(store_flag, "=")) {
    return absl::InvalidArgumentError(
        "--store: give a postgres:// URI or a libpq key=value string "
        "(without --store, the SQLite store in --data-dir is used)");
  }
  PostgresOptions po;
  po.pool_size = pool_size;
  auto pg = PostgresStore::Open(store_flag, po);
  if (!pg.ok()) return Annotate(pg.status(), "--store");
  opened.where = absl::StrCat("--store ", (*pg)->description());
  opened.store = *std::move(pg);
  return opened;
}

}  // namespace i2s
