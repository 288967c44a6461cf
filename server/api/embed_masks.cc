#include "server/api/embed_masks.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/api/request_check.h"
#include "server/base/sha256.h"
#include "server/imaging/mask.h"

namespace i2s {
namespace {

using nlohmann::json;

absl::StatusOr<EmbedMasks::One> DecodeOne(const std::string& bytes, const std::string& field,
                                          const DecodeLimits& limits, int want_w, int want_h,
                                          bool aligned_frame) {
  EmbedMasks::One one;
  one.field = field;
  if (bytes.empty()) return one;
  ASSIGN_OR_RETURN(one.weights, DecodeMask(bytes, limits, field));
  const int w = static_cast<int>(one.weights.size(2)), h = static_cast<int>(one.weights.size(1));
  if (w != want_w || h != want_h) {
    return Field(field, aligned_frame
                            ? absl::StrCat(w, "x", h, ", but mask_frame MASK_FRAME_ALIGNED needs ",
                                           "the model's ", want_w, "x", want_h)
                            : absl::StrCat(w, "x", h, ", but the image is ", want_w, "x", want_h,
                                           " (mask_frame MASK_FRAME_PHOTO: the photo's own ",
                                           "size, after its EXIF orientation)"));
  }
  one.sha256 = absl::StrCat("sha256:", Sha256Hex(bytes));
  return one;
}

// Into the target's frame; checked to count at least one pixel.
absl::StatusOr<torch::Tensor> ToTarget(const EmbedMasks::One& one, bool aligned_frame,
                                       const PreparedImage& prepared) {
  const int size = static_cast<int>(prepared.image.size(1));
  torch::Tensor t = aligned_frame ? one.weights : WarpMask(one.weights, prepared.transform, size);
  if (!(t.sum().item<double>() > 0)) {
    return Field(one.field, aligned_frame
                                ? "counts no pixel (all black)"
                                : "counts no pixel of the target: what it leaves white is outside "
                                  "the aligned crop, or too thin to survive the resampling");
  }
  return t.contiguous();
}

json RecordOf(const EmbedMasks::One& one, const torch::Tensor& target) {
  return json{{"sha256", one.sha256},
              {"width", one.weights.size(2)},
              {"height", one.weights.size(1)},
              {"binary", IsBinaryMask(one.weights)},
              {"coverage", target.mean().item<double>()}};
}

}  // namespace

torch::Tensor EmbedMasks::PhotoKeep() const {
  // Without `mask` the pixel term looks everywhere: nothing may be greyed.
  if (aligned_frame || !pixel.weights.defined()) return {};
  return perceptual.weights.defined() ? torch::maximum(pixel.weights, perceptual.weights)
                                      : pixel.weights;
}

absl::StatusOr<EmbedMasks> DecodeEmbedMasks(const v1::EmbedRequest& req, const DecodeLimits& limits,
                                            int photo_width, int photo_height, int resolution) {
  EmbedMasks m;
  m.aligned_frame = req.mask_frame() == v1::MASK_FRAME_ALIGNED;
  const int w = m.aligned_frame ? resolution : photo_width;
  const int h = m.aligned_frame ? resolution : photo_height;
  ASSIGN_OR_RETURN(m.pixel, DecodeOne(req.mask(), "mask", limits, w, h, m.aligned_frame));
  ASSIGN_OR_RETURN(m.perceptual, DecodeOne(req.perceptual_mask(), "perceptual_mask", limits, w, h,
                                           m.aligned_frame));
  return m;
}

absl::Status ApplyEmbedMasks(const EmbedMasks& masks, const PreparedImage& prepared,
                             EmbedJobSpec* spec) {
  if (!masks.any()) return absl::OkStatus();
  json record{{"frame", masks.aligned_frame ? "aligned" : "photo"}};
  torch::Tensor pixel, perceptual;
  if (masks.pixel.weights.defined()) {
    ASSIGN_OR_RETURN(pixel, ToTarget(masks.pixel, masks.aligned_frame, prepared));
    record["mask"] = RecordOf(masks.pixel, pixel);
  }
  if (masks.perceptual.weights.defined()) {
    ASSIGN_OR_RETURN(perceptual, ToTarget(masks.perceptual, masks.aligned_frame, prepared));
    record["perceptual_mask"] = RecordOf(masks.perceptual, perceptual);
  } else {
    perceptual = pixel;
  }
  spec->mse_mask = pixel;
  spec->perceptual_mask = perceptual;
  spec->masks_json = record.dump();
  if (pixel.defined()) {
    // What no term looks at shows as grey in the target (return_aligned_image), as the
    // photo's left-out pixels already are before the resampling.
    spec->image = ClearUnmasked(spec->image, torch::maximum(pixel, perceptual)).contiguous();
  }
  return absl::OkStatus();
}

}  // namespace i2s
