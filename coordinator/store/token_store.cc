// Tenants and hashed tokens over SQLite (token_store.h).
#include "coordinator/store/token_store.h"

#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/store_util.h"

namespace herd::coordinator::store {
namespace {

constexpr size_t kMinImportedToken = 32;
constexpr size_t kMaxToken = 256;

std::string_view KindName(TokenKind kind) { return kind == TokenKind::kCluster ? "CLUSTER" : "USER"; }

absl::Status ValidateTenant(std::string_view name) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(herd::StrCat("tenant '", name.substr(0, 80), "': ", why));
  };
  if (name.empty() || name.size() > 64) return bad("must be 1 to 64 characters");
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return bad("may hold only letters, digits, '.', '_' and '-'");
  }
  if (name[0] == '.' || name[0] == '-') return bad("must not start with '.' or '-'");
  return absl::OkStatus();
}

bool TokenCharsOk(std::string_view token) {
  for (char c : token) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::Status Unauthenticated() {
  return absl::UnauthenticatedError("invalid token: unknown, revoked or malformed");
}

TokenInfo RowToInfo(const Row& r) {
  TokenInfo t;
  t.id = r.Text(0);
  t.kind = r.Text(1) == "CLUSTER" ? TokenKind::kCluster : TokenKind::kUser;
  t.tenant = r.Text(2);
  t.label = r.Text(3);
  t.create_time = FromMicros(r.Int(4));
  if (!r.IsNull(5)) t.revoke_time = FromMicros(r.Int(5));
  return t;
}

constexpr std::string_view kColumns = "id, kind, tenant, label, create_us, revoke_us";

}  // namespace

std::string HashToken(std::string_view token) { return Sha256Hex(token); }

absl::Status TokenStoreOptions::Validate() const {
  if (clock == nullptr) return absl::InvalidArgumentError("TokenStoreOptions.clock: required");
  return absl::OkStatus();
}

TokenStore::TokenStore(Db* db, TokenStoreOptions options) : db_(db), options_(options) {}

absl::Status TokenStore::CreateTenant(std::string_view name) {
  HERD_RETURN_IF_ERROR(ValidateTenant(name));
  return db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM tenants WHERE name = ?", {name}));
    if (row) return absl::AlreadyExistsError(herd::StrCat("tenant ", name, " already exists"));
    return tx.Exec("INSERT INTO tenants (name, create_us) VALUES (?, ?)",
                   {name, ToMicros(options_.clock->Now())})
        .status();
  });
}

absl::Status TokenStore::EnsureTenant(std::string_view name) {
  absl::Status status = CreateTenant(name);
  if (status.code() == absl::StatusCode::kAlreadyExists) return absl::OkStatus();
  return status;
}

absl::StatusOr<std::vector<std::string>> TokenStore::ListTenants() const {
  std::vector<std::string> out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query("SELECT name FROM tenants ORDER BY name"));
    for (const Row& r : rows) out.push_back(r.Text(0));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<TokenInfo> TokenStore::Insert(Tx& tx, TokenKind kind, std::string_view tenant,
                                             std::string_view hash, std::string_view label) {
  if (kind == TokenKind::kUser) {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM tenants WHERE name = ?", {tenant}));
    if (!row) return absl::NotFoundError(herd::StrCat("tenant ", tenant, " not found"));
  }
  HERD_ASSIGN_OR_RETURN(std::string id, NewId("tok_"));
  const absl::Time now = options_.clock->Now();
  HERD_RETURN_IF_ERROR(
      tx.Exec("INSERT INTO tokens (id, hash, kind, tenant, label, create_us) VALUES (?, ?, ?, ?, ?, ?)",
              {id, hash, KindName(kind),
               kind == TokenKind::kUser ? std::optional<std::string_view>(tenant) : std::nullopt,
               label, ToMicros(now)})
          .status());
  return TokenInfo{id, kind, kind == TokenKind::kUser ? std::string(tenant) : "",
                   std::string(label), now, std::nullopt};
}

absl::StatusOr<NewToken> TokenStore::Create(TokenKind kind, std::string_view tenant,
                                            std::string_view label) {
  if (label.size() > 256) return absl::InvalidArgumentError("label: at most 256 bytes");
  HERD_ASSIGN_OR_RETURN(std::string secret, RandomBytes(32));
  NewToken out;
  out.token = herd::StrCat(kind == TokenKind::kCluster ? "herd_c_" : "herd_u_", Base32(secret));
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(out.info, Insert(tx, kind, tenant, HashToken(out.token), label));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<NewToken> TokenStore::CreateUserToken(std::string_view tenant,
                                                     std::string_view label) {
  HERD_RETURN_IF_ERROR(ValidateTenant(tenant));
  return Create(TokenKind::kUser, tenant, label);
}

absl::StatusOr<NewToken> TokenStore::CreateClusterToken(std::string_view label) {
  return Create(TokenKind::kCluster, "", label);
}

absl::StatusOr<TokenInfo> TokenStore::ImportToken(TokenKind kind, std::string_view tenant,
                                                  std::string_view token,
                                                  std::string_view label) {
  if (token.size() < kMinImportedToken || token.size() > kMaxToken || !TokenCharsOk(token)) {
    return absl::InvalidArgumentError(herd::StrCat(
        "a token must be ", kMinImportedToken, " to ", kMaxToken,
        " characters of [A-Za-z0-9._~+/=-] (make one with: openssl rand -hex 32)"));
  }
  if (kind == TokenKind::kUser) {
    HERD_RETURN_IF_ERROR(ValidateTenant(tenant));
  } else if (!tenant.empty()) {
    return absl::InvalidArgumentError("a cluster token belongs to no tenant");
  }
  TokenInfo out;
  const std::string hash = HashToken(token);
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kColumns,
                                                             " FROM tokens WHERE hash = ?"),
                                                {hash}));
    if (row) {
      TokenInfo existing = RowToInfo(*row);
      if (existing.kind != kind || existing.tenant != tenant) {
        return absl::AlreadyExistsError("this token is already registered for another principal");
      }
      if (existing.revoke_time) {
        return absl::FailedPreconditionError(
            herd::StrCat("token ", existing.id, " was revoked; choose a new token"));
      }
      out = existing;
      return absl::OkStatus();
    }
    HERD_ASSIGN_OR_RETURN(out, Insert(tx, kind, tenant, hash, label));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<Principal> TokenStore::Authenticate(std::string_view token) const {
  if (token.empty() || token.size() > kMaxToken || !TokenCharsOk(token)) return Unauthenticated();
  const std::string hash = HashToken(token);
  Principal out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT id, kind, tenant FROM tokens"
                                                " WHERE hash = ? AND revoke_us IS NULL",
                                                {hash}));
    if (!row) return Unauthenticated();
    out.token_id = row->Text(0);
    out.kind = row->Text(1) == "CLUSTER" ? TokenKind::kCluster : TokenKind::kUser;
    out.tenant = row->Text(2);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status TokenStore::Revoke(std::string_view token_id) {
  return db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM tokens WHERE id = ?", {token_id}));
    if (!row) return absl::NotFoundError(herd::StrCat("token ", token_id, " not found"));
    return tx.Exec("UPDATE tokens SET revoke_us = COALESCE(revoke_us, ?) WHERE id = ?",
                   {ToMicros(options_.clock->Now()), token_id})
        .status();
  });
}

absl::StatusOr<std::vector<TokenInfo>> TokenStore::List(std::string_view tenant) const {
  std::vector<TokenInfo> out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(
        auto rows, tx.Query(herd::StrCat("SELECT ", kColumns, " FROM tokens WHERE ",
                                         tenant.empty() ? "kind = 'CLUSTER' AND ?1 = ''"
                                                        : "tenant = ?1",
                                         " ORDER BY create_us, id"),
                            {tenant}));
    for (const Row& r : rows) out.push_back(RowToInfo(r));
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace herd::coordinator::store
