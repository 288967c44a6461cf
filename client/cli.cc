#include "client/cli.h"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/commands/embed.h"
#include "client/context.h"
#include "client/follower.h"
#include "client/output.h"
#include "common/signals.h"

#ifndef I2S_VERSION
#define I2S_VERSION "dev"
#endif

namespace i2s::client {
namespace {

using cli::Lower;
using cli::Signals;

// Reads the signal queue (common/signals.h: the handlers catch a signal in whichever
// thread the kernel delivers it to, so threads a library started before main cannot
// let Ctrl-C kill the process). While jobs are followed (armed) the follower decides
// what a signal means; otherwise it ends the process at once.
void SignalThread(SignalQueue* queue) {
  while (true) {
    const int sig = queue->Next();
    if (!Signals().armed.load()) {
      static constexpr char kMessage[] = "\ni2s_client: interrupted\n";
      (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
      _exit(130);
    }
    (sig == SIGINT ? Signals().sigint : Signals().sigterm).fetch_add(1);
  }
}

const char kExitCodes[] =
    "Exit codes: 0 ok, 1 other error (local file, existing output, server fault),\n"
    "  2 usage, 3 server unreachable or not serving, 4 not found, 5 invalid argument,\n"
    "  6 job failed, 7 cancelled, 8 timed out, 9 server busy / limit reached,\n"
    "  10 detached (jobs keep running), 11 permission denied, 130 interrupted.";

// The command line: the global flags, the command groups (commands/), the dispatch.
class Cli {
 public:
  int Run(int argc, char** argv);

 private:
  // The global flags, then each group's subcommands, in the order --help lists them.
  void Setup(CLI::App& app);

  cli::Context ctx_;
  std::vector<std::unique_ptr<cli::CommandGroup>> groups_;
};

void Cli::Setup(CLI::App& app) {
  app.set_help_all_flag("--help-all", "help for every subcommand");
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("-s,--server", ctx_.g.server, "i2s_server address, host:port")
      ->envname("I2S_SERVER")
      ->capture_default_str();
  app.add_option("--timeout", ctx_.g.timeout, "seconds to wait for each call (0 = no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--tls", ctx_.g.tls,
               "connect with TLS (implied by --ca-cert, --client-cert); the server's "
               "certificate is checked against --ca-cert or the system's roots")
      ->envname("I2S_TLS");
  app.add_option("--ca-cert", ctx_.g.ca_cert, "PEM CA bundle that signed the server's certificate")
      ->envname("I2S_CA_CERT");
  app.add_option("--client-cert", ctx_.g.client_cert,
                 "PEM client certificate, for a server that requires mutual TLS")
      ->envname("I2S_CLIENT_CERT");
  app.add_option("--client-key", ctx_.g.client_key, "PEM private key of --client-cert")
      ->envname("I2S_CLIENT_KEY");
  app.add_option("--tls-server-name", ctx_.g.server_name,
                 "the name the server's certificate must carry (default: the --server host)");
  app.add_option("--token-file", ctx_.g.token_file,
                 "file holding the bearer token for a server with --auth-tokens (or set "
                 "I2S_TOKEN; never put a token on the command line)")
      ->envname("I2S_TOKEN_FILE");
  app.add_flag("--json", ctx_.g.json,
               "print results as JSON, one document per line, for scripts (progress goes to "
               "stderr, or nowhere with --quiet)");
  app.add_flag("-q,--quiet", ctx_.g.quiet, "no progress or notes on stderr (errors still)");
  app.add_flag("--no-color", ctx_.g.no_color, "no colours (also: NO_COLOR set, or not a terminal)");
  app.add_option("--on-interrupt", ctx_.g.on_interrupt,
                 "what Ctrl-C does while following jobs: ask (on a terminal), cancel the "
                 "jobs, or detach and leave them running")
      ->check(CLI::IsMember({"ask", "cancel", "detach"}))
      ->capture_default_str();
  app.set_version_flag("--version", std::string("i2s_client ") + I2S_VERSION);
  app.footer(absl::StrCat(
      "Examples:\n"
      "  i2s_client info\n"
      "  i2s_client embed face1.png face2.jpg --steps 1500 --save-recon recon/\n"
      "  i2s_client morph lat_a lat_b --frames 48 --out morph.mp4\n"
      "  i2s_client --json latents ls | jq -r .id\n"
      "Latents and jobs are named by ID (lat_..., job_...). Where a command takes a latent,\n"
      "a file may be given instead: a .npy is imported, an image is embedded first.\n\n",
      kExitCodes));

  auto embed = std::make_unique<cli::EmbedCommand>(ctx_);
  embed->Add(app);
  groups_.push_back(cli::AddJobsCommands(app, ctx_, *embed));
  groups_.push_back(cli::AddLatentsCommands(app, ctx_));
  groups_.push_back(cli::AddEditCommands(app, ctx_, *embed));
  groups_.push_back(cli::AddAlignCommand(app, ctx_));
  groups_.push_back(cli::AddPasteCommand(app, ctx_, *embed));
  groups_.push_back(cli::AddLocalEditCommands(app, ctx_, *embed));
  groups_.push_back(cli::AddDirectionCommands(app, ctx_, *embed));
  groups_.push_back(cli::AddServerCommands(app, ctx_));
  groups_.push_back(std::move(embed));
}

int Cli::Run(int argc, char** argv) {
  ctx_.g.stdin_tty = isatty(STDIN_FILENO);
  ctx_.g.stdout_tty = isatty(STDOUT_FILENO);
  ctx_.g.stderr_tty = isatty(STDERR_FILENO);
  CLI::App app{"i2s_client: embed images into StyleGAN's W+ space and edit them, on i2s_server"};
  app.name("i2s_client");
  Setup(app);
  // Colours and glyphs only on terminals; NO_COLOR (no-color.org) and --no-color turn
  // colours off; Unicode glyphs only in a UTF-8 locale.
  auto finish_style = [this] {
    const char* no_color = std::getenv("NO_COLOR");
    const bool color_ok = !ctx_.g.no_color && (no_color == nullptr || *no_color == '\0');
    std::string locale;
    for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
      const char* v = std::getenv(name);
      if (v != nullptr && *v != '\0') {
        locale = v;
        break;
      }
    }
    const bool utf8 =
        absl::StrContains(Lower(locale), "utf-8") || absl::StrContains(Lower(locale), "utf8");
    ctx_.g.err_style = {color_ok && ctx_.g.stderr_tty, utf8 && ctx_.g.stderr_tty};
    ctx_.g.out_style = {color_ok && ctx_.g.stdout_tty, utf8 && ctx_.g.stdout_tty};
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  finish_style();
  // The deepest subcommand given (`jobs ls` -> ls) names the handler.
  CLI::App* command = &app;
  while (!command->get_subcommands().empty()) command = command->get_subcommands().front();
  const std::function<int()>* handler = ctx_.HandlerFor(command);
  if (handler == nullptr) {
    std::fprintf(stderr, "i2s_client: %s needs a subcommand (see --help)\n",
                 command->get_name().c_str());
    return kExitUsage;
  }
  if (absl::Status ok = ctx_.MakeClientOptions(); !ok.ok()) {
    std::fprintf(stderr, "i2s_client: %s\n", std::string(ok.message()).c_str());
    return kExitUsage;
  }
  return (*handler)();
}

}  // namespace

int RunCli(int argc, char** argv) {
  auto signals = SignalQueue::Install({SIGINT, SIGTERM});
  if (!signals.ok()) {
    std::fprintf(stderr, "i2s_client: %s\n", std::string(signals.status().message()).c_str());
    return kExitUsage;
  }
  // Lives as long as the process: the detached thread reads it until exit.
  std::thread(SignalThread, signals->release()).detach();
  Cli cli;
  const int code = cli.Run(argc, argv);
  std::cout.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  return code;
}

}  // namespace i2s::client
