// EmbedRequest's masks (Image2StyleGAN++'s masked embedding): decoded and checked against
// the photo before it is prepared, then carried into the target's frame and recorded in
// the job's spec. Errors are INVALID_ARGUMENT naming the field ("mask",
// "perceptual_mask").
#ifndef I2S_SERVER_API_EMBED_MASKS_H_
#define I2S_SERVER_API_EMBED_MASKS_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"
#include "i2s/v1/i2s.pb.h"
#include "server/imaging/image_header.h"
#include "server/imaging/prepare.h"
#include "server/jobs/job.h"

namespace i2s {

struct EmbedMasks {
  struct One {
    std::string field;      // "mask" or "perceptual_mask"
    torch::Tensor weights;  // [1, H, W] as drawn, or undefined when not sent
    std::string sha256;     // of the file's bytes
  };
  One pixel, perceptual;
  bool aligned_frame = false;

  bool any() const { return pixel.weights.defined() || perceptual.weights.defined(); }
  // [1, H, W] over the photo, 0 where no term of the loss looks (PrepareOptions::keep):
  // the pixel mask, or its maximum with the perceptual mask. Undefined when the masks are
  // over the target, or without a pixel mask (the pixel term then looks everywhere).
  torch::Tensor PhotoKeep() const;
};

// Decodes the masks the request carries and checks their sizes: the photo's (photo_width
// x photo_height) for MASK_FRAME_PHOTO, the model's resolution for MASK_FRAME_ALIGNED.
absl::StatusOr<EmbedMasks> DecodeEmbedMasks(const v1::EmbedRequest& req, const DecodeLimits& limits,
                                            int photo_width, int photo_height, int resolution);

// The masks over the prepared target, into spec->mse_mask / perceptual_mask (the pixel
// mask weighs the perceptual terms too unless a perceptual mask was sent) and
// spec->masks_json; the target's pixels that neither counts become grey. A mask that
// counts no pixel of the target is INVALID_ARGUMENT.
absl::Status ApplyEmbedMasks(const EmbedMasks& masks, const PreparedImage& prepared,
                             EmbedJobSpec* spec);

}  // namespace i2s

#endif  // I2S_SERVER_API_EMBED_MASKS_H_
