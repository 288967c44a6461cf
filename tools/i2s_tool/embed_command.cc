// embed: a photo into W+ (or W) by optimisation, as one job of the service would; and
// lpips, the distance it reports.
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <future>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/defaults.h"
#include "common/status_macros.h"
#include "server/engine/embedder.h"
#include "server/engine/lpips.h"
#include "server/engine/mapping_stats_file.h"
#include "server/engine/model_files.h"
#include "server/engine/torch_util.h"
#include "server/engine/vgg16.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"
#include "tools/i2s_tool/align_options.h"
#include "tools/i2s_tool/command.h"
#include "tools/i2s_tool/latent_files.h"

namespace i2s::tool {
namespace {

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

}  // namespace

std::vector<Command> AddEmbedCommand(CLI::App* app, Common* common) {
  auto a = std::make_shared<EmbedArgs>();
  CLI::App* embed = app->add_subcommand(
      "embed", "Embed an image into W+ by optimisation (Image2StyleGAN, + noise phase of ++)");
  embed->add_option("--generator", a->generator, "generator weight file")->required();
  embed->add_option("--vgg", a->vgg, "VGG16 weight file (torchvision layout)")->required();
  embed->add_option("--image", a->image, "image file (PNG, JPEG, ...)")->required();
  embed
      ->add_option("--out", a->out,
                   "latent .npy, float32 [L, 512], or .npz: NVIDIA's projected_w.npz [1, L, 512]")
      ->required();
  embed->add_option("--recon", a->recon, "write the reconstruction here (.png or .npy)");
  embed->add_option("--noise-out", a->noise_out, "write the noise maps here (.npz)");
  embed->add_option("--steps", a->options.steps, "W+ phase steps")->capture_default_str();
  embed
      ->add_option("--noise-steps", a->options.noise_steps,
                   "Image2StyleGAN++ noise phase steps (W+ fixed)")
      ->capture_default_str();
  embed->add_option("--lr", a->options.lr, "Adam learning rate")->capture_default_str();
  embed->add_option("--noise-lr", a->options.noise_lr, "noise phase learning rate")
      ->capture_default_str();
  embed->add_option("--space", a->space, "wplus or w")
      ->check(CLI::IsMember({"wplus", "w"}))
      ->capture_default_str();
  embed->add_option("--init", a->init, "mean (mean w), zeros, uniform (the paper, non-faces)")
      ->check(CLI::IsMember({"mean", "zeros", "uniform"}))
      ->capture_default_str();
  embed->add_option("--mean-w-samples", a->options.mean_w_samples, "mapping samples for the mean w")
      ->capture_default_str();
  embed->add_option("--w-mse", a->options.w_mse, "weight of the pixel MSE")->capture_default_str();
  embed->add_option("--w-perceptual", a->options.w_perceptual, "weight of the VGG16 term")
      ->capture_default_str();
  embed
      ->add_option("--perceptual-resolution", a->options.perceptual_resolution,
                   "images are downsampled to this for VGG16")
      ->capture_default_str();
  embed->add_flag("--imagenet-norm", a->imagenet_norm, "ImageNet-normalise VGG16 inputs");
  embed->add_option("--target-psnr", a->options.target_psnr, "stop at this PSNR (dB, 0: off)")
      ->capture_default_str();
  embed
      ->add_option("--plateau-window", a->options.plateau_window,
                   "stop when the loss has not improved for this many steps (0: off)")
      ->capture_default_str();
  embed->add_option("--mask", a->mask, "grayscale mask: white pixels count, black do not");
  embed->add_option("--fit", a->fit, "crop or pad an image that is not square")
      ->check(CLI::IsMember({"crop", "pad"}))
      ->capture_default_str();
  embed->add_option("--seed", a->seed, "seed of the noise maps (and uniform init)")
      ->capture_default_str();
  embed->add_option("--log-every", a->log_every, "progress line every N steps")
      ->capture_default_str();
  embed
      ->add_option("--cache-dir", a->cache_dir,
                   "keep the mean w of generators without one here, by fingerprint (none: "
                   "compute it every run)")
      ->capture_default_str();
  embed
      ->add_option("--schedule", a->schedule,
                   absl::StrCat("image2stylegan (constant-rate Adam) or stylegan2-projector "
                                "(NVIDIA's recipe: defaults W, ",
                                defaults::kProjectorSteps, " steps, lr ", defaults::kProjectorLr,
                                ", LPIPS only, unless given)"))
      ->check(CLI::IsMember({"image2stylegan", "stylegan2-projector"}))
      ->capture_default_str();
  embed->add_option("--lpips", a->lpips,
                    "LPIPS calibration file lpips/weights/v0.1/vgg.pth (with a full --vgg): "
                    "the LPIPS term, and the result's LPIPS reported");
  embed->add_option("--w-lpips", a->options.w_lpips, "weight of the LPIPS term")
      ->capture_default_str();
  embed
      ->add_option("--noise-regularize", a->options.noise_regularize,
                   "stylegan2-projector: weight of the noise maps' regulariser")
      ->capture_default_str();
  embed
      ->add_option("--w-noise", a->options.w_noise_factor,
                   "stylegan2-projector: initial noise on w, in units of the mapping's spread")
      ->capture_default_str();
  a->cmd = embed;
  AddAlignOptions(embed, &a->align, /*default_auto=*/false);
  AddCommonOptions(embed, common);
  return {{embed, [a, common] { return Embed(*common, *a); }}};
}

std::vector<Command> AddLpipsCommand(CLI::App* app, Common* common) {
  auto a = std::make_shared<LpipsArgs>();
  CLI::App* lpips = app->add_subcommand(
      "lpips", "LPIPS (v0.1, VGG) between two images of the same size, as the lpips package");
  lpips->add_option("--vgg", a->vgg, "full VGG16 weight file (torchvision layout)")->required();
  lpips->add_option("--lpips", a->lpips, "lpips/weights/v0.1/vgg.pth")->required();
  lpips->add_option("a", a->a, "first image")->required();
  lpips->add_option("b", a->b, "second image")->required();
  lpips->add_option("--resolution", a->resolution, "area-downsample larger images to this")
      ->capture_default_str();
  AddCommonOptions(lpips, common);
  return {{lpips, [a, common] { return MeasureLpips(*common, *a); }}};
}

}  // namespace i2s::tool
