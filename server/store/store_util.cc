#include "server/store/store_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <tuple>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace i2s::store_internal {

static_assert(sizeof(float) == 4, "latent values are stored as IEEE float32");

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string EncodeFloats(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &values[i], sizeof(bits));
    for (int b = 0; b < 4; ++b) out[4 * i + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  return out;
}

std::vector<float> DecodeFloats(absl::string_view bytes) {
  std::vector<float> values(bytes.size() / sizeof(float));
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) bits |= uint32_t{static_cast<uint8_t>(bytes[4 * i + b])} << (8 * b);
    std::memcpy(&values[i], &bits, sizeof(bits));
  }
  return values;
}

absl::Status ValidateLatent(const LatentRecord& record) {
  if (record.id.empty()) return absl::InvalidArgumentError("latent id is empty");
  const std::string name = absl::StrCat("latent \"", record.id, "\"");
  if (record.num_layers < 0 || record.latent_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": num_layers ", record.num_layers,
                                                   " and latent_size ", record.latent_size,
                                                   " must not be negative"));
  }
  const int64_t want = int64_t{record.num_layers} * record.latent_size;
  if (static_cast<int64_t>(record.values.size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": values has ", record.values.size(), " floats, want num_layers * latent_size = ",
        record.num_layers, " * ", record.latent_size, " = ", want));
  }
  return absl::OkStatus();
}

namespace {

// nlohmann::json throws on strings that are not UTF-8; that becomes InvalidArgument
// naming the field.
template <typename T>
absl::StatusOr<std::string> ToJson(const T& value, absl::string_view id, absl::string_view field) {
  try {
    return nlohmann::json(value).dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("latent \"", id, "\": ", field, " must be valid UTF-8 (", e.what(), ")"));
  }
}

}  // namespace

absl::StatusOr<std::string> ParentsToJson(const LatentRecord& record) {
  return ToJson(record.parents, record.id, "parents");
}

absl::StatusOr<std::string> LabelsToJson(const LatentRecord& record) {
  return ToJson(record.labels, record.id, "labels");
}

absl::Status Corrupt(absl::string_view kind, absl::string_view id, absl::string_view what) {
  return absl::InternalError(absl::StrCat("database is corrupt: ", kind, " \"", id, "\": ", what));
}

absl::StatusOr<std::vector<std::string>> ParentsFromJson(const std::string& text,
                                                         absl::string_view id) {
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_array()) return Corrupt("latent", id, "parents_json is not an array");
  std::vector<std::string> parents;
  for (const nlohmann::json& item : json) {
    if (!item.is_string()) return Corrupt("latent", id, "parents_json holds a non-string");
    parents.push_back(item.get<std::string>());
  }
  return parents;
}

absl::StatusOr<std::map<std::string, std::string>> LabelsFromJson(const std::string& text,
                                                                  absl::string_view id) {
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return Corrupt("latent", id, "labels_json is not an object");
  std::map<std::string, std::string> labels;
  for (const auto& [key, value] : json.items()) {
    if (!value.is_string()) return Corrupt("latent", id, "labels_json holds a non-string");
    labels.emplace(key, value.get<std::string>());
  }
  return labels;
}

absl::StatusOr<std::vector<float>> ValuesFromBytes(const LatentRecord& record,
                                                   absl::string_view bytes) {
  const int64_t want = int64_t{record.num_layers} * record.latent_size * int64_t{sizeof(float)};
  if (static_cast<int64_t>(bytes.size()) != want) {
    return Corrupt("latent", record.id,
                   absl::StrCat("values_f32 has ", bytes.size(), " bytes, want ", want));
  }
  return DecodeFloats(bytes);
}

absl::Status ValidateDirection(const DirectionRecord& record) {
  if (record.name.empty()) return absl::InvalidArgumentError("direction name is empty");
  const std::string name = absl::StrCat("direction \"", record.name, "\"");
  if (record.num_layers <= 0 || record.latent_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": num_layers ", record.num_layers,
                                                   " and latent_size ", record.latent_size,
                                                   " must be positive"));
  }
  const int64_t want = int64_t{record.num_layers} * record.latent_size;
  if (static_cast<int64_t>(record.values.size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": values has ", record.values.size(), " floats, want num_layers * latent_size = ",
        record.num_layers, " * ", record.latent_size, " = ", want));
  }
  if (!std::isfinite(record.sigma)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": sigma must be finite"));
  }
  return absl::OkStatus();
}

bool SameDirectionContent(const DirectionRecord& record, int64_t num_layers, int64_t latent_size,
                          double sigma, absl::string_view source, absl::string_view values_f32) {
  return record.num_layers == num_layers && record.latent_size == latent_size &&
         record.sigma == sigma && record.source == source &&
         EncodeFloats(record.values) == values_f32;
}

absl::Status DirectionNotFound(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat("direction \"", name, "\" not found"));
}

absl::Status DirectionExists(absl::string_view name) {
  return absl::AlreadyExistsError(
      absl::StrCat("direction \"", name, "\" already exists for this model (delete it first)"));
}

absl::StatusOr<JobState> JobStateFromColumn(int64_t value, absl::string_view id) {
  if (value < static_cast<int>(JobState::kQueued) ||
      value > static_cast<int>(JobState::kCancelled)) {
    return Corrupt("job", id, absl::StrCat("unknown state ", value));
  }
  return static_cast<JobState>(value);
}

absl::Status LatentNotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("latent \"", id, "\" not found"));
}

absl::Status JobNotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
}

absl::Status NotTheOwner(absl::string_view id, absl::string_view owner, int64_t lease_epoch) {
  return absl::FailedPreconditionError(absl::StrCat(
      "job \"", id, "\" is not owned by replica \"", owner, "\" at lease epoch ", lease_epoch,
      " any more (its lease expired and another replica took it over, or a later process",
      " under the same replica ID claimed it)"));
}

absl::Status CheckJobState(JobState state, absl::string_view field) {
  const int value = static_cast<int>(state);
  if (value < static_cast<int>(JobState::kQueued) ||
      value > static_cast<int>(JobState::kCancelled)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": unknown job state ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckJobResult(const JobRecord& record, const LatentRecord& latent) {
  if (latent.job_id != record.id || latent.source != "embed") {
    return absl::InvalidArgumentError(
        absl::StrCat("latent \"", latent.id, "\" is not the embedding of job \"", record.id,
                     "\" (job_id \"", latent.job_id, "\", source \"", latent.source, "\")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> StateMask(const std::vector<JobState>& states) {
  int64_t mask = 0;
  for (JobState state : states) {
    if (absl::Status bad = CheckJobState(state, "states"); !bad.ok()) return bad;
    mask |= int64_t{1} << static_cast<int>(state);
  }
  return mask;
}

void SortOldestFirst(std::vector<JobRecord>& jobs) {
  std::sort(jobs.begin(), jobs.end(), [](const JobRecord& a, const JobRecord& b) {
    return std::tie(a.created_unix_ms, a.id) < std::tie(b.created_unix_ms, b.id);
  });
}

absl::Status RequestUsedForAnother(absl::string_view request_id) {
  return absl::InvalidArgumentError(
      absl::StrCat("request_id: \"", request_id, "\" was used for a different request"));
}

absl::Status RequestNotFound(absl::string_view method, absl::string_view request_id) {
  return absl::NotFoundError(
      absl::StrCat("request_id \"", request_id, "\" of ", method, " not found"));
}

int64_t LatentBytes(const LatentRecord& record) {
  return static_cast<int64_t>(record.values.size() * sizeof(float) + record.noise_npz.size());
}

int64_t JobBytes(const JobRecord& record) {
  return static_cast<int64_t>(record.spec.size() + record.checkpoint.size() + record.result.size());
}

bool HasLimits(const StorageQuota& quota) {
  return quota.max_latents > 0 || quota.max_latent_bytes > 0 || quota.max_jobs > 0 ||
         quota.max_job_bytes > 0;
}

namespace {

std::string TenantName(const std::string& tenant) {
  return tenant.empty() ? "the default tenant" : absl::StrCat("tenant \"", tenant, "\"");
}

}  // namespace

absl::Status CheckLatentQuota(const StorageQuota& quota, const TenantUsage& usage,
                              const LatentRecord& record) {
  if (record.source == "embed") return absl::OkStatus();  // reserved by its job
  if (quota.max_latents > 0 && usage.latents + usage.unfinished_jobs + 1 > quota.max_latents) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "latent quota: ", TenantName(usage.tenant), " keeps ", usage.latents, " latents and ",
        usage.unfinished_jobs, " unfinished embedding jobs (each reserves one); the limit is ",
        quota.max_latents, " (--tenant-max-latents); delete latents to make room"));
  }
  const int64_t bytes = LatentBytes(record);
  if (quota.max_latent_bytes > 0 && usage.latent_bytes + bytes > quota.max_latent_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "latent bytes quota: ", TenantName(usage.tenant), " keeps ", usage.latent_bytes,
        " bytes of latents and this one has ", bytes, "; the limit is ", quota.max_latent_bytes,
        " (--tenant-max-latent-bytes); delete latents to make room"));
  }
  return absl::OkStatus();
}

absl::Status CheckJobQuota(const StorageQuota& quota, const TenantUsage& usage,
                           const JobRecord& record) {
  if (quota.max_jobs > 0 && usage.jobs + 1 > quota.max_jobs) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job quota: ", TenantName(usage.tenant), " keeps ", usage.jobs, " jobs; the limit is ",
        quota.max_jobs, " (--tenant-max-jobs); finished jobs expire after --job-retention-hours"));
  }
  const int64_t bytes = JobBytes(record);
  if (quota.max_job_bytes > 0 && usage.job_bytes + bytes > quota.max_job_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job bytes quota: ", TenantName(usage.tenant), " keeps ", usage.job_bytes,
        " bytes of jobs and this one has ", bytes, "; the limit is ", quota.max_job_bytes,
        " (--tenant-max-job-bytes); finished jobs expire after --job-retention-hours"));
  }
  // The job's result will be a latent: it needs a free latent slot and room for bytes.
  if (quota.max_latents > 0 && usage.latents + usage.unfinished_jobs + 1 > quota.max_latents) {
    return absl::ResourceExhaustedError(
        absl::StrCat("latent quota: ", TenantName(usage.tenant), " keeps ", usage.latents,
                     " latents and ", usage.unfinished_jobs,
                     " unfinished embedding jobs (each reserves one for its result); the limit is ",
                     quota.max_latents, " (--tenant-max-latents); delete latents to make room"));
  }
  if (quota.max_latent_bytes > 0 && usage.latent_bytes >= quota.max_latent_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "latent bytes quota: ", TenantName(usage.tenant), " keeps ", usage.latent_bytes,
        " bytes of latents; the limit is ", quota.max_latent_bytes,
        " (--tenant-max-latent-bytes), so no room for this job's result; delete latents "
        "to make room"));
  }
  return absl::OkStatus();
}

absl::Status CheckDirectionQuota(const StorageQuota& quota, const TenantUsage& usage) {
  if (quota.max_directions > 0 && usage.directions + 1 > quota.max_directions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("direction quota: ", TenantName(usage.tenant), " keeps ", usage.directions,
                     " directions; the limit is ", quota.max_directions,
                     " (--tenant-max-directions); delete directions to make room"));
  }
  return absl::OkStatus();
}

std::string MakePageToken(char table, int64_t created_unix_ms, absl::string_view id) {
  return absl::WebSafeBase64Escape(
      absl::StrCat(std::string(1, table), ":", created_unix_ms, ":", id));
}

namespace {

// The rows a page holds: page_size, or the default for 0; InvalidArgument out of range.
absl::StatusOr<int> PageLimit(const Page& page) {
  if (page.page_size < 0 || page.page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("page_size must be between 0 and ", kMaxPageSize,
                                                   " (0 = ", kDefaultPageSize, "), got ",
                                                   page.page_size));
  }
  return page.page_size > 0 ? page.page_size : kDefaultPageSize;
}

absl::Status BadPageToken() {
  return absl::InvalidArgumentError(
      "page_token is not valid: pass the next_page_token of the previous call unchanged");
}

}  // namespace

absl::StatusOr<PageQuery> ParsePage(const Page& page, char table) {
  PageQuery q;
  ASSIGN_OR_RETURN(q.limit, PageLimit(page));
  if (page.page_token.empty()) return q;

  const absl::Status bad = BadPageToken();
  std::string key;
  if (!absl::WebSafeBase64Unescape(page.page_token, &key)) return bad;
  // "<table>:<created>:<id>"; the ID may itself contain ':'.
  if (key.size() < 4 || key[0] != table || key[1] != ':') return bad;
  const size_t colon = key.find(':', 2);
  if (colon == std::string::npos || colon + 1 == key.size()) return bad;
  if (!absl::SimpleAtoi(absl::string_view(key).substr(2, colon - 2), &q.after_created_unix_ms)) {
    return bad;
  }
  q.has_after = true;
  q.after_id = key.substr(colon + 1);
  return q;
}

std::string ListingTail(std::vector<std::string> filters, const PageQuery& page,
                        const std::string& after_created, const std::string& after_id,
                        const std::string& limit) {
  // Row values compare lexicographically: "strictly after the token's key" in DESC order.
  if (page.has_after) {
    filters.push_back(
        absl::StrCat("(created_unix_ms, id) < (", after_created, ", ", after_id, ")"));
  }
  std::string tail;
  if (!filters.empty()) absl::StrAppend(&tail, " WHERE ", absl::StrJoin(filters, " AND "));
  absl::StrAppend(&tail, " ORDER BY created_unix_ms DESC, id DESC LIMIT ", limit);
  return tail;
}

std::string MakeDirectionPageToken(const DirectionRecord& last) {
  std::string key = "D:";
  for (const std::string* part : {&last.name, &last.fingerprint, &last.tenant}) {
    absl::StrAppend(&key, part->size(), ":", *part);
  }
  return absl::WebSafeBase64Escape(key);
}

absl::StatusOr<DirectionPageQuery> ParseDirectionPage(const Page& page) {
  DirectionPageQuery q;
  ASSIGN_OR_RETURN(q.limit, PageLimit(page));
  if (page.page_token.empty()) return q;

  std::string key;
  if (!absl::WebSafeBase64Unescape(page.page_token, &key)) return BadPageToken();
  absl::string_view rest = key;
  if (!absl::ConsumePrefix(&rest, "D:")) return BadPageToken();
  for (std::string* part : {&q.after_name, &q.after_fingerprint, &q.after_tenant}) {
    const size_t colon = rest.find(':');
    size_t size = 0;
    if (colon == absl::string_view::npos || colon == 0 ||
        !absl::SimpleAtoi(rest.substr(0, colon), &size) || size > rest.size() - colon - 1) {
      return BadPageToken();
    }
    *part = std::string(rest.substr(colon + 1, size));
    rest.remove_prefix(colon + 1 + size);
  }
  if (!rest.empty()) return BadPageToken();
  q.has_after = true;
  return q;
}

std::string DirectionListingTail(std::vector<std::string> filters, const DirectionPageQuery& page,
                                 const std::string& after_name,
                                 const std::string& after_fingerprint,
                                 const std::string& after_tenant, const std::string& limit) {
  if (page.has_after) {
    filters.push_back(absl::StrCat("(name, fingerprint, tenant) > (", after_name, ", ",
                                   after_fingerprint, ", ", after_tenant, ")"));
  }
  std::string tail;
  if (!filters.empty()) absl::StrAppend(&tail, " WHERE ", absl::StrJoin(filters, " AND "));
  absl::StrAppend(&tail, " ORDER BY name, fingerprint, tenant LIMIT ", limit);
  return tail;
}

std::string NextDirectionPageToken(std::vector<DirectionRecord>& rows,
                                   const DirectionPageQuery& page) {
  if (static_cast<int>(rows.size()) <= page.limit) return "";
  rows.pop_back();
  return MakeDirectionPageToken(rows.back());
}

absl::StatusOr<LatentRecord> ReadLatentRow(const Row& row, bool with_values) {
  LatentRecord r;
  int c = 0;
  r.id = row.Bytes(c++);
  r.tenant = row.Bytes(c++);
  r.model = row.Bytes(c++);
  r.fingerprint = row.Bytes(c++);
  r.num_layers = static_cast<int>(row.Int(c++));
  r.latent_size = static_cast<int>(row.Int(c++));
  r.noise_seed = static_cast<uint64_t>(row.Int(c++));
  r.source = row.Bytes(c++);
  r.job_id = row.Bytes(c++);
  ASSIGN_OR_RETURN(r.parents, ParentsFromJson(row.Bytes(c++), r.id));
  r.params_json = row.Bytes(c++);
  if (row.Int(c++) != 0) {
    LatentMetrics m;
    // NULL: NaN (SQLite stores a NaN as NULL).
    m.loss = row.Double(c++);
    m.mse = row.Double(c++);
    m.perceptual = row.Double(c++);
    m.psnr = row.Double(c++);
    m.steps = static_cast<int>(row.Int(c++));
    const double lpips = row.Double(c++);  // NULL: not measured
    m.lpips = std::isnan(lpips) ? -1 : lpips;
    r.metrics = m;
  } else {
    c += 6;
  }
  r.created_unix_ms = row.Int(c++);
  ASSIGN_OR_RETURN(r.labels, LabelsFromJson(row.Bytes(c++), r.id));
  r.has_noise = row.Int(c++) != 0;
  if (with_values) {
    ASSIGN_OR_RETURN(r.values, ValuesFromBytes(r, row.Bytes(c++)));
    r.noise_npz = row.Bytes(c++);
  }
  return r;
}

absl::StatusOr<JobRecord> ReadJobRow(const Row& row, bool with_blobs) {
  JobRecord r;
  int c = 0;
  r.id = row.Bytes(c++);
  r.tenant = row.Bytes(c++);
  r.request_id = row.Bytes(c++);
  r.model = row.Bytes(c++);
  ASSIGN_OR_RETURN(r.state, JobStateFromColumn(row.Int(c++), r.id));
  r.cancel_requested = row.Int(c++) != 0;
  r.checkpoint_step = static_cast<int>(row.Int(c++));
  r.latent_id = row.Bytes(c++);
  r.error_code = static_cast<int>(row.Int(c++));
  r.error_message = row.Bytes(c++);
  r.next_sequence = row.Int(c++);
  r.created_unix_ms = row.Int(c++);
  r.started_unix_ms = row.Int(c++);
  r.finished_unix_ms = row.Int(c++);
  r.owner = row.Bytes(c++);
  r.lease_expires_unix_ms = row.Int(c++);
  r.lease_epoch = row.Int(c++);
  r.progress = row.Bytes(c++);
  r.total_steps = static_cast<int>(row.Int(c++));
  r.result = row.Bytes(c++);
  if (with_blobs) {
    r.spec = row.Bytes(c++);
    r.checkpoint = row.Bytes(c++);
  }
  return r;
}

absl::StatusOr<DirectionRecord> ReadDirectionRow(const Row& row, bool with_values) {
  DirectionRecord r;
  int c = 0;
  r.tenant = row.Bytes(c++);
  r.fingerprint = row.Bytes(c++);
  r.name = row.Bytes(c++);
  r.model = row.Bytes(c++);
  r.num_layers = static_cast<int>(row.Int(c++));
  r.latent_size = static_cast<int>(row.Int(c++));
  r.sigma = row.Double(c++);
  r.source = row.Bytes(c++);
  r.params_json = row.Bytes(c++);
  r.created_unix_ms = row.Int(c++);
  if (with_values) {
    const std::string bytes = row.Bytes(c++);
    const int64_t want = int64_t{r.num_layers} * r.latent_size * int64_t{sizeof(float)};
    if (static_cast<int64_t>(bytes.size()) != want) {
      return Corrupt("direction", r.name,
                     absl::StrCat("values_f32 has ", bytes.size(), " bytes, want ", want));
    }
    r.values = DecodeFloats(bytes);
  }
  return r;
}

}  // namespace i2s::store_internal
