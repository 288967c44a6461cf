// How a photo becomes an embedding target at the model's resolution: fitted to the square
// (centre crop or pad, image_io.h), or aligned the FFHQ way from landmarks the caller gives
// or that a FaceDetector finds (align.h). What was done is described by an AlignmentInfo,
// which travels with the job and the resulting latent as JSON. Thread-safe (no state).
#ifndef I2S_SERVER_IMAGING_PREPARE_H_
#define I2S_SERVER_IMAGING_PREPARE_H_

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/imaging/face_detector.h"
#include "server/imaging/image_io.h"

namespace i2s {

enum class AlignMode {
  kNone,       // fit to the square (FitMode)
  kLandmarks,  // FFHQ alignment from caller-supplied points
  kAuto,       // FFHQ alignment from detected landmarks
};

struct PrepareOptions {
  int size = 1024;                     // the model's resolution
  FitMode fit = FitMode::kCenterCrop;  // kNone, and kAuto when falling back
  AlignMode mode = AlignMode::kNone;
  std::vector<Point2> points;  // kLandmarks: 5 or 68 (FaceLandmarksFromPoints)
  double min_confidence = FaceDetector::kDefaultMinConfidence;  // kAuto
  int face = 0;  // kAuto: which face, by FaceDetector::DetectAll's order (0 = the largest)
  bool fit_when_no_face = false;  // kAuto: no face -> fit instead of failing
  bool padding = true;            // AlignOptions::padding
  // Ends the "no face found" error: how the caller asks for the fallback.
  std::string no_face_hint = "allow falling back to a plain resize";
  // Optional [1, H, W] over the photo: where it is 0 the photo is set to grey
  // (ClearUnmasked, mask.h) after the face detection and before any resampling, so what
  // lies there cannot reach the target (masked embedding).
  torch::Tensor keep;
};

// What alignment did, in the photo's pixel-index coordinates.
struct AlignmentInfo {
  std::string method;     // "landmarks", "haar", "yunet", "facemark-lbf", "mtcnn", or "none"
  int face = 0;           // kAuto: which of the faces found (largest first)
  double confidence = 0;  // 1 for given landmarks
  int source_width = 0, source_height = 0;
  int size = 0;  // side of the aligned image
  FaceLandmarks landmarks;
  std::array<Point2, 4> quad;  // corners: top-left, bottom-left, bottom-right, top-right
  Similarity transform;        // photo -> aligned image
  std::string note;            // why it fell back, when it did
};

struct PreparedImage {
  torch::Tensor image;                     // float RGB [3, size, size] in [0, 1]
  Similarity transform;                    // photo -> image, in every mode
  std::optional<AlignmentInfo> alignment;  // unless AlignMode::kNone
  std::vector<FaceDetection> faces;        // kAuto: every face found, largest first
};

// photo: float RGB [3, H, W] in [0, 1]. `detector` is needed for kAuto (FailedPrecondition
// when null: the server has no face detector). Errors name `field` ("align.landmarks",
// "image"): bad points, no face found (InvalidArgument: the photo cannot be aligned as
// asked, with what to do instead), a face index past the faces found (InvalidArgument
// naming `field`.face), or a face outside the photo.
absl::StatusOr<PreparedImage> PrepareImage(const torch::Tensor& photo,
                                           const PrepareOptions& options,
                                           const FaceDetector* detector,
                                           const std::string& field = "align");

// FitToSquare as a transform, photo -> square (pixel-index coordinates): a scale about
// the centre of the crop or pad, with FitToSquare's integer offsets.
Similarity FitTransform(int width, int height, int size, FitMode fit);

// Points from text, as ParsePointList (common/point_list.h) reads them.
absl::StatusOr<std::vector<Point2>> ParsePoints(absl::string_view text, const std::string& field);

std::string AlignmentInfoToJson(const AlignmentInfo& info);
absl::StatusOr<AlignmentInfo> AlignmentInfoFromJson(absl::string_view json);

// An embedded latent keeps its alignment in params_json as {"alignment": <record>}, and
// the record of its masks (a JSON object) as {"masks": <record>}; either may be "".
std::string LatentParamsWithAlignment(const std::string& alignment_json,
                                      const std::string& masks_json = "");
// The record from such params_json, or "" when there is none (or it cannot be read).
std::string AlignmentOfLatentParams(const std::string& params_json);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_PREPARE_H_
