// imaging_bench: latency of the photo side of the service on the CPU, in process, for
// docs/PERFORMANCE.md: face detection (MTCNN and the Haar cascades) on a decoded photo,
// the whole of AlignFace's work on an encoded one (decode, detect, FFHQ alignment, PNG
// encode of the aligned image), and paste-back of a render into a large photo (decode,
// PasteInto with each blend, encode), each step timed alone.
//   imaging_bench --mtcnn DIR [--photo astronaut.png] [--side 1024] [--output 1024]
//                 [--big-width 4000] [--big-height 3000] [--reps 7] [--threads 2]
// The photo is resized (area or cubic) to side x side; the big photo is the same photo
// resized to big-width x big-height, with its face where alignment found it. Prints one
// line per step: median and fastest milliseconds over `reps` runs after one warm-up.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_flags.h"
#include "server/imaging/align.h"
#include "server/imaging/face_detector.h"
#include "server/imaging/image_io.h"
#include "server/imaging/paste.h"
#include "server/imaging/prepare.h"

namespace {

int g_reps = 7;

void Time(const std::string& name, const std::function<void()>& step) {
  step();  // warm-up
  std::vector<double> ms;
  for (int i = 0; i < g_reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("%-62s %9.1f %9.1f\n", name.c_str(), ms[ms.size() / 2], ms.front());
  std::fflush(stdout);
}

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "imaging_bench: %s: %s\n", what,
                 std::string(v.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(v);
}

torch::Tensor Resized(const torch::Tensor& chw, int w, int h) {
  return torch::nn::functional::interpolate(chw.unsqueeze(0),
                                            torch::nn::functional::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{h, w})
                                                .mode(torch::kBicubic)
                                                .align_corners(false))[0]
      .clamp(0, 1);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace i2s;
  std::string mtcnn_dir, photo_path = "/usr/lib/python3/dist-packages/skimage/data/astronaut.png";
  int side = 1024, output = 1024, big_w = 4000, big_h = 3000, threads = 2;
  const bench::Flags flags{{{"--side", &side},
                            {"--output", &output},
                            {"--big-width", &big_w},
                            {"--big-height", &big_h},
                            {"--reps", &g_reps},
                            {"--threads", &threads}},
                           {{"--mtcnn", &mtcnn_dir}, {"--photo", &photo_path}}};
  if (!flags.Parse(argc, argv, "imaging_bench")) return 2;
  if (mtcnn_dir.empty()) {
    std::fprintf(stderr, "imaging_bench: --mtcnn DIR is required (scripts/fetch-models)\n");
    return 2;
  }
  bench::SetUp(threads, "cpu", "imaging_bench");
  torch::InferenceMode inference;
  const torch::Tensor original = Must(ReadRgbImage(photo_path), "the photo");
  const torch::Tensor photo = Resized(original, side, side);
  const std::string jpeg =
      Must(EncodeRgb8(UnitImageToRgb8(photo), EncodeFormat::kJpeg, 90), "encoding the photo");
  const std::string png = Must(EncodeRgb8(UnitImageToRgb8(photo), EncodeFormat::kPng), "png");
  DecodeLimits limits;
  limits.max_bytes = int64_t{1} << 30;
  limits.max_pixels = int64_t{1} << 30;

  FaceDetectorOptions mo;
  mo.mtcnn_dir = mtcnn_dir;
  auto mtcnn = Must(FaceDetector::Create(mo), "MTCNN");
  auto haar = Must(FaceDetector::Create(FaceDetectorOptions()), "the Haar cascades");
  std::printf("%-62s %9s %9s\n", "step", "median ms", "best ms");
  const std::string at = std::to_string(side) + "x" + std::to_string(side);
  Time("MTCNN detect, decoded " + at, [&] { Must(mtcnn->DetectAll(photo), "MTCNN"); });
  Time("Haar detect, decoded " + at, [&] { Must(haar->DetectAll(photo), "Haar"); });
  for (const FaceDetector* d : {mtcnn.get(), haar.get()}) {
    const bool is_mtcnn = d == mtcnn.get();
    Time(std::string("AlignFace work, ") + at + " JPEG -> " + std::to_string(output) + " PNG (" +
             (is_mtcnn ? "mtcnn" : "haar") + ")",
         [&] {
           torch::Tensor decoded = Must(DecodeRgbImage(jpeg, limits), "decode");
           PrepareOptions p;
           p.size = output;
           p.mode = AlignMode::kAuto;
           PreparedImage prepared = Must(PrepareImage(decoded, p, d), "align");
           Must(EncodeRgb8(UnitImageToRgb8(prepared.image), EncodeFormat::kPng), "encode");
         });
  }
  (void)png;

  // Paste-back into a big photo: the face's alignment scaled with the photo.
  PrepareOptions p;
  p.size = output;
  p.mode = AlignMode::kAuto;
  const torch::Tensor big = Resized(original, big_w, big_h);
  const AlignmentInfo info =
      *Must(PrepareImage(big, p, mtcnn.get()), "aligning the big photo").alignment;
  const torch::Tensor big8 = UnitImageToRgb8(big).contiguous();
  const std::string big_jpeg = Must(EncodeRgb8(big8, EncodeFormat::kJpeg, 90), "big JPEG");
  const torch::Tensor render =
      UnitImageToRgb8(Must(PrepareImage(big, p, mtcnn.get()), "render stand-in").image)
          .contiguous();
  const std::string big_at = std::to_string(big_w) + "x" + std::to_string(big_h);
  std::printf("# the face in the %s photo: %.0f px between the eyes, render %d\n", big_at.c_str(),
              Norm(info.landmarks.eye_right - info.landmarks.eye_left), output);
  Time("decode " + big_at + " JPEG (q90, 8-bit)",
       [&] { Must(DecodeRgb8Image(big_jpeg, limits), "decode"); });
  for (PasteBlend blend : {PasteBlend::kFeather, PasteBlend::kSeamless}) {
    PasteOptions o;
    o.blend = blend;
    Time(std::string("paste ") + std::to_string(output) + " render into " + big_at + " (" +
             (blend == PasteBlend::kFeather ? "feather" : "seamless") + ")",
         [&] {
           torch::Tensor target = big8.clone();
           absl::Status s = PasteInto(target, render, info.transform, o);
           if (!s.ok()) std::exit(1);
         });
  }
  Time("clone of the " + big_at + " photo (inside the paste timings)",
       [&] { torch::Tensor copy = big8.clone(); });
  Time("encode " + big_at + " JPEG (q90)",
       [&] { Must(EncodeRgb8(big8, EncodeFormat::kJpeg, 90), "encode"); });
  Time("encode " + big_at + " PNG", [&] { Must(EncodeRgb8(big8, EncodeFormat::kPng), "encode"); });
  return 0;
}
