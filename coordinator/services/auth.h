// Bearer-token authentication shared by the user-facing gRPC services (DESIGN.md §8,
// common.proto): `authorization: Bearer <token>` metadata -> TokenStore -> tenant.
#ifndef HERD_COORDINATOR_SERVICES_AUTH_H_
#define HERD_COORDINATOR_SERVICES_AUTH_H_

#include <string>
#include <string_view>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "coordinator/store/token_store.h"

namespace herd::coordinator::services {

// The token of an `authorization` header value ("Bearer <token>", scheme case-insensitive).
// UNAUTHENTICATED when it is not of that form.
absl::StatusOr<std::string> ParseBearer(std::string_view header);

// Who the call's token belongs to, of either kind. UNAUTHENTICATED for a missing, malformed,
// unknown or revoked token (one message for all); UNAVAILABLE when the store cannot answer.
absl::StatusOr<store::Principal> AuthenticateCall(const grpc::ServerContext& context,
                                                  const store::TokenStore& tokens);

// The tenant of the user token the call carries. UNAUTHENTICATED for a missing, malformed,
// unknown or revoked token (one message for all); PERMISSION_DENIED for the cluster token.
absl::StatusOr<std::string> AuthenticateUser(const grpc::ServerContext& context,
                                             const store::TokenStore& tokens);

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_AUTH_H_
