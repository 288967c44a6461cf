#include "server/app/shutdown.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/base/log.h"

namespace i2s {

int WaitForStopSignal(SignalQueue* signals, Authenticator* auth) {
  while (true) {
    const int sig = signals->Next();
    if (sig != SIGHUP) return sig;
    if (auth == nullptr) {
      LogNote(absl::StrCat("SIGHUP: nothing to reload (no --auth-tokens)"));
      continue;
    }
    absl::Status reloaded = auth->Reload();
    if (reloaded.ok()) {
      LogNote(absl::StrCat("SIGHUP: reloaded ", auth->token_count(), " token(s)"));
    } else {
      LogNote(absl::StrCat("SIGHUP: not reloaded (", reloaded.message(),
                           "); keeping the previous tokens"));
    }
  }
}

int ShutDownGracefully(int stop_signal, SignalQueue* signals, ServingParts parts,
                       double grace_seconds) {
  LogNote(absl::StrCat(SignalName(stop_signal),
                       ": shutting down (running jobs checkpoint and resume on the next start)"));
  // A second SIGINT or SIGTERM during the shutdown cuts the grace period for in-flight
  // calls short, never the checkpoints: the process exits with kExitCutShort as soon as
  // the scheduler has stored them (at once if it has). SIGHUP is ignored from here on.
  std::mutex cut_mu;
  bool cut_short = false, checkpointed = false;  // under cut_mu
  std::atomic<bool> stopped{false};
  auto exit_cut_short = [] {
    LogNote("checkpoints stored; exiting without waiting for in-flight calls");
    std::fflush(nullptr);
    _exit(kExitCutShort);
  };
  std::thread second_signal([&] {
    while (!stopped.load()) {
      std::optional<int> again = signals->NextFor(absl::Milliseconds(100));
      if (!again || *again == SIGHUP) continue;
      LogNote(absl::StrCat(SignalName(*again), " again: exiting with code ", kExitCutShort,
                           " once running jobs are checkpointed (in-flight calls are cut)"));
      std::lock_guard<std::mutex> lock(cut_mu);
      cut_short = true;
      if (checkpointed) exit_cut_short();  // the shutdown is waiting for in-flight calls
      return;                              // the shutdown exits after the checkpoints
    }
  });
  auto t0 = std::chrono::steady_clock::now();
  parts.health->SetServing(false);
  parts.service->StopAccepting();
  parts.scheduler->Shutdown();
  {
    std::lock_guard<std::mutex> lock(cut_mu);
    checkpointed = true;
    if (cut_short) exit_cut_short();
  }
  parts.health->Shutdown();  // open Watch streams end now, not at the grace deadline
  parts.server->Shutdown(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000)));
  parts.server->Wait();
  parts.metrics_http.reset();  // civetweb's stop waits for its workers (at most the 3 s timeout)
  LogNote(absl::StrCat("stopped in ",
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                       " s"));
  stopped.store(true);
  second_signal.join();
  // A second signal that arrived while the shutdown was finishing, before the watcher
  // thread read it, still means "cut short": the same exit code, whichever thread won.
  while (std::optional<int> again = signals->NextFor(absl::ZeroDuration())) {
    if (*again == SIGHUP) continue;
    LogNote(absl::StrCat(SignalName(*again), " again: exiting with code ", kExitCutShort));
    return kExitCutShort;
  }
  return 0;
}

}  // namespace i2s
