// CLI configuration precedence: flag > environment > config file > default.
#include "cli/client_config.h"

#include <filesystem>

#include "common/file_util.h"
#include "gtest/gtest.h"

namespace herd::cli {
namespace {

TEST(ClientConfigTest, Precedence) {
  std::string home = ::testing::TempDir() + "/cli_cfg_home";
  std::filesystem::create_directories(home + "/.config/herd");
  ASSERT_TRUE(WriteFileAtomic(home + "/.config/herd/config.yaml", "endpoint: file:1\ntoken: t-file\n").ok());

  ClientConfigInputs in;
  in.env = {{"HOME", home}};
  auto c = ResolveClientConfig(in);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->endpoint, "file:1");
  EXPECT_EQ(c->token, "t-file");

  in.env["HERD_ENDPOINT"] = "env:2";
  in.env["HERD_TOKEN"] = "t-env";
  c = ResolveClientConfig(in);
  EXPECT_EQ(c->endpoint, "env:2");
  EXPECT_EQ(c->token, "t-env");
  EXPECT_EQ(c->source, "HERD_ENDPOINT");

  in.flag_endpoint = "flag:3";
  in.flag_token = "t-flag";
  c = ResolveClientConfig(in);
  EXPECT_EQ(c->endpoint, "flag:3");
  EXPECT_EQ(c->token, "t-flag");
}

TEST(ClientConfigTest, DefaultsWithoutAnything) {
  auto c = ResolveClientConfig({});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->endpoint, "127.0.0.1:7070");
  EXPECT_EQ(c->token, "");
}

TEST(ClientConfigTest, BrokenFileIsNamed) {
  std::string path = ::testing::TempDir() + "/cli_cfg_broken.yaml";
  ASSERT_TRUE(WriteFileAtomic(path, "endpont: x\n").ok());
  auto c = ResolveClientConfig({.flag_config = path});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("cli_cfg_broken.yaml:1: endpont: unknown field"),
            std::string::npos)
      << c.status();
}

}  // namespace
}  // namespace herd::cli
