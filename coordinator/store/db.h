// A small RAII wrapper over one SQLite connection: WAL, synchronous=FULL, foreign keys, a busy
// timeout, cached prepared statements, and transactions as callbacks that commit on OK and roll
// back otherwise. Every SQLite error becomes an absl::Status carrying the SQL it came from; no
// call crashes on a database error.
//
// Threading: one connection serves the whole process, guarded by one mutex that a transaction
// holds from BEGIN to COMMIT. SQLite serialises writers anyway, and the coordinator's write rate
// (transitions, events, checkpoints; never heartbeats) is far below what one connection does.
// A transaction started inside another on the same thread joins it as a SAVEPOINT, so domain
// stores can be composed atomically: db.Write([&](Tx&) { a.Create(...); b.Finish(...); }).
#ifndef HERD_COORDINATOR_STORE_DB_H_
#define HERD_COORDINATOR_STORE_DB_H_

#include <atomic>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

struct sqlite3;
struct sqlite3_stmt;

namespace herd::coordinator::store {

struct DbOptions {
  // Path of the database file; created (with its schema) when missing.
  std::string path;
  // How long a statement waits for a lock held by another connection (a second process, or the
  // sqlite3 shell) before failing with UNAVAILABLE.
  absl::Duration busy_timeout = absl::Seconds(10);

  // INVALID_ARGUMENT naming the field at fault.
  absl::Status Validate() const;
};

// A value bound to a `?` placeholder. Strings are copied by SQLite when bound.
class Value {
 public:
  Value() : v_(nullptr) {}
  Value(std::nullptr_t) : v_(nullptr) {}
  Value(std::nullopt_t) : v_(nullptr) {}
  template <std::integral T>
  Value(T v) : v_(static_cast<int64_t>(v)) {}
  Value(double v) : v_(v) {}
  Value(std::string_view v) : v_(v) {}
  Value(const std::string& v) : v_(std::string_view(v)) {}
  Value(const char* v) : v_(std::string_view(v)) {}
  template <typename T>
  Value(const std::optional<T>& v) : Value(v ? Value(*v) : Value()) {}

  const std::variant<std::nullptr_t, int64_t, double, std::string_view>& get() const { return v_; }

 private:
  std::variant<std::nullptr_t, int64_t, double, std::string_view> v_;
};

// One result row, copied out of SQLite (so rows outlive the statement that made them).
class Row {
 public:
  bool IsNull(int col) const;
  int64_t Int(int col) const;  // 0 for NULL
  double Double(int col) const;
  std::string Text(int col) const;  // "" for NULL
  std::optional<int64_t> OptInt(int col) const;
  std::optional<double> OptDouble(int col) const;
  std::optional<std::string> OptText(int col) const;
  size_t size() const { return cells_.size(); }

 private:
  friend class Tx;
  std::vector<std::variant<std::nullptr_t, int64_t, double, std::string>> cells_;
};

class Db;

// What a transaction callback gets: the only way to run SQL, so every statement is inside one.
// Arguments bind to ?, ?N placeholders in order: tx.Exec("... WHERE id = ?", {id}).
class Tx {
 public:
  // Runs a statement to completion; returns how many rows it changed.
  absl::StatusOr<int64_t> Exec(std::string_view sql, absl::Span<const Value> args = {});
  // Runs a query and returns all its rows.
  absl::StatusOr<std::vector<Row>> Query(std::string_view sql,
                                         absl::Span<const Value> args = {});
  // Runs a query expected to return at most one row.
  absl::StatusOr<std::optional<Row>> QueryOne(std::string_view sql,
                                              absl::Span<const Value> args = {});
  // Runs several ;-separated statements without arguments (schema migrations).
  absl::Status ExecScript(std::string_view sql);
  // Raises the change signal `name` (Db::AwaitSignal) once this transaction commits; nothing
  // happens if it (or the savepoint that raised it) rolls back.
  void Signal(std::string_view name);

 private:
  friend class Db;
  explicit Tx(Db* db) : db_(db) {}
  absl::StatusOr<sqlite3_stmt*> Bind(std::string_view sql, absl::Span<const Value> args);
  Db* const db_;
};

class Db {
 public:
  static absl::StatusOr<std::unique_ptr<Db>> Open(const DbOptions& options);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs fn in a write transaction (BEGIN IMMEDIATE): committed when fn returns OK, rolled back
  // otherwise, and fn's status is returned. Inside another transaction of this thread it runs
  // as a SAVEPOINT of that one (rolled back alone on error; durable when the outer commits).
  absl::Status Write(absl::FunctionRef<absl::Status(Tx&)> fn);
  // Runs fn in a read transaction (one consistent snapshot). Inside another transaction of this
  // thread it simply runs in that one.
  absl::Status Read(absl::FunctionRef<absl::Status(Tx&)> fn);

  // Change signals, so readers can wait for commits instead of polling: a counter per name that
  // goes up after each committed transaction that called tx.Signal(name).
  int64_t SignalCount(std::string_view name) const;
  // Waits until SignalCount(name) > seen or `deadline` passes; returns whether it went up.
  bool AwaitSignal(std::string_view name, int64_t seen, absl::Time deadline) const;

  // Schema version after Open's migrations.
  int schema_version() const { return schema_version_; }
  const std::string& path() const { return path_; }

 private:
  friend class Tx;
  Db(std::string path, sqlite3* handle) : path_(std::move(path)), handle_(handle) {}
  absl::Status Run(bool write, absl::FunctionRef<absl::Status(Tx&)> fn);
  absl::Status Simple(std::string_view sql);  // BEGIN/COMMIT/SAVEPOINT..., with mu_ held
  absl::Status Migrate();

  // Constant after construction.
  const std::string path_;
  sqlite3* const handle_;
  int schema_version_ = 0;

  // The thread inside a transaction, so a nested call can tell it already holds mu_.
  std::atomic<std::thread::id> owner_{};
  absl::Mutex mu_;
  int depth_ ABSL_GUARDED_BY(mu_) = 0;  // nesting of Write/Read calls of owner_
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> pending_signals_ ABSL_GUARDED_BY(mu_);  // raised, not yet committed

  mutable absl::Mutex signal_mu_;  // never held together with mu_
  std::map<std::string, int64_t, std::less<>> signals_ ABSL_GUARDED_BY(signal_mu_);
};

// An SQLite result code and message as a Status whose code says what the caller should do:
// busy/locked and I/O errors UNAVAILABLE (retry), UNIQUE/PRIMARY KEY ALREADY_EXISTS, other
// constraints FAILED_PRECONDITION, full disk RESOURCE_EXHAUSTED, corruption DATA_LOSS, the rest
// INTERNAL. `context` is the SQL or the operation.
absl::Status SqliteStatus(int code, std::string_view message, std::string_view context);

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_DB_H_
