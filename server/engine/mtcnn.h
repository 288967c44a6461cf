// MTCNN face detection (Zhang et al., "Joint Face Detection and Alignment using Multi-task
// Cascaded Convolutional Networks", 2016) with trained weights: the three networks (P-, R-
// and O-Net) and the cascade around them (an image pyramid through P-Net, non-maximum
// suppression, box regression, R-Net and O-Net on square crops, five landmarks), as
// facenet-pytorch 2.6.0 runs them, loading that package's files natively:
// facenet_pytorch/data/{pnet,rnet,onet}.pt, legacy torch.save state dicts (MIT licence;
// scripts/fetch-models puts them in a folder).
#ifndef I2S_SERVER_ENGINE_MTCNN_H_
#define I2S_SERVER_ENGINE_MTCNN_H_

#include <torch/torch.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/weights.h"

namespace i2s {

struct MtcnnOptions {
  // Faces smaller than this (box side, pixels) are not looked for: the pyramid's first
  // scale is 12 / min_face_size. facenet-pytorch's default is 20; 24 costs P-Net's stage
  // about a third less and still finds faces 11.5 px between the eyes (their boxes are
  // 2.0-2.9 times that: dlib's group photo 2007_007763.jpg, all 7 faces found either way).
  double min_face_size = 24;
  // The score each stage needs (P-, R-, O-Net's face probability).
  std::array<double, 3> thresholds = {0.6, 0.7, 0.7};
  // The pyramid's step between scales.
  double scale_factor = 0.709;
};

struct MtcnnFace {
  // The box, x1 y1 x2 y2 in the photo's pixels (after O-Net's regression).
  std::array<float, 4> box{};
  float confidence = 0;  // O-Net's face probability
  // Left eye, right eye, nose, left and right mouth corner ("left": the photo's left), x y
  // in the photo's pixels.
  std::array<std::array<float, 2>, 5> landmarks{};
  float Area() const { return (box[2] - box[0]) * (box[3] - box[1]); }
};

class Mtcnn {
 public:
  // The three networks from `dir`/pnet.pt, rnet.pt and onet.pt. Errors name the file and,
  // for a wrong tensor, its key and shapes.
  static absl::StatusOr<std::unique_ptr<Mtcnn>> Load(const std::string& dir,
                                                     torch::Device device = torch::kCPU);
  // From state dicts (tests, or files read elsewhere): P-, R-, O-Net.
  static absl::StatusOr<std::unique_ptr<Mtcnn>> Create(const StateDict& pnet, const StateDict& rnet,
                                                       const StateDict& onet,
                                                       torch::Device device = torch::kCPU);

  // Every face in `rgb` (float [3, H, W] in [0, 1], as the decoders give; the networks
  // see its 8-bit values, round(x * 255)), largest box first. InvalidArgument for another shape or
  // options out of range.
  absl::StatusOr<std::vector<MtcnnFace>> Detect(const torch::Tensor& rgb,
                                                const MtcnnOptions& options = {}) const;

  // The networks alone, on batches normalised as the cascade does ((x - 127.5) / 128):
  // P-Net: [N, 3, H, W] -> {regression [N, 4, h, w], probabilities [N, 2, h, w]};
  // R-Net: [N, 3, 24, 24] -> {regression [N, 4], probabilities [N, 2]};
  // O-Net: [N, 3, 48, 48] -> {regression [N, 4], landmarks [N, 10], probabilities [N, 2]}.
  std::vector<torch::Tensor> PNet(const torch::Tensor& x) const;
  std::vector<torch::Tensor> RNet(const torch::Tensor& x) const;
  std::vector<torch::Tensor> ONet(const torch::Tensor& x) const;

  // sha256 over the three networks' weights (WeightsFingerprint of their union, keys
  // prefixed pnet./rnet./onet.).
  const std::string& fingerprint() const { return fingerprint_; }
  torch::Device device() const { return device_; }

 private:
  struct Conv {
    torch::Tensor weight, bias, prelu;  // prelu undefined: none
  };
  struct Dense {
    torch::Tensor weight, bias, prelu;
  };
  Mtcnn(torch::Device device) : device_(device) {}
  static torch::Tensor Apply(const Conv& c, const torch::Tensor& x);
  static torch::Tensor Apply(const Dense& d, const torch::Tensor& x);

  torch::Device device_;
  std::string fingerprint_;
  // P-Net: conv1-3 (3x3), heads conv4_1 (face), conv4_2 (box).
  Conv p_conv1_, p_conv2_, p_conv3_, p_face_, p_box_;
  // R-Net: conv1-3, dense4, heads dense5_1, dense5_2.
  Conv r_conv1_, r_conv2_, r_conv3_;
  Dense r_dense4_, r_face_, r_box_;
  // O-Net: conv1-4, dense5, heads dense6_1 (face), 6_2 (box), 6_3 (landmarks).
  Conv o_conv1_, o_conv2_, o_conv3_, o_conv4_;
  Dense o_dense5_, o_face_, o_box_, o_points_;
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_MTCNN_H_
