// The base of each group of i2s_client's subcommands (commands/*.cc, one file per group):
// the context they run in and the ways they report (a failure with its exit code, JSON
// documents, notes, tables).
#ifndef I2S_CLIENT_COMMANDS_COMMAND_GROUP_H_
#define I2S_CLIENT_COMMANDS_COMMAND_GROUP_H_

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "client/context.h"
#include "client/errors.h"
#include "client/output.h"

namespace i2s::client::cli {

// A group adds its subcommands (and binds their flags to its members) before the parse;
// the handler of the one given runs after it. Owned by RunCli, so the flags outlive both.
class CommandGroup {
 public:
  explicit CommandGroup(Context& ctx) : ctx_(ctx), g_(ctx.g) {}
  virtual ~CommandGroup() = default;
  CommandGroup(const CommandGroup&) = delete;
  CommandGroup& operator=(const CommandGroup&) = delete;

 protected:
  Client& client() { return ctx_.client(); }
  // `handler` runs when `command` is the subcommand given.
  void On(CLI::App* command, std::function<int()> handler) { ctx_.On(command, std::move(handler)); }

  // Prints a failure (and, with --json, a JSON error document) and returns its code.
  int Fail(const std::string& context, const absl::Status& status) {
    return Fail(context, status, ExitCodeFor(status));
  }
  int Fail(const std::string& context, const absl::Status& status, int code);
  void Emit(const nlohmann::json& document) { EmitJson(document); }
  // A line on stderr, unless --quiet.
  void Note(const std::string& line);
  void PrintTable(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows) {
    cli::PrintTable(g_.out_style, header, rows);
  }
  void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields) {
    cli::PrintFields(g_.out_style, fields);
  }

  Context& ctx_;
  const Globals& g_;
};

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_COMMANDS_COMMAND_GROUP_H_
