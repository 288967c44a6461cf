// i2s_tool: offline commands on weight files and latents, no server needed.
//   info FILE                         what a weight file holds
//   synth --generator G --latent W.npy --out OUT.png|OUT.npy
//   map --generator G (--z Z.npy | --random N [--seed S]) [--wplus] --out W.npy
//   random-model [--kind stylegan1|stylegan2|vgg16] --resolution R --fmap-base F --seed S
//                --out FILE [--legacy]
//   embed --generator G --vgg V --image X.png --out W.npy [--recon R.png] [--lpips L] [options]
//   lpips --vgg V --lpips L A.png B.png   LPIPS (v0.1, VGG) between two images
//   morph|stylemix|expression --generator G ... --out OUT.png
//   align --image X --out ALIGNED.png [--size R] [--landmarks FILE] [--align-info INFO.json]
//   faces --mtcnn DIR --image X           every face MTCNN finds (JSON)
// Exit codes: 0 success, 1 the command failed (message on stderr), 2 bad usage, 130/143
// interrupted by SIGINT/SIGTERM (see WatchSignals).
// Each command lives in a file of this folder named for it (command.h lists them).
#include <iostream>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "common/signals.h"
#include "server/engine/torch_util.h"
#include "tools/i2s_tool/command.h"

namespace i2s::tool {
namespace {

int Run(int argc, char** argv) {
  CLI::App app{"i2s_tool: offline StyleGAN1/StyleGAN2 weight files, synthesis and latents"};
  app.require_subcommand(1);
  Common common;
  std::vector<Command> commands;
  for (std::vector<Command> added :
       {AddInfoCommand(&app), AddSynthCommand(&app, &common), AddEmbedCommand(&app, &common),
        AddLpipsCommand(&app, &common), AddAlignCommand(&app), AddFacesCommand(&app, &common),
        AddEditCommands(&app, &common), AddMapCommand(&app, &common),
        AddRandomModelCommand(&app)}) {
    commands.insert(commands.end(), added.begin(), added.end());
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto signals = SignalQueue::Install({SIGINT, SIGTERM});
  if (!signals.ok()) {
    std::cerr << "i2s_tool: error: " << signals.status().message() << "\n";
    return 1;
  }
  // Lives as long as the process: the detached thread reads it until exit.
  std::thread(WatchSignals, signals->release()).detach();
  absl::Status status;
  for (const Command& command : commands) {
    if (*command.app) status = command.run();
  }
  if (const int sig = g_stop_signal.load(); sig != 0) {
    std::cerr << "i2s_tool: " << SignalName(sig) << ": embedding stopped, nothing written\n";
    return SignalExitCode(sig);
  }
  if (!status.ok()) {
    std::cerr << "i2s_tool: error: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace i2s::tool

int main(int argc, char** argv) {
  i2s::KeepLargeBlocksInTheHeap();
  try {
    return i2s::tool::Run(argc, argv);
  } catch (const std::exception& e) {  // a bug: report it rather than abort
    std::cerr << "i2s_tool: internal error: " << e.what() << "\n";
    return 1;
  }
}
