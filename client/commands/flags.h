// Flags that several i2s_client commands share: an embedding's (EmbedFlags: `embed`,
// `align`, `jobs watch`), the alignment flags, the render flags of the commands that
// write an image, the paste-back flags, and KEY=VALUE labels.
#ifndef I2S_CLIENT_COMMANDS_FLAGS_H_
#define I2S_CLIENT_COMMANDS_FLAGS_H_

#include <google/protobuf/map.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "i2s/v1/i2s.pb.h"

namespace i2s::client::cli {

struct EmbedFlags {
  std::vector<std::string> images;
  std::string model;
  std::optional<int> steps, noise_steps, plateau, perceptual_resolution;
  std::optional<double> lr, w_mse, w_perceptual, target_psnr, noise_lr, w_lpips;
  std::string space;  // empty: the schedule's default
  std::string schedule;
  std::string init = "mean";
  std::string resize = "crop";
  uint64_t seed = 0;
  std::vector<std::string> labels;
  std::string request_id;
  std::string save_recon;
  std::string preview_dir;
  int preview_every = 25;
  bool detach = false;
  bool force = false;
  // FFHQ alignment (AddAlignFlags)
  std::string align = "none";  // none, auto, landmarks
  std::string landmarks;       // a file of 5 or 68 points; implies "landmarks"
  std::string on_no_face = "fail";
  int face = 0;            // auto: which face, largest first
  bool all_faces = false;  // embed: one job per face found
  std::optional<double> min_confidence;
  bool no_padding = false;
  std::string save_aligned;
  // Masked embedding: image files; "photo" or "aligned"
  std::string mask, perceptual_mask, mask_frame = "photo";
};

struct RenderFlags {
  std::string output;
  int quality = 0;
  uint64_t noise_seed = 0;
  bool force = false;
};

// Paste-back: `paste`, and --paste-into of synth, stylemix and expression.
struct PasteFlags {
  std::string photo;   // the photo the latent was aligned from
  std::string output;  // the pasted photo (.png or .jpg)
  std::string blend = "feather";
  std::string region = "face";
  std::optional<double> feather;
  bool hard_edge = false;
  std::vector<double> transform;  // photo -> aligned, 6 numbers
  int quality = 0;
};
// --blend, --region, --feather, --hard-edge, --transform; with `for_edit` also
// --paste-into PHOTO and --pasted FILE (the paste command takes them as arguments).
void AddPasteFlags(CLI::App* cmd, PasteFlags* p, bool for_edit);
// The flags as options; the format from the output's extension.
absl::StatusOr<v1::PasteOptions> PasteOptionsOf(const PasteFlags& p);
// The same without the format (PNG: morph's pasted frames).
v1::PasteOptions BlendOptionsOf(const PasteFlags& p);

// The alignment flags of `embed` and `align` (both fill an EmbedFlags).
void AddAlignFlags(CLI::App* cmd, EmbedFlags* f, bool for_embed);

// -o/--output (default `default_output`), --jpeg-quality, -f/--force.
void AddRenderFlags(CLI::App* cmd, RenderFlags& r, const std::string& default_output);
// The render format for an output path: an explicit --format, else from the extension
// ("png", "jpeg" or "npy").
absl::StatusOr<std::string> FormatForPath(const std::string& path, const std::string& format);
// The render options of an edit: the format ("png", "jpeg" or "npy"), quality and seed.
v1::RenderOptions RenderFor(const RenderFlags& r, const std::string& format);
// --paste-into PHOTO --pasted FILE as a request's PasteInto (none without them; one
// without the other is an error; the photo is read, the output checked writable).
absl::StatusOr<std::optional<v1::PasteInto>> PasteIntoOf(const PasteFlags& p, bool force);

// A CLI11 validator for KEY=VALUE labels.
const CLI::Validator& LabelValidator();

// KEY=VALUE strings (checked by LabelValidator) into `out`; false for one without '='.
bool ParseLabels(const std::vector<std::string>& in,
                 google::protobuf::Map<std::string, std::string>* out);

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_COMMANDS_FLAGS_H_
