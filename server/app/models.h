// What i2s_server computes with: the generators, VGG16 and LPIPS on --devices
// (ModelRegistry), and the face detector of AlignOptions.AUTO.
#ifndef I2S_SERVER_APP_MODELS_H_
#define I2S_SERVER_APP_MODELS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/app/flags.h"
#include "server/imaging/face_detector.h"
#include "server/jobs/model_registry.h"

namespace i2s {

// Loads the models of `options` (RegistryOptionsOf) on `devices_flag`'s devices, logging
// each with its architecture, size and fingerprint.
absl::StatusOr<std::unique_ptr<ModelRegistry>> LoadModels(const RegistryOptions& options,
                                                          const std::string& devices_flag);

// The face detector for AUTO alignment. Null with --no-face-detector, or when the default
// cascade folder is missing (AUTO is then FAILED_PRECONDITION); flags that ask for one
// (--face-cascades, --landmark-model) fail the start when it cannot be loaded.
absl::StatusOr<std::unique_ptr<FaceDetector>> LoadFaceDetector(const Flags& flags);

}  // namespace i2s

#endif  // I2S_SERVER_APP_MODELS_H_
