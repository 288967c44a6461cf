// `i2s_client embed`, and the embedding that other commands build on: a job's request
// from the flags, following jobs and reporting their results (`jobs watch` too), and
// latents given as files (the edit commands import a .npy or embed an image first).
#ifndef I2S_CLIENT_COMMANDS_EMBED_H_
#define I2S_CLIENT_COMMANDS_EMBED_H_

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/commands/command_group.h"
#include "client/commands/flags.h"
#include "client/follower.h"
#include "i2s/v1/i2s.pb.h"

namespace i2s::client::cli {

class EmbedCommand : public CommandGroup {
 public:
  explicit EmbedCommand(Context& ctx) : CommandGroup(ctx) {}

  // Adds `embed` to `app`.
  void Add(CLI::App& app);

  // The request for the flags (without the image); an --init that is a file is resolved.
  absl::StatusOr<v1::EmbedRequest> BuildEmbedRequest(const EmbedFlags& f);

  // A latent named by ID, or a path that is imported (.npy) or embedded (an image, with
  // `embed_steps` steps or the server's default) first.
  absl::StatusOr<std::string> ResolveLatent(const std::string& arg, const std::string& model,
                                            std::optional<int> embed_steps);

  // Runs `follower`, then writes what `flags` asks for (reconstructions, aligned images)
  // and prints each job's result; returns the exit code. `embed`: the jobs were submitted
  // here (else watched: a reconstruction is rendered from the job's latent).
  int FollowAndReport(Follower& follower, bool embed, const EmbedFlags* flags);

 private:
  int Embed();
  // Writes a job's PNG `png` to `path` (converted to its format); on failure says
  // "LABEL: WHAT not written: why" and returns false.
  bool SaveImage(const std::string& label, const std::string& what, const std::string& path,
                 const absl::StatusOr<std::string>& png, bool force);
  // An output option (`flag` = `where`) that takes one image file per stem: a file when
  // there is one image, else a directory; each file must be writable. kExitOk or the
  // code of the failure (reported).
  int CheckImageOutputs(const std::string& flag, const std::string& where,
                        const std::vector<std::string>& stems, bool force);

  EmbedFlags embed_;
};

// The alignment flags -> AlignOptions (reading the landmark file).
absl::StatusOr<v1::AlignOptions> AlignOptionsOf(const EmbedFlags& f);

// "haar, confidence 1.00, scale 1.46, rotation 2.4 degrees" (or the fallback's note).
std::string DescribeAlignment(const v1::Alignment& a);

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_COMMANDS_EMBED_H_
