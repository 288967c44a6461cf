#include "server/api/auth.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "server/base/sha256.h"

namespace i2s {
namespace {

std::string TempFile(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("i2s_auth_test_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(path) << text;
  return path.string();
}

std::vector<absl::string_view> Header(const std::string& value) { return {value}; }

TEST(AuthenticatorTest, WithoutTokenFileEveryoneIsTheSingleAdminTenant) {
  Authenticator open;
  EXPECT_FALSE(open.required());
  auto c = open.Authenticate({});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->tenant, "");
  EXPECT_TRUE(c->admin);
}

TEST(AuthenticatorTest, BearerTokensMapToTenants) {
  const std::string path = TempFile(
      "tokens", "alpha-secret-token-0001 alpha\nsha256:" + Sha256Hex("root-secret-token-00001") +
                    " ops admin\n");
  auto auth = Authenticator::FromFile(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->required());
  auto a = (*auth)->Authenticate(Header("Bearer alpha-secret-token-0001"));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->tenant, "alpha");
  EXPECT_FALSE(a->admin);
  EXPECT_TRUE(a->CanAccess("alpha"));
  EXPECT_FALSE(a->CanAccess("beta"));
  auto root = (*auth)->Authenticate(Header("bearer   root-secret-token-00001 "));
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_TRUE(root->admin);
  EXPECT_TRUE(root->CanAccess("beta"));
  for (const auto& headers : std::vector<std::vector<absl::string_view>>{
           {},
           {"alpha-secret-token-0001"},
           {"Basic alpha-secret-token-0001"},
           {"Bearer "},
           {"Bearer alpha-secret-token-0002"},
           {"Bearer alpha-secret-token-0001", "Bearer alpha-secret-token-0001"}}) {
    auto c = (*auth)->Authenticate(headers);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(c.status().message().find("secret"), std::string::npos) << c.status();
  }
  std::filesystem::remove(path);
}

TEST(AuthenticatorTest, ReloadsWhenTheFileChangesAndKeepsTokensOnABadFile) {
  const std::string path = TempFile("reload", "alpha-secret-token-0001 alpha\n");
  auto auth = Authenticator::FromFile(path, absl::ZeroDuration());
  ASSERT_TRUE(auth.ok());
  ASSERT_TRUE((*auth)->Authenticate(Header("Bearer alpha-secret-token-0001")).ok());
  // Rotate: a new file put in place by rename (as editors and Kubernetes do).
  const std::string next = TempFile("reload.next", "beta-secret-token-00001 beta\n");
  std::filesystem::rename(next, path);
  auto beta = (*auth)->Authenticate(Header("Bearer beta-secret-token-00001"));
  ASSERT_TRUE(beta.ok()) << beta.status();
  EXPECT_EQ(beta->tenant, "beta");
  EXPECT_FALSE((*auth)->Authenticate(Header("Bearer alpha-secret-token-0001")).ok());
  // A broken file is not taken: the previous tokens stay.
  std::ofstream(path) << "oops\n";
  EXPECT_TRUE((*auth)->Authenticate(Header("Bearer beta-secret-token-00001")).ok());
  EXPECT_EQ((*auth)->token_count(), 1u);
  std::filesystem::remove(path);
  EXPECT_TRUE((*auth)->Authenticate(Header("Bearer beta-secret-token-00001")).ok());
}

// A Kubernetes Secret volume: tokens -> ..data/tokens, ..data -> ..<timestamp>/, and an
// update swaps the ..data symlink to a new folder.
TEST(AuthenticatorTest, FollowsAKubernetesSecretUpdate) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("i2s_auth_k8s_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "..v1");
  std::ofstream(dir / "..v1" / "tokens") << "alpha-secret-token-0001 alpha\n";
  fs::create_directory_symlink("..v1", dir / "..data");
  fs::create_symlink("..data/tokens", dir / "tokens");
  auto auth = Authenticator::FromFile((dir / "tokens").string(), absl::ZeroDuration());
  ASSERT_TRUE(auth.ok()) << auth.status();
  ASSERT_TRUE((*auth)->Authenticate(Header("Bearer alpha-secret-token-0001")).ok());
  fs::create_directories(dir / "..v2");
  std::ofstream(dir / "..v2" / "tokens") << "beta-secret-token-00001 beta\n";
  fs::create_directory_symlink("..v2", dir / "..data_tmp");
  fs::rename(dir / "..data_tmp", dir / "..data");  // atomic, as the kubelet does
  fs::remove_all(dir / "..v1");
  auto beta = (*auth)->Authenticate(Header("Bearer beta-secret-token-00001"));
  ASSERT_TRUE(beta.ok()) << beta.status();
  EXPECT_EQ(beta->tenant, "beta");
  EXPECT_FALSE((*auth)->Authenticate(Header("Bearer alpha-secret-token-0001")).ok());
  fs::remove_all(dir);
}

TEST(AuthenticatorTest, StartFailsOnMissingOrBadFile) {
  auto missing = Authenticator::FromFile("/nonexistent/i2s/tokens");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/i2s/tokens"), std::string::npos);
  const std::string path = TempFile("bad", "alpha-secret-token-0001 al/pha\n");
  auto bad = Authenticator::FromFile(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":1: the tenant"), std::string::npos) << bad.status();
  std::filesystem::remove(path);
}

TEST(RateLimiterTest, BurstThenRatePerTenant) {
  RateLimiter limiter(10, 3);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Admit("a", t0).ok());
  absl::Status over = limiter.Admit("a", t0);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("tenant \"a\""), std::string::npos);
  EXPECT_NE(over.message().find("--rate-limit"), std::string::npos);
  EXPECT_TRUE(limiter.Admit("b", t0).ok());  // another tenant has its own bucket
  EXPECT_FALSE(limiter.Admit("a", t0 + absl::Milliseconds(50)).ok());  // half a token
  EXPECT_TRUE(limiter.Admit("a", t0 + absl::Milliseconds(110)).ok());
  EXPECT_FALSE(limiter.Admit("a", t0 + absl::Milliseconds(120)).ok());
  // A long pause refills to the burst, not beyond.
  const absl::Time later = t0 + absl::Seconds(60);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Admit("a", later).ok());
  EXPECT_FALSE(limiter.Admit("a", later).ok());
  RateLimiter off(0, 1);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(off.Admit("a", t0).ok());
}

TEST(ConcurrencyLimiterTest, TotalAndPerTenant) {
  ConcurrencyLimiter limiter(3, 2, "open streams", "--max-streams", "--tenant-max-streams");
  auto a1 = limiter.Acquire("a");
  auto a2 = limiter.Acquire("a");
  ASSERT_TRUE(a1.ok() && a2.ok());
  auto a3 = limiter.Acquire("a");
  ASSERT_FALSE(a3.ok());
  EXPECT_EQ(a3.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(a3.status().message().find("--tenant-max-streams"), std::string::npos);
  auto b1 = limiter.Acquire("b");
  ASSERT_TRUE(b1.ok());
  auto b2 = limiter.Acquire("b");
  ASSERT_FALSE(b2.ok());
  EXPECT_NE(b2.status().message().find("--max-streams"), std::string::npos) << b2.status();
  EXPECT_EQ(limiter.in_use(), 3);
  a1->Release();
  a1->Release();  // idempotent
  EXPECT_EQ(limiter.in_use("a"), 1);
  {
    auto b = limiter.Acquire("b");
    ASSERT_TRUE(b.ok());
  }  // released at scope end
  EXPECT_EQ(limiter.in_use(), 2);
  // Moving a lease moves the slot, it does not copy or drop it.
  ConcurrencyLimiter::Lease moved = *std::move(a2);
  EXPECT_EQ(limiter.in_use("a"), 1);
  moved = ConcurrencyLimiter::Lease();
  EXPECT_EQ(limiter.in_use("a"), 0);
}

TEST(ConcurrencyLimiterTest, AcquireWaitsForASlot) {
  ConcurrencyLimiter limiter(1, 0, "image decodes", "--max-concurrent-images");
  auto held = limiter.Acquire("");
  ASSERT_TRUE(held.ok());
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    held->Release();
  });
  auto waited = limiter.Acquire("", absl::Seconds(20));
  releaser.join();
  EXPECT_TRUE(waited.ok()) << waited.status();
  auto refused = limiter.Acquire("", absl::Milliseconds(50));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("--max-concurrent-images"), std::string::npos);
}

}  // namespace
}  // namespace i2s
