#include "tools/i2s_tool/align_options.h"

#include <iostream>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/formats/npy.h"

namespace i2s::tool {

void AddAlignOptions(CLI::App* cmd, AlignArgs* a, bool default_auto) {
  if (default_auto) a->align = "auto";
  cmd->add_option("--align", a->align,
                  "none (crop/pad to the square), auto (FFHQ alignment from detected landmarks), "
                  "landmarks (from --landmarks)")
      ->check(CLI::IsMember({"none", "auto", "landmarks"}))
      ->capture_default_str();
  cmd->add_option("--landmarks", a->landmarks,
                  "text file with 5 points (eye, eye, nose, mouth corner, mouth corner) or 68 "
                  "(iBUG 300-W), 'x y' per line, in the photo's pixels; implies --align landmarks");
  cmd->add_option("--cascades", a->cascades, "folder of OpenCV's Haar cascades (opencv-data)")
      ->capture_default_str();
  cmd->add_option("--landmark-model", a->landmark_model,
                  "optional YuNet face detector (.onnx) or Facemark LBF model (.yaml)");
  cmd->add_option("--mtcnn", a->mtcnn,
                  "folder with MTCNN's trained pnet.pt, rnet.pt, onet.pt (scripts/fetch-models): "
                  "faces and landmarks from MTCNN instead of the cascades; auto = "
                  "$I2S_MTCNN_DIR, else /usr/share/i2s/mtcnn if it is there (unless "
                  "--landmark-model is given); none = the cascades")
      ->capture_default_str();
  cmd->add_option("--face", a->face, "auto: which face, counted from 0, largest first")
      ->check(CLI::Range(0, FaceDetector::kMaxFaces - 1));
  cmd->add_option("--min-confidence", a->min_confidence,
                  "auto: faces found with less confidence count as none")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_flag("--fit-when-no-face", a->fit_when_no_face,
                "auto: crop/pad (--fit) when no face is found instead of failing");
  cmd->add_flag("--no-padding", a->no_padding,
                "leave black what the crop square takes from outside the photo (FFHQ pads it)");
  cmd->add_option("--align-info", a->info_out,
                  "write what alignment did (landmarks, quad, transform) here as JSON");
}

absl::StatusOr<PreparedImage> Prepare(const torch::Tensor& photo, int size, FitMode fit,
                                      const AlignArgs& a) {
  PrepareOptions p;
  p.size = size;
  p.fit = fit;
  p.mode = a.align == "auto" ? AlignMode::kAuto : AlignMode::kNone;
  if (a.align == "landmarks" || !a.landmarks.empty()) {
    if (a.landmarks.empty()) {
      return absl::InvalidArgumentError("--align landmarks needs --landmarks FILE");
    }
    p.mode = AlignMode::kLandmarks;
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(a.landmarks));
    ASSIGN_OR_RETURN(p.points, ParsePoints(text, a.landmarks));
  }
  p.min_confidence = a.min_confidence;
  p.face = a.face;
  p.fit_when_no_face = a.fit_when_no_face;
  p.padding = !a.no_padding;
  p.no_face_hint = "use --fit-when-no-face";
  std::unique_ptr<FaceDetector> detector;
  if (p.mode == AlignMode::kAuto) {
    FaceDetectorOptions d;
    d.cascade_dir = a.cascades;
    d.landmark_model = a.landmark_model;
    d.mtcnn_dir = ResolveMtcnnDir(a.mtcnn, !a.landmark_model.empty());
    ASSIGN_OR_RETURN(detector, FaceDetector::Create(d));
  }
  ASSIGN_OR_RETURN(PreparedImage prepared, PrepareImage(photo, p, detector.get(), "--align"));
  if (prepared.alignment.has_value()) {
    const AlignmentInfo& info = *prepared.alignment;
    if (info.method == "none") {
      std::cout << "not aligned (" << info.note << "): fitted to the square instead" << std::endl;
    } else {
      std::cout << absl::StrFormat(
                       "aligned (%s, confidence %.2f): scale %.4f, rotation %.2f degrees",
                       info.method, info.confidence, info.transform.Scale(),
                       info.transform.RotationDegrees())
                << std::endl;
    }
    if (!a.info_out.empty()) {
      RETURN_IF_ERROR(WriteStringToFile(a.info_out, AlignmentInfoToJson(info) + "\n"));
    }
  }
  return prepared;
}

}  // namespace i2s::tool
