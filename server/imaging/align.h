// FFHQ-style face alignment: five facial landmarks -> the oriented square the FFHQ data set
// was cropped with -> an aligned image at the model's resolution, plus the similarity
// transform that maps the original photo onto it (so an edited result can be pasted back).
// Also automatic landmarks: OpenCV's Haar cascades (opencv-data), or a user-supplied YuNet
// ONNX detector or Facemark LBF model.
//
// Coordinates are pixel-index coordinates: x to the right, y down, (0, 0) the centre of the
// top-left pixel (as dlib, OpenCV and the FFHQ script use them).
#ifndef I2S_SERVER_IMAGING_ALIGN_H_
#define I2S_SERVER_IMAGING_ALIGN_H_

#include <torch/torch.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/defaults.h"

namespace i2s {

struct Point2 {
  double x = 0, y = 0;
};

// What FFHQ alignment uses of a face: the two eye centres and the two mouth corners. Which
// eye is which does not matter: FaceLandmarksFromPoints orders them so that the face is
// upright in the aligned image (the mouth below the eyes).
struct FaceLandmarks {
  Point2 eye_left, eye_right;      // in the image: eye_left first along the eye line
  Point2 mouth_left, mouth_right;  // the mouth corners
};

// Caller-supplied points -> FaceLandmarks. Accepted layouts:
//   5 points: eye, eye, nose tip, mouth corner, mouth corner (the order of the 5-point
//             detectors: MTCNN, RetinaFace, YuNet); the nose is not used.
//   68 points: the iBUG 300-W layout (dlib): eyes = mean of 36..41 and of 42..47, mouth
//             corners 48 and 54, as in the FFHQ script.
// InvalidArgument naming `field` for another count, a non-finite point, coincident eyes,
// or a mouth on the eye line.
absl::StatusOr<FaceLandmarks> FaceLandmarksFromPoints(const std::vector<Point2>& points,
                                                      const std::string& field = "landmarks");

// The FFHQ crop square (ffhq-dataset's recreate_aligned_images): with e = eye_right -
// eye_left and m = mouth centre - eye centre, x = e - rot90(m), scaled to
// max(2|e|, 1.8|m|); y = rot90(x); centre c = eye centre + 0.1 m. Corners in the FFHQ
// order: c-x-y (top-left of the output), c-x+y (bottom-left), c+x+y, c+x-y.
struct FfhqQuad {
  Point2 center, x, y;
  std::array<Point2, 4> corners;
  double size = 0;  // 2|x|: the side of the square, in source pixels
};
FfhqQuad ComputeFfhqQuad(const FaceLandmarks& landmarks);

struct AlignOptions {
  int output_size = 1024;
  // FFHQ pads a crop that leaves the photo with a reflection of it, blurred towards the
  // edge and faded to the image median, so the generator never sees a hard border.
  bool padding = true;
};

// A similarity u = a x + b y + c, v = d x + e y + f from original-image coordinates to
// aligned-image coordinates (both pixel-index coordinates).
struct Similarity {
  std::array<double, 6> m{1, 0, 0, 0, 1, 0};  // a b c d e f
  Point2 Apply(Point2 p) const {
    return {m[0] * p.x + m[1] * p.y + m[2], m[3] * p.x + m[4] * p.y + m[5]};
  }
  Similarity Inverse() const;
  double Scale() const;            // aligned pixels per original pixel
  double RotationDegrees() const;  // how far it turns the photo, counter-clockwise on screen
};

struct AlignedFace {
  torch::Tensor image;   // float RGB [3, S, S] in [0, 1], CPU
  Similarity transform;  // original -> aligned
  FfhqQuad quad;         // in original-image coordinates
  FaceLandmarks landmarks;
};

// Aligns `image` (float RGB [3, H, W] in [0, 1]) the FFHQ way, step for step: shrink by an
// integer factor when the quad is more than twice the output size (area resampling, which
// antialiases as PIL's ANTIALIAS does), crop to the quad plus a border of 10%, pad (when
// `padding` and the quad leaves the photo) with a reflection blurred and faded to the
// median, then resample the quad (bilinear, supersampled up to 4x and box-filtered down:
// FFHQ renders at 4096 and downsizes). The transform is tracked exactly through every
// step. InvalidArgument for a bad image or size; the landmarks may lie outside the image.
absl::StatusOr<AlignedFace> AlignFfhq(const torch::Tensor& image, const FaceLandmarks& landmarks,
                                      const AlignOptions& options);

// Where FFHQ alignment puts a face's eyes: the landmarks mapped by the transform that
// AlignFfhq would use (for tests and for clients that check a result).
Similarity FfhqTransform(const FaceLandmarks& landmarks, int output_size);

// ---- Automatic landmarks ----

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
  // 0..1: how much of the face was actually found. Cascades: 0.4 for the face, 0.2 for
  // each eye found (else estimated from the face box), 0.2 for the mouth (else estimated
  // from the eyes); the face share scales with how many neighbouring windows agreed.
  // YuNet, MTCNN: its score. Facemark: 0.9 when the fit converged inside the face box.
  double confidence = 0;
  std::string method;              // "haar", "yunet", "facemark-lbf" or "mtcnn"
  int faces_found = 0;             // faces seen; the largest one is used
  std::array<Point2, 4> face_box;  // the face found, in image coordinates (may be rotated)
  double rotation_degrees = 0;     // of the detection pass that found it
};

// Finds the largest face in a photo and estimates its five landmarks. Thread-safe (one
// detection at a time: OpenCV's detectors keep per-call state).
class FaceDetector {
 public:
  // NotFound / InvalidArgument naming the file when a cascade or the landmark model cannot
  // be read.
  static absl::StatusOr<std::unique_ptr<FaceDetector>> Create(const FaceDetectorOptions& options);
  ~FaceDetector();

  // image: float RGB [3, H, W] in [0, 1]. NotFound "image: no face found" when there is
  // none, or none with at least `min_confidence` (the message then gives the best one's).
  // Haar cascades see faces in textures now and then: on python3-skimage's coffee cup and
  // cat they find "faces" of confidence 0.18 and 0.30 with no eyes, against 1.0 for the
  // astronaut, hence the default.
  absl::StatusOr<FaceDetection> Detect(const torch::Tensor& image,
                                       double min_confidence = kDefaultMinConfidence) const;
  static constexpr double kDefaultMinConfidence = defaults::kMinConfidence;
  std::string description() const;  // what was loaded, for logs and ServerInfo

 private:
  struct Impl;
  explicit FaceDetector(std::unique_ptr<Impl> impl);
  absl::StatusOr<FaceDetection> DetectAny(const torch::Tensor& image) const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_ALIGN_H_
