// How a photo is brought to the model (`align`, `embed`): fit (crop/pad) or FFHQ
// alignment, with the options both commands share.
#ifndef I2S_TOOLS_I2S_TOOL_ALIGN_OPTIONS_H_
#define I2S_TOOLS_I2S_TOOL_ALIGN_OPTIONS_H_

#include <torch/torch.h>

#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "server/imaging/prepare.h"

namespace i2s::tool {

struct AlignArgs {
  std::string align = "none";  // none, auto, landmarks (implied by --landmarks)
  std::string landmarks;       // a text file of 5 or 68 points (x y per line)
  std::string cascades = FaceDetectorOptions().cascade_dir;
  std::string landmark_model;
  std::string mtcnn = "auto";  // folder with MTCNN's pnet.pt, rnet.pt, onet.pt; auto; none
  int face = 0;                // auto: which face, largest first
  double min_confidence = FaceDetector::kDefaultMinConfidence;
  bool fit_when_no_face = false;
  bool no_padding = false;
  std::string info_out;  // the AlignmentInfo as JSON
};

// --align and the options that go with it; `default_auto`: --align defaults to auto.
void AddAlignOptions(CLI::App* cmd, AlignArgs* a, bool default_auto);

// photo -> the embedding target, as the service prepares it (and says what alignment did).
absl::StatusOr<PreparedImage> Prepare(const torch::Tensor& photo, int size, FitMode fit,
                                      const AlignArgs& a);

}  // namespace i2s::tool

#endif  // I2S_TOOLS_I2S_TOOL_ALIGN_OPTIONS_H_
