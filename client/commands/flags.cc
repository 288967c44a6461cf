#include "client/commands/flags.h"

#include "absl/strings/str_cat.h"
#include "common/defaults.h"

namespace i2s::client::cli {

void AddAlignFlags(CLI::App* cmd, EmbedFlags* f, bool for_embed) {
  cmd->add_option("--align", f->align,
                  for_embed ? "FFHQ face alignment first: none, auto (the server finds the face), "
                              "landmarks (from --landmarks)"
                            : "auto (the server finds the face) or landmarks (from --landmarks)")
      ->check(for_embed ? CLI::IsMember({"none", "auto", "landmarks"})
                        : CLI::IsMember({"auto", "landmarks"}))
      ->capture_default_str();
  cmd->add_option("--landmarks", f->landmarks,
                  "a text file of 5 points (eye, eye, nose, mouth corner, mouth corner) or 68 "
                  "(iBUG 300-W), 'x y' per line in the photo's pixels; implies --align landmarks");
  cmd->add_option("--on-no-face", f->on_no_face,
                  "auto finding no face: fail, or resize (crop/pad as --resize) instead")
      ->check(CLI::IsMember({"fail", "resize"}))
      ->capture_default_str();
  cmd->add_option("--min-confidence", f->min_confidence,
                  absl::StrCat("auto: a face found with less confidence (0..1) counts as none "
                               "(server default ",
                               defaults::kMinConfidence, ")"))
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--no-padding", f->no_padding,
                "leave black what the crop takes from outside the photo (FFHQ fills it with a "
                "blurred reflection)");
  CLI::Option* face =
      cmd->add_option("--face", f->face,
                      "auto: which face, counted from 0, largest first (`align --json` lists "
                      "them)")
          ->check(CLI::Range(0, defaults::kMaxFaces - 1));
  if (for_embed) {
    cmd->add_flag("--all-faces", f->all_faces,
                  "auto: one job for every face found in each photo (named STEM-faceN)")
        ->excludes(face);
  }
}

void AddRenderFlags(CLI::App* cmd, RenderFlags& r, const std::string& default_output) {
  r.output = default_output;
  cmd->add_option("-o,--output", r.output,
                  "where to write the image: .png, .jpg, or - for stdout (PNG)")
      ->capture_default_str();
  cmd->add_option("--jpeg-quality", r.quality,
                  absl::StrCat("JPEG quality 1..100 (default ", defaults::kJpegQuality, ")"))
      ->check(CLI::Range(1, 100));
  cmd->add_flag("-f,--force", r.force, "overwrite an existing output file");
}

const CLI::Validator& LabelValidator() {
  static const CLI::Validator* const kValidator = new CLI::Validator(
      [](std::string& value) -> std::string {
        const size_t eq = value.find('=');
        if (eq == std::string::npos || eq == 0) return "a label is KEY=VALUE, got '" + value + "'";
        return "";
      },
      "KEY=VALUE");
  return *kValidator;
}

bool ParseLabels(const std::vector<std::string>& in,
                 google::protobuf::Map<std::string, std::string>* out) {
  for (const std::string& kv : in) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return false;
    (*out)[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return true;
}

}  // namespace i2s::client::cli
