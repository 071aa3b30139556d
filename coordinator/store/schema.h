// The coordinator's SQLite schema, in one place: an ordered list of migrations. Migration i
// (0-based) takes a database from schema version i to i+1; Db::Open applies the missing ones
// in one transaction and records each in the schema_version table. Never edit a migration
// that has shipped: append a new one.
#ifndef HERD_COORDINATOR_STORE_SCHEMA_H_
#define HERD_COORDINATOR_STORE_SCHEMA_H_

#include <string_view>
#include <vector>

namespace herd::coordinator::store {

extern const std::vector<std::string_view> kMigrations;

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_SCHEMA_H_
