// Paste-back: an aligned render (a latent's image, edited or not) put back into the photo
// it was aligned from, through the inverse of the alignment's similarity (align.h), under a
// feathered mask, optionally with a seamless (Poisson) blend that carries the photo's
// colour and light across the mask's border. Pixels the mask leaves out keep their exact
// values. Thread-safe (no state).
#ifndef I2S_SERVER_IMAGING_PASTE_H_
#define I2S_SERVER_IMAGING_PASTE_H_

#include <torch/torch.h>

#include "absl/status/status.h"
#include "common/defaults.h"
#include "server/imaging/align.h"

namespace i2s {

enum class PasteRegion {
  // An ellipse over the face in the FFHQ crop (forehead to chin, cheek to cheek), so the
  // generator's own background and the crop's padding stay out of the photo.
  kFace,
  kCrop,  // the whole crop square
};

enum class PasteBlend {
  kFeather,  // a linear mix under the feathered mask
  // Poisson image editing (Perez et al. 2003, OpenCV's seamlessClone): the render's
  // gradients inside the mask, the photo's values on its border; then feathered as above.
  kSeamless,
};

struct PasteOptions {
  PasteRegion region = PasteRegion::kFace;
  PasteBlend blend = PasteBlend::kFeather;
  // Width of the soft edge, as a fraction of the aligned image's side: the mask rises from
  // 0 to 1 over it (smoothstep), inside the region's outline. 0 = a hard edge.
  double feather = defaults::kPasteFeather;
};

// The mask's weight at aligned pixel (u, v) of a size x size render (pixel-index
// coordinates, as align.h): 0 outside the region, 1 well inside it.
double PasteMaskWeight(double u, double v, int size, const PasteOptions& options);

// Pastes `render` (8-bit RGB [S, S, 3], CPU: the aligned frame) into `photo` (8-bit RGB
// [H, W, 3], CPU, contiguous; changed in place), where `to_aligned` maps photo pixels to
// the render's pixels. The render is shrunk first (area resampling) when the face is
// smaller in the photo than in the render, so nothing aliases; then each photo pixel under
// the mask takes the render bilinearly sampled at to_aligned(x, y). Pixels with weight 0
// are not written. A face wholly outside the photo changes nothing. InvalidArgument for a
// bad shape or dtype, an options value out of range, or a transform that is not an
// invertible similarity.
absl::Status PasteInto(torch::Tensor& photo, const torch::Tensor& render,
                       const Similarity& to_aligned, const PasteOptions& options);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_PASTE_H_
