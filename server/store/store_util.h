// What the Store backends (sqlite_store, postgres_store) share: record validation, the
// byte and JSON encodings of columns, keyset page tokens and the common error statuses.
// Internal to server/store.
#ifndef I2S_SERVER_STORE_STORE_UTIL_H_
#define I2S_SERVER_STORE_STORE_UTIL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/store/store.h"

namespace i2s::store_internal {

// AIP-158 defaults: a page size of 0 means "the server's default"; larger requests than
// the maximum are refused rather than silently shortened.
inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 1000;

int64_t NowUnixMs();

// float32 little-endian bytes, whatever the host's byte order.
std::string EncodeFloats(const std::vector<float>& values);
std::vector<float> DecodeFloats(absl::string_view bytes);

// PutLatent's checks: a non-empty ID, non-negative shape, values matching the shape.
absl::Status ValidateLatent(const LatentRecord& record);
// JSON text of a latent's parents / labels; InvalidArgument naming the field when a
// string is not UTF-8.
absl::StatusOr<std::string> ParentsToJson(const LatentRecord& record);
absl::StatusOr<std::string> LabelsToJson(const LatentRecord& record);
// The inverse; Internal ("database is corrupt") when the stored text is not what
// ParentsToJson / LabelsToJson write.
absl::StatusOr<std::vector<std::string>> ParentsFromJson(const std::string& text,
                                                         absl::string_view id);
absl::StatusOr<std::map<std::string, std::string>> LabelsFromJson(const std::string& text,
                                                                  absl::string_view id);
// The latent's values from their stored bytes; Internal when the size does not match the
// shape.
absl::StatusOr<std::vector<float>> ValuesFromBytes(const LatentRecord& record,
                                                   absl::string_view bytes);
// A job state read from a row; Internal for a value outside JobState.
absl::StatusOr<JobState> JobStateFromColumn(int64_t value, absl::string_view id);

absl::Status Corrupt(absl::string_view kind, absl::string_view id, absl::string_view what);
absl::Status LatentNotFound(absl::string_view id);
absl::Status JobNotFound(absl::string_view id);
// A write by a replica that no longer holds the job's lease at `lease_epoch` (fencing).
absl::Status NotTheOwner(absl::string_view id, absl::string_view owner, int64_t lease_epoch);
absl::Status CheckJobState(JobState state, absl::string_view field);
// FinishJobWithLatent's check that `latent` is the embedding `record` made: InvalidArgument
// unless latent.job_id is record.id and latent.source is "embed".
absl::Status CheckJobResult(const JobRecord& record, const LatentRecord& latent);
// The bit mask of `states` (bit s set = keep state s); 0 keeps every state.
absl::StatusOr<int64_t> StateMask(const std::vector<JobState>& states);
// Oldest first: created_unix_ms, then ID (UnfinishedJobs' and ClaimJobs' order).
void SortOldestFirst(std::vector<JobRecord>& jobs);
absl::Status RequestUsedForAnother(absl::string_view request_id);
absl::Status RequestNotFound(absl::string_view method, absl::string_view request_id);

// Quotas (StorageQuota), judged against the tenant's usage before the write.
int64_t LatentBytes(const LatentRecord& record);  // values and noise maps
int64_t JobBytes(const JobRecord& record);        // spec, checkpoint and result
bool HasLimits(const StorageQuota& quota);
// A new latent of `new_bytes` (never refused for an embedding's own result, see
// StorageQuota); ResourceExhausted naming the quota, the usage and the limit.
absl::Status CheckLatentQuota(const StorageQuota& quota, const TenantUsage& usage,
                              const LatentRecord& record);
absl::Status CheckJobQuota(const StorageQuota& quota, const TenantUsage& usage,
                           const JobRecord& record);

// Keyset pagination. A token is the web-safe base64 of "<table>:<created_unix_ms>:<id>"
// for the last row of the previous page (table 'L' latents, 'J' jobs, so a token of one
// listing is refused by the other); the next page starts strictly after that key in the
// (created_unix_ms DESC, id DESC) order. Unlike an offset, that neither skips nor repeats
// rows when others are inserted or deleted between calls. IDs compare bytewise.
struct PageQuery {
  int limit = kDefaultPageSize;
  bool has_after = false;
  int64_t after_created_unix_ms = 0;
  std::string after_id;
};
std::string MakePageToken(char table, int64_t created_unix_ms, absl::string_view id);
absl::StatusOr<PageQuery> ParsePage(const Page& page, char table);

}  // namespace i2s::store_internal

#endif  // I2S_SERVER_STORE_STORE_UTIL_H_
