// The store i2s_server keeps its latents and jobs in: SQLite in --data-dir (created if
// missing), or PostgreSQL with --store (shared by replicas; migrated at open).
#ifndef I2S_SERVER_APP_OPEN_STORE_H_
#define I2S_SERVER_APP_OPEN_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/store/store.h"

namespace i2s {

struct OpenedStore {
  std::unique_ptr<Store> store;
  // For messages: "--data-dir DIR" or "--store " and the database without its password.
  std::string where;
};

// `store_flag` empty: SQLite in `data_dir`; else a postgres:// URI or a libpq key=value
// string, with `pool_size` connections. Errors name the flag.
absl::StatusOr<OpenedStore> OpenStore(const std::string& store_flag, const std::string& data_dir,
                                      int pool_size);

}  // namespace i2s

#endif  // I2S_SERVER_APP_OPEN_STORE_H_
