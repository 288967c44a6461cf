// Paste-back in the API: PasteBack, and `paste_into` of Synthesize, Morph, StyleMix and
// ExpressionTransfer. A PastePlan is what the checked request says (the photo, where each
// render goes, how to blend and encode), made before any device work; RunPaste does the CPU
// part after the renders (decode, paste in order, encode within the message limit).
#ifndef I2S_SERVER_API_PASTE_BACK_H_
#define I2S_SERVER_API_PASTE_BACK_H_

#include <google/protobuf/repeated_field.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "i2s/v1/i2s.pb.h"
#include "server/imaging/image_header.h"
#include "server/imaging/image_io.h"
#include "server/imaging/paste.h"
#include "server/latents/render.h"

namespace i2s {

// Where one render goes in the photo.
struct PasteTarget {
  Similarity to_aligned;  // photo -> the render's pixels
  // The photo size the stored alignment was made from (0: a transform given by the caller,
  // which any photo size takes).
  int source_width = 0, source_height = 0;
};

struct PastePlan {
  std::string photo_field;  // "photo" or "paste_into.photo"
  std::string photo;        // encoded bytes
  PasteOptions options;
  EncodeFormat format = EncodeFormat::kPng;
  int jpeg_quality = 90;
  std::vector<PasteTarget> targets;  // one per render, pasted in order
};

// The request's options and photo as a plan without targets, the defaults filled in. The
// options were checked with the request (request_check.h); errors about the photo name
// `photo_field`.
PastePlan PastePlanOf(const std::string& photo, const v1::PasteOptions& options,
                      const std::string& photo_field);

// Where `latent` goes: `transform` when given (6 finite numbers, checked with the
// request), else the alignment kept with the stored latent. InvalidArgument naming
// `field`.transform when there is neither.
absl::StatusOr<PasteTarget> PasteTargetOf(const LatentInput& latent,
                                          const google::protobuf::RepeatedField<double>& transform,
                                          const std::string& field);

// Decodes the photo within `limits`, checks it has the size each stored alignment was made
// from, pastes renders[i] (generator outputs [3, S, S], CPU) at plan.targets[i], and encodes
// the photo into `out`. ResourceExhausted naming options.format when the encoding exceeds
// `max_bytes`.
absl::Status RunPaste(const PastePlan& plan, const std::vector<torch::Tensor>& renders,
                      const DecodeLimits& limits, int64_t max_bytes, v1::Image* out);

}  // namespace i2s

#endif  // I2S_SERVER_API_PASTE_BACK_H_
