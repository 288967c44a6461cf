// i2s_client, the command line of image2stylegan-server: subcommands over the client
// library (client.h), live progress for jobs (progress.h), pictures and videos written
// with OpenCV (media.h). main.cc only calls RunCli.
#ifndef I2S_CLIENT_CLI_H_
#define I2S_CLIENT_CLI_H_

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

// Runs the command line; returns the process exit code. Call it first in main, before any
// thread of the program starts: it installs the SIGINT/SIGTERM handlers (a SignalQueue)
// and blocks both in the calling thread, which the threads started later inherit.
int RunCli(int argc, char** argv);

}  // namespace i2s::client

#endif  // I2S_CLIENT_CLI_H_
