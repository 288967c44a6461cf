#include "server/engine/mtcnn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

// The cascade's input normalisation: (x - 127.5) / 128.
torch::Tensor Normalise(const torch::Tensor& x) { return (x - 127.5) * 0.0078125; }

// The two overlap measures of the cascade's non-maximum suppression.
enum class Overlap {
  // Intersection over union, sides without +1: torchvision's nms, between the stages.
  kUnion,
  // Intersection over the smaller box's area, sides pixel-inclusive (+1): MTCNN's
  // original "Min" rule, after the last stage.
  kMin,
};

// Greedy non-maximum suppression of boxes [n, 4] x1 y1 x2 y2 by descending score: a box
// goes when its overlap with one kept before it is above `threshold`. The kept indices,
// highest score first.
std::vector<int64_t> Nms(const torch::Tensor& boxes, const torch::Tensor& scores, double threshold,
                         Overlap overlap) {
  const int64_t n = boxes.size(0);
  if (n == 0) return {};
  const torch::Tensor b = boxes.to(torch::kCPU, torch::kFloat32).contiguous();
  const torch::Tensor order =
      std::get<1>(scores.to(torch::kCPU).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  auto box = b.accessor<float, 2>();
  auto idx = order.accessor<int64_t, 1>();
  const float one = overlap == Overlap::kMin ? 1.f : 0.f;  // pixel-inclusive sides
  std::vector<float> area(n);
  for (int64_t i = 0; i < n; ++i) {
    area[i] = (box[i][2] - box[i][0] + one) * (box[i][3] - box[i][1] + one);
  }
  std::vector<char> suppressed(n, 0);
  std::vector<int64_t> keep;
  for (int64_t a = 0; a < n; ++a) {
    const int64_t i = idx[a];
    if (suppressed[i]) continue;
    keep.push_back(i);
    for (int64_t c = a + 1; c < n; ++c) {
      const int64_t j = idx[c];
      if (suppressed[j]) continue;
      const float w =
          std::max(0.f, std::min(box[i][2], box[j][2]) - std::max(box[i][0], box[j][0]) + one);
      const float h =
          std::max(0.f, std::min(box[i][3], box[j][3]) - std::max(box[i][1], box[j][1]) + one);
      const float inter = w * h;
      const float measure = overlap == Overlap::kMin ? inter / std::min(area[i], area[j])
                                                     : inter / (area[i] + area[j] - inter);
      if (measure > threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

torch::Tensor Pick(const torch::Tensor& t, const std::vector<int64_t>& rows) {
  return t.index_select(0, torch::tensor(rows, torch::kInt64).to(t.device()));
}

// P-Net's output at one pyramid scale -> candidate boxes [n, 9]: x1 y1 x2 y2 in the photo
// (the 12x12 window of each output cell, stride 2, mapped back through the scale), the
// face probability, and the 4 regression offsets.
torch::Tensor CandidateBoxes(const torch::Tensor& regression, const torch::Tensor& face,
                             double scale, double threshold) {
  const torch::Tensor mask = face >= threshold;  // [1, h, w]
  const torch::Tensor where = mask.nonzero();    // [n, 3]: image, y, x
  const torch::Tensor score = face.index({mask});
  const torch::Tensor reg =
      regression.permute({1, 0, 2, 3}).index({torch::indexing::Slice(), mask}).t();
  const torch::Tensor xy = where.slice(1, 1, 3).to(regression.dtype()).flip({1});
  const torch::Tensor top_left = ((2 * xy + 1) / scale).floor();
  const torch::Tensor bottom_right = ((2 * xy + 12) / scale).floor();
  return torch::cat({top_left, bottom_right, score.unsqueeze(1), reg}, 1);
}

// Boxes [n, >=4] made square about their centres, the side the longer of the two.
torch::Tensor Square(torch::Tensor boxes) {
  const torch::Tensor h = boxes.select(1, 3) - boxes.select(1, 1);
  const torch::Tensor w = boxes.select(1, 2) - boxes.select(1, 0);
  const torch::Tensor side = torch::max(w, h);
  boxes = boxes.clone();
  boxes.select(1, 0).copy_(boxes.select(1, 0) + w * 0.5 - side * 0.5);
  boxes.select(1, 1).copy_(boxes.select(1, 1) + h * 0.5 - side * 0.5);
  boxes.select(1, 2).copy_(boxes.select(1, 0) + side);
  boxes.select(1, 3).copy_(boxes.select(1, 1) + side);
  return boxes;
}

// R-Net's and O-Net's box regression: offsets in units of the (pixel-inclusive) side.
torch::Tensor Regress(torch::Tensor boxes, const torch::Tensor& offsets) {
  const torch::Tensor w = boxes.select(1, 2) - boxes.select(1, 0) + 1;
  const torch::Tensor h = boxes.select(1, 3) - boxes.select(1, 1) + 1;
  boxes = boxes.clone();
  const torch::Tensor x1 = boxes.select(1, 0) + offsets.select(1, 0) * w;
  const torch::Tensor y1 = boxes.select(1, 1) + offsets.select(1, 1) * h;
  const torch::Tensor x2 = boxes.select(1, 2) + offsets.select(1, 2) * w;
  const torch::Tensor y2 = boxes.select(1, 3) + offsets.select(1, 3) * h;
  boxes.slice(1, 0, 4).copy_(torch::stack({x1, y1, x2, y2}, 1));
  return boxes;
}

// Runs fn(begin, end) over [0, n) in up to LibTorch's intra-op thread count of pieces, the
// calling thread taking the first. (at::parallel_for would run on one thread here: its
// OpenMP body is compiled into the caller, and this project builds without -fopenmp.)
void InParallel(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t pieces = std::min<int64_t>(n, std::max(1, at::get_num_threads()));
  if (pieces <= 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> others;
  for (int64_t p = 1; p < pieces; ++p) {
    others.emplace_back([&fn, n, p, pieces] { fn(n * p / pieces, n * (p + 1) / pieces); });
  }
  fn(0, n / pieces);
  for (std::thread& t : others) t.join();
}

// sums[x] += src[x] over a row, four floats at a time (GCC's -O2 leaves the plain loop
// scalar).
void AddRow(const float* __restrict src, float* __restrict sums, int64_t w) {
  typedef float Float4 __attribute__((vector_size(16)));
  int64_t x = 0;
  for (; x + 4 <= w; x += 4) {
    Float4 a, b;
    std::memcpy(&a, sums + x, sizeof a);
    std::memcpy(&b, src + x, sizeof b);
    a += b;
    std::memcpy(sums + x, &a, sizeof a);
  }
  for (; x < w; ++x) sums[x] += src[x];
}

// The resize the published cascade uses ("area", torch::adaptive_avg_pool2d): output bin i
// covers inputs [floor(i * in / out), ceil((i + 1) * in / out)). This is output rows
// [i0, i1) of one channel: `plane` points at the window's first pixel, `row` is the plane's
// row stride, the window is h x w, the output oh x ow; `sums` is scratch of w floats.
// Separable: whole input rows summed into `sums`, then each column bin. Done here rather
// than by LibTorch's kernel, which took 60 of the 180 ms of P-Net's stage on a 1024x1024
// photo on 2 cores, and one call per crop before R-Net and O-Net (docs/PERFORMANCE.md).
// The sums run in another order than LibTorch's, so results differ from it by float
// rounding only.
void AreaRows(const float* plane, int64_t row, int64_t h, int64_t w, int64_t oh, int64_t ow,
              int64_t i0, int64_t i1, float* out, float* sums) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t y0 = (i * h) / oh, y1 = ((i + 1) * h + oh - 1) / oh;
    std::fill(sums, sums + w, 0.0f);
    for (int64_t y = y0; y < y1; ++y) AddRow(plane + y * row, sums, w);
    const float rows = static_cast<float>(y1 - y0);
    float* dst = out + i * ow;
    for (int64_t j = 0; j < ow; ++j) {
      const int64_t x0 = (j * w) / ow, x1 = ((j + 1) * w + ow - 1) / ow;
      float sum = 0;
      for (int64_t x = x0; x < x1; ++x) sum += sums[x];
      dst[j] = sum / (rows * static_cast<float>(x1 - x0));
    }
  }
}

// image [1, C, H, W] (contiguous) area-resized to [1, C, oh, ow].
torch::Tensor AreaResize(const torch::Tensor& image, int64_t oh, int64_t ow) {
  if (!image.device().is_cpu()) return torch::adaptive_avg_pool2d(image, {oh, ow});
  const int64_t C = image.size(1), H = image.size(2), W = image.size(3);
  const float* in = image.data_ptr<float>();
  torch::Tensor out = torch::empty({1, C, oh, ow}, image.options());
  float* o = out.data_ptr<float>();
  InParallel(C * oh, [&](int64_t begin, int64_t end) {
    std::vector<float> sums(W);
    for (int64_t k = begin; k < end;) {
      const int64_t c = k / oh, i0 = k % oh, i1 = std::min(oh, i0 + (end - k));
      AreaRows(in + c * H * W, W, H, W, oh, ow, i0, i1, o + c * oh * ow, sums.data());
      k += i1 - i0;
    }
  });
  return out;
}

// The crops of `boxes` [n, >=4] from `image` [1, 3, H, W], each area-resized to
// size x size and normalised; the box is truncated to whole pixels (1-based corners, as the
// published cascade) and clipped to the photo, not padded. `rows` gets the boxes that
// have a non-empty crop, in order.
torch::Tensor Crops(const torch::Tensor& image, const torch::Tensor& boxes, int64_t size,
                    std::vector<int64_t>* rows) {
  const int64_t h = image.size(2), w = image.size(3);
  const torch::Tensor corners = boxes.slice(1, 0, 4).trunc().to(torch::kCPU, torch::kInt32);
  auto c = corners.accessor<int32_t, 2>();
  struct Window {
    int64_t x, y, w, h;
  };
  std::vector<Window> windows;
  rows->clear();
  for (int64_t i = 0; i < corners.size(0); ++i) {
    const int64_t x = std::max<int64_t>(c[i][0], 1), y = std::max<int64_t>(c[i][1], 1);
    const int64_t ex = std::min<int64_t>(c[i][2], w), ey = std::min<int64_t>(c[i][3], h);
    if (ey <= y - 1 || ex <= x - 1) continue;
    windows.push_back({x - 1, y - 1, ex - x + 1, ey - y + 1});
    rows->push_back(i);
  }
  const int64_t n = static_cast<int64_t>(windows.size());
  if (!image.device().is_cpu()) {
    std::vector<torch::Tensor> crops;
    for (const Window& win : windows) {
      crops.push_back(torch::adaptive_avg_pool2d(
          image.slice(2, win.y, win.y + win.h).slice(3, win.x, win.x + win.w), {size, size}));
    }
    if (crops.empty()) return torch::empty({0, 3, size, size}, image.options());
    return Normalise(torch::cat(crops, 0));
  }
  torch::Tensor out = torch::empty({n, 3, size, size}, image.options());
  const float* in = image.data_ptr<float>();
  float* o = out.data_ptr<float>();
  InParallel(n, [&](int64_t begin, int64_t end) {
    std::vector<float> sums(w);
    for (int64_t k = begin; k < end; ++k) {
      const Window& win = windows[k];
      for (int64_t ch = 0; ch < 3; ++ch) {
        AreaRows(in + ch * h * w + win.y * w + win.x, w, win.h, win.w, size, size, 0, size,
                 o + (k * 3 + ch) * size * size, sums.data());
      }
    }
  });
  return Normalise(out);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Mtcnn>> Mtcnn::Load(const std::string& dir, torch::Device device) {
  StateDict nets[3];
  const char* names[3] = {"pnet.pt", "rnet.pt", "onet.pt"};
  for (int i = 0; i < 3; ++i) {
    const std::string path = absl::StrCat(dir, "/", names[i]);
    auto loaded = LoadWeights(path);
    if (!loaded.ok()) return Annotate(loaded.status(), absl::StrCat("MTCNN ", path));
    nets[i] = std::move(loaded->tensors);
  }
  auto made = Create(nets[0], nets[1], nets[2], device);
  if (!made.ok()) return Annotate(made.status(), absl::StrCat("MTCNN files in ", dir));
  return made;
}

absl::StatusOr<std::unique_ptr<Mtcnn>> Mtcnn::Create(const StateDict& pnet, const StateDict& rnet,
                                                     const StateDict& onet, torch::Device device) {
  std::unique_ptr<Mtcnn> m(new Mtcnn(device));
  auto conv = [&](WeightMap& weights, const std::string& name, int64_t in, int64_t out, int64_t k,
                  const std::string& prelu) -> absl::StatusOr<Conv> {
    Conv c;
    ASSIGN_OR_RETURN(c.weight, weights.Take(name + ".weight", {out, in, k, k}));
    ASSIGN_OR_RETURN(c.bias, weights.Take(name + ".bias", {out}));
    if (!prelu.empty()) {
      ASSIGN_OR_RETURN(c.prelu, weights.Take(prelu + ".weight", {out}));
    }
    // Channels-last (NHWC) convolutions: P-Net's stage took 30% less time so on this CPU
    // (LibTorch 1.13, 2 threads) than with NCHW.
    c.weight = c.weight.to(device).contiguous(at::MemoryFormat::ChannelsLast);
    c.bias = c.bias.to(device);
    if (c.prelu.defined()) c.prelu = c.prelu.to(device);
    return c;
  };
  auto dense = [&](WeightMap& weights, const std::string& name, int64_t in, int64_t out,
                   const std::string& prelu) -> absl::StatusOr<Dense> {
    Dense d;
    ASSIGN_OR_RETURN(d.weight, weights.Take(name + ".weight", {out, in}));
    ASSIGN_OR_RETURN(d.bias, weights.Take(name + ".bias", {out}));
    if (!prelu.empty()) {
      ASSIGN_OR_RETURN(d.prelu, weights.Take(prelu + ".weight", {out}));
    }
    d.weight = d.weight.to(device);
    d.bias = d.bias.to(device);
    if (d.prelu.defined()) d.prelu = d.prelu.to(device);
    return d;
  };
  auto nothing_else = [](const std::string&) { return false; };
  {
    WeightMap w(pnet);
    auto c1 = conv(w, "conv1", 3, 10, 3, "prelu1");
    auto c2 = conv(w, "conv2", 10, 16, 3, "prelu2");
    auto c3 = conv(w, "conv3", 16, 32, 3, "prelu3");
    auto face = conv(w, "conv4_1", 32, 2, 1, "");
    auto box = conv(w, "conv4_2", 32, 4, 1, "");
    for (const absl::Status& s : {c1.status(), c2.status(), c3.status(), face.status(),
                                  box.status(), w.CheckAllUsed(nothing_else)}) {
      if (!s.ok()) return Annotate(s, "pnet");
    }
    m->p_conv1_ = *c1, m->p_conv2_ = *c2, m->p_conv3_ = *c3, m->p_face_ = *face, m->p_box_ = *box;
  }
  {
    WeightMap w(rnet);
    auto c1 = conv(w, "conv1", 3, 28, 3, "prelu1");
    auto c2 = conv(w, "conv2", 28, 48, 3, "prelu2");
    auto c3 = conv(w, "conv3", 48, 64, 2, "prelu3");
    auto d4 = dense(w, "dense4", 576, 128, "prelu4");
    auto face = dense(w, "dense5_1", 128, 2, "");
    auto box = dense(w, "dense5_2", 128, 4, "");
    for (const absl::Status& s : {c1.status(), c2.status(), c3.status(), d4.status(), face.status(),
                                  box.status(), w.CheckAllUsed(nothing_else)}) {
      if (!s.ok()) return Annotate(s, "rnet");
    }
    m->r_conv1_ = *c1, m->r_conv2_ = *c2, m->r_conv3_ = *c3, m->r_dense4_ = *d4;
    m->r_face_ = *face, m->r_box_ = *box;
  }
  {
    WeightMap w(onet);
    auto c1 = conv(w, "conv1", 3, 32, 3, "prelu1");
    auto c2 = conv(w, "conv2", 32, 64, 3, "prelu2");
    auto c3 = conv(w, "conv3", 64, 64, 3, "prelu3");
    auto c4 = conv(w, "conv4", 64, 128, 2, "prelu4");
    auto d5 = dense(w, "dense5", 1152, 256, "prelu5");
    auto face = dense(w, "dense6_1", 256, 2, "");
    auto box = dense(w, "dense6_2", 256, 4, "");
    auto points = dense(w, "dense6_3", 256, 10, "");
    for (const absl::Status& s :
         {c1.status(), c2.status(), c3.status(), c4.status(), d5.status(), face.status(),
          box.status(), points.status(), w.CheckAllUsed(nothing_else)}) {
      if (!s.ok()) return Annotate(s, "onet");
    }
    m->o_conv1_ = *c1, m->o_conv2_ = *c2, m->o_conv3_ = *c3, m->o_conv4_ = *c4;
    m->o_dense5_ = *d5, m->o_face_ = *face, m->o_box_ = *box, m->o_points_ = *points;
  }
  StateDict all;
  for (const auto& [prefix, net] : {std::pair<const char*, const StateDict*>{"pnet.", &pnet},
                                    {"rnet.", &rnet},
                                    {"onet.", &onet}}) {
    for (const auto& [key, t] : *net) all.emplace_back(prefix + key, t);
  }
  m->fingerprint_ = WeightsFingerprint(all);
  return m;
}

torch::Tensor Mtcnn::Apply(const Conv& c, const torch::Tensor& x) {
  torch::Tensor y = torch::conv2d(x, c.weight, c.bias);
  return c.prelu.defined() ? torch::prelu(y, c.prelu) : y;
}

torch::Tensor Mtcnn::Apply(const Dense& d, const torch::Tensor& x) {
  torch::Tensor y = torch::linear(x, d.weight, d.bias);
  return d.prelu.defined() ? torch::prelu(y, d.prelu) : y;
}

namespace {
torch::Tensor Pool(const torch::Tensor& x, int64_t k, int64_t s) {
  return torch::max_pool2d(x, {k, k}, {s, s}, /*padding=*/0, /*dilation=*/1, /*ceil_mode=*/true);
}
// [N, C, H, W] -> [N, W * H * C] in the order the published dense layers were trained on
// (the original Caffe/TensorFlow networks' W, H, C).
torch::Tensor Flatten(const torch::Tensor& x) {
  return x.permute({0, 3, 2, 1}).contiguous().view({x.size(0), -1});
}
}  // namespace

std::vector<torch::Tensor> Mtcnn::PNet(const torch::Tensor& x) const {
  torch::NoGradGuard no_grad;
  torch::Tensor y = Pool(Apply(p_conv1_, x.contiguous(at::MemoryFormat::ChannelsLast)), 2, 2);
  y = Apply(p_conv3_, Apply(p_conv2_, y));
  return {Apply(p_box_, y), torch::softmax(Apply(p_face_, y), 1)};
}

std::vector<torch::Tensor> Mtcnn::RNet(const torch::Tensor& x) const {
  torch::NoGradGuard no_grad;
  torch::Tensor y = Pool(Apply(r_conv1_, x.contiguous(at::MemoryFormat::ChannelsLast)), 3, 2);
  y = Pool(Apply(r_conv2_, y), 3, 2);
  y = Apply(r_dense4_, Flatten(Apply(r_conv3_, y)));
  return {Apply(r_box_, y), torch::softmax(Apply(r_face_, y), 1)};
}

std::vector<torch::Tensor> Mtcnn::ONet(const torch::Tensor& x) const {
  torch::NoGradGuard no_grad;
  torch::Tensor y = Pool(Apply(o_conv1_, x.contiguous(at::MemoryFormat::ChannelsLast)), 3, 2);
  y = Pool(Apply(o_conv2_, y), 3, 2);
  y = Pool(Apply(o_conv3_, y), 2, 2);
  y = Apply(o_dense5_, Flatten(Apply(o_conv4_, y)));
  return {Apply(o_box_, y), Apply(o_points_, y), torch::softmax(Apply(o_face_, y), 1)};
}

absl::StatusOr<std::vector<MtcnnFace>> Mtcnn::Detect(const torch::Tensor& rgb,
                                                     const MtcnnOptions& options) const {
  if (rgb.dim() != 3 || rgb.size(0) != 3 || rgb.size(1) < 1 || rgb.size(2) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("MTCNN: image must be [3, H, W], got ", ShapeString(rgb.sizes())));
  }
  if (!(options.min_face_size >= 12) || !std::isfinite(options.min_face_size)) {
    return absl::InvalidArgumentError("MTCNN: min_face_size must be at least 12 pixels");
  }
  if (!(options.scale_factor > 0.1 && options.scale_factor < 1)) {
    return absl::InvalidArgumentError("MTCNN: scale_factor must be in (0.1, 1)");
  }
  for (double t : options.thresholds) {
    if (!(t >= 0 && t <= 1))
      return absl::InvalidArgumentError("MTCNN: thresholds must be in [0, 1]");
  }
  torch::NoGradGuard no_grad;
  // The 8-bit pixel values the networks were trained on.
  const torch::Tensor image = (rgb.to(device_, torch::kFloat32) * 255).round().unsqueeze(0);
  const int64_t h = image.size(2), w = image.size(3);

  // Stage 1: P-Net over the pyramid (the first scale maps min_face_size to P-Net's 12
  // pixels; the last keeps the shorter side at 12 or more), suppression within each scale
  // and then across them.
  // Every scale is resized before P-Net runs on any: LibTorch's OpenMP workers spin a
  // while after each of its operations, and a resize between them would share the cores
  // with that spinning (it took 2.5x as long, interleaved).
  std::vector<std::pair<double, torch::Tensor>> pyramid;
  double scale = 12.0 / options.min_face_size;
  for (double shorter = std::min(h, w) * scale; shorter >= 12;
       shorter *= options.scale_factor, scale *= options.scale_factor) {
    pyramid.emplace_back(scale, AreaResize(image, static_cast<int64_t>(h * scale + 1),
                                           static_cast<int64_t>(w * scale + 1)));
  }
  std::vector<torch::Tensor> candidates;
  for (const auto& [s, scaled] : pyramid) {
    const std::vector<torch::Tensor> out = PNet(Normalise(scaled));
    const torch::Tensor boxes =
        CandidateBoxes(out[0], out[1].select(1, 1), s, options.thresholds[0]);
    candidates.push_back(
        Pick(boxes, Nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.5, Overlap::kUnion)));
  }
  if (candidates.empty()) return std::vector<MtcnnFace>{};
  torch::Tensor boxes = torch::cat(candidates, 0);
  boxes = Pick(boxes, Nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.7, Overlap::kUnion));
  {
    const torch::Tensor bw = boxes.select(1, 2) - boxes.select(1, 0);
    const torch::Tensor bh = boxes.select(1, 3) - boxes.select(1, 1);
    boxes = torch::stack(
        {boxes.select(1, 0) + boxes.select(1, 5) * bw, boxes.select(1, 1) + boxes.select(1, 6) * bh,
         boxes.select(1, 2) + boxes.select(1, 7) * bw, boxes.select(1, 3) + boxes.select(1, 8) * bh,
         boxes.select(1, 4)},
        1);
  }
  boxes = Square(boxes);

  // Stage 2: R-Net on 24x24 crops.
  std::vector<int64_t> rows;
  if (boxes.size(0) > 0) {
    const torch::Tensor crops = Crops(image, boxes, 24, &rows);
    if (rows.empty()) return std::vector<MtcnnFace>{};
    boxes = Pick(boxes, rows);
    const std::vector<torch::Tensor> out = RNet(crops);
    const torch::Tensor score = out[1].select(1, 1);
    const torch::Tensor pass = score > options.thresholds[1];
    boxes = torch::cat({boxes.index({pass}).slice(1, 0, 4), score.index({pass}).unsqueeze(1)}, 1);
    torch::Tensor offsets = out[0].index({pass});
    const std::vector<int64_t> keep =
        Nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.7, Overlap::kUnion);
    boxes = Square(Regress(Pick(boxes, keep), Pick(offsets, keep)));
  }

  // Stage 3: O-Net on 48x48 crops: the final score, box and landmarks.
  std::vector<MtcnnFace> faces;
  if (boxes.size(0) == 0) return faces;
  const torch::Tensor crops = Crops(image, boxes, 48, &rows);
  if (rows.empty()) return faces;
  boxes = Pick(boxes, rows);
  const std::vector<torch::Tensor> out = ONet(crops);
  const torch::Tensor score = out[2].select(1, 1);
  const torch::Tensor pass = score > options.thresholds[2];
  const torch::Tensor points = out[1].index({pass});
  boxes = torch::cat({boxes.index({pass}).slice(1, 0, 4), score.index({pass}).unsqueeze(1)}, 1);
  const torch::Tensor bw = (boxes.select(1, 2) - boxes.select(1, 0) + 1).unsqueeze(1);
  const torch::Tensor bh = (boxes.select(1, 3) - boxes.select(1, 1) + 1).unsqueeze(1);
  const torch::Tensor px = bw * points.slice(1, 0, 5) + boxes.select(1, 0).unsqueeze(1) - 1;
  const torch::Tensor py = bh * points.slice(1, 5, 10) + boxes.select(1, 1).unsqueeze(1) - 1;
  boxes = Regress(boxes, out[0].index({pass}));
  const std::vector<int64_t> keep =
      Nms(boxes.slice(1, 0, 4), boxes.select(1, 4), 0.7, Overlap::kMin);
  const torch::Tensor b = Pick(boxes, keep).to(torch::kCPU).contiguous();
  const torch::Tensor x = Pick(px, keep).to(torch::kCPU).contiguous();
  const torch::Tensor y = Pick(py, keep).to(torch::kCPU).contiguous();
  auto ba = b.accessor<float, 2>();
  auto xa = x.accessor<float, 2>();
  auto ya = y.accessor<float, 2>();
  for (int64_t i = 0; i < b.size(0); ++i) {
    MtcnnFace f;
    for (int k = 0; k < 4; ++k) f.box[k] = ba[i][k];
    f.confidence = ba[i][4];
    for (int k = 0; k < 5; ++k) f.landmarks[k] = {xa[i][k], ya[i][k]};
    faces.push_back(f);
  }
  std::stable_sort(faces.begin(), faces.end(),
                   [](const MtcnnFace& a, const MtcnnFace& b) { return a.Area() > b.Area(); });
  return faces;
}

}  // namespace i2s
