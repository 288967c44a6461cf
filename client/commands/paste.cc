#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands/commands.h"
#include "client/commands/flags.h"
#include "client/files.h"
#include "client/output.h"

namespace i2s::client::cli {
namespace {

// `paste`: latents rendered and pasted back into the photo they were aligned from.
class PasteCommand : public CommandGroup {
 public:
  PasteCommand(Context& ctx, EmbedCommand& embed) : CommandGroup(ctx), embed_(embed) {}
  void Add(CLI::App& app);

 private:
  int Paste();

  EmbedCommand& embed_;
  PasteFlags paste_;
  std::vector<std::string> latents_;
  std::string model_;
  bool force_ = false;
};

void PasteCommand::Add(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "paste", "render latents and paste them back into the photo they were aligned from");
  cmd->add_option("photo", paste_.photo, "the photo (as it was sent to embed)")->required();
  cmd->add_option("latents", latents_,
                  "latent IDs (embedded from this photo with --align, or edited from such "
                  "latents), pasted in order; or .npy files with --transform")
      ->required();
  cmd->add_option("-o,--out,--output", paste_.output, "the pasted photo (.png or .jpg)")
      ->required();
  cmd->add_option("-m,--model", model_, "model (for .npy files)");
  AddPasteFlags(cmd, &paste_, /*for_edit=*/false);
  cmd->add_flag("-f,--force", force_, "overwrite an existing output file");
  cmd->footer(
      "Examples:\n"
      "  i2s_client paste photo.jpg lat_123 -o photo-edited.jpg\n"
      "  i2s_client paste group.jpg lat_a lat_b lat_c -o group-edited.png --blend seamless\n"
      "  i2s_client paste photo.jpg w.npy --transform 0.9 0.1 -20 -0.1 0.9 30 -o out.png");
  On(cmd, [this] { return Paste(); });
}

int PasteCommand::Paste() {
  if (absl::Status s = CheckWritable(paste_.output, force_); !s.ok()) {
    return Fail("cannot paste", s, kExitError);
  }
  auto options = PasteOptionsOf(paste_);
  if (!options.ok()) return Fail("-o", options.status(), kExitUsage);
  if (!paste_.transform.empty() && latents_.size() != 1) {
    return Fail("--transform",
                absl::InvalidArgumentError("one latent at a time (each has its own transform)"),
                kExitUsage);
  }
  auto photo = ReadFile(paste_.photo);
  if (!photo.ok()) return Fail("cannot paste", photo.status());
  v1::PasteBackRequest request;
  request.set_photo(*std::move(photo));
  *request.mutable_options() = *options;
  std::vector<std::string> ids;
  for (const std::string& arg : latents_) {
    auto id = embed_.ResolveLatent(arg, model_, std::nullopt);
    if (!id.ok()) return Fail("cannot paste", id.status());
    v1::PasteFace* face = request.add_faces();
    face->mutable_latent()->set_latent_id(*id);
    for (double t : paste_.transform) face->add_transform(t);
    ids.push_back(*id);
  }
  auto response = client().PasteBack(request);
  if (!response.ok())
    return Fail(absl::StrCat("cannot paste into ", paste_.photo), response.status());
  if (absl::Status s = WriteOutput(paste_.output, response->photo().data(), force_); !s.ok()) {
    return Fail("cannot write the pasted photo", s, kExitError);
  }
  if (g_.json) {
    Emit({{"photo", paste_.photo},
          {"latents", ids},
          {"path", paste_.output},
          {"width", response->photo().width()},
          {"height", response->photo().height()}});
  } else {
    std::cout << absl::StrJoin(ids, " ") << "  -> " << paste_.output << " ("
              << response->photo().width() << "x" << response->photo().height() << ")\n";
  }
  return kExitOk;
}

}  // namespace

std::unique_ptr<CommandGroup> AddPasteCommand(CLI::App& app, Context& ctx, EmbedCommand& embed) {
  auto group = std::make_unique<PasteCommand>(ctx, embed);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
