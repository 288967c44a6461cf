#include "client/commands/command_group.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace i2s::client::cli {

int CommandGroup::Fail(const std::string& context, const absl::Status& status, int code) {
  const std::string sentence = context.empty()
                                   ? Explain(status, g_.server)
                                   : absl::StrCat(context, ": ", Explain(status, g_.server));
  std::fprintf(stderr, "i2s_client: %s\n", sentence.c_str());
  if (g_.json) {
    Emit({{"error",
           {{"code", absl::StatusCodeToString(status.code())},
            {"message", sentence},
            {"exit_code", code}}}});
  }
  return code;
}

void CommandGroup::Note(const std::string& line) {
  if (!g_.quiet) std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace i2s::client::cli
