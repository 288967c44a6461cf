#include <filesystem>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/commands/embed.h"
#include "client/commands/flags.h"
#include "client/files.h"
#include "client/output.h"

namespace i2s::client::cli {
namespace {

// `align`: a face photo aligned on the server, as `embed --align` would, and saved.
class AlignCommand : public CommandGroup {
 public:
  explicit AlignCommand(Context& ctx) : CommandGroup(ctx) {}
  void Add(CLI::App& app);

 private:
  int Align();

  EmbedFlags align_;  // the image, model, alignment flags
  int align_size_ = 0;
  std::string align_out_;
  bool align_force_ = false;
};

void AlignCommand::Add(CLI::App& app) {
  EmbedFlags& f = align_;
  f.align = "auto";
  CLI::App* cmd = app.add_subcommand(
      "align", "FFHQ-align a face photo on the server, as `embed --align` would, and save it");
  cmd->add_option("image", f.images, "photo (PNG, JPEG, BMP)")->required()->expected(1);
  cmd->add_option("-o,--out", align_out_, "aligned image (.png or .jpg)")->required();
  cmd->add_option("-m,--model", f.model, "whose resolution (default: the server's default)");
  cmd->add_option("--size", align_size_, "side of the aligned image instead (8..1024)")
      ->check(CLI::Range(8, 1024));
  cmd->add_option("--resize", f.resize, "for --on-no-face resize: crop or pad")
      ->check(CLI::IsMember({"crop", "pad"}))
      ->capture_default_str();
  AddAlignFlags(cmd, &f, /*for_embed=*/false);
  cmd->add_flag("-f,--force", align_force_, "overwrite an existing output file");
  cmd->footer(
      "Examples:\n"
      "  i2s_client align selfie.jpg -o aligned.png\n"
      "  i2s_client --json align photo.jpg -o face.png --size 1024 | jq .alignment.transform\n"
      "  i2s_client align cat.png -o cat-aligned.png --landmarks cat-points.txt\n"
      "  i2s_client --json align group.jpg -o second.png --face 1 | jq '.faces | length'\n"
      "The JSON (--json) holds the landmarks, the crop square and the transform photo -> "
      "aligned\nimage, whose inverse pastes an edited render back into the photo, and every "
      "face found\n(box, five landmarks, confidence), largest first.");
  On(cmd, [this] { return Align(); });
}

int AlignCommand::Align() {
  const EmbedFlags& f = align_;
  absl::Status writable = CheckWritable(align_out_, align_force_);
  if (!writable.ok()) return Fail("cannot align", writable, kExitError);
  auto bytes = ReadFile(f.images[0]);
  if (!bytes.ok()) return Fail("cannot align", bytes.status());
  auto align = AlignOptionsOf(f);
  if (!align.ok()) return Fail("cannot align", align.status());
  v1::AlignFaceRequest request;
  request.set_model(f.model);
  request.set_size(align_size_);
  request.set_image(*std::move(bytes));
  *request.mutable_align() = *align;
  request.set_resize(f.resize == "pad" ? v1::PAD : v1::CENTER_CROP);
  auto response = client().AlignFace(request);
  if (!response.ok()) return Fail(absl::StrCat("cannot align ", f.images[0]), response.status());
  v1::Alignment a = response->alignment();
  auto image = ConvertPng(a.aligned().data(), align_out_);
  absl::Status written =
      image.ok() ? WriteOutput(align_out_, *image, align_force_) : image.status();
  if (!written.ok()) return Fail("cannot write the aligned image", written, kExitError);
  a.clear_aligned();
  if (g_.json) {
    nlohmann::json faces = nlohmann::json::array();
    for (const v1::DetectedFace& face : response->faces()) faces.push_back(ProtoJson(face));
    Emit({{"image", f.images[0]},
          {"output", align_out_},
          {"alignment", ProtoJson(a)},
          {"faces", faces}});
  } else {
    std::cout << f.images[0] << "  " << DescribeAlignment(a);
    if (response->faces_size() > 1) {
      std::cout << ", face " << a.face() << " of " << response->faces_size();
    }
    std::cout << "  -> " << align_out_ << "\n";
  }
  return kExitOk;
}

}  // namespace

std::unique_ptr<CommandGroup> AddAlignCommand(CLI::App& app, Context& ctx) {
  auto group = std::make_unique<AlignCommand>(ctx);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
