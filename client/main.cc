// i2s_client: the command line of image2stylegan-server (see `i2s_client --help`).
#include <pthread.h>
#include <signal.h>

#include "client/cli.h"

int main(int argc, char** argv) {
  // Before any thread exists, so that gRPC's threads inherit the mask and only RunCli's
  // signal thread receives Ctrl-C (and can ask whether to cancel or detach).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return i2s::client::RunCli(argc, argv);
}
