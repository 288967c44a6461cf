#include "server/api/auth.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/base/log.h"
#include "server/formats/npy.h"

namespace i2s {

// ---- Authenticator ----

absl::StatusOr<Authenticator::FileStamp> Authenticator::Stamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    const std::string what = absl::StrCat("--auth-tokens ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(what) : absl::FailedPreconditionError(what);
  }
  FileStamp s;
  s.size = st.st_size;
  s.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  s.inode = static_cast<int64_t>(st.st_ino);
  s.device = static_cast<int64_t>(st.st_dev);
  return s;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::FromFile(const std::string& path,
                                                                       absl::Duration check_every) {
  if (path.empty()) return absl::InvalidArgumentError("--auth-tokens: empty path");
  auto auth = std::make_unique<Authenticator>();
  auth->path_ = path;
  auth->check_every_ = check_every;
  RETURN_IF_ERROR(auth->Reload());
  return auth;
}

absl::Status Authenticator::Reload() {
  ASSIGN_OR_RETURN(FileStamp stamp, Stamp(path_));
  auto text = ReadFileToString(path_);
  if (!text.ok()) return Annotate(text.status(), absl::StrCat("--auth-tokens ", path_));
  ASSIGN_OR_RETURN(TokenTable table, ParseTokenFile(*text, path_));
  std::lock_guard<std::mutex> lock(mu_);
  table_ = std::move(table);
  stamp_ = stamp;
  next_check_ = absl::Now() + check_every_;
  return absl::OkStatus();
}

size_t Authenticator::token_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_.size();
}

void Authenticator::ReloadIfChanged() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const absl::Time now = absl::Now();
    if (now < next_check_) return;
    next_check_ = now + check_every_;
  }
  auto stamp = Stamp(path_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stamp.ok() && *stamp == stamp_) return;
  }
  // Changed, or gone: re-read (a missing file keeps the old tokens, as any failure does).
  absl::Status reloaded = Reload();
  if (reloaded.ok()) {
    LogNote(absl::StrCat("--auth-tokens ", path_, ": reloaded, ", token_count(), " token(s)"));
  } else {
    // Checked again after check_every; the message names lines, never tokens.
    LogNote(absl::StrCat("--auth-tokens ", path_, ": not reloaded (", reloaded.message(),
                         "); keeping the previous ", token_count(), " token(s)"));
    std::lock_guard<std::mutex> lock(mu_);
    if (stamp.ok()) stamp_ = *stamp;  // log a broken file once, not every second
  }
}

absl::StatusOr<Caller> Authenticator::Authenticate(
    const std::vector<absl::string_view>& authorization) {
  if (!required()) return Caller{"", true};
  ReloadIfChanged();
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "no token: send the metadata \"authorization: Bearer <token>\" (i2s_client --token-file)");
  }
  if (authorization.size() > 1) {
    return absl::UnauthenticatedError("more than one authorization header");
  }
  absl::string_view value = absl::StripAsciiWhitespace(authorization[0]);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError("authorization: expected \"Bearer <token>\"");
  }
  const std::string key = TokenKey(absl::StripAsciiWhitespace(value.substr(kScheme.size())));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = table_.find(key);
  if (it == table_.end()) return absl::UnauthenticatedError("unknown or revoked token");
  return Caller{it->second.tenant, it->second.admin};
}

// ---- RateLimiter ----

absl::Status RateLimiter::Admit(const std::string& tenant, absl::Time now) {
  if (rate_ <= 0) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = buckets_.try_emplace(tenant);
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = burst_;
  } else {
    const double refill = absl::ToDoubleSeconds(now - b.last) * rate_;
    b.tokens = std::min<double>(burst_, b.tokens + std::max(0.0, refill));
  }
  b.last = now;
  if (b.tokens < 1) {
    return absl::ResourceExhaustedError(absl::StrCat("rate limit: tenant \"", tenant, "\" is over ",
                                                     rate_, " calls/s (burst ", burst_,
                                                     ", --rate-limit/--rate-burst); retry later"));
  }
  b.tokens -= 1;
  return absl::OkStatus();
}

// ---- ConcurrencyLimiter ----

ConcurrencyLimiter::ConcurrencyLimiter(int total, int per_tenant, std::string what,
                                       std::string total_flag, std::string tenant_flag)
    : total_(total),
      per_tenant_(per_tenant),
      what_(std::move(what)),
      total_flag_(std::move(total_flag)),
      tenant_flag_(std::move(tenant_flag)) {}

ConcurrencyLimiter::Lease& ConcurrencyLimiter::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = other.owner_;
    tenant_ = std::move(other.tenant_);
    other.owner_ = nullptr;
  }
  return *this;
}

void ConcurrencyLimiter::Lease::Release() {
  if (owner_ != nullptr) owner_->Release(tenant_);
  owner_ = nullptr;
}

bool ConcurrencyLimiter::FreeLocked(const std::string& tenant) const {
  if (used_ >= total_) return false;
  if (per_tenant_ <= 0) return true;
  auto it = by_tenant_.find(tenant);
  return it == by_tenant_.end() || it->second < per_tenant_;
}

absl::StatusOr<ConcurrencyLimiter::Lease> ConcurrencyLimiter::Acquire(const std::string& tenant,
                                                                      absl::Duration wait) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!FreeLocked(tenant) && wait > absl::ZeroDuration()) {
    freed_.wait_for(lock, absl::ToChronoNanoseconds(wait), [&] { return FreeLocked(tenant); });
  }
  if (used_ >= total_) {
    return absl::ResourceExhaustedError(absl::StrCat("too many ", what_, ": ", used_,
                                                     " in progress (limit ", total_, ", ",
                                                     total_flag_, "); retry later"));
  }
  if (!FreeLocked(tenant)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("too many ", what_, " for tenant \"", tenant, "\": ", by_tenant_[tenant],
                     " (limit ", per_tenant_, ", ", tenant_flag_, "); retry later"));
  }
  ++used_;
  ++by_tenant_[tenant];
  return Lease(this, tenant);
}

void ConcurrencyLimiter::Release(const std::string& tenant) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    --used_;
    auto it = by_tenant_.find(tenant);
    if (it != by_tenant_.end() && --it->second == 0) by_tenant_.erase(it);
  }
  freed_.notify_all();
}

int ConcurrencyLimiter::in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

int ConcurrencyLimiter::in_use(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_tenant_.find(tenant);
  return it == by_tenant_.end() ? 0 : it->second;
}

}  // namespace i2s
