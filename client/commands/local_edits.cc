#include <iostream>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands/commands.h"
#include "client/commands/flags.h"
#include "client/files.h"
#include "client/output.h"

namespace i2s::client::cli {
namespace {

// `blend`: Image2StyleGAN++'s local edit, BASE with SOURCE's content inside a mask.
class LocalEditCommands : public CommandGroup {
 public:
  LocalEditCommands(Context& ctx, EmbedCommand& embed) : CommandGroup(ctx), embed_(embed) {}
  void Add(CLI::App& app);

 private:
  int Blend();

  EmbedCommand& embed_;
  std::string base_, source_, mask_, model_, mask_out_;
  int start_layer_ = 0;
  std::optional<int> feather_, embed_steps_;
  RenderFlags render_;
  PasteFlags paste_;
};

void LocalEditCommands::Add(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "blend", "BASE with SOURCE's content inside MASK, blended in the generator (local edit)");
  cmd->add_option("base", base_, "latent ID, or a .npy / image file: kept outside the mask")
      ->required();
  cmd->add_option("source", source_, "latent ID, or a .npy / image file: shown inside the mask")
      ->required();
  cmd->add_option("--mask", mask_,
                  "an image over the render (the model's resolution): white = SOURCE, black = "
                  "BASE, grey between")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--start-layer", start_layer_,
                  "first W+ row whose block is blended (0..num_layers-1; later keeps more of "
                  "BASE's coarse shape)")
      ->capture_default_str();
  cmd->add_option("--mask-feather", feather_,
                  "outward ramp of the mask's edge in pixels (default: resolution / 32)");
  cmd->add_option("--save-mask", mask_out_, "write the feathered mask used (PNG)");
  AddRenderFlags(cmd, render_, "blend.png");
  cmd->add_option("-m,--model", model_, "model (for files given instead of IDs)");
  cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
  AddPasteFlags(cmd, &paste_, /*for_edit=*/true);
  cmd->footer(
      "Examples:\n"
      "  i2s_client blend lat_me lat_other --mask mouth.png -o blended.png\n"
      "  i2s_client blend lat_me lat_other --mask eyes.png --start-layer 6 --mask-feather 48 \\\n"
      "      -o eyes.png --paste-into me.jpg --pasted me-eyes.jpg\n");
  On(cmd, [this] { return Blend(); });
}

int LocalEditCommands::Blend() {
  auto format = FormatForPath(render_.output, "");
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(render_.output, render_.force); !s.ok()) {
    return Fail("cannot blend", s, kExitError);
  }
  if (!mask_out_.empty()) {
    if (absl::Status s = CheckWritable(mask_out_, render_.force); !s.ok()) {
      return Fail("cannot blend", s, kExitError);
    }
  }
  auto paste = PasteIntoOf(paste_, render_.force);
  if (!paste.ok()) return Fail("cannot blend", paste.status());
  auto mask = ReadFile(mask_);
  if (!mask.ok()) return Fail("cannot blend", mask.status());
  auto base = embed_.ResolveLatent(base_, model_, embed_steps_);
  if (!base.ok()) return Fail("cannot blend", base.status());
  auto source = embed_.ResolveLatent(source_, model_, embed_steps_);
  if (!source.ok()) return Fail("cannot blend", source.status());
  v1::LocalBlendRequest request;
  request.mutable_base()->set_latent_id(*base);
  request.mutable_source()->set_latent_id(*source);
  request.set_mask(*std::move(mask));
  request.set_start_layer(start_layer_);
  if (feather_) request.set_feather(*feather_);
  *request.mutable_render() = RenderFor(render_, *format);
  if (*paste) *request.mutable_paste_into() = **paste;
  auto response = client().LocalBlend(request);
  if (!response.ok()) return Fail("cannot blend", response.status());
  if (absl::Status s = WriteOutput(render_.output, response->image().data(), render_.force);
      !s.ok()) {
    return Fail("cannot blend", s, kExitError);
  }
  if (!mask_out_.empty()) {
    if (absl::Status s = WriteOutput(mask_out_, response->mask().data(), render_.force); !s.ok()) {
      return Fail("cannot blend", s, kExitError);
    }
  }
  if (*paste) {
    if (absl::Status s = WriteOutput(paste_.output, response->pasted().data(), render_.force);
        !s.ok()) {
      return Fail("cannot write the pasted photo", s, kExitError);
    }
  }
  if (g_.json) {
    nlohmann::json doc = {{"base", *base},
                          {"source", *source},
                          {"start_layer", start_layer_},
                          {"path", render_.output},
                          {"width", response->image().width()},
                          {"height", response->image().height()}};
    if (feather_) doc["feather"] = *feather_;
    if (!mask_out_.empty()) doc["mask"] = mask_out_;
    if (*paste) doc["pasted"] = paste_.output;
    Emit(doc);
  } else if (render_.output != "-") {
    std::cout << absl::StrFormat("%s + %s inside %s  -> %s%s\n", *base, *source, mask_,
                                 render_.output, *paste ? "  pasted -> " + paste_.output : "");
  }
  return kExitOk;
}

}  // namespace

std::unique_ptr<CommandGroup> AddLocalEditCommands(CLI::App& app, Context& ctx,
                                                   EmbedCommand& embed) {
  auto group = std::make_unique<LocalEditCommands>(ctx, embed);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
