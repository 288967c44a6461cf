// Latent files, the way users bring and take latents: .npy of [L, D] (this project's
// and Image2StyleGAN's), [D] (one w for every layer) and NVIDIA's projected_w.npz
// ([1, L, D], stylegan2-ada-pytorch's projector.py and generate.py).
#ifndef I2S_SERVER_LATENTS_LATENT_FILE_H_
#define I2S_SERVER_LATENTS_LATENT_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/jobs/model_registry.h"
#include "server/store/store.h"

namespace i2s {

// A latent file (.npy or .npz bytes) as a record of `model` with source "import": the
// values [L, D], [1, L, D] or [D] (repeated for every layer), finite. InvalidArgument
// "<field>: ..." otherwise. The caller adds the noise seed and labels.
absl::StatusOr<LatentRecord> ImportedLatent(absl::string_view file, const ModelInfo& model,
                                            const std::string& field);

// The latent file of `record`'s values: .npy of [L, D], or with `projected_w` NVIDIA's
// projected_w.npz ([1, L, D] under "w").
absl::StatusOr<std::string> LatentFile(const LatentRecord& record, bool projected_w);

}  // namespace i2s

#endif  // I2S_SERVER_LATENTS_LATENT_FILE_H_
