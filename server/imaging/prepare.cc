#include "server/imaging/prepare.h"

#include <cmath>
#include <exception>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/point_list.h"
#include "common/status_macros.h"
#include "server/imaging/mask.h"

namespace i2s {
namespace {

using nlohmann::json;

json PointJson(Point2 p) { return json::array({p.x, p.y}); }

Point2 PointFrom(const json& j) { return {j.at(0).get<double>(), j.at(1).get<double>()}; }

}  // namespace

absl::StatusOr<PreparedImage> PrepareImage(const torch::Tensor& photo,
                                           const PrepareOptions& options,
                                           const FaceDetector* detector, const std::string& field) {
  PreparedImage out;
  const int width = static_cast<int>(photo.size(2)), height = static_cast<int>(photo.size(1));
  // What the resampling sees: the photo, less what `keep` leaves out.
  const torch::Tensor source = options.keep.defined() ? ClearUnmasked(photo, options.keep) : photo;
  if (options.mode == AlignMode::kNone) {
    ASSIGN_OR_RETURN(out.image, FitToSquare(source, options.size, options.fit));
    out.transform = FitTransform(width, height, options.size, options.fit);
    return out;
  }
  AlignmentInfo info;
  info.source_width = static_cast<int>(photo.size(2));
  info.source_height = static_cast<int>(photo.size(1));
  info.size = options.size;
  FaceLandmarks landmarks;
  if (options.mode == AlignMode::kLandmarks) {
    ASSIGN_OR_RETURN(landmarks,
                     FaceLandmarksFromPoints(options.points, absl::StrCat(field, ".landmarks")));
    info.method = "landmarks";
    info.confidence = 1;
  } else {
    if (detector == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(field,
                       ".mode: automatic alignment is not available (the server has no face "
                       "detector: see its --face-cascades flag); send landmarks instead"));
    }
    auto found = detector->DetectAll(photo, options.min_confidence);
    if (found.ok() && options.face >= static_cast<int>(found->size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".face: ", options.face, ", but the photo has ", found->size(),
          found->size() == 1 ? " face" : " faces", " (counted from 0, largest first)"));
    }
    if (!found.ok()) {
      if (!absl::IsNotFound(found.status())) return found.status();
      if (!options.fit_when_no_face) {
        return absl::InvalidArgumentError(
            absl::StrCat(found.status().message(), "; send landmarks, or ", options.no_face_hint));
      }
      ASSIGN_OR_RETURN(out.image, FitToSquare(source, options.size, options.fit));
      info.method = "none";
      info.note = std::string(found.status().message());
      info.transform = FitTransform(width, height, options.size, options.fit);
      out.transform = info.transform;
      const Similarity back = info.transform.Inverse();
      const double e = options.size - 0.5;
      info.quad = {back.Apply({-0.5, -0.5}), back.Apply({-0.5, e}), back.Apply({e, e}),
                   back.Apply({e, -0.5})};
      out.alignment = info;
      return out;
    }
    out.faces = *std::move(found);
    const FaceDetection& chosen = out.faces[options.face];
    landmarks = chosen.landmarks;
    info.method = chosen.method;
    info.confidence = chosen.confidence;
    info.face = options.face;
  }
  AlignOptions align;
  align.output_size = options.size;
  align.padding = options.padding;
  auto aligned = AlignFfhq(source, landmarks, align);
  if (!aligned.ok()) {
    if (absl::IsInvalidArgument(aligned.status())) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".", aligned.status().message()));
    }
    return aligned.status();
  }
  out.image = aligned->image;
  info.landmarks = landmarks;
  info.quad = aligned->quad.corners;
  info.transform = aligned->transform;
  out.transform = info.transform;
  out.alignment = info;
  return out;
}

Similarity FitTransform(int width, int height, int size, FitMode fit) {
  const int side = fit == FitMode::kCenterCrop ? std::min(width, height) : std::max(width, height);
  const double s = double(size) / side;
  const double x0 = width >= side ? (width - side) / 2 : -((side - width) / 2);
  const double y0 = height >= side ? (height - side) / 2 : -((side - height) / 2);
  Similarity t;
  t.m = {s, 0, -x0 * s + 0.5 * s - 0.5, 0, s, -y0 * s + 0.5 * s - 0.5};
  return t;
}

absl::StatusOr<std::vector<Point2>> ParsePoints(absl::string_view text, const std::string& field) {
  ASSIGN_OR_RETURN(auto pairs, ParsePointList(text, field));
  std::vector<Point2> points;
  for (const auto& [x, y] : pairs) points.push_back({x, y});
  return points;
}

std::string AlignmentInfoToJson(const AlignmentInfo& info) {
  const FaceLandmarks& l = info.landmarks;
  json j{{"method", info.method},
         {"confidence", info.confidence},
         {"source_width", info.source_width},
         {"source_height", info.source_height},
         {"size", info.size},
         {"quad", json::array({PointJson(info.quad[0]), PointJson(info.quad[1]),
                               PointJson(info.quad[2]), PointJson(info.quad[3])})},
         {"transform", info.transform.m}};
  if (info.method != "none") {
    j["landmarks"] = json::array({PointJson(l.eye_left), PointJson(l.eye_right),
                                  PointJson(l.mouth_left), PointJson(l.mouth_right)});
  }
  if (!info.note.empty()) j["note"] = info.note;
  if (info.face != 0) j["face"] = info.face;
  return j.dump();
}

absl::StatusOr<AlignmentInfo> AlignmentInfoFromJson(absl::string_view text) {
  try {
    const json j = json::parse(text);
    AlignmentInfo info;
    info.method = j.at("method").get<std::string>();
    info.confidence = j.at("confidence").get<double>();
    info.source_width = j.at("source_width").get<int>();
    info.source_height = j.at("source_height").get<int>();
    info.size = j.at("size").get<int>();
    for (int i = 0; i < 4; ++i) info.quad[i] = PointFrom(j.at("quad").at(i));
    for (int i = 0; i < 6; ++i) info.transform.m[i] = j.at("transform").at(i).get<double>();
    if (j.contains("landmarks")) {
      const json& l = j.at("landmarks");
      info.landmarks = {PointFrom(l.at(0)), PointFrom(l.at(1)), PointFrom(l.at(2)),
                        PointFrom(l.at(3))};
    }
    if (j.contains("note")) info.note = j.at("note").get<std::string>();
    if (j.contains("face")) info.face = j.at("face").get<int>();
    return info;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("alignment record: ", e.what()));
  }
}

std::string LatentParamsWithAlignment(const std::string& alignment_json,
                                      const std::string& masks_json) {
  json j = json::object();
  if (!alignment_json.empty()) j["alignment"] = json::parse(alignment_json);
  if (!masks_json.empty()) j["masks"] = json::parse(masks_json);
  return j.dump();
}

std::string AlignmentOfLatentParams(const std::string& params_json) {
  if (params_json.empty()) return "";
  try {
    const json j = json::parse(params_json);
    if (j.is_object() && j.contains("alignment")) return j.at("alignment").dump();
  } catch (const std::exception&) {
  }
  return "";
}

}  // namespace i2s
