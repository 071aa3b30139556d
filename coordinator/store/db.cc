// The SQLite connection, statements and transactions of db.h.
#include "coordinator/store/db.h"

#include <sqlite3.h>

#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/schema.h"

namespace herd::coordinator::store {
namespace {

std::string Shorten(std::string_view sql) {
  constexpr size_t kMax = 160;
  std::string s(sql.substr(0, kMax));
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  if (sql.size() > kMax) s += "...";
  return s;
}

}  // namespace

absl::Status SqliteStatus(int code, std::string_view message, std::string_view context) {
  std::string msg = herd::StrCat("sqlite: ", message, " (", sqlite3_errstr(code), ", code ", code,
                                 ") in: ", Shorten(context));
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_PROTOCOL:
      return absl::UnavailableError(msg);
    case SQLITE_CONSTRAINT:
      if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(msg);
      }
      return absl::FailedPreconditionError(msg);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status DbOptions::Validate() const {
  if (path.empty()) return absl::InvalidArgumentError("DbOptions.path: required");
  if (busy_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("DbOptions.busy_timeout: must be >= 0");
  }
  return absl::OkStatus();
}

// ---- Row ----

bool Row::IsNull(int col) const { return std::holds_alternative<std::nullptr_t>(cells_.at(col)); }

int64_t Row::Int(int col) const {
  const auto& c = cells_.at(col);
  if (auto* i = std::get_if<int64_t>(&c)) return *i;
  if (auto* d = std::get_if<double>(&c)) return static_cast<int64_t>(*d);
  return 0;
}

double Row::Double(int col) const {
  const auto& c = cells_.at(col);
  if (auto* d = std::get_if<double>(&c)) return *d;
  if (auto* i = std::get_if<int64_t>(&c)) return static_cast<double>(*i);
  return 0;
}

std::string Row::Text(int col) const {
  const auto& c = cells_.at(col);
  if (auto* s = std::get_if<std::string>(&c)) return *s;
  if (auto* i = std::get_if<int64_t>(&c)) return std::to_string(*i);
  return "";
}

std::optional<int64_t> Row::OptInt(int col) const {
  if (IsNull(col)) return std::nullopt;
  return Int(col);
}

std::optional<double> Row::OptDouble(int col) const {
  if (IsNull(col)) return std::nullopt;
  return Double(col);
}

std::optional<std::string> Row::OptText(int col) const {
  if (IsNull(col)) return std::nullopt;
  return Text(col);
}

// ---- Tx ----

absl::StatusOr<sqlite3_stmt*> Tx::Bind(std::string_view sql, absl::Span<const Value> args)
    ABSL_NO_THREAD_SAFETY_ANALYSIS /* mu_ is held by the enclosing Db::Run */ {
  sqlite3_stmt* stmt = nullptr;
  auto it = db_->statements_.find(sql);
  if (it != db_->statements_.end()) {
    stmt = it->second;
  } else {
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v3(db_->handle_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
    if (rc != SQLITE_OK) return SqliteStatus(rc, sqlite3_errmsg(db_->handle_), sql);
    if (stmt == nullptr) return absl::InternalError(herd::StrCat("empty SQL: ", Shorten(sql)));
    db_->statements_.emplace(std::string(sql), stmt);
  }
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  if (static_cast<int>(args.size()) != sqlite3_bind_parameter_count(stmt)) {
    return absl::InternalError(herd::StrCat("SQL takes ", sqlite3_bind_parameter_count(stmt),
                                            " arguments, got ", args.size(), ": ", Shorten(sql)));
  }
  int index = 1;
  for (const Value& value : args) {
    int rc = SQLITE_OK;
    const auto& v = value.get();
    if (std::holds_alternative<std::nullptr_t>(v)) {
      rc = sqlite3_bind_null(stmt, index);
    } else if (auto* i = std::get_if<int64_t>(&v)) {
      rc = sqlite3_bind_int64(stmt, index, *i);
    } else if (auto* d = std::get_if<double>(&v)) {
      rc = sqlite3_bind_double(stmt, index, *d);
    } else {
      std::string_view s = std::get<std::string_view>(v);
      rc = sqlite3_bind_text64(stmt, index, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    }
    if (rc != SQLITE_OK) return SqliteStatus(rc, sqlite3_errmsg(db_->handle_), sql);
    ++index;
  }
  return stmt;
}

absl::StatusOr<int64_t> Tx::Exec(std::string_view sql, absl::Span<const Value> args) {
  HERD_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Bind(sql, args));
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
  }
  absl::Status status;
  if (rc != SQLITE_DONE) status = SqliteStatus(sqlite3_extended_errcode(db_->handle_),
                                               sqlite3_errmsg(db_->handle_), sql);
  sqlite3_reset(stmt);
  if (!status.ok()) return status;
  return static_cast<int64_t>(sqlite3_changes64(db_->handle_));
}

absl::StatusOr<std::vector<Row>> Tx::Query(std::string_view sql,
                                           absl::Span<const Value> args) {
  HERD_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Bind(sql, args));
  std::vector<Row> rows;
  int rc;
  const int cols = sqlite3_column_count(stmt);
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    Row row;
    row.cells_.reserve(cols);
    for (int c = 0; c < cols; ++c) {
      switch (sqlite3_column_type(stmt, c)) {
        case SQLITE_NULL:
          row.cells_.emplace_back(nullptr);
          break;
        case SQLITE_INTEGER:
          row.cells_.emplace_back(static_cast<int64_t>(sqlite3_column_int64(stmt, c)));
          break;
        case SQLITE_FLOAT:
          row.cells_.emplace_back(sqlite3_column_double(stmt, c));
          break;
        default: {
          const auto* p = reinterpret_cast<const char*>(sqlite3_column_blob(stmt, c));
          int n = sqlite3_column_bytes(stmt, c);
          row.cells_.emplace_back(std::string(p == nullptr ? "" : p, static_cast<size_t>(n)));
        }
      }
    }
    rows.push_back(std::move(row));
  }
  absl::Status status;
  if (rc != SQLITE_DONE) status = SqliteStatus(sqlite3_extended_errcode(db_->handle_),
                                               sqlite3_errmsg(db_->handle_), sql);
  sqlite3_reset(stmt);
  if (!status.ok()) return status;
  return rows;
}

absl::StatusOr<std::optional<Row>> Tx::QueryOne(std::string_view sql,
                                                absl::Span<const Value> args) {
  HERD_ASSIGN_OR_RETURN(std::vector<Row> rows, Query(sql, args));
  if (rows.empty()) return std::optional<Row>();
  if (rows.size() > 1) {
    return absl::InternalError(herd::StrCat("expected at most one row from: ", Shorten(sql)));
  }
  return std::optional<Row>(std::move(rows[0]));
}

absl::Status Tx::ExecScript(std::string_view sql) {
  std::string text(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_->handle_, text.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteStatus(sqlite3_extended_errcode(db_->handle_),
                                       err != nullptr ? err : "error", sql);
    sqlite3_free(err);
    return status;
  }
  return absl::OkStatus();
}

void Tx::Signal(std::string_view name) ABSL_NO_THREAD_SAFETY_ANALYSIS /* Db::Run holds mu_ */ {
  db_->pending_signals_.emplace_back(name);
}

// ---- Db ----

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const DbOptions& options) {
  HERD_RETURN_IF_ERROR(options.Validate());
  sqlite3* handle = nullptr;
  // NOMUTEX: Db's own mutex serialises every use of the connection.
  int rc = sqlite3_open_v2(options.path.c_str(), &handle,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                               SQLITE_OPEN_EXRESCODE,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = handle != nullptr ? sqlite3_errmsg(handle) : "out of memory";
    sqlite3_close_v2(handle);
    return SqliteStatus(rc, msg, herd::StrCat("open ", options.path));
  }
  std::unique_ptr<Db> db(new Db(options.path, handle));
  sqlite3_busy_timeout(handle, static_cast<int>(absl::ToInt64Milliseconds(options.busy_timeout)));
  sqlite3_extended_result_codes(handle, 1);
  // journal_mode answers with a row, so it goes through Query, outside any transaction.
  for (std::string_view pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    char* err = nullptr;
    rc = sqlite3_exec(handle, std::string(pragma).c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      absl::Status status = SqliteStatus(rc, err != nullptr ? err : "error", pragma);
      sqlite3_free(err);
      return status;
    }
  }
  std::string mode;
  HERD_RETURN_IF_ERROR(db->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("PRAGMA journal_mode"));
    if (row) mode = row->Text(0);
    return absl::OkStatus();
  }));
  if (mode != "wal") {
    return absl::FailedPreconditionError(herd::StrCat(
        options.path, ": SQLite refused WAL mode (journal_mode is '", mode,
        "'); is the data dir on a network file system?"));
  }
  HERD_RETURN_IF_ERROR(db->Migrate());
  return db;
}

Db::~Db() {
  absl::MutexLock lock(&mu_);
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  statements_.clear();
  sqlite3_close_v2(handle_);
}

absl::Status Db::Simple(std::string_view sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(handle_, std::string(sql).c_str(), nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return absl::OkStatus();
  absl::Status status = SqliteStatus(sqlite3_extended_errcode(handle_),
                                     err != nullptr ? err : sqlite3_errmsg(handle_), sql);
  sqlite3_free(err);
  return status;
}

namespace {

// fn(tx), with any exception turned into INTERNAL: none may cross the store's boundary, and
// one thrown through Run would leave owner_ set.
absl::Status Call(absl::FunctionRef<absl::Status(Tx&)> fn, Tx& tx) noexcept {
  try {
    return fn(tx);
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("exception inside a transaction: ", e.what()));
  } catch (...) {
    return absl::InternalError("unknown exception inside a transaction");
  }
}

}  // namespace

absl::Status Db::Run(bool write, absl::FunctionRef<absl::Status(Tx&)> fn) {
  Tx tx(this);
  if (owner_.load() == std::this_thread::get_id()) {
    // Nested: this thread already holds mu_ (taken by the outermost call below).
    mu_.AssertHeld();
    if (!write) return Call(fn, tx);
    std::string sp = herd::StrCat("sp", depth_);
    const size_t signals_mark = pending_signals_.size();
    HERD_RETURN_IF_ERROR(Simple(herd::StrCat("SAVEPOINT ", sp)));
    ++depth_;
    absl::Status status = Call(fn, tx);
    --depth_;
    if (status.ok()) {
      status = Simple(herd::StrCat("RELEASE ", sp));
      if (status.ok()) return status;
    }
    // Roll the savepoint back and drop it; the outer transaction goes on.
    (void)Simple(herd::StrCat("ROLLBACK TO ", sp));
    (void)Simple(herd::StrCat("RELEASE ", sp));
    pending_signals_.resize(signals_mark);
    return status;
  }
  absl::Status status;
  std::vector<std::string> committed_signals;
  {
    absl::MutexLock lock(&mu_);
    owner_.store(std::this_thread::get_id());
    depth_ = 1;
    status = Simple(write ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED");
    if (status.ok()) {
      status = Call(fn, tx);
      if (status.ok()) {
        status = Simple("COMMIT");
      }
      if (!status.ok() && !sqlite3_get_autocommit(handle_)) (void)Simple("ROLLBACK");
    }
    if (status.ok()) committed_signals.swap(pending_signals_);
    pending_signals_.clear();
    depth_ = 0;
    owner_.store(std::thread::id());
  }
  if (!committed_signals.empty()) {
    absl::MutexLock lock(&signal_mu_);
    for (const std::string& name : committed_signals) ++signals_[name];
  }
  return status;
}

int64_t Db::SignalCount(std::string_view name) const {
  absl::MutexLock lock(&signal_mu_);
  auto it = signals_.find(name);
  return it == signals_.end() ? 0 : it->second;
}

bool Db::AwaitSignal(std::string_view name, int64_t seen, absl::Time deadline) const {
  absl::MutexLock lock(&signal_mu_);
  auto raised = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(signal_mu_) {
    auto it = signals_.find(name);
    return it != signals_.end() && it->second > seen;
  };
  return signal_mu_.AwaitWithDeadline(absl::Condition(&raised), deadline);
}

absl::Status Db::Write(absl::FunctionRef<absl::Status(Tx&)> fn) { return Run(true, fn); }
absl::Status Db::Read(absl::FunctionRef<absl::Status(Tx&)> fn) { return Run(false, fn); }

absl::Status Db::Migrate() {
  return Write([&](Tx& tx) -> absl::Status {
    HERD_RETURN_IF_ERROR(tx.ExecScript(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "  version INTEGER NOT NULL, applied_us INTEGER NOT NULL) STRICT"));
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT MAX(version) FROM schema_version"));
    int version = row ? static_cast<int>(row->Int(0)) : 0;
    const int latest = static_cast<int>(kMigrations.size());
    if (version > latest) {
      return absl::FailedPreconditionError(herd::StrCat(
          path_, ": database schema version ", version,
          " is newer than this coordinator supports (", latest, "); run a newer herd-coordinator"));
    }
    for (int v = version; v < latest; ++v) {
      HERD_RETURN_IF_ERROR(
          Annotate(tx.ExecScript(kMigrations[v]), herd::StrCat("schema migration ", v + 1)));
      HERD_RETURN_IF_ERROR(tx.Exec("INSERT INTO schema_version (version, applied_us) VALUES (?, ?)",
                                   {v + 1, absl::ToUnixMicros(absl::Now())})
                               .status());
    }
    schema_version_ = latest;
    return absl::OkStatus();
  });
}

}  // namespace herd::coordinator::store
