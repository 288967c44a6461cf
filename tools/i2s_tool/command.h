// i2s_tool's parts: each *_command.cc adds its subcommands to the command line and says
// how to run them; main.cc puts them together. The options every model command shares
// (--device, --threads), and the stop signal `embed` watches.
#ifndef I2S_TOOLS_I2S_TOOL_COMMAND_H_
#define I2S_TOOLS_I2S_TOOL_COMMAND_H_

#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "common/signals.h"

namespace i2s::tool {

struct Common {
  std::string device = "cpu";
  int threads = 0;
};
void AddCommonOptions(CLI::App* cmd, Common* common);
// Applies --threads and parses --device.
absl::Status ApplyCommon(const Common& c, torch::Device* device);

// A subcommand and what runs it when it is the one given.
struct Command {
  CLI::App* app = nullptr;
  std::function<absl::Status()> run;
};

// In the order of the tool's help. `common` outlives the commands.
std::vector<Command> AddInfoCommand(CLI::App* app);                   // info_command.cc
std::vector<Command> AddSynthCommand(CLI::App* app, Common* common);  // render_commands.cc
std::vector<Command> AddEmbedCommand(CLI::App* app, Common* common);  // embed_command.cc
std::vector<Command> AddLpipsCommand(CLI::App* app, Common* common);  // embed_command.cc
std::vector<Command> AddAlignCommand(CLI::App* app);                  // align_command.cc
std::vector<Command> AddFacesCommand(CLI::App* app, Common* common);  // faces_command.cc
std::vector<Command> AddEditCommands(CLI::App* app, Common* common);  // render_commands.cc
std::vector<Command> AddMapCommand(CLI::App* app, Common* common);    // render_commands.cc
std::vector<Command> AddRandomModelCommand(CLI::App* app);            // random_model_command.cc

// SIGINT/SIGTERM, read from a SignalQueue (common/signals.h) by WatchSignals: the first one
// during `embed` (g_embedding set) stops the optimisation before its next step and the tool
// exits with 128 + the signal's number (130, 143) without writing its outputs; at any other
// time, or a second one, exits with that code at once.
extern std::atomic<bool> g_embedding;
extern std::atomic<int> g_stop_signal;
int SignalExitCode(int sig);
void WatchSignals(SignalQueue* queue);

}  // namespace i2s::tool

#endif  // I2S_TOOLS_I2S_TOOL_COMMAND_H_
