// The two store backends' schemas, each as its list of migrations: element v takes a
// database from schema version v to v + 1 (SQLite: PRAGMA user_version; PostgreSQL: the
// i2s_schema table), and the number of elements is the version this server writes.
// Append only; never edit a released step. JobState values are persisted in them, so the
// enum's values never change. Internal to server/store.
#ifndef I2S_SERVER_STORE_SCHEMA_H_
#define I2S_SERVER_STORE_SCHEMA_H_

#include "absl/types/span.h"

namespace i2s::store_internal {

absl::Span<const char* const> SqliteMigrations();    // sqlite_schema.cc
absl::Span<const char* const> PostgresMigrations();  // postgres_schema.cc

}  // namespace i2s::store_internal

#endif  // I2S_SERVER_STORE_SCHEMA_H_
