// i2s_tool: offline commands on weight files and latents, no server needed.
//   info FILE                         what a weight file holds
//   synth --generator G --latent W.npy --out OUT.png|OUT.npy
//   map --generator G (--z Z.npy | --random N [--seed S]) [--wplus] --out W.npy
//   random-model [--kind stylegan1|stylegan2|vgg16] --resolution R --fmap-base F --seed S
//                --out FILE [--legacy]
//   embed --generator G --vgg V --image X.png --out W.npy [--recon R.png] [--lpips L] [options]
//   lpips --vgg V --lpips L A.png B.png   LPIPS (v0.1, VGG) between two images
//   morph|stylemix|expression --generator G ... --out OUT.png
//   align --image X --out ALIGNED.png [--size R] [--landmarks FILE] [--align-info INFO.json]
// Exit codes: 0 success, 1 the command failed (message on stderr), 2 bad usage, 130/143
// interrupted by SIGINT/SIGTERM (see WatchSignals).
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/defaults.h"
#include "common/signals.h"
#include "common/status_macros.h"
#include "server/engine/edits.h"
#include "server/engine/embedder.h"
#include "server/engine/lpips.h"
#include "server/engine/mapping_stats_file.h"
#include "server/engine/model_files.h"
#include "server/engine/stylegan1.h"
#include "server/engine/torch_util.h"
#include "server/engine/vgg16.h"
#include "server/engine/weights.h"
#include "server/formats/npy.h"
#include "server/formats/weight_file.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"

namespace i2s {
namespace {

struct Common {
  std::string device = "cpu";
  int threads = 0;
};

absl::Status ApplyCommon(const Common& c, torch::Device* device) {
  SetCpuThreads(c.threads);
  ASSIGN_OR_RETURN(*device, ParseDevice(c.device));
  return absl::OkStatus();
}

enum class ModelKind { kStyleGan1, kVgg16, kUnknown };

ModelKind DetectKind(const StateDict& sd) {
  bool generator = false, vgg = false;
  for (const auto& [name, t] : sd) {
    generator |= absl::StartsWith(name, "g_mapping.") || absl::StartsWith(name, "g_synthesis.");
    vgg |= absl::StartsWith(name, "features.");
  }
  if (generator) return ModelKind::kStyleGan1;
  if (vgg) return ModelKind::kVgg16;
  return ModelKind::kUnknown;
}

// A StyleGAN2 file (rosinality checkpoint or NVIDIA pickle): what it holds.
absl::Status InfoStyleGan2(const std::string& path) {
  ASSIGN_OR_RETURN(GeneratorFile file, ReadGeneratorFile(path));
  auto made = CreateGenerator(file, torch::kCPU);
  if (!made.ok()) return Annotate(made.status(), path);
  const Generator& g = **made;
  std::cout << "file: " << path << "\n"
            << "layout: " << file.container << "\n"
            << "tensors: " << file.weights.size() << "\n"
            << "parameters: " << ParameterCount(file.weights) << "\n"
            << "kind: " << g.architecture() << "-generator\n"
            << "resolution: " << g.resolution() << "\n"
            << "num_layers: " << g.num_layers() << "\n"
            << "num_noise_maps: " << g.num_noise_maps() << "\n"
            << "latent_size: " << g.latent_size() << "\n"
            << "mapping_layers: " << g.mapping_layers() << "\n"
            << "channels: " << absl::StrJoin(g.channels(), ",") << "\n"
            << "conv_clamp: " << (g.conv_clamp() > 0 ? absl::StrCat(g.conv_clamp()) : "none")
            << "\n"
            << "mean_w: " << (g.FileMeanW().defined() ? "from the file" : "none") << "\n"
            << "fingerprint: " << g.fingerprint() << "\n";
  return absl::OkStatus();
}

absl::Status Info(const std::string& path) {
  auto read = ReadWeightFile(path);
  if (!read.ok()) {
    // A pickle (PROTO first) gets the weight-file reader's error (an unknown callable,
    // a StyleGAN3 network, ...); anything else the torch.save reader's, which says what
    // a state dict file must be ("not a torch.save file", "not a state dict").
    std::ifstream f(path, std::ios::binary);
    if (f.get() == 0x80) return read.status();
    auto flat = LoadWeights(path);
    return flat.ok() ? read.status() : flat.status();
  }
  const WeightFileContents& contents = *read;
  const bool stylegan2 =
      contents.format == WeightFileFormat::kPickle ||
      std::any_of(contents.tensors.begin(), contents.tensors.end(), [](const auto& e) {
        return absl::StartsWith(e.first, "g_ema.") || e.first == "style.1.weight";
      });
  // A StyleGAN2 file (or a pickle: the generator reader's error says what it holds);
  // everything else is read as a flat state dict (StyleGAN1, VGG16).
  if (stylegan2) return InfoStyleGan2(path);
  ASSIGN_OR_RETURN(LoadedWeights w, LoadWeights(path));
  std::cout << "file: " << path << "\n"
            << "layout: torch.save " << TorchFileFormatName(w.format) << "\n"
            << "tensors: " << w.tensors.size() << "\n"
            << "parameters: " << ParameterCount(w.tensors) << "\n";
  switch (DetectKind(w.tensors)) {
    case ModelKind::kStyleGan1: {
      auto g = StyleGan1Generator::Create(w.tensors, torch::kCPU);
      if (!g.ok()) return Annotate(g.status(), path);
      const StyleGan1Config& c = (*g)->config();
      std::cout << "kind: stylegan1-generator\n"
                << "resolution: " << c.resolution << "\n"
                << "num_layers: " << c.num_layers() << "\n"
                << "latent_size: " << c.latent_size << "\n"
                << "mapping_layers: " << c.mapping_layers << "\n"
                << "channels: " << absl::StrJoin(c.channels, ",") << "\n"
                << "truncation_avg_latent: " << ((*g)->avg_latent().defined() ? "yes" : "no")
                << "\n"
                << "fingerprint: " << (*g)->fingerprint() << "\n";
      return absl::OkStatus();
    }
    case ModelKind::kVgg16: {
      auto v = Vgg16Extractor::Create(w.tensors, {}, torch::kCPU);
      if (!v.ok()) return Annotate(v.status(), path);
      std::cout << "kind: vgg16-features\n"
                << "fingerprint: " << (*v)->fingerprint() << "\n";
      return absl::OkStatus();
    }
    case ModelKind::kUnknown:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path,
                   ": not a StyleGAN1 generator (g_mapping.*, g_synthesis.*), a StyleGAN2 one "
                   "(rosinality's g_ema: style.*, convs.*; NVIDIA's G_ema) nor VGG16 "
                   "(features.*); first key '",
                   w.tensors.empty() ? "" : w.tensors[0].first, "'"));
}

// --noise: "auto" (the file's constant maps where it has them, StyleGAN2; else random),
// "const", "random" (seeded by --noise-seed), "zero", or an .npz of noise0..noise{N-1}.
absl::StatusOr<std::vector<torch::Tensor>> MakeNoise(const Generator& g, const std::string& spec,
                                                     uint64_t seed, int batch) {
  if (spec == "auto") return g.DefaultNoise(seed, batch);
  if (spec == "const") {
    if (g.ConstantNoise().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--noise const: this ", g.architecture(),
                                                     " file has no constant noise maps"));
    }
    return g.ConstantNoise();
  }
  if (spec == "random") return g.MakeNoise(seed, batch);
  if (spec == "zero") return std::vector<torch::Tensor>{};
  ASSIGN_OR_RETURN(auto arrays, ReadNpzFile(spec));
  std::vector<torch::Tensor> maps(arrays.size());
  for (auto& [name, array] : arrays) {
    absl::string_view rest = name;
    size_t index = 0;
    if (!absl::ConsumePrefix(&rest, "noise") || !absl::SimpleAtoi(rest, &index) ||
        index >= maps.size() || maps[index].defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec, ": --noise archive members must be noise0 .. noise", arrays.size() - 1,
                       ", found '", name, "'"));
    }
    maps[index] = FloatArrayToTensor(array);
  }
  return maps;
}

struct NoiseArgs {
  std::string noise = "auto";
  uint64_t noise_seed = 0;
};

void AddNoiseOptions(CLI::App* cmd, NoiseArgs* n) {
  cmd->add_option("--noise", n->noise,
                  "auto (const where the file has constant maps, else random), const, random "
                  "(seeded), zero, or FILE.npz with noise0..noise{N-1}")
      ->capture_default_str();
  cmd->add_option("--noise-seed", n->noise_seed, "seed of the random noise maps")
      ->capture_default_str();
}

absl::Status CheckImageOut(const std::string& out) {
  if (!absl::EndsWith(out, ".png") && !absl::EndsWith(out, ".npy")) {
    return absl::InvalidArgumentError("--out: must end in .png or .npy");
  }
  return absl::OkStatus();
}

// Renders W+ [N, L, D] and writes OUT.npy (raw NCHW) or PNGs (OUT-i.png when N > 1).
absl::Status RenderAndWrite(Generator& g, const torch::Tensor& w, const NoiseArgs& n,
                            const std::string& out, absl::string_view what) {
  RETURN_IF_ERROR(CheckImageOut(out));
  ASSIGN_OR_RETURN(auto noise, MakeNoise(g, n.noise, n.noise_seed, static_cast<int>(w.size(0))));
  auto image = g.Synthesize(w, noise);
  if (!image.ok()) return Annotate(image.status(), what);
  if (absl::EndsWith(out, ".npy")) return WriteNpyFile(out, TensorToFloatArray(*image));
  const int64_t count = image->size(0);
  for (int64_t i = 0; i < count; ++i) {
    std::string path = out;
    if (count > 1) path = absl::StrCat(out.substr(0, out.size() - 4), "-", i, ".png");
    RETURN_IF_ERROR(WriteRgb8Image(path, GeneratorOutputToRgb8((*image)[i])));
    std::cout << path << "\n";
  }
  return absl::OkStatus();
}

// A latent file as W+ [N, L, D] for `g`.
// A latent file by its name: OUT.npz is NVIDIA's projected_w.npz (member `w`,
// [1, L, 512] for one latent, [N, L, 512] for several), anything else .npy.
absl::Status WriteLatent(const std::string& path, const torch::Tensor& w) {
  FloatArray a = TensorToFloatArray(w);
  if (!absl::EndsWith(path, ".npz")) return WriteNpyFile(path, a);
  if (a.shape.size() == 2) a.shape.insert(a.shape.begin(), 1);
  ASSIGN_OR_RETURN(std::string npz, SerializeProjectedW(a));
  return WriteStringToFile(path, npz);
}

absl::StatusOr<torch::Tensor> ReadLatent(const std::string& path, const Generator& g,
                                         absl::string_view flag) {
  ASSIGN_OR_RETURN(FloatArray latent, ReadLatentFile(path));  // .npy or projected_w.npz
  torch::Tensor w = FloatArrayToTensor(latent);
  if (w.dim() == 2) w = w.unsqueeze(0);
  if (w.dim() != 3 || w.size(1) != g.num_layers() || w.size(2) != g.latent_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": shape ", latent.ShapeString(), ", expected [", g.num_layers(), ", ",
        g.latent_size(), "] or [N, ", g.num_layers(), ", ", g.latent_size(), "]"));
  }
  return w;
}

struct SynthArgs {
  std::string generator, latent, out;
  NoiseArgs noise;
};

absl::Status Synth(const Common& common, const SynthArgs& a) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  RETURN_IF_ERROR(CheckImageOut(a.out));
  ASSIGN_OR_RETURN(auto g, LoadGenerator(a.generator, device));
  ASSIGN_OR_RETURN(torch::Tensor w, ReadLatent(a.latent, *g, "--latent"));
  return RenderAndWrite(*g, w, a.noise, a.out, absl::StrCat("--latent ", a.latent));
}

// How a photo is brought to the model: fit (crop/pad) or FFHQ alignment.
struct AlignArgs {
  std::string align = "none";  // none, auto, landmarks (implied by --landmarks)
  std::string landmarks;       // a text file of 5 or 68 points (x y per line)
  std::string cascades = FaceDetectorOptions().cascade_dir;
  std::string landmark_model;
  double min_confidence = FaceDetector::kDefaultMinConfidence;
  bool fit_when_no_face = false;
  bool no_padding = false;
  std::string info_out;  // the AlignmentInfo as JSON
};

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

// photo -> the embedding target, as the service prepares it.
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
  p.fit_when_no_face = a.fit_when_no_face;
  p.padding = !a.no_padding;
  p.no_face_hint = "use --fit-when-no-face";
  std::unique_ptr<FaceDetector> detector;
  if (p.mode == AlignMode::kAuto) {
    FaceDetectorOptions d;
    d.cascade_dir = a.cascades;
    d.landmark_model = a.landmark_model;
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

struct AlignCmdArgs {
  std::string image, out;
  int size = 1024;
  std::string fit = "crop";
  AlignArgs align;
};

absl::Status Align(const AlignCmdArgs& a) {
  RETURN_IF_ERROR(Annotate(CheckImageOut(a.out), "--out"));
  if (a.size < 8 || a.size > 8192)
    return absl::InvalidArgumentError("--size: must be in [8, 8192]");
  ASSIGN_OR_RETURN(torch::Tensor photo, ReadRgbImage(a.image));
  ASSIGN_OR_RETURN(
      PreparedImage prepared,
      Prepare(photo, a.size, a.fit == "pad" ? FitMode::kPad : FitMode::kCenterCrop, a.align));
  if (absl::EndsWith(a.out, ".npy")) {
    return WriteNpyFile(a.out, TensorToFloatArray(prepared.image));
  }
  return WriteRgb8Image(a.out, UnitImageToRgb8(prepared.image));
}

// Where `embed` keeps the mapping statistics of generators whose files have no mean w
// (server/engine/mapping_stats_file.h): $I2S_CACHE_DIR, else $XDG_CACHE_HOME/i2s, else
// ~/.cache/i2s; empty (no HOME either) keeps nothing.
std::string DefaultCacheDir() {
  auto env = [](const char* var) -> std::string {
    const char* v = std::getenv(var);
    return v == nullptr ? "" : v;
  };
  if (std::string dir = env("I2S_CACHE_DIR"); !dir.empty()) return dir;
  if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty()) return xdg + "/i2s";
  if (std::string home = env("HOME"); !home.empty()) return home + "/.cache/i2s";
  return "";
}

struct EmbedArgs {
  std::string generator, vgg, lpips, image, out, recon, noise_out, mask;
  AlignArgs align;
  std::string space = "wplus", init = "mean", fit = "crop", schedule = "image2stylegan";
  std::string cache_dir = DefaultCacheDir();
  CLI::App* cmd = nullptr;  // to tell given options from defaults
  bool imagenet_norm = false;
  uint64_t seed = 0;
  int log_every = 10;
  EmbedOptions options;
};

std::string Duration(double seconds) {
  int s = static_cast<int>(seconds + 0.5);
  return s >= 60 ? absl::StrCat(s / 60, "m", absl::Dec(s % 60, absl::kZeroPad2), "s")
                 : absl::StrCat(s, "s");
}

// ------------------------------------------------------------------------- signals
// SIGINT/SIGTERM, read from a SignalQueue (common/signals.h) by WatchSignals: the
// first one during `embed` stops the optimisation before its next step and the tool exits
// with 128 + the signal's number (130, 143) without writing its outputs; at any other
// time, or a second one, exits with that code at once.
std::atomic<bool> g_embedding{false};
std::atomic<int> g_stop_signal{0};

int SignalExitCode(int sig) { return 128 + sig; }

void WatchSignals(SignalQueue* queue) {
  while (true) {
    const int sig = queue->Next();
    if (g_embedding.load() && g_stop_signal.exchange(sig) == 0) {
      const std::string note = absl::StrCat("\ni2s_tool: ", SignalName(sig),
                                            ": stopping before the next step, writing nothing "
                                            "(again to quit at once)\n");
      (void)!write(STDERR_FILENO, note.data(), note.size());
      continue;
    }
    const std::string note = absl::StrCat("\ni2s_tool: ", SignalName(sig), ": interrupted\n");
    (void)!write(STDERR_FILENO, note.data(), note.size());
    _exit(SignalExitCode(sig));
  }
}

absl::Status Embed(const Common& common, EmbedArgs a) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  a.options.space = a.space == "w" ? LatentSpace::kW : LatentSpace::kWPlus;
  a.options.init = a.init == "zeros"     ? LatentInit::kZeros
                   : a.init == "uniform" ? LatentInit::kUniform
                                         : LatentInit::kMeanW;
  if (a.schedule == "stylegan2-projector") {
    // NVIDIA's projector, where the command line does not say otherwise.
    const EmbedOptions p = EmbedOptions::StyleGan2Projector();
    auto unless_given = [&](const char* flag, auto& field, auto value) {
      if (a.cmd->count(flag) == 0) field = value;
    };
    a.options.schedule = p.schedule;
    unless_given("--space", a.options.space, p.space);
    unless_given("--steps", a.options.steps, p.steps);
    unless_given("--lr", a.options.lr, p.lr);
    unless_given("--w-mse", a.options.w_mse, p.w_mse);
    unless_given("--w-perceptual", a.options.w_perceptual, p.w_perceptual);
    unless_given("--w-lpips", a.options.w_lpips, p.w_lpips);
  }
  RETURN_IF_ERROR(a.options.Validate());
  if (a.options.w_lpips > 0 && a.lpips.empty()) {
    return absl::InvalidArgumentError(
        "--lpips: the LPIPS term needs the calibration file lpips/weights/v0.1/vgg.pth "
        "(scripts/fetch-lpips)");
  }
  if (!a.recon.empty()) RETURN_IF_ERROR(Annotate(CheckImageOut(a.recon), "--recon"));
  // The two weight files load at once, the VGG16 on a thread of its own (each file is read,
  // hashed and converted where it is loaded): start-up waits for the larger, not the sum.
  // The generator's error, if both fail, is the one reported, as when they loaded in turn.
  Vgg16Options vgg_options;
  vgg_options.imagenet_normalize = a.imagenet_norm;
  auto vgg_loading = std::async(std::launch::async, [&a, &vgg_options, device] {
    return Vgg16Extractor::Load(a.vgg, vgg_options, device);
  });
  auto g_loaded = LoadGenerator(a.generator, device);
  auto vgg_loaded = vgg_loading.get();
  RETURN_IF_ERROR(g_loaded.status());
  RETURN_IF_ERROR(vgg_loaded.status());
  auto g = *std::move(g_loaded);
  auto vgg = *std::move(vgg_loaded);
  std::unique_ptr<Lpips> lpips;
  if (!a.lpips.empty()) {
    ASSIGN_OR_RETURN(lpips, Lpips::Load(a.vgg, a.lpips, device));
  }
  const FitMode fit = a.fit == "pad" ? FitMode::kPad : FitMode::kCenterCrop;
  EmbedTarget target;
  ASSIGN_OR_RETURN(torch::Tensor image, ReadRgbImage(a.image));
  ASSIGN_OR_RETURN(PreparedImage prepared, Prepare(image, g->resolution(), fit, a.align));
  target.image = prepared.image;
  if (!a.mask.empty()) {
    if (prepared.alignment.has_value() && prepared.alignment->method != "none") {
      return absl::InvalidArgumentError(
          "--mask: masks are fitted like the photo, so they cannot be combined with --align");
    }
    ASSIGN_OR_RETURN(torch::Tensor mask, ReadMaskImage(a.mask));
    ASSIGN_OR_RETURN(target.mse_mask, FitToSquare(mask, g->resolution(), fit));
    target.perceptual_mask = target.mse_mask;
  }
  target.seed = a.seed;
  std::cout << "embedding " << a.image << " (" << image.size(2) << "x" << image.size(1) << " -> "
            << g->resolution() << "x" << g->resolution() << ") into "
            << (a.options.space == LatentSpace::kW ? "W" : "W+") << ": " << a.options.steps
            << " steps, " << EmbedScheduleName(a.options.schedule)
            << (a.options.noise_steps > 0
                    ? absl::StrCat(" + ", a.options.noise_steps, " noise steps")
                    : "")
            << std::endl;
  const int total = a.options.steps + a.options.noise_steps;
  double elapsed = 0;
  EmbedCallbacks cb;
  cb.on_step = [&](const std::vector<StepMetrics>& metrics, double seconds) {
    elapsed += seconds;
    const StepMetrics& m = metrics[0];
    if (a.log_every <= 0 || (m.step % a.log_every != 0 && m.step != 1)) return;
    const double rate = m.step / elapsed;
    std::cout << absl::StrFormat(
                     "step %d/%d%s loss %.5f mse %.5f perceptual %.5f%s psnr %.2f dB  "
                     "%.2f steps/s  eta %s",
                     m.step, total, m.noise_phase ? " (noise)" : "", m.loss, m.mse, m.perceptual,
                     m.lpips >= 0 ? absl::StrFormat(" lpips %.4f", m.lpips) : "", m.psnr, rate,
                     Duration((total - m.step) / rate))
              << std::endl;
  };
  cb.cancelled = [] { return g_stop_signal.load() != 0; };
  // The mapping pass behind a mean-w start or the projector's sigma_w, from the cache
  // folder where an earlier run left it (a failure to keep it is only a note).
  const bool needs_stats =
      (a.options.init == LatentInit::kMeanW && !g->FileMeanW().defined()) ||
      (a.options.schedule == EmbedSchedule::kStyleGan2Projector && a.options.w_noise_factor > 0);
  if (needs_stats && !a.cache_dir.empty() && a.cache_dir != "none") {
    absl::Status kept = LoadOrSaveMappingStats(a.cache_dir, *g, a.options.mean_w_samples);
    if (!kept.ok()) std::cerr << "i2s_tool: note: mean w not cached: " << kept.message() << "\n";
  }
  Embedder embedder(g.get(), vgg.get(), a.options, lpips.get());
  g_embedding = true;
  auto ran = embedder.Run({target}, cb);
  g_embedding = false;
  if (g_stop_signal.load() != 0) return absl::CancelledError("interrupted");
  ASSIGN_OR_RETURN(std::vector<EmbedResult> results, std::move(ran));
  const EmbedResult& r = results[0];
  RETURN_IF_ERROR(r.status);
  RETURN_IF_ERROR(WriteLatent(a.out, r.latent));
  if (!a.noise_out.empty()) {
    std::vector<std::pair<std::string, FloatArray>> maps;
    for (size_t l = 0; l < r.noise.size(); ++l)
      maps.emplace_back(absl::StrCat("noise", l), TensorToFloatArray(r.noise[l]));
    RETURN_IF_ERROR(WriteNpzFile(a.noise_out, maps));
  }
  if (!a.recon.empty()) {
    auto recon = g->Synthesize(r.latent.unsqueeze(0), r.noise);
    if (!recon.ok()) return recon.status();
    if (absl::EndsWith(a.recon, ".npy")) {
      RETURN_IF_ERROR(WriteNpyFile(a.recon, TensorToFloatArray(*recon)));
    } else {
      RETURN_IF_ERROR(WriteRgb8Image(a.recon, GeneratorOutputToRgb8((*recon)[0])));
    }
  }
  std::cout << absl::StrFormat("done: %d steps (%s) in %s, loss %.5f, mse %.5f, psnr %.2f dB -> %s",
                               r.steps, StopReasonName(r.reason), Duration(elapsed), r.final.loss,
                               r.final.mse, r.final.psnr, a.out)
            << std::endl;
  if (r.result_lpips >= 0) {
    std::cout << absl::StrFormat(
                     "result: psnr %.2f dB, lpips %.4f (at %d px)", r.result_psnr, r.result_lpips,
                     std::min<int64_t>(g->resolution(), a.options.perceptual_resolution))
              << std::endl;
  }
  return absl::OkStatus();
}

struct LpipsArgs {
  std::string vgg, lpips, a, b;
  int resolution = 256;
};

// LPIPS between two images of the same size, each area-downsampled to --resolution.
absl::Status MeasureLpips(const Common& common, const LpipsArgs& l) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  if (l.resolution < 16) return absl::InvalidArgumentError("--resolution: must be >= 16");
  ASSIGN_OR_RETURN(torch::Tensor a, ReadRgbImage(l.a));
  ASSIGN_OR_RETURN(torch::Tensor b, ReadRgbImage(l.b));
  ASSIGN_OR_RETURN(auto lpips, Lpips::Load(l.vgg, l.lpips, device));
  ASSIGN_OR_RETURN(torch::Tensor d, lpips->Measure(DownsampleArea(a.unsqueeze(0), l.resolution),
                                                   DownsampleArea(b.unsqueeze(0), l.resolution)));
  std::cout << absl::StrFormat("%.8f", d[0].item<double>()) << std::endl;
  return absl::OkStatus();
}

enum class EditKind { kMorph, kStyleMix, kExpression };

struct EditArgs {
  std::string generator, a, b, c, out, latent_out;
  int frames = 8, crossover = 8, first_layer = 0, last_layer = -1;
  double lambda = 1.0;
  NoiseArgs noise;
};

absl::Status Edit(const Common& common, const EditArgs& e, EditKind kind) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  RETURN_IF_ERROR(CheckImageOut(e.out));
  ASSIGN_OR_RETURN(auto g, LoadGenerator(e.generator, device));
  torch::Tensor edited;
  switch (kind) {
    case EditKind::kMorph: {
      ASSIGN_OR_RETURN(torch::Tensor a, ReadLatent(e.a, *g, "--a"));
      ASSIGN_OR_RETURN(torch::Tensor b, ReadLatent(e.b, *g, "--b"));
      ASSIGN_OR_RETURN(edited, Morph(a, b, MorphAlphas(e.frames, /*include_endpoints=*/true)));
      break;
    }
    case EditKind::kStyleMix: {
      ASSIGN_OR_RETURN(torch::Tensor content, ReadLatent(e.a, *g, "--content"));
      ASSIGN_OR_RETURN(torch::Tensor style, ReadLatent(e.b, *g, "--style"));
      ASSIGN_OR_RETURN(edited, StyleMix(content, style, e.crossover));
      break;
    }
    case EditKind::kExpression: {
      ASSIGN_OR_RETURN(torch::Tensor target, ReadLatent(e.a, *g, "--target"));
      ASSIGN_OR_RETURN(torch::Tensor neutral, ReadLatent(e.b, *g, "--neutral"));
      ASSIGN_OR_RETURN(torch::Tensor expression, ReadLatent(e.c, *g, "--expression"));
      ASSIGN_OR_RETURN(edited, ExpressionTransfer(target, neutral, expression, e.lambda,
                                                  e.first_layer, e.last_layer));
      break;
    }
  }
  if (!e.latent_out.empty())
    RETURN_IF_ERROR(WriteNpyFile(e.latent_out, TensorToFloatArray(edited)));
  return RenderAndWrite(*g, edited, e.noise, e.out, "edit");
}

struct MapArgs {
  std::string generator, z, out;
  int random = 0;
  uint64_t seed = 0;
  bool wplus = false;
};

absl::Status Map(const Common& common, const MapArgs& a) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  if (a.z.empty() == (a.random == 0)) {
    return absl::InvalidArgumentError("map: give exactly one of --z FILE and --random N");
  }
  ASSIGN_OR_RETURN(auto g, LoadGenerator(a.generator, device));
  torch::Tensor z;
  if (a.random > 0) {
    z = torch::randn({a.random, g->latent_size()},
                     at::make_generator<at::CPUGeneratorImpl>(a.seed));
  } else {
    ASSIGN_OR_RETURN(FloatArray z_array, ReadNpyFile(a.z));
    z = FloatArrayToTensor(z_array);
    if (z.dim() == 1) z = z.unsqueeze(0);
  }
  auto w = g->Map(z);
  if (!w.ok()) return Annotate(w.status(), absl::StrCat("--z ", a.z));
  torch::Tensor out = a.wplus ? w->unsqueeze(1).expand({-1, g->num_layers(), -1}) : *w;
  return a.wplus ? WriteLatent(a.out, out) : WriteNpyFile(a.out, TensorToFloatArray(out));
}

struct RandomArgs {
  std::string kind = "stylegan1", out;
  int resolution = 1024, fmap_base = 8192, fmap_max = 512;
  uint64_t seed = 0;
  bool legacy = false;
};

// rosinality's convert_weight.py layout: {g_ema: state dict, latent_avg: mean w}, the
// mean w over 4096 seeded z (what a trained file's latent_avg estimates).
absl::StatusOr<StateDict> RosinalityCheckpoint(const GeneratorFile& file, uint64_t seed) {
  ASSIGN_OR_RETURN(auto g, CreateGenerator(file, torch::kCPU));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed);
  ASSIGN_OR_RETURN(torch::Tensor w, g->Map(torch::randn({4096, g->latent_size()}, gen)));
  StateDict out;
  for (const auto& [name, t] : file.weights) out.emplace_back("g_ema/" + name, t);
  out.emplace_back("latent_avg", w.mean(0).contiguous());
  return out;
}

absl::Status RandomModel(const RandomArgs& a) {
  StateDict sd;
  std::string fingerprint;
  if (a.kind == "stylegan1" || a.kind == "stylegan2") {
    StyleGan1Config c = StyleGan1Config::FromFmap(a.resolution, a.fmap_base, a.fmap_max);
    RETURN_IF_ERROR(Annotate(c.Validate(), "--resolution"));
    ASSIGN_OR_RETURN(GeneratorArch arch, ParseGeneratorArch(a.kind));
    GeneratorFile file = RandomGeneratorFile(arch, a.resolution, a.fmap_base, a.seed, a.fmap_max);
    fingerprint = WeightsFingerprint(file.weights);
    if (arch == GeneratorArch::kStyleGan1) {
      sd = std::move(file.weights);
    } else {
      ASSIGN_OR_RETURN(sd, RosinalityCheckpoint(file, a.seed));
    }
  } else {
    sd = RandomVgg16Weights(a.seed, /*all_features=*/true);
  }
  RETURN_IF_ERROR(
      SaveWeights(a.out, sd, a.legacy ? TorchFileFormat::kLegacy : TorchFileFormat::kZip));
  std::cout << a.out << " " << (fingerprint.empty() ? WeightsFingerprint(sd) : fingerprint) << "\n";
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  CLI::App app{"i2s_tool: offline StyleGAN1/StyleGAN2 weight files, synthesis and latents"};
  app.require_subcommand(1);
  Common common;
  auto add_common = [&](CLI::App* cmd) {
    cmd->add_option("--device", common.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
    cmd->add_option("--threads", common.threads, "intra-op CPU threads (0: one per CPU)");
  };

  std::string info_path;
  CLI::App* info = app.add_subcommand(
      "info", "Describe a weight file: kind, resolution, layers, parameters, fingerprint");
  info->add_option("file", info_path, "torch.save state dict (zip or legacy)")->required();

  SynthArgs synth_args;
  CLI::App* synth = app.add_subcommand("synth", "Render W+ latents with a generator");
  synth->add_option("--generator", synth_args.generator, "generator weight file")->required();
  synth->add_option("--latent", synth_args.latent, "float32 .npy, [L, 512] or [N, L, 512]")
      ->required();
  synth
      ->add_option("--out", synth_args.out,
                   "OUT.png: 8-bit RGB (OUT-i.png for N > 1); OUT.npy: raw float32 NCHW output")
      ->required();
  AddNoiseOptions(synth, &synth_args.noise);
  add_common(synth);

  EmbedArgs embed_args;
  CLI::App* embed = app.add_subcommand(
      "embed", "Embed an image into W+ by optimisation (Image2StyleGAN, + noise phase of ++)");
  embed->add_option("--generator", embed_args.generator, "generator weight file")->required();
  embed->add_option("--vgg", embed_args.vgg, "VGG16 weight file (torchvision layout)")->required();
  embed->add_option("--image", embed_args.image, "image file (PNG, JPEG, ...)")->required();
  embed
      ->add_option("--out", embed_args.out,
                   "latent .npy, float32 [L, 512], or .npz: NVIDIA's projected_w.npz [1, L, 512]")
      ->required();
  embed->add_option("--recon", embed_args.recon, "write the reconstruction here (.png or .npy)");
  embed->add_option("--noise-out", embed_args.noise_out, "write the noise maps here (.npz)");
  embed->add_option("--steps", embed_args.options.steps, "W+ phase steps")->capture_default_str();
  embed
      ->add_option("--noise-steps", embed_args.options.noise_steps,
                   "Image2StyleGAN++ noise phase steps (W+ fixed)")
      ->capture_default_str();
  embed->add_option("--lr", embed_args.options.lr, "Adam learning rate")->capture_default_str();
  embed->add_option("--noise-lr", embed_args.options.noise_lr, "noise phase learning rate")
      ->capture_default_str();
  embed->add_option("--space", embed_args.space, "wplus or w")
      ->check(CLI::IsMember({"wplus", "w"}))
      ->capture_default_str();
  embed
      ->add_option("--init", embed_args.init,
                   "mean (mean w), zeros, uniform (the paper, non-faces)")
      ->check(CLI::IsMember({"mean", "zeros", "uniform"}))
      ->capture_default_str();
  embed
      ->add_option("--mean-w-samples", embed_args.options.mean_w_samples,
                   "mapping samples for the mean w")
      ->capture_default_str();
  embed->add_option("--w-mse", embed_args.options.w_mse, "weight of the pixel MSE")
      ->capture_default_str();
  embed->add_option("--w-perceptual", embed_args.options.w_perceptual, "weight of the VGG16 term")
      ->capture_default_str();
  embed
      ->add_option("--perceptual-resolution", embed_args.options.perceptual_resolution,
                   "images are downsampled to this for VGG16")
      ->capture_default_str();
  embed->add_flag("--imagenet-norm", embed_args.imagenet_norm, "ImageNet-normalise VGG16 inputs");
  embed
      ->add_option("--target-psnr", embed_args.options.target_psnr,
                   "stop at this PSNR (dB, 0: off)")
      ->capture_default_str();
  embed
      ->add_option("--plateau-window", embed_args.options.plateau_window,
                   "stop when the loss has not improved for this many steps (0: off)")
      ->capture_default_str();
  embed->add_option("--mask", embed_args.mask, "grayscale mask: white pixels count, black do not");
  embed->add_option("--fit", embed_args.fit, "crop or pad an image that is not square")
      ->check(CLI::IsMember({"crop", "pad"}))
      ->capture_default_str();
  embed->add_option("--seed", embed_args.seed, "seed of the noise maps (and uniform init)")
      ->capture_default_str();
  embed->add_option("--log-every", embed_args.log_every, "progress line every N steps")
      ->capture_default_str();
  embed
      ->add_option("--cache-dir", embed_args.cache_dir,
                   "keep the mean w of generators without one here, by fingerprint (none: "
                   "compute it every run)")
      ->capture_default_str();
  embed
      ->add_option("--schedule", embed_args.schedule,
                   absl::StrCat("image2stylegan (constant-rate Adam) or stylegan2-projector "
                                "(NVIDIA's recipe: defaults W, ",
                                defaults::kProjectorSteps, " steps, lr ", defaults::kProjectorLr,
                                ", LPIPS only, unless given)"))
      ->check(CLI::IsMember({"image2stylegan", "stylegan2-projector"}))
      ->capture_default_str();
  embed->add_option("--lpips", embed_args.lpips,
                    "LPIPS calibration file lpips/weights/v0.1/vgg.pth (with a full --vgg): "
                    "the LPIPS term, and the result's LPIPS reported");
  embed->add_option("--w-lpips", embed_args.options.w_lpips, "weight of the LPIPS term")
      ->capture_default_str();
  embed
      ->add_option("--noise-regularize", embed_args.options.noise_regularize,
                   "stylegan2-projector: weight of the noise maps' regulariser")
      ->capture_default_str();
  embed
      ->add_option("--w-noise", embed_args.options.w_noise_factor,
                   "stylegan2-projector: initial noise on w, in units of the mapping's spread")
      ->capture_default_str();
  embed_args.cmd = embed;
  AddAlignOptions(embed, &embed_args.align, /*default_auto=*/false);
  add_common(embed);

  LpipsArgs lpips_args;
  CLI::App* lpips = app.add_subcommand(
      "lpips", "LPIPS (v0.1, VGG) between two images of the same size, as the lpips package");
  lpips->add_option("--vgg", lpips_args.vgg, "full VGG16 weight file (torchvision layout)")
      ->required();
  lpips->add_option("--lpips", lpips_args.lpips, "lpips/weights/v0.1/vgg.pth")->required();
  lpips->add_option("a", lpips_args.a, "first image")->required();
  lpips->add_option("b", lpips_args.b, "second image")->required();
  lpips->add_option("--resolution", lpips_args.resolution, "area-downsample larger images to this")
      ->capture_default_str();
  add_common(lpips);

  AlignCmdArgs align_args;
  CLI::App* align = app.add_subcommand(
      "align", "FFHQ-align a face photo (detected or given landmarks) to a square of --size");
  align->add_option("--image", align_args.image, "photo (PNG, JPEG, ...)")->required();
  align->add_option("--out", align_args.out, "aligned image (.png, .jpg) or float32 .npy [3, S, S]")
      ->required();
  align->add_option("--size", align_args.size, "side of the aligned image (the model resolution)")
      ->capture_default_str();
  align->add_option("--fit", align_args.fit, "crop or pad, for --align none or a fallback")
      ->check(CLI::IsMember({"crop", "pad"}))
      ->capture_default_str();
  AddAlignOptions(align, &align_args.align, /*default_auto=*/true);

  EditArgs morph_args, mix_args, expr_args;
  CLI::App* morph = app.add_subcommand("morph", "Render a morph between two latents");
  morph->add_option("--generator", morph_args.generator, "generator weight file")->required();
  morph->add_option("--a", morph_args.a, "first latent .npy")->required();
  morph->add_option("--b", morph_args.b, "second latent .npy")->required();
  morph->add_option("--frames", morph_args.frames, "number of frames, endpoints included")
      ->check(CLI::Range(2, 10000))
      ->capture_default_str();
  CLI::App* stylemix =
      app.add_subcommand("stylemix", "Coarse layers from one latent, fine from another");
  stylemix->add_option("--generator", mix_args.generator, "generator weight file")->required();
  stylemix->add_option("--content", mix_args.a, "latent .npy giving rows [0, crossover)")
      ->required();
  stylemix->add_option("--style", mix_args.b, "latent .npy giving rows [crossover, L)")->required();
  stylemix->add_option("--crossover", mix_args.crossover, "first row taken from --style")
      ->capture_default_str();
  CLI::App* expression = app.add_subcommand("expression", "w1 + lambda * (expression - neutral)");
  expression->add_option("--generator", expr_args.generator, "generator weight file")->required();
  expression->add_option("--target", expr_args.a, "latent .npy to edit (w1)")->required();
  expression->add_option("--neutral", expr_args.b, "latent .npy of the neutral face (w2)")
      ->required();
  expression->add_option("--expression", expr_args.c, "latent .npy with the expression (w3)")
      ->required();
  expression->add_option("--lambda", expr_args.lambda, "strength")->capture_default_str();
  expression->add_option("--first-layer", expr_args.first_layer, "first W+ row edited")
      ->capture_default_str();
  expression->add_option("--last-layer", expr_args.last_layer, "last W+ row edited (-1: the last)")
      ->capture_default_str();
  for (auto [cmd, args] :
       {std::pair{morph, &morph_args}, {stylemix, &mix_args}, {expression, &expr_args}}) {
    cmd->add_option("--out", args->out, "OUT.png (OUT-i.png for several) or OUT.npy (raw NCHW)")
        ->required();
    cmd->add_option("--latent-out", args->latent_out, "also write the edited W+ latents (.npy)");
    AddNoiseOptions(cmd, &args->noise);
    add_common(cmd);
  }

  MapArgs map_args;
  CLI::App* map = app.add_subcommand(
      "map", "Run the mapping network: z [N, 512] -> w [N, 512] (or W+ [N, L, 512])");
  map->add_option("--generator", map_args.generator, "generator weight file")->required();
  map->add_option("--z", map_args.z, "float32 .npy, [N, 512]");
  map->add_option("--random", map_args.random, "instead of --z: N standard-normal z from --seed")
      ->check(CLI::PositiveNumber);
  map->add_option("--seed", map_args.seed, "seed for --random")->capture_default_str();
  map->add_flag("--wplus", map_args.wplus,
                "write W+ [N, L, 512] (w repeated on every layer), ready for synth");
  map->add_option("--out", map_args.out,
                  "output .npy (with --wplus also .npz: NVIDIA's projected_w.npz)")
      ->required();
  add_common(map);

  RandomArgs random_args;
  CLI::App* random =
      app.add_subcommand("random-model", "Write a seeded random model in the published key layout");
  random
      ->add_option("--kind,--arch", random_args.kind,
                   "stylegan1 (the PyTorch port's layout), stylegan2 (a rosinality checkpoint "
                   "{g_ema, latent_avg}) or vgg16")
      ->check(CLI::IsMember({"stylegan1", "stylegan2", "vgg16"}))
      ->capture_default_str();
  random->add_option("--resolution", random_args.resolution, "power of two, 8..1024")
      ->capture_default_str();
  random
      ->add_option("--fmap-base", random_args.fmap_base,
                   "channels = min(fmap_base / 2^stage, fmap_max)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  random->add_option("--fmap-max", random_args.fmap_max, "channel cap")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  random->add_option("--seed", random_args.seed, "random seed")->capture_default_str();
  random->add_option("--out", random_args.out, "output file")->required();
  random->add_flag("--legacy", random_args.legacy, "legacy (pre-1.6, non-zip) torch.save layout");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto signals = SignalQueue::Install({SIGINT, SIGTERM});
  if (!signals.ok()) {
    std::cerr << "i2s_tool: error: " << signals.status().message() << "\n";
    return 1;
  }
  // Lives as long as the process: the detached thread reads it until exit.
  std::thread(WatchSignals, signals->release()).detach();
  absl::Status status;
  if (*info) status = Info(info_path);
  if (*synth) status = Synth(common, synth_args);
  if (*embed) status = Embed(common, embed_args);
  if (*morph) status = Edit(common, morph_args, EditKind::kMorph);
  if (*stylemix) status = Edit(common, mix_args, EditKind::kStyleMix);
  if (*expression) status = Edit(common, expr_args, EditKind::kExpression);
  if (*map) status = Map(common, map_args);
  if (*random) status = RandomModel(random_args);
  if (*align) status = Align(align_args);
  if (*lpips) status = MeasureLpips(common, lpips_args);
  if (const int sig = g_stop_signal.load(); sig != 0) {
    std::cerr << "i2s_tool: " << SignalName(sig) << ": embedding stopped, nothing written\n";
    return SignalExitCode(sig);
  }
  if (!status.ok()) {
    std::cerr << "i2s_tool: error: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace i2s

int main(int argc, char** argv) {
  i2s::KeepLargeBlocksInTheHeap();
  try {
    return i2s::Run(argc, argv);
  } catch (const std::exception& e) {  // a bug: report it rather than abort
    std::cerr << "i2s_tool: internal error: " << e.what() << "\n";
    return 1;
  }
}
