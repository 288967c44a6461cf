// Who is calling, and how much they may do: bearer-token authentication with a token
// file that is re-read when it changes (server/base/token_file.h), a per-tenant request
// rate limit, and counters of concurrent work (streams, image decodes). No gRPC here: the
// service hands in the authorization metadata and maps the statuses.
//
// All classes are thread-safe.
#ifndef I2S_SERVER_API_AUTH_H_
#define I2S_SERVER_API_AUTH_H_

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/base/token_file.h"

namespace i2s {

// The caller of one RPC. Without a token file every caller is tenant "" with admin rights
// (a single-tenant server: nothing to isolate).
struct Caller {
  std::string tenant;
  bool admin = false;
  // May the caller see a job or latent of `owner`?
  bool CanAccess(absl::string_view owner) const { return admin || owner == tenant; }
};

class Authenticator {
 public:
  // No authentication: every call is Caller{"", admin}.
  Authenticator() = default;
  // Reads `path` (InvalidArgument naming the line if malformed, NotFound if missing). The
  // file is checked for changes (size, mtime, inode: also a Kubernetes Secret's symlink
  // swap) at most once per `check_every`, and re-read when it changed; a re-read that
  // fails keeps the previous tokens and logs the error.
  static absl::StatusOr<std::unique_ptr<Authenticator>> FromFile(
      const std::string& path, absl::Duration check_every = absl::Seconds(1));

  bool required() const { return !path_.empty(); }
  size_t token_count() const;

  // `authorization`: the values of the call's "authorization" metadata. Unauthenticated
  // when a token is required and none, several, a non-Bearer one or an unknown one is
  // given. The token never appears in the message.
  absl::StatusOr<Caller> Authenticate(const std::vector<absl::string_view>& authorization);

  // Re-reads the file now (SIGHUP). On error the previous tokens stay.
  absl::Status Reload();

 private:
  struct FileStamp {
    int64_t size = -1, mtime_ns = 0, inode = 0, device = 0;
    bool operator==(const FileStamp& o) const {
      return size == o.size && mtime_ns == o.mtime_ns && inode == o.inode && device == o.device;
    }
  };
  static absl::StatusOr<FileStamp> Stamp(const std::string& path);
  void ReloadIfChanged();

  std::string path_;
  absl::Duration check_every_;
  mutable std::mutex mu_;  // guards the fields below
  TokenTable table_;
  FileStamp stamp_;
  absl::Time next_check_ = absl::InfinitePast();
};

// A token bucket per tenant: `rate` calls per second on average, up to `burst` at once.
// rate <= 0 turns it off.
class RateLimiter {
 public:
  RateLimiter(double rate, int burst) : rate_(rate), burst_(burst < 1 ? 1 : burst) {}
  // OK, or ResourceExhausted naming the tenant and the limit.
  absl::Status Admit(const std::string& tenant, absl::Time now = absl::Now());

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time last;
  };
  const double rate_;
  const int burst_;
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;
};

// Counts work in progress, in total and per tenant (e.g. open streams). Acquire returns a
// Lease that gives the slot back when destroyed.
class ConcurrencyLimiter {
 public:
  // `what`: e.g. "open streams"; the flags are named in refusals. per_tenant <= 0: none.
  ConcurrencyLimiter(int total, int per_tenant, std::string what, std::string total_flag,
                     std::string tenant_flag = "");

  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { Release(); }
    void Release();

   private:
    friend class ConcurrencyLimiter;
    Lease(ConcurrencyLimiter* owner, std::string tenant)
        : owner_(owner), tenant_(std::move(tenant)) {}
    ConcurrencyLimiter* owner_ = nullptr;
    std::string tenant_;
  };

  // A slot, waiting up to `wait` for one to free up; then ResourceExhausted.
  absl::StatusOr<Lease> Acquire(const std::string& tenant,
                                absl::Duration wait = absl::ZeroDuration());
  int in_use() const;
  int in_use(const std::string& tenant) const;

 private:
  void Release(const std::string& tenant);
  bool FreeLocked(const std::string& tenant) const;

  const int total_, per_tenant_;
  const std::string what_, total_flag_, tenant_flag_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  int used_ = 0;
  std::map<std::string, int> by_tenant_;
};

}  // namespace i2s

#endif  // I2S_SERVER_API_AUTH_H_
