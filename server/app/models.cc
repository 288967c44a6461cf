#include "server/app/models.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/base/log.h"

namespace i2s {

absl::StatusOr<std::unique_ptr<ModelRegistry>> LoadModels(const RegistryOptions& options,
                                                          const std::string& devices_flag) {
  LogNote(absl::StrCat("loading ", options.models.size(), " model(s) on ", devices_flag, " (",
                       torch::get_num_threads(), " CPU threads)"));
  auto registry = ModelRegistry::Create(options);
  if (!registry.ok()) return registry.status();
  for (const ModelInfo& m : (*registry)->models()) {
    LogNote(absl::StrCat("model ", m.name, (m.is_default ? " (default)" : ""),
                         (m.is_demo ? " [demo: random weights]" : ""), ": ", m.architecture, " ",
                         m.resolution, "x", m.resolution, ", ", m.num_layers, " layers, ", m.source,
                         ", ", m.fingerprint));
  }
  return registry;
}

absl::StatusOr<std::unique_ptr<FaceDetector>> LoadFaceDetector(const Flags& f) {
  if (f.no_face_detector) return nullptr;
  FaceDetectorOptions fo;
  fo.cascade_dir = f.face_cascades;
  fo.landmark_model = f.landmark_model;
  fo.mtcnn_dir = ResolveMtcnnDir(f.mtcnn, f.face_cascades_given || !f.landmark_model.empty());
  auto created = FaceDetector::Create(fo);
  if (created.ok()) {
    LogNote(absl::StrCat("face detector: ", (*created)->description()));
    return created;
  }
  if (f.face_cascades_given || !f.landmark_model.empty() || !fo.mtcnn_dir.empty() ||
      !absl::IsNotFound(created.status())) {
    return created.status();
  }
  LogNote(absl::StrCat("no face detector (automatic alignment off): ", created.status().message()));
  return nullptr;
}

}  // namespace i2s
