#include "server/api/paste_back.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/defaults.h"
#include "common/status_macros.h"
#include "server/api/request_check.h"
#include "server/imaging/prepare.h"

namespace i2s {

PastePlan PastePlanOf(const std::string& photo, const v1::PasteOptions& o,
                      const std::string& photo_field) {
  PastePlan plan;
  plan.photo_field = photo_field;
  plan.photo = photo;
  plan.options.region =
      o.region() == v1::PasteOptions::CROP ? PasteRegion::kCrop : PasteRegion::kFace;
  plan.options.blend =
      o.blend() == v1::PasteOptions::SEAMLESS ? PasteBlend::kSeamless : PasteBlend::kFeather;
  plan.options.feather =
      o.hard_edge() ? 0.0 : (o.feather() > 0 ? o.feather() : defaults::kPasteFeather);
  plan.format = o.format() == v1::JPEG ? EncodeFormat::kJpeg : EncodeFormat::kPng;
  plan.jpeg_quality = o.jpeg_quality() > 0 ? o.jpeg_quality() : defaults::kJpegQuality;
  return plan;
}

absl::StatusOr<PasteTarget> PasteTargetOf(const LatentInput& latent,
                                          const google::protobuf::RepeatedField<double>& transform,
                                          const std::string& field) {
  PasteTarget target;
  if (!transform.empty()) {
    std::copy(transform.begin(), transform.end(), target.to_aligned.m.begin());
    return target;
  }
  if (latent.alignment_json.empty()) {
    return Field(field + ".transform",
                 latent.id.empty()
                     ? "required for inline values (Alignment.transform of their photo)"
                     : absl::StrCat("latent \"", latent.id,
                                    "\" keeps no alignment (it was not embedded from an "
                                    "aligned photo, nor edited from such a latent); give the "
                                    "transform"));
  }
  ASSIGN_OR_RETURN(AlignmentInfo info, AlignmentInfoFromJson(latent.alignment_json));
  target.to_aligned = info.transform;
  target.source_width = info.source_width;
  target.source_height = info.source_height;
  return target;
}

absl::Status RunPaste(const PastePlan& plan, const std::vector<torch::Tensor>& renders,
                      const DecodeLimits& limits, int64_t max_bytes, v1::Image* out) {
  if (renders.size() != plan.targets.size()) {
    return absl::InternalError("RunPaste: one render per target");
  }
  ASSIGN_OR_RETURN(torch::Tensor photo, DecodeRgb8Image(plan.photo, limits, plan.photo_field));
  const int w = static_cast<int>(photo.size(1)), h = static_cast<int>(photo.size(0));
  for (size_t i = 0; i < renders.size(); ++i) {
    const PasteTarget& t = plan.targets[i];
    if (t.source_width > 0 && (t.source_width != w || t.source_height != h)) {
      return Field(plan.photo_field,
                   absl::StrCat(w, "x", h, ", but the latent", renders.size() > 1 ? " of " : "",
                                renders.size() > 1 ? absl::StrCat("faces[", i, "]") : "",
                                " was aligned from a ", t.source_width, "x", t.source_height,
                                " photo: send that photo (as it was sent to Embed)"));
    }
    const torch::Tensor render = GeneratorOutputToRgb8(renders[i]).contiguous();
    RETURN_IF_ERROR(PasteInto(photo, render, t.to_aligned, plan.options));
  }
  ASSIGN_OR_RETURN(std::string encoded, EncodeRgb8(photo, plan.format, plan.jpeg_quality));
  // The message carries a few bytes besides the image.
  if (static_cast<int64_t>(encoded.size()) > max_bytes - 1024) {
    return absl::ResourceExhaustedError(
        absl::StrCat("options.format: the pasted ", w, "x", h, " photo encodes to ", encoded.size(),
                     " bytes as ", plan.format == EncodeFormat::kPng ? "PNG" : "JPEG",
                     ", more than the server sends in one message (", max_bytes,
                     "); ask for JPEG or a lower jpeg_quality, or send a smaller photo"));
  }
  out->set_format(plan.format == EncodeFormat::kPng ? v1::PNG : v1::JPEG);
  out->set_data(std::move(encoded));
  out->set_width(w);
  out->set_height(h);
  return absl::OkStatus();
}

}  // namespace i2s
