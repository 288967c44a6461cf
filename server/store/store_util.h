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

// PutDirection's checks: a non-empty name, a positive shape, values matching it, a finite
// sigma (SQLite would store a NaN as NULL).
absl::Status ValidateDirection(const DirectionRecord& record);
// Whether a stored direction has the content of `record` (the fields store.h's
// PutDirection compares; `values_f32` is the stored blob, compared byte for byte).
bool SameDirectionContent(const DirectionRecord& record, int64_t num_layers, int64_t latent_size,
                          double sigma, absl::string_view source, absl::string_view values_f32);
absl::Status DirectionNotFound(absl::string_view name);
absl::Status DirectionExists(absl::string_view name);
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
// A new direction, judged by usage.directions (StorageQuota::max_directions).
absl::Status CheckDirectionQuota(const StorageQuota& quota, const TenantUsage& usage);

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
// The WHERE / ORDER BY / LIMIT tail of a listing's SELECT, newest first: `filters` are SQL
// conditions; after_created, after_id (used when page.has_after: the rows strictly after
// the token's key) and limit are the backend's placeholders for those values, bound to
// page.after_created_unix_ms, page.after_id and page.limit + 1 (one more row than asked
// says whether there is a next page).
std::string ListingTail(std::vector<std::string> filters, const PageQuery& page,
                        const std::string& after_created, const std::string& after_id,
                        const std::string& limit);
// The next page's token of a listing that read `rows` rows for `page` (one more than its
// limit says there is a next page, and is dropped), from the last row kept; "" when none.
template <typename Record>
std::string NextPageToken(std::vector<Record>& rows, const PageQuery& page, char table) {
  if (static_cast<int>(rows.size()) <= page.limit) return "";
  rows.pop_back();
  return MakePageToken(table, rows.back().created_unix_ms, rows.back().id);
}

// Directions' keyset pagination, in ListDirections' order: (name, fingerprint, tenant),
// ascending and bytewise (tenant last: it only breaks ties of a listing of every tenant).
// A token is the web-safe base64 of "D:" followed by the three strings of the previous
// page's last row, each as "<byte length>:<bytes>" (names may hold any character).
struct DirectionPageQuery {
  int limit = kDefaultPageSize;
  bool has_after = false;
  std::string after_name, after_fingerprint, after_tenant;
};
std::string MakeDirectionPageToken(const DirectionRecord& last);
absl::StatusOr<DirectionPageQuery> ParseDirectionPage(const Page& page);
// The WHERE / ORDER BY / LIMIT tail of ListDirections' SELECT, as ListingTail: after_name,
// after_fingerprint, after_tenant (used when page.has_after) and limit are the backend's
// placeholders, bound to the page's values and page.limit + 1.
std::string DirectionListingTail(std::vector<std::string> filters, const DirectionPageQuery& page,
                                 const std::string& after_name,
                                 const std::string& after_fingerprint,
                                 const std::string& after_tenant, const std::string& limit);
// The next page's token of a listing that read `rows` for `page` (dropping the extra
// row); "" when there is none.
std::string NextDirectionPageToken(std::vector<DirectionRecord>& rows,
                                   const DirectionPageQuery& page);

// Rows, read the same way by both backends. The column lists both schemas share, in the
// order the readers consume them: summaries first (what listings return), then the blobs,
// the last columns of their rows.
inline constexpr char kLatentSummaryColumns[] =
    "id, tenant, model, fingerprint, num_layers, latent_size, noise_seed, source, job_id, "
    "parents_json, params_json, has_metrics, metrics_loss, metrics_mse, metrics_perceptual, "
    "metrics_psnr, metrics_steps, metrics_lpips, created_unix_ms, labels_json";
inline constexpr char kLatentBlobColumns[] = "values_f32, noise_npz";
inline constexpr char kJobSummaryColumns[] =
    "id, tenant, request_id, model, state, cancel_requested, checkpoint_step, latent_id, "
    "error_code, error_message, next_sequence, created_unix_ms, started_unix_ms, "
    "finished_unix_ms, owner, lease_expires_unix_ms, lease_epoch, progress, total_steps, result";
// A job's result is a few hundred bytes of metrics, read with its summary; its spec (the
// aligned image, megabytes) and checkpoint are the blobs.
inline constexpr char kJobBlobColumns[] = "spec, checkpoint";

// A direction row: the summaries (what ListDirections returns), then its values.
inline constexpr char kDirectionSummaryColumns[] =
    "tenant, fingerprint, name, model, num_layers, latent_size, sigma, source, params_json, "
    "created_unix_ms";
inline constexpr char kDirectionBlobColumns[] = "values_f32";

// One row of a result, by column index; each backend wraps its own.
class Row {
 public:
  virtual bool IsNull(int col) const = 0;
  virtual int64_t Int(int col) const = 0;        // NULL reads as 0
  virtual double Double(int col) const = 0;      // NULL reads as NaN
  virtual std::string Bytes(int col) const = 0;  // TEXT and BLOB alike, byte for byte
 protected:
  ~Row() = default;
};
// kLatentSummaryColumns, then whether the latent has noise maps (a backend's expression
// of length(noise_npz) > 0), then (with_values) kLatentBlobColumns.
absl::StatusOr<LatentRecord> ReadLatentRow(const Row& row, bool with_values);
// kJobSummaryColumns, then (with_blobs) kJobBlobColumns.
absl::StatusOr<JobRecord> ReadJobRow(const Row& row, bool with_blobs);
// kDirectionSummaryColumns, then (with_values) kDirectionBlobColumns.
absl::StatusOr<DirectionRecord> ReadDirectionRow(const Row& row, bool with_values);

}  // namespace i2s::store_internal

#endif  // I2S_SERVER_STORE_STORE_UTIL_H_
