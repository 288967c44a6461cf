#include "server/base/token_file.h"

#include <gtest/gtest.h>

#include "server/base/sha256.h"

namespace i2s {
namespace {

TEST(TokenFileTest, ParsesTokensHashesAndAdmins) {
  const std::string hashed = Sha256Hex("the-second-secret-token");
  auto table = ParseTokenFile(
      "# tenants\n"
      "\n"
      "alpha-secret-token-0001 alpha\n"
      "  sha256:" +
      hashed +
      "\tbeta  \r\n"
      "root-secret-token-00001 ops admin\n");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), 3u);
  const TokenGrant& a = table->at(TokenKey("alpha-secret-token-0001"));
  EXPECT_EQ(a.tenant, "alpha");
  EXPECT_FALSE(a.admin);
  EXPECT_EQ(table->at(TokenKey("the-second-secret-token")).tenant, "beta");
  EXPECT_TRUE(table->at(TokenKey("root-secret-token-00001")).admin);
  EXPECT_EQ(table->count(TokenKey("unknown-token-000000")), 0u);
}

TEST(TokenFileTest, ErrorsNameTheLineAndNeverTheToken) {
  struct Case {
    std::string text, want;
  } cases[] = {
      {"short alpha\n", "tokens:1: a token needs 16..512 characters (this one has 5)"},
      {"# c\nalpha-secret-token-0001\n", "tokens:2: expected"},
      {"alpha-secret-token-0001 al/pha\n", "tokens:1: the tenant needs"},
      {"alpha-secret-token-0001 -alpha\n", "tokens:1: the tenant needs"},
      {"alpha-secret-token-0001 alpha root\n", "tokens:1: the third word"},
      {"alpha-secret-token-0001 alpha\nalpha-secret-token-0001 beta\n",
       "tokens:2: this token is already listed"},
      {"sha256:abc alpha\n", "tokens:1: a sha256: token needs 64"},
      {"sha256:" + std::string(64, 'G') + " alpha\n", "tokens:1: a sha256: token needs 64"},
      {"alpha-secret-token-\x01\x30\x30\x31 alpha\n", "tokens:1: a token must be printable"},
      {"# nothing\n\n", "tokens: no tokens"},
      {"", "tokens: no tokens"},
  };
  for (const Case& c : cases) {
    auto table = ParseTokenFile(c.text);
    ASSERT_FALSE(table.ok()) << c.text;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(table.status().message().find(c.want), std::string::npos) << table.status();
    EXPECT_EQ(table.status().message().find("secret"), std::string::npos) << table.status();
  }
  // A hash listed twice, once in clear and once hashed, is the same token.
  auto dup = ParseTokenFile(
      "alpha-secret-token-0001 alpha\nsha256:" + Sha256Hex("alpha-secret-token-0001") + " beta\n");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("tokens:2"), std::string::npos);
}

TEST(TokenFileTest, TenantNames) {
  EXPECT_TRUE(IsValidTenant("a"));
  EXPECT_TRUE(IsValidTenant("team-7.prod_eu"));
  EXPECT_TRUE(IsValidTenant(std::string(64, 'x')));
  EXPECT_FALSE(IsValidTenant(""));
  EXPECT_FALSE(IsValidTenant(std::string(65, 'x')));
  EXPECT_FALSE(IsValidTenant("_a"));
  EXPECT_FALSE(IsValidTenant("a b"));
  EXPECT_FALSE(IsValidTenant("a@b"));
}

}  // namespace
}  // namespace i2s
