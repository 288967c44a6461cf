// faces: every face MTCNN finds in a photo (box, confidence, five landmarks), largest
// first, as JSON.
#include <cmath>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/engine/mtcnn.h"
#include "server/imaging/image_io.h"
#include "tools/i2s_tool/command.h"

namespace i2s::tool {
namespace {

struct FacesArgs {
  std::string mtcnn, image;
  MtcnnOptions options;
};

std::string Number(double v) { return absl::StrFormat("%.4f", v); }

absl::Status Faces(const Common& common, const FacesArgs& a) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  ASSIGN_OR_RETURN(auto mtcnn, Mtcnn::Load(a.mtcnn, device));
  ASSIGN_OR_RETURN(torch::Tensor photo, ReadRgbImage(a.image));
  ASSIGN_OR_RETURN(auto faces, mtcnn->Detect(photo, a.options));
  std::string json = absl::StrCat("{\"image\": {\"width\": ", photo.size(2),
                                  ", \"height\": ", photo.size(1), "}, \"faces\": [");
  for (size_t i = 0; i < faces.size(); ++i) {
    const MtcnnFace& f = faces[i];
    absl::StrAppend(&json, i ? ", " : "", "{\"box\": [", Number(f.box[0]), ", ", Number(f.box[1]),
                    ", ", Number(f.box[2]), ", ", Number(f.box[3]),
                    "], \"confidence\": ", Number(f.confidence), ", \"landmarks\": [");
    for (int k = 0; k < 5; ++k) {
      absl::StrAppend(&json, k ? ", " : "", "[", Number(f.landmarks[k][0]), ", ",
                      Number(f.landmarks[k][1]), "]");
    }
    absl::StrAppend(&json, "]}");
  }
  std::cout << json << "]}" << std::endl;
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> AddFacesCommand(CLI::App* app, Common* common) {
  auto a = std::make_shared<FacesArgs>();
  CLI::App* faces = app->add_subcommand(
      "faces", "Every face MTCNN finds in a photo: box, confidence, 5 landmarks (JSON)");
  faces
      ->add_option("--mtcnn", a->mtcnn,
                   "folder with MTCNN's pnet.pt, rnet.pt, onet.pt "
                   "(scripts/fetch-models)")
      ->required();
  faces->add_option("--image", a->image, "photo (PNG, JPEG, ...; EXIF orientation applied)")
      ->required();
  faces->add_option("--min-face-size", a->options.min_face_size, "smallest face looked for (px)")
      ->check(CLI::Range(12.0, 100000.0))
      ->capture_default_str();
  AddCommonOptions(faces, common);
  return {{faces, [a, common] { return Faces(*common, *a); }}};
}

}  // namespace i2s::tool
