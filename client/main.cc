// i2s_client: the command line of image2stylegan-server (see `i2s_client --help`).
#include "client/cli.h"

int main(int argc, char** argv) {
  // First, before any thread of the program exists: RunCli installs the signal handlers
  // and blocks SIGINT/SIGTERM, so gRPC's threads inherit the mask.
  return i2s::client::RunCli(argc, argv);
}
