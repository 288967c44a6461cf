// align: FFHQ-align a face photo (detected or given landmarks) to a square.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"
#include "tools/i2s_tool/align_options.h"
#include "tools/i2s_tool/command.h"
#include "tools/i2s_tool/latent_files.h"

namespace i2s::tool {
namespace {

struct AlignCmdArgs {
  std::string image, out;
  int size = 1024;
  std::string fit = "crop";
  AlignArgs align;
};

absl::Status Align(const AlignCmdArgs& a) {
  RETURN_IF_ERROR(Annotate(CheckImageOut(a.out), "--out"));
  if (a.size < 8 || a.size > 8192)
    return absl::InvalidArgumentError("--size: must be in [8, 8192]");
  ASSIGN_OR_RETURN(torch::Tensor photo, ReadRgbImage(a.image));
  ASSIGN_OR_RETURN(
      PreparedImage prepared,
      Prepare(photo, a.size, a.fit == "pad" ? FitMode::kPad : FitMode::kCenterCrop, a.align));
  if (absl::EndsWith(a.out, ".npy")) {
    return WriteNpyFile(a.out, TensorToFloatArray(prepared.image));
  }
  return WriteRgb8Image(a.out, UnitImageToRgb8(prepared.image));
}

}  // namespace

std::vector<Command> AddAlignCommand(CLI::App* app) {
  auto a = std::make_shared<AlignCmdArgs>();
  CLI::App* align = app->add_subcommand(
      "align", "FFHQ-align a face photo (detected or given landmarks) to a square of --size");
  align->add_option("--image", a->image, "photo (PNG, JPEG, ...)")->required();
  align->add_option("--out", a->out, "aligned image (.png, .jpg) or float32 .npy [3, S, S]")
      ->required();
  align->add_option("--size", a->size, "side of the aligned image (the model resolution)")
      ->capture_default_str();
  align->add_option("--fit", a->fit, "crop or pad, for --align none or a fallback")
      ->check(CLI::IsMember({"crop", "pad"}))
      ->capture_default_str();
  AddAlignOptions(align, &a->align, /*default_auto=*/true);
  return {{align, [a] { return Align(*a); }}};
}

}  // namespace i2s::tool
