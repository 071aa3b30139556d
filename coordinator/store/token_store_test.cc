// Tests of tenants and tokens: creation, authentication, hashing, import, revocation.
#include "coordinator/store/token_store.h"

#include "common/file_util.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::kTenantA;
using testing::kTenantB;

class TokenStoreTest : public testing::StoreTest {
 protected:
  TokenStore& tokens() { return store_->tokens(); }
};

TEST_F(TokenStoreTest, Tenants) {
  HERD_EXPECT_CODE(tokens().CreateTenant(kTenantA), kAlreadyExists);
  HERD_EXPECT_OK(tokens().EnsureTenant(kTenantA));
  HERD_EXPECT_OK(tokens().CreateTenant("team_7.ml-ops"));
  for (std::string bad : std::vector<std::string>{"", "-x", ".x", "a b", "a/b", std::string(65, 'a'), "ünï"}) {
    HERD_EXPECT_CODE(tokens().CreateTenant(bad), kInvalidArgument) << bad;
  }
  EXPECT_EQ(*tokens().ListTenants(), (std::vector<std::string>{kTenantA, kTenantB, "team_7.ml-ops"}));
}

TEST_F(TokenStoreTest, UserTokenAuthenticatesItsTenant) {
  auto token = tokens().CreateUserToken(kTenantA, "laptop");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(token->token.substr(0, 7), "herd_u_");
  EXPECT_EQ(token->token.size(), 7u + 52u) << "256 bits of base32";
  EXPECT_EQ(token->info.tenant, kTenantA);
  EXPECT_EQ(token->info.label, "laptop");
  auto who = tokens().Authenticate(token->token);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->kind, TokenKind::kUser);
  EXPECT_EQ(who->tenant, kTenantA);
  EXPECT_EQ(who->token_id, token->info.id);
  EXPECT_NE(tokens().CreateUserToken(kTenantA, "")->token, token->token);
  HERD_EXPECT_CODE(tokens().CreateUserToken("nobody", "").status(), kNotFound);
  HERD_EXPECT_CODE(tokens().CreateUserToken("bad name", "").status(), kInvalidArgument);
}

TEST_F(TokenStoreTest, ClusterToken) {
  auto token = tokens().CreateClusterToken("agents");
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->token.substr(0, 7), "herd_c_");
  auto who = tokens().Authenticate(token->token);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->kind, TokenKind::kCluster);
  EXPECT_EQ(who->tenant, "");
  EXPECT_EQ(tokens().List("")->size(), 1u);
  EXPECT_TRUE(tokens().List(kTenantA)->empty());
}

TEST_F(TokenStoreTest, BadTokensAreUnauthenticatedAlike) {
  auto real = tokens().CreateUserToken(kTenantA, "");
  std::string flipped = real->token;
  flipped.back() = flipped.back() == 'a' ? 'b' : 'a';
  std::string message;
  for (std::string bad : {std::string(""), flipped, std::string("herd_u_short"), real->token + "x",
                          std::string(300, 'a'), std::string("bad\ntoken with spaces"),
                          std::string("Bearer ") + real->token}) {
    auto who = tokens().Authenticate(bad);
    HERD_EXPECT_CODE(who.status(), kUnauthenticated) << bad;
    if (message.empty()) message = std::string(who.status().message());
    EXPECT_EQ(std::string(who.status().message()), message) << "one message for all";
  }
}

TEST_F(TokenStoreTest, OnlyTheHashIsStored) {
  auto token = tokens().CreateUserToken(kTenantA, "");
  auto cluster = tokens().CreateClusterToken("");
  store_.reset();  // checkpoint nothing special: read the files as they are on disk
  std::string everything;
  for (const char* f : {"/data/herd.db", "/data/herd.db-wal"}) {
    auto bytes = ReadFile(dir_.path() + f);
    if (bytes.ok()) everything += *bytes;
  }
  ASSERT_FALSE(everything.empty());
  EXPECT_EQ(everything.find(token->token.substr(7)), std::string::npos);
  EXPECT_EQ(everything.find(cluster->token.substr(7)), std::string::npos);
  EXPECT_NE(everything.find(HashToken(token->token)), std::string::npos);
  Reopen();
  EXPECT_EQ(tokens().Authenticate(token->token)->tenant, kTenantA) << "durable";
}

TEST_F(TokenStoreTest, Revoke) {
  auto token = tokens().CreateUserToken(kTenantA, "");
  HERD_EXPECT_OK(tokens().Revoke(token->info.id));
  HERD_EXPECT_OK(tokens().Revoke(token->info.id));  // twice is OK
  HERD_EXPECT_CODE(tokens().Authenticate(token->token).status(), kUnauthenticated);
  HERD_EXPECT_CODE(tokens().Revoke("tok_missing"), kNotFound);
  auto listed = tokens().List(kTenantA);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_TRUE(listed->at(0).revoke_time.has_value());
}

TEST_F(TokenStoreTest, ImportToken) {
  const std::string secret = "0123456789abcdef0123456789abcdef";  // 32 characters
  auto info = tokens().ImportToken(TokenKind::kUser, kTenantA, secret, "from config");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(tokens().Authenticate(secret)->tenant, kTenantA);
  EXPECT_EQ(tokens().ImportToken(TokenKind::kUser, kTenantA, secret, "again")->id, info->id)
      << "idempotent";
  HERD_EXPECT_CODE(tokens().ImportToken(TokenKind::kUser, kTenantB, secret, "").status(), kAlreadyExists);
  HERD_EXPECT_CODE(tokens().ImportToken(TokenKind::kCluster, "", secret, "").status(), kAlreadyExists);
  HERD_EXPECT_CODE(tokens().ImportToken(TokenKind::kUser, kTenantA, "too-short", "").status(),
                   kInvalidArgument);
  HERD_EXPECT_CODE(
      tokens().ImportToken(TokenKind::kUser, kTenantA, std::string(40, ' '), "").status(),
      kInvalidArgument);
  HERD_EXPECT_CODE(tokens().ImportToken(TokenKind::kCluster, kTenantA, secret + "x", "").status(),
                   kInvalidArgument)
      << "a cluster token has no tenant";
  HERD_EXPECT_CODE(tokens().ImportToken(TokenKind::kUser, "nobody", secret + "y", "").status(),
                   kNotFound);
  auto cluster = tokens().ImportToken(TokenKind::kCluster, "", secret + "z", "");
  ASSERT_TRUE(cluster.ok());
  EXPECT_EQ(tokens().Authenticate(secret + "z")->kind, TokenKind::kCluster);
  HERD_ASSERT_OK(tokens().Revoke(info->id));
  HERD_EXPECT_CODE(tokens().ImportToken(TokenKind::kUser, kTenantA, secret, "").status(),
                   kFailedPrecondition)
      << "a revoked token stays revoked";
}

}  // namespace
}  // namespace herd::coordinator::store
