#include "client/commands/flags.h"

#include "absl/strings/str_cat.h"
#include "client/files.h"
#include "common/defaults.h"
#include "common/status_macros.h"

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

void AddPasteFlags(CLI::App* cmd, PasteFlags* p, bool for_edit) {
  if (for_edit) {
    cmd->add_option("--paste-into", p->photo,
                    "also paste the result back into this photo (the one the latent was "
                    "aligned from); needs --pasted");
    cmd->add_option("--pasted", p->output, "where to write the pasted photo (.png or .jpg)");
  }
  cmd->add_option("--blend", p->blend,
                  "feather (a soft-edged mix) or seamless (Poisson: the photo's colour and light "
                  "carried across the border)")
      ->check(CLI::IsMember({"feather", "seamless"}))
      ->capture_default_str();
  cmd->add_option("--region", p->region,
                  "face (an ellipse over the face) or crop (the whole "
                  "aligned square)")
      ->check(CLI::IsMember({"face", "crop"}))
      ->capture_default_str();
  CLI::Option* feather =
      cmd->add_option("--feather", p->feather,
                      absl::StrCat("soft edge, a fraction of the aligned side (default ",
                                   defaults::kPasteFeather, ")"))
          ->check(CLI::Range(0.0, 0.5));
  cmd->add_flag("--hard-edge", p->hard_edge, "no soft edge")->excludes(feather);
  cmd->add_option("--transform", p->transform,
                  "photo -> aligned image, 6 numbers (an alignment's transform); instead of the "
                  "latent's own")
      ->expected(6);
  cmd->add_option("--paste-quality", p->quality, "JPEG quality of the pasted photo 1..100")
      ->check(CLI::Range(1, 100));
}

v1::PasteOptions BlendOptionsOf(const PasteFlags& p) {
  v1::PasteOptions o;
  o.set_blend(p.blend == "seamless" ? v1::PasteOptions::SEAMLESS : v1::PasteOptions::FEATHER);
  o.set_region(p.region == "crop" ? v1::PasteOptions::CROP : v1::PasteOptions::FACE);
  if (p.feather) o.set_feather(*p.feather);
  o.set_hard_edge(p.hard_edge);
  return o;
}

absl::StatusOr<v1::PasteOptions> PasteOptionsOf(const PasteFlags& p) {
  v1::PasteOptions o = BlendOptionsOf(p);
  const std::string ext = Extension(p.output);
  if (ext == ".jpg" || ext == ".jpeg") {
    o.set_format(v1::JPEG);
    o.set_jpeg_quality(p.quality);
  } else if (ext == ".png") {
    o.set_format(v1::PNG);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(p.output, ": the pasted photo is written as .png or .jpg"));
  }
  return o;
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

// --paste-into PHOTO --pasted FILE: the request's PasteInto (none without them).
absl::StatusOr<std::optional<v1::PasteInto>> PasteIntoOf(const PasteFlags& p, bool force) {
  if (p.photo.empty()) {
    if (!p.output.empty()) return absl::InvalidArgumentError("--pasted: needs --paste-into PHOTO");
    return std::nullopt;
  }
  if (p.output.empty()) return absl::InvalidArgumentError("--paste-into: needs --pasted FILE");
  RETURN_IF_ERROR(CheckWritable(p.output, force));
  v1::PasteInto paste;
  ASSIGN_OR_RETURN(*paste.mutable_photo(), ReadFile(p.photo));
  ASSIGN_OR_RETURN(*paste.mutable_options(), PasteOptionsOf(p));
  for (double t : p.transform) paste.add_transform(t);
  return paste;
}

// The render format for an output path: an explicit --format, else from the extension.
absl::StatusOr<std::string> FormatForPath(const std::string& path, const std::string& format) {
  const std::string ext = Extension(path);
  if (!format.empty()) return format;
  if (path == "-" || ext == ".png") return std::string("png");
  if (ext == ".jpg" || ext == ".jpeg") return std::string("jpeg");
  if (ext == ".npy") return std::string("npy");
  return absl::InvalidArgumentError(absl::StrCat(path, ": unknown image type '", ext,
                                                 "' (use .png, .jpg or .npy, or give --format)"));
}

v1::RenderOptions RenderFor(const RenderFlags& r, const std::string& format) {
  v1::RenderOptions options;
  options.set_format(format == "jpeg" ? v1::JPEG : format == "npy" ? v1::RAW_FLOAT32 : v1::PNG);
  options.set_jpeg_quality(r.quality);
  options.set_noise_seed(r.noise_seed);
  return options;
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
