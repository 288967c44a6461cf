#include "client/errors.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace i2s::client {

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kCancelled:
      return kExitCancelled;
    case absl::StatusCode::kDeadlineExceeded:
      return kExitTimeout;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return kExitInvalid;
    case absl::StatusCode::kResourceExhausted:
      return kExitBusy;
    case absl::StatusCode::kUnavailable:
      return kExitUnreachable;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitDenied;
    default:
      return kExitError;
  }
}

std::string Explain(const absl::Status& status, const std::string& server) {
  std::string message(status.message());
  // The server's hint names the API field; the flag is what a CLI user types.
  absl::StrReplaceAll({{"set align.on_no_face = RESIZE", "use --on-no-face resize"}}, &message);
  switch (status.code()) {
    case absl::StatusCode::kUnavailable: {
      // gRPC's own connection failures, as opposed to the server saying it is unavailable.
      std::string reason;
      if (absl::StrContains(message, "Connection refused")) {
        reason = "connection refused";
      } else if (absl::StrContains(message, "DNS resolution failed") ||
                 absl::StrContains(message, "name resolution")) {
        reason = "the host name does not resolve";
      } else if (absl::StrContains(message, "failed to connect") ||
                 absl::StrContains(message, "Failed to connect")) {
        reason = "no connection";
      }
      if (!reason.empty()) {
        return absl::StrCat("cannot reach i2s_server at ", server, " (", reason,
                            "). Is it running? Point --server or I2S_SERVER at it.");
      }
      return absl::StrCat("the server at ", server, " is unavailable: ", message);
    }
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrCat("no answer from ", server,
                          " within the time allowed (raise --timeout, in seconds)");
    case absl::StatusCode::kResourceExhausted:
      return absl::StrCat("the server is busy or a limit was reached: ", message);
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat("the server refused the request: ", message);
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return absl::StrCat("the server failed: ", message);
    default:
      return message;
  }
}

}  // namespace i2s::client
