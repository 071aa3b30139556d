// Tests of the SQLite wrapper: pragmas, migrations, transactions, savepoints, error mapping.
#include "coordinator/store/db.h"

#include <sqlite3.h>

#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/store/schema.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::TempDir;

std::unique_ptr<Db> OpenDb(const TempDir& dir) {
  DbOptions options;
  options.path = dir.path() + "/test.db";
  auto db = Db::Open(options);
  EXPECT_TRUE(db.ok()) << db.status();
  return db.ok() ? *std::move(db) : nullptr;
}

absl::StatusOr<int64_t> Scalar(Db& db, std::string_view sql) {
  int64_t out = 0;
  HERD_RETURN_IF_ERROR(db.Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(sql));
    if (!row) return absl::NotFoundError("no row");
    out = row->Int(0);
    return absl::OkStatus();
  }));
  return out;
}

TEST(DbTest, OpenSetsPragmasAndMigrates) {
  TempDir dir;
  auto db = OpenDb(dir);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->schema_version(), static_cast<int>(kMigrations.size()));
  EXPECT_EQ(*Scalar(*db, "PRAGMA synchronous"), 2);  // FULL
  EXPECT_EQ(*Scalar(*db, "PRAGMA foreign_keys"), 1);
  EXPECT_EQ(*Scalar(*db, "SELECT MAX(version) FROM schema_version"),
            static_cast<int64_t>(kMigrations.size()));
  std::string mode;
  HERD_ASSERT_OK(db->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("PRAGMA journal_mode"));
    mode = row->Text(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(mode, "wal");
}

TEST(DbTest, ReopenDoesNotMigrateAgain) {
  TempDir dir;
  OpenDb(dir).reset();
  auto db = OpenDb(dir);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(*Scalar(*db, "SELECT COUNT(*) FROM schema_version"),
            static_cast<int64_t>(kMigrations.size()));
}

TEST(DbTest, NewerSchemaIsRefused) {
  TempDir dir;
  {
    auto db = OpenDb(dir);
    HERD_ASSERT_OK(db->Write([](Tx& tx) {
      return tx.Exec("INSERT INTO schema_version VALUES (999, 0)").status();
    }));
  }
  DbOptions options;
  options.path = dir.path() + "/test.db";
  auto db = Db::Open(options);
  HERD_EXPECT_CODE(db.status(), kFailedPrecondition);
  EXPECT_NE(db.status().message().find("999"), std::string::npos) << db.status();
}

TEST(DbTest, OptionsValidate) {
  HERD_EXPECT_CODE(DbOptions{}.Validate(), kInvalidArgument);
  DbOptions options;
  options.path = "x.db";
  options.busy_timeout = absl::Seconds(-1);
  HERD_EXPECT_CODE(options.Validate(), kInvalidArgument);
  HERD_EXPECT_CODE(Db::Open(DbOptions{}).status(), kInvalidArgument);
}

TEST(DbTest, OpenFailureIsAStatus) {
  DbOptions options;
  options.path = "/nonexistent-dir/sub/test.db";
  auto db = Db::Open(options);
  EXPECT_FALSE(db.ok());
  EXPECT_NE(db.status().message().find("open"), std::string::npos) << db.status();
}

TEST(DbTest, WriteCommitsAndFailedWriteRollsBack) {
  TempDir dir;
  auto db = OpenDb(dir);
  HERD_ASSERT_OK(db->Write([](Tx& tx) {
    return tx.ExecScript("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER) STRICT");
  }));
  HERD_ASSERT_OK(db->Write([](Tx& tx) { return tx.Exec("INSERT INTO t VALUES ('a', 1)").status(); }));
  absl::Status failed = db->Write([](Tx& tx) -> absl::Status {
    HERD_RETURN_IF_ERROR(tx.Exec("INSERT INTO t VALUES ('b', 2)").status());
    return absl::AbortedError("changed my mind");
  });
  HERD_EXPECT_CODE(failed, kAborted);
  EXPECT_EQ(*Scalar(*db, "SELECT COUNT(*) FROM t"), 1);
}

TEST(DbTest, NestedWriteIsASavepoint) {
  TempDir dir;
  auto db = OpenDb(dir);
  HERD_ASSERT_OK(db->Write([](Tx& tx) { return tx.ExecScript("CREATE TABLE t (v INTEGER) STRICT"); }));
  HERD_ASSERT_OK(db->Write([&](Tx& tx) -> absl::Status {
    HERD_RETURN_IF_ERROR(tx.Exec("INSERT INTO t VALUES (1)").status());
    // The inner failure rolls back only the inner part.
    absl::Status inner = db->Write([](Tx& tx) -> absl::Status {
      HERD_RETURN_IF_ERROR(tx.Exec("INSERT INTO t VALUES (2)").status());
      return absl::InternalError("inner");
    });
    EXPECT_EQ(inner.code(), absl::StatusCode::kInternal);
    HERD_RETURN_IF_ERROR(db->Write([](Tx& tx) { return tx.Exec("INSERT INTO t VALUES (3)").status(); }));
    // A nested read sees the outer transaction's writes.
    return db->Read([](Tx& tx) -> absl::Status {
      HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT SUM(v) FROM t"));
      EXPECT_EQ(row->Int(0), 4);
      return absl::OkStatus();
    });
  }));
  EXPECT_EQ(*Scalar(*db, "SELECT SUM(v) FROM t"), 4);

  // An outer failure rolls back the committed inner savepoints too.
  absl::Status failed = db->Write([&](Tx&) -> absl::Status {
    HERD_RETURN_IF_ERROR(db->Write([](Tx& tx) { return tx.Exec("INSERT INTO t VALUES (100)").status(); }));
    return absl::CancelledError("outer");
  });
  HERD_EXPECT_CODE(failed, kCancelled);
  EXPECT_EQ(*Scalar(*db, "SELECT SUM(v) FROM t"), 4);
}

TEST(DbTest, AnExceptionBecomesInternalAndRollsBack) {
  TempDir dir;
  auto db = OpenDb(dir);
  HERD_ASSERT_OK(db->Write([](Tx& tx) { return tx.ExecScript("CREATE TABLE t (v INTEGER) STRICT"); }));
  absl::Status status = db->Write([](Tx& tx) -> absl::Status {
    HERD_RETURN_IF_ERROR(tx.Exec("INSERT INTO t VALUES (1)").status());
    throw std::runtime_error("boom");
  });
  HERD_EXPECT_CODE(status, kInternal);
  EXPECT_TRUE(testing::MessageHas(status, "boom"));
  EXPECT_EQ(*Scalar(*db, "SELECT COUNT(*) FROM t"), 0);
  // The Db is usable afterwards, from this thread and from another.
  HERD_EXPECT_OK(db->Write([](Tx& tx) { return tx.Exec("INSERT INTO t VALUES (2)").status(); }));
  std::thread([&] { EXPECT_EQ(*Scalar(*db, "SELECT SUM(v) FROM t"), 2); }).join();
}

TEST(DbTest, SignalsRiseOnlyWhenTheirTransactionCommits) {
  TempDir dir;
  auto db = OpenDb(dir);
  EXPECT_EQ(db->SignalCount("s"), 0);
  HERD_ASSERT_OK(db->Write([](Tx& tx) {
    tx.Signal("s");
    return absl::OkStatus();
  }));
  EXPECT_EQ(db->SignalCount("s"), 1);
  HERD_EXPECT_CODE(db->Write([](Tx& tx) {
    tx.Signal("s");
    return absl::AbortedError("rolled back");
  }), kAborted);
  EXPECT_EQ(db->SignalCount("s"), 1);
  HERD_ASSERT_OK(db->Write([&](Tx& tx) -> absl::Status {
    tx.Signal("outer");
    (void)db->Write([](Tx& tx) {  // a savepoint that rolls back takes its signal with it
      tx.Signal("s");
      return absl::AbortedError("inner");
    });
    return db->Write([](Tx& tx) {
      tx.Signal("t");
      return absl::OkStatus();
    });
  }));
  EXPECT_EQ(db->SignalCount("s"), 1);
  EXPECT_EQ(db->SignalCount("t"), 1);
  EXPECT_EQ(db->SignalCount("outer"), 1);
  EXPECT_FALSE(db->AwaitSignal("s", 1, absl::Now() + absl::Milliseconds(10)));
  EXPECT_TRUE(db->AwaitSignal("s", 0, absl::InfiniteFuture()));
  std::thread raiser([&] {
    absl::SleepFor(absl::Milliseconds(20));
    HERD_EXPECT_OK(db->Write([](Tx& tx) {
      tx.Signal("s");
      return absl::OkStatus();
    }));
  });
  EXPECT_TRUE(db->AwaitSignal("s", 1, absl::Now() + absl::Seconds(30)));
  raiser.join();
}

TEST(DbTest, ValuesRoundTrip) {
  TempDir dir;
  auto db = OpenDb(dir);
  HERD_ASSERT_OK(db->Write([](Tx& tx) {
    return tx.ExecScript("CREATE TABLE v (i INTEGER, d REAL, s TEXT, n TEXT) STRICT");
  }));
  const std::string with_nul("a\0b", 3);
  std::optional<int64_t> none;
  HERD_ASSERT_OK(db->Write([&](Tx& tx) {
    return tx.Exec("INSERT INTO v VALUES (?, ?, ?, ?)", {int64_t{1} << 40, 2.5, with_nul, none})
        .status();
  }));
  HERD_ASSERT_OK(db->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT i, d, s, n FROM v"));
    EXPECT_EQ(row->Int(0), int64_t{1} << 40);
    EXPECT_EQ(row->Double(1), 2.5);
    EXPECT_EQ(row->Text(2), with_nul);
    EXPECT_TRUE(row->IsNull(3));
    EXPECT_EQ(row->OptText(3), std::nullopt);
    EXPECT_EQ(row->OptInt(0), int64_t{1} << 40);
    return absl::OkStatus();
  }));
}

TEST(DbTest, ErrorsCarryTheSqlAndACodeToActOn) {
  TempDir dir;
  auto db = OpenDb(dir);
  HERD_ASSERT_OK(db->Write([](Tx& tx) {
    return tx.ExecScript(
        "CREATE TABLE p (k TEXT PRIMARY KEY) STRICT;"
        "CREATE TABLE c (k TEXT REFERENCES p(k)) STRICT;"
        "CREATE TABLE q (v INTEGER CHECK (v > 0)) STRICT;");
  }));
  struct Case {
    std::string sql;
    std::vector<Value> args;
    absl::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"INSERT INTO p VALUES ('x')", {}, absl::StatusCode::kOk},
      {"INSERT INTO p VALUES ('x')", {}, absl::StatusCode::kAlreadyExists},
      {"INSERT INTO c VALUES ('nope')", {}, absl::StatusCode::kFailedPrecondition},
      {"INSERT INTO q VALUES (0)", {}, absl::StatusCode::kFailedPrecondition},      // CHECK
      {"INSERT INTO q VALUES ('abc')", {}, absl::StatusCode::kFailedPrecondition},  // STRICT
      {"SELEKT 1", {}, absl::StatusCode::kInternal},
      {"SELECT * FROM missing_table", {}, absl::StatusCode::kInternal},
      {"SELECT ?", {}, absl::StatusCode::kInternal},        // too few arguments
      {"SELECT 1", {Value(1)}, absl::StatusCode::kInternal},  // too many
  };
  for (const Case& c : cases) {
    absl::Status status = db->Write([&](Tx& tx) { return tx.Exec(c.sql, c.args).status(); });
    EXPECT_EQ(status.code(), c.code) << c.sql << ": " << status;
    if (!status.ok()) {
      EXPECT_NE(status.message().find(c.sql.substr(0, 10)), std::string::npos) << status;
    }
  }
}

TEST(DbTest, SqliteStatusMapsCodes) {
  struct Case {
    int rc;
    absl::StatusCode code;
  };
  for (const Case& c : std::vector<Case>{
           {SQLITE_BUSY, absl::StatusCode::kUnavailable},
           {SQLITE_LOCKED, absl::StatusCode::kUnavailable},
           {SQLITE_IOERR_FSYNC, absl::StatusCode::kUnavailable},
           {SQLITE_CONSTRAINT_UNIQUE, absl::StatusCode::kAlreadyExists},
           {SQLITE_CONSTRAINT_PRIMARYKEY, absl::StatusCode::kAlreadyExists},
           {SQLITE_CONSTRAINT_FOREIGNKEY, absl::StatusCode::kFailedPrecondition},
           {SQLITE_CONSTRAINT_CHECK, absl::StatusCode::kFailedPrecondition},
           {SQLITE_FULL, absl::StatusCode::kResourceExhausted},
           {SQLITE_CORRUPT, absl::StatusCode::kDataLoss},
           {SQLITE_NOTADB, absl::StatusCode::kDataLoss},
           {SQLITE_READONLY, absl::StatusCode::kFailedPrecondition},
           {SQLITE_CANTOPEN, absl::StatusCode::kFailedPrecondition},
           {SQLITE_ERROR, absl::StatusCode::kInternal},
           {SQLITE_MISUSE, absl::StatusCode::kInternal},
       }) {
    absl::Status s = SqliteStatus(c.rc, "msg", "SELECT context");
    EXPECT_EQ(s.code(), c.code) << c.rc << ": " << s;
    EXPECT_NE(s.message().find("SELECT context"), std::string::npos);
  }
}

TEST(DbTest, NotADatabaseIsDataLoss) {
  TempDir dir;
  std::string path = dir.path() + "/junk.db";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("this is not an SQLite database, not at all, no header here............", f);
  std::fclose(f);
  DbOptions options;
  options.path = path;
  HERD_EXPECT_CODE(Db::Open(options).status(), kDataLoss);
}

TEST(DbTest, ConcurrentWritersAreSerialised) {
  TempDir dir;
  auto db = OpenDb(dir);
  HERD_ASSERT_OK(db->Write([](Tx& tx) {
    return tx.ExecScript("CREATE TABLE n (v INTEGER) STRICT; INSERT INTO n VALUES (0);");
  }));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        HERD_EXPECT_OK(db->Write([](Tx& tx) -> absl::Status {
          HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT v FROM n"));
          return tx.Exec("UPDATE n SET v = ?", {row->Int(0) + 1}).status();
        }));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(*Scalar(*db, "SELECT v FROM n"), 100);
}

}  // namespace
}  // namespace herd::coordinator::store
