// i2s_client's exit codes, and what it says about a failed call.
#ifndef I2S_CLIENT_ERRORS_H_
#define I2S_CLIENT_ERRORS_H_

#include <string>

#include "absl/status/status.h"

namespace i2s::client {

// Exit codes that scripts can rely on (documented in `i2s_client --help` and README).
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // anything else: local I/O, an output that exists, a server fault
  kExitUsage = 2,        // bad command line
  kExitUnreachable = 3,  // no server at --server, or it is not serving
  kExitNotFound = 4,     // unknown latent, job or model; a missing input file
  kExitInvalid = 5,      // the server rejected an argument (INVALID_ARGUMENT, FAILED_PRECONDITION)
  kExitJobFailed = 6,    // an embedding job failed
  kExitCancelled = 7,    // a job was cancelled
  kExitTimeout = 8,      // --timeout passed
  kExitBusy = 9,         // the server's queue or a limit is full (RESOURCE_EXHAUSTED)
  kExitDetached = 10,    // interrupted: stopped following jobs that keep running
  kExitDenied = 11,      // UNAUTHENTICATED / PERMISSION_DENIED
};

// The exit code for a failed call.
int ExitCodeFor(const absl::Status& status);

// A sentence for a failed call to `server` (without the "i2s_client: " prefix).
std::string Explain(const absl::Status& status, const std::string& server);

}  // namespace i2s::client

#endif  // I2S_CLIENT_ERRORS_H_
