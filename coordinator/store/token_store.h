// Tenants and bearer tokens (DESIGN.md §8). A user token names a tenant; the cluster token
// (agents) names none. Tokens are 256 random bits ("herd_u_" / "herd_c_" + 52 base32
// characters), shown once when made, and stored only as their plain SHA-256.
//
// Why an unsalted SHA-256 and not a salted or slow hash: salts and key stretching protect
// low-entropy secrets (passwords) against dictionary attacks. A 256-bit random token has no
// dictionary: inverting its SHA-256 is a 2^256 search whether or not there is a salt. Without a
// salt the hash is also the lookup key (a UNIQUE index), so Authenticate is one indexed SELECT
// instead of a scan over per-token salts, and it compares no secret bytes in a loop an attacker
// could time. A leaked database therefore yields no usable token. (Tokens imported from config
// with ImportToken must carry at least 32 characters for the same reason.)
//
// Thread-safe (all state is in the Db).
#ifndef HERD_COORDINATOR_STORE_TOKEN_STORE_H_
#define HERD_COORDINATOR_STORE_TOKEN_STORE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"
#include "coordinator/store/db.h"

namespace herd::coordinator::store {

struct TokenStoreOptions {
  // Where times come from (coordinator/clock.h); not owned.
  Clock* clock = Clock::Real();

  absl::Status Validate() const;
};

enum class TokenKind { kUser, kCluster };

// Who a token authenticates.
struct Principal {
  TokenKind kind = TokenKind::kUser;
  std::string tenant;    // "" for the cluster token
  std::string token_id;  // "tok_..." (for logs and revocation; not a secret)
};

struct TokenInfo {
  std::string id;  // "tok_..."
  TokenKind kind = TokenKind::kUser;
  std::string tenant;  // "" for cluster tokens
  std::string label;
  absl::Time create_time;
  std::optional<absl::Time> revoke_time;
};

// A token just made: the only time its plaintext exists outside the caller.
struct NewToken {
  TokenInfo info;
  std::string token;
};

class TokenStore {
 public:
  TokenStore(Db* db, TokenStoreOptions options);

  // Tenant names: 1 to 64 of [A-Za-z0-9._-], not starting with '.' or '-' (they appear in
  // metric labels and logs). INVALID_ARGUMENT otherwise; ALREADY_EXISTS when it exists.
  absl::Status CreateTenant(std::string_view name);
  // Creates it unless it exists (bootstrap from config).
  absl::Status EnsureTenant(std::string_view name);
  absl::StatusOr<std::vector<std::string>> ListTenants() const;

  // A new user token of a tenant (NOT_FOUND when the tenant does not exist).
  absl::StatusOr<NewToken> CreateUserToken(std::string_view tenant, std::string_view label);
  // A new cluster token (agents, operators' ClusterService calls).
  absl::StatusOr<NewToken> CreateClusterToken(std::string_view label);
  // Registers a token chosen outside (a Kubernetes secret, the quickstart's config): at least
  // 32 and at most 256 characters of [A-Za-z0-9._~+/=-]. Importing the same token again for the
  // same principal is OK; for another principal ALREADY_EXISTS. `tenant` is "" for kCluster.
  absl::StatusOr<TokenInfo> ImportToken(TokenKind kind, std::string_view tenant,
                                        std::string_view token, std::string_view label);

  // The principal of a bearer token; UNAUTHENTICATED for a malformed, unknown or revoked one
  // (one message for all, so a caller learns nothing about which).
  absl::StatusOr<Principal> Authenticate(std::string_view token) const;

  // Revokes a token by id (NOT_FOUND when unknown); revoking twice is OK.
  absl::Status Revoke(std::string_view token_id);
  // Tokens of a tenant, or the cluster tokens when tenant is "" (no plaintext, no hashes).
  absl::StatusOr<std::vector<TokenInfo>> List(std::string_view tenant) const;

 private:
  absl::StatusOr<NewToken> Create(TokenKind kind, std::string_view tenant, std::string_view label);
  absl::StatusOr<TokenInfo> Insert(Tx& tx, TokenKind kind, std::string_view tenant,
                                   std::string_view hash, std::string_view label);

  // Constant after construction.
  Db* const db_;
  const TokenStoreOptions options_;
};

// The stored form of a token: hex SHA-256 of its text.
std::string HashToken(std::string_view token);

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_TOKEN_STORE_H_
