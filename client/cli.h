// i2s_client, the command line of image2stylegan-server: subcommands over the client
// library (client.h), a file per group of them in commands/ (commands.h lists them),
// jobs followed with live progress (follower.h, progress.h), results printed as tables or
// JSON (output.h), pictures and videos written with OpenCV (media.h). main.cc only calls
// RunCli.
#ifndef I2S_CLIENT_CLI_H_
#define I2S_CLIENT_CLI_H_

#include "client/errors.h"

namespace i2s::client {

// Runs the command line; returns the process exit code. Call it first in main, before any
// thread of the program starts: it installs the SIGINT/SIGTERM handlers (a SignalQueue)
// and blocks both in the calling thread, which the threads started later inherit.
int RunCli(int argc, char** argv);

}  // namespace i2s::client

#endif  // I2S_CLIENT_CLI_H_
