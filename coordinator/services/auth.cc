// Bearer-token authentication: see auth.h.
#include "coordinator/services/auth.h"

#include <cctype>

#include "common/status.h"

namespace herd::coordinator::services {
namespace {

constexpr char kMissing[] =
    "missing or invalid bearer token (send `authorization: Bearer <token>`; "
    "`herd-coordinator token create` makes one)";

}  // namespace

absl::StatusOr<std::string> ParseBearer(std::string_view header) {
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() <= kScheme.size()) return absl::UnauthenticatedError(kMissing);
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != kScheme[i]) {
      return absl::UnauthenticatedError(kMissing);
    }
  }
  std::string_view token = header.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return absl::UnauthenticatedError(kMissing);
  return std::string(token);
}

absl::StatusOr<store::Principal> AuthenticateCall(const grpc::ServerContext& context,
                                                  const store::TokenStore& tokens) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return absl::UnauthenticatedError(kMissing);
  HERD_ASSIGN_OR_RETURN(std::string token,
                        ParseBearer(std::string_view(it->second.data(), it->second.size())));
  auto principal = tokens.Authenticate(token);
  if (!principal.ok()) {
    // Storage trouble stays UNAVAILABLE (retry); every token problem reads the same.
    if (principal.status().code() != absl::StatusCode::kUnauthenticated) return principal.status();
    return absl::UnauthenticatedError(kMissing);
  }
  return principal;
}

absl::StatusOr<std::string> AuthenticateUser(const grpc::ServerContext& context,
                                             const store::TokenStore& tokens) {
  HERD_ASSIGN_OR_RETURN(store::Principal principal, AuthenticateCall(context, tokens));
  if (principal.kind != store::TokenKind::kUser) {
    return absl::PermissionDeniedError("this service takes a user token, not the cluster token");
  }
  return principal.tenant;
}

}  // namespace herd::coordinator::services
