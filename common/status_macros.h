// Small status helpers: this Abseil version (20220623) has no status_macros.
#ifndef I2S_COMMON_STATUS_MACROS_H_
#define I2S_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define I2S_CONCAT_INNER_(a, b) a##b
#define I2S_CONCAT_(a, b) I2S_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status i2s_status_ = (expr);       \
    if (!i2s_status_.ok()) return i2s_status_; \
  } while (false)

// `ASSIGN_OR_RETURN(lhs, rexpr)`: evaluates rexpr (an absl::StatusOr<T>); on error
// returns its status, otherwise moves the value into lhs (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  I2S_ASSIGN_OR_RETURN_IMPL_(I2S_CONCAT_(i2s_statusor_, __LINE__), lhs, rexpr)
#define I2S_ASSIGN_OR_RETURN_IMPL_(var, lhs, rexpr) \
  auto var = (rexpr);                               \
  if (!var.ok()) return std::move(var).status();    \
  lhs = std::move(var).value()

namespace i2s {

// Returns `status` with `prefix: ` put in front of its message (same code).
// The payloads go along (the server's private_detail.h marks statuses with one).
inline absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  absl::Status out(status.code(), std::string(prefix) + ": " + std::string(status.message()));
  status.ForEachPayload(
      [&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

}  // namespace i2s

#endif  // I2S_COMMON_STATUS_MACROS_H_
