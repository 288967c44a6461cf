#include "server/base/private_detail.h"

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace i2s {
namespace {

constexpr char kPayload[] = "type.i2s/private-detail";

}  // namespace

absl::Status WithPrivateDetail(absl::Status status) {
  if (!status.ok()) status.SetPayload(kPayload, absl::Cord("1"));
  return status;
}

bool HasPrivateDetail(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kPayload).has_value();
}

absl::Status PublicStatus(const absl::Status& status) {
  if (!HasPrivateDetail(status)) return status;
  static std::atomic<uint64_t> incidents{0};
  const uint64_t incident = incidents.fetch_add(1) + 1;
  LogEvent("private_error")
      .Int("incident", static_cast<int64_t>(incident))
      .Str("code", absl::StatusCodeToString(status.code()))
      .Str("detail", status.message());
  return absl::Status(status.code(), absl::StrCat("the data store failed (incident ", incident,
                                                  "; the server's log has the details)"));
}

}  // namespace i2s
