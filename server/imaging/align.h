// FFHQ-style face alignment: five facial landmarks -> the oriented square the FFHQ data set
// was cropped with -> an aligned image at the model's resolution, plus the similarity
// transform that maps the original photo onto it (so an edited result can be pasted back).
// Automatic landmarks are face_detector.h's.
//
// Coordinates are pixel-index coordinates: x to the right, y down, (0, 0) the centre of the
// top-left pixel (as dlib, OpenCV and the FFHQ script use them).
#ifndef I2S_SERVER_IMAGING_ALIGN_H_
#define I2S_SERVER_IMAGING_ALIGN_H_

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace i2s {

struct Point2 {
  double x = 0, y = 0;
};
inline Point2 operator+(Point2 a, Point2 b) { return {a.x + b.x, a.y + b.y}; }
inline Point2 operator-(Point2 a, Point2 b) { return {a.x - b.x, a.y - b.y}; }
inline Point2 operator*(Point2 a, double s) { return {a.x * s, a.y * s}; }
inline double Cross(Point2 a, Point2 b) { return a.x * b.y - a.y * b.x; }
inline double Norm(Point2 a) { return std::hypot(a.x, a.y); }
inline Point2 Mid(Point2 a, Point2 b) { return (a + b) * 0.5; }

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

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_ALIGN_H_
