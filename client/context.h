// What every i2s_client command runs with: the global flags, the client (made at first
// use from them), and the handler of each subcommand.
#ifndef I2S_CLIENT_CONTEXT_H_
#define I2S_CLIENT_CONTEXT_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "client/client.h"
#include "client/progress.h"

namespace CLI {
class App;
}  // namespace CLI

namespace i2s::client::cli {

// The global flags (bound by RunCli's parse) and what the terminal allows.
struct Globals {
  std::string server = "localhost:50051";
  double timeout = 30;
  bool tls = false;
  std::string ca_cert, client_cert, client_key, server_name, token_file;
  bool json = false;
  bool quiet = false;
  bool no_color = false;
  std::string on_interrupt = "ask";
  // Filled in from the environment.
  bool stdin_tty = false, stdout_tty = false, stderr_tty = false;
  TextStyle err_style, out_style;
};

// Owned by RunCli for the whole run. Used from the main thread; the follower's reader
// threads only read `g`.
class Context {
 public:
  Globals g;

  // --server, --timeout, TLS and the token -> the client's options. Files that cannot be
  // read are usage errors (exit 2), named.
  absl::Status MakeClientOptions();
  // The client, connected (lazily, by gRPC) at first use with those options.
  Client& client();

  // Registers the handler that runs when `command` is the deepest subcommand given.
  void On(CLI::App* command, std::function<int()> handler) {
    handlers_[command] = std::move(handler);
  }
  // The handler of `command`, or nullptr.
  const std::function<int()>* HandlerFor(CLI::App* command) const {
    auto it = handlers_.find(command);
    return it == handlers_.end() ? nullptr : &it->second;
  }

 private:
  ClientOptions options_;
  std::unique_ptr<Client> client_;
  std::map<CLI::App*, std::function<int()>> handlers_;
};

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_CONTEXT_H_
