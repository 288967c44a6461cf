// Automatic landmarks for FFHQ alignment (align.h): every face in a photo with its five
// landmarks, from MTCNN's trained networks (engine/mtcnn.h), OpenCV's Haar cascades
// (opencv-data), or a user-supplied YuNet ONNX detector or Facemark LBF model.
#ifndef I2S_SERVER_IMAGING_FACE_DETECTOR_H_
#define I2S_SERVER_IMAGING_FACE_DETECTOR_H_

#include <torch/torch.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/defaults.h"
#include "server/imaging/align.h"

namespace i2s {

struct FaceDetectorOptions {
  // Folder with OpenCV's Haar cascades (Debian's opencv-data).
  std::string cascade_dir = "/usr/share/opencv4/haarcascades";
  // Optional landmark model, chosen by its contents at Create: a YuNet face detector
  // (.onnx, OpenCV's FaceDetectorYN: face box + 5 landmarks), or a Facemark LBF model
  // (.yaml, 68 landmarks inside the Haar face box). Empty = cascades only.
  std::string landmark_model;
  // Optional folder with MTCNN's trained networks (pnet.pt, rnet.pt, onet.pt:
  // scripts/fetch-models): then MTCNN finds the faces and their five landmarks, and no
  // cascade is loaded (landmark_model must be empty). Empty = the cascades above.
  std::string mtcnn_dir;
  // Rotations tried (degrees, in order) when no face is found upright: Haar cascades only
  // find faces within about 15 degrees of upright.
  std::vector<double> rotations = {0, -20, 20, -40, 40};
};

struct FaceDetection {
  FaceLandmarks landmarks;
  // The nose tip, the fifth of the 5-point detectors' landmarks (MTCNN, YuNet; the mean
  // of iBUG points 30 for Facemark); for the cascades, estimated on the line from the eye
  // centre to the mouth centre. Alignment does not use it.
  Point2 nose;
  // 0..1: how much of the face was actually found. Cascades: 0.4 for the face, 0.2 for
  // each eye found (else estimated from the face box), 0.2 for the mouth (else estimated
  // from the eyes); the face share scales with how many neighbouring windows agreed.
  // YuNet, MTCNN: its score. Facemark: 0.9 when the fit converged inside the face box.
  double confidence = 0;
  std::string method;   // "haar", "yunet", "facemark-lbf" or "mtcnn"
  int faces_found = 0;  // faces seen by the detector, before the confidence cut
  // The face found, in image coordinates: corners top-left, bottom-left, bottom-right,
  // top-right of the face upright (turned with the photo for a rotated cascade pass).
  std::array<Point2, 4> face_box;
  double rotation_degrees = 0;  // of the detection pass that found it
  double Area() const;          // of face_box
};

// Finds the faces in a photo and estimates five landmarks for each. Thread-safe (one
// detection at a time: OpenCV's detectors keep per-call state).
class FaceDetector {
 public:
  // NotFound / InvalidArgument naming the file when a cascade or the landmark model cannot
  // be read.
  static absl::StatusOr<std::unique_ptr<FaceDetector>> Create(const FaceDetectorOptions& options);
  ~FaceDetector();

  // image: float RGB [3, H, W] in [0, 1]. Every face with at least `min_confidence`,
  // largest (face box area) first; at most kMaxFaces. NotFound "image: no face found" when
  // there is none (the message then gives the best candidate's confidence, if any).
  // Haar cascades see faces in textures now and then: on python3-skimage's coffee cup and
  // cat they find "faces" of confidence 0.18 and 0.30 with no eyes, against 1.0 for the
  // astronaut, hence the default. The cascades keep the faces of the one rotation pass
  // that found the most confident face.
  absl::StatusOr<std::vector<FaceDetection>> DetectAll(
      const torch::Tensor& image, double min_confidence = kDefaultMinConfidence) const;
  // The largest face: DetectAll's first.
  absl::StatusOr<FaceDetection> Detect(const torch::Tensor& image,
                                       double min_confidence = kDefaultMinConfidence) const;
  static constexpr double kDefaultMinConfidence = defaults::kMinConfidence;
  static constexpr int kMaxFaces = defaults::kMaxFaces;
  std::string description() const;  // what was loaded, for logs and ServerInfo

 private:
  struct Impl;
  explicit FaceDetector(std::unique_ptr<Impl> impl);
  absl::StatusOr<std::vector<FaceDetection>> DetectAny(const torch::Tensor& image) const;
  std::unique_ptr<Impl> impl_;
};

// Where MTCNN's weights are installed by default: the container image puts them here.
inline constexpr char kMtcnnInstallDir[] = "/usr/share/i2s/mtcnn";

// The MTCNN folder a --mtcnn flag value names: "none" -> "" (the cascades); "auto" -> ""
// when `other_chosen` (the caller asked for cascades or a landmark model), else
// $I2S_MTCNN_DIR when set, else kMtcnnInstallDir when it holds pnet.pt, else ""; any other
// value is the folder itself.
std::string ResolveMtcnnDir(const std::string& flag, bool other_chosen);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_FACE_DETECTOR_H_
