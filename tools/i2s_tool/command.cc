#include "tools/i2s_tool/command.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"

namespace i2s::tool {

void AddCommonOptions(CLI::App* cmd, Common* common) {
  cmd->add_option("--device", common->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_option("--threads", common->threads, "intra-op CPU threads (0: one per CPU)");
}

absl::Status ApplyCommon(const Common& c, torch::Device* device) {
  SetCpuThreads(c.threads);
  ASSIGN_OR_RETURN(*device, ParseDevice(c.device));
  return absl::OkStatus();
}

std::atomic<bool> g_embedding{false};
std::atomic<int> g_stop_signal{0};

int SignalExitCode(int sig) { return 128 + sig; }

void WatchSignals(SignalQueue* queue) {
  while (true) {
    const int sig = queue->Next();
    if (g_embedding.load() && g_stop_signal.exchange(sig) == 0) {
      const std::string note = absl::StrCat("\ni2s_tool: ", SignalName(sig),
                                            ": stopping before the next step, writing nothing "
                                            "(again to quit at once)\n");
      (void)!write(STDERR_FILENO, note.data(), note.size());
      continue;
    }
    const std::string note = absl::StrCat("\ni2s_tool: ", SignalName(sig), ": interrupted\n");
    (void)!write(STDERR_FILENO, note.data(), note.size());
    _exit(SignalExitCode(sig));
  }
}

}  // namespace i2s::tool
