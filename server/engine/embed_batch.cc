#include "server/engine/embed_batch.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/embedder.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

namespace F = torch::nn::functional;

// Uniform init draws from a stream separate from the noise maps of the same seed.
constexpr uint64_t kUniformSeedSalt = 0x9e3779b97f4a7c15ull;

absl::Status CheckImageLike(const torch::Tensor& t, int64_t channels, int64_t res,
                            const std::string& name) {
  if (t.dim() != 3 || t.size(0) != channels || t.size(1) != res || t.size(2) != res ||
      !t.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeString(t.sizes()),
                                                   ", expected float [", channels, ", ", res, ", ",
                                                   res, "]"));
  }
  RETURN_IF_ERROR(CheckFinite(t, name));
  if (t.min().item<double>() < -1e-3 || t.max().item<double>() > 1 + 1e-3) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": values outside [0, 1]"));
  }
  return absl::OkStatus();
}

// The projector's noise on w draws from its own stream per image and step, so a resumed
// image sees the same noise as an uninterrupted one.
constexpr uint64_t kWNoiseSalt = 0xd1b54a32d192ed03ull;

uint64_t MixSeed(uint64_t seed, uint64_t step) {  // splitmix64 of the pair
  uint64_t z = seed ^ kWNoiseSalt ^ (step * 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// One Adam step (torch.optim.Adam's formula, without weight decay) on stacked
// parameters p [B, ...] with per-image step counts t [B] (1-based, after this step) and
// per-image learning rates lr [B].
void AdamStep(torch::Tensor& p, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& grad,
              const std::vector<int>& t, const std::vector<double>& lr, double beta1, double beta2,
              double eps) {
  std::vector<float> step_size(t.size()), bc2_sqrt(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    step_size[i] = static_cast<float>(lr[i] / (1 - std::pow(beta1, t[i])));
    bc2_sqrt[i] = static_cast<float>(std::sqrt(1 - std::pow(beta2, t[i])));
  }
  std::vector<int64_t> shape(p.dim(), 1);
  shape[0] = -1;
  torch::Tensor ss = torch::tensor(step_size).to(p.device()).view(shape);
  torch::Tensor b2 = torch::tensor(bc2_sqrt).to(p.device()).view(shape);
  m.mul_(beta1).add_(grad, 1 - beta1);
  v.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  torch::Tensor denom = (v.sqrt() / b2).add_(eps);
  p.sub_(ss * m / denom);
}

}  // namespace

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kSteps:
      return "steps";
    case StopReason::kTargetPsnr:
      return "target_psnr";
    case StopReason::kPlateau:
      return "plateau";
    case StopReason::kCancelled:
      return "cancelled";
    case StopReason::kFailed:
      return "failed";
  }
  return "?";
}

struct EmbedBatch::ImageState {
  int handle = 0;
  torch::Tensor target;     // [1, 3, R, R] on device
  torch::Tensor mse_mask;   // [1, 1, R, R]
  torch::Tensor perc_mask;  // [1, 1, R, R]
  Vgg16Features target_features;
  LpipsFeatures target_lpips;
  EmbedOptions o;              // this image's own (the shared part is the batch's)
  double sigma_w = 0;          // the projector's w noise unit
  uint64_t seed = 0;           // the target's: noise maps, uniform init, the projector's w noise
  torch::Tensor latent, m, v;  // [rows, D]
  std::vector<torch::Tensor> noise, noise_m, noise_v;  // [1, 1, H, W]
  int step = 0;
  double best_loss = std::numeric_limits<double>::infinity();
  int best_step = 0;
  bool done = false;
  EmbedResult result;
};

EmbedBatch::EmbedBatch(Generator* generator, Vgg16Extractor* vgg, Lpips* lpips,
                       EmbedOptions options)
    : generator_(generator), vgg_(vgg), lpips_(lpips), options_(std::move(options)) {}

EmbedBatch::~EmbedBatch() = default;

absl::StatusOr<std::unique_ptr<EmbedBatch>> EmbedBatch::Create(Generator* generator,
                                                               Vgg16Extractor* vgg,
                                                               const EmbedOptions& options,
                                                               Lpips* lpips) {
  RETURN_IF_ERROR(options.Validate());
  if (generator == nullptr) return absl::InvalidArgumentError("generator: missing");
  if (vgg == nullptr && (options.w_perceptual > 0 || options.noise_w_perceptual > 0)) {
    return absl::InvalidArgumentError("vgg: the perceptual loss needs a VGG16");
  }
  if (lpips == nullptr && options.w_lpips > 0) {
    return absl::InvalidArgumentError(
        "lpips: the LPIPS loss needs the LPIPS calibration file (lpips/weights/v0.1/vgg.pth) "
        "and a full VGG16");
  }
  // LPIPS pools four times: it needs 16x16 images at least.
  const int64_t lpips_res =
      std::min<int64_t>(generator->resolution(), options.perceptual_resolution);
  if (lpips != nullptr && lpips_res < 16) {
    if (options.w_lpips > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "w_lpips: LPIPS needs images of 16x16 at least; the generator's resolution and "
          "perceptual_resolution give ",
          lpips_res));
    }
    lpips = nullptr;  // no metric either
  }
  return std::unique_ptr<EmbedBatch>(new EmbedBatch(generator, vgg, lpips, options));
}

torch::Tensor EmbedBatch::Downsample(const torch::Tensor& images) const {
  const int64_t res = images.size(-1);
  if (res <= options_.perceptual_resolution) return images;
  return F::interpolate(images, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{options_.perceptual_resolution,
                                                               options_.perceptual_resolution})
                                    .mode(torch::kBilinear)
                                    .align_corners(false));
}

// Per-image sum over the selected layers of the mean squared feature difference: [B].
torch::Tensor EmbedBatch::Perceptual(const Vgg16Features& a, const Vgg16Features& b) const {
  torch::Tensor total;
  auto add = [&](bool use, const torch::Tensor& x, const torch::Tensor& y) {
    if (!use) return;
    torch::Tensor d = (x - y).square().flatten(1).mean(1);
    total = total.defined() ? total + d : d;
  };
  add(options_.use_relu1_1, a.relu1_1, b.relu1_1);
  add(options_.use_relu1_2, a.relu1_2, b.relu1_2);
  add(options_.use_relu3_2, a.relu3_2, b.relu3_2);
  add(options_.use_relu4_2, a.relu4_2, b.relu4_2);
  return total;
}

absl::Status EmbedBatch::Prepare(const EmbedTarget& t, const std::optional<EmbedCheckpoint>& cp,
                                 const std::string& name, ImageState* state) {
  const int64_t res = generator_->resolution();
  const int64_t layers = generator_->num_layers(), dim = generator_->latent_size();
  const int64_t rows = options_.space == LatentSpace::kW ? 1 : layers;
  const torch::Device device = generator_->device();
  ImageState& s = *state;
  if (!t.image.defined()) return absl::InvalidArgumentError(name + ".image: missing");
  RETURN_IF_ERROR(CheckImageLike(t.image, 3, res, name + ".image"));
  s.target = t.image.to(device, torch::kFloat32).unsqueeze(0);
  s.mse_mask = torch::ones({1, 1, res, res}, s.target.options());
  s.perc_mask = s.mse_mask;
  if (t.mse_mask.defined()) {
    RETURN_IF_ERROR(CheckImageLike(t.mse_mask, 1, res, name + ".mse_mask"));
    s.mse_mask = t.mse_mask.to(device, torch::kFloat32).unsqueeze(0);
    if (s.mse_mask.sum().item<double>() <= 0) {
      return absl::InvalidArgumentError(name + ".mse_mask: selects no pixel");
    }
  }
  if (t.perceptual_mask.defined()) {
    RETURN_IF_ERROR(CheckImageLike(t.perceptual_mask, 1, res, name + ".perceptual_mask"));
    s.perc_mask = t.perceptual_mask.to(device, torch::kFloat32).unsqueeze(0);
  }
  s.seed = t.seed;
  s.o = t.options.has_value() ? *t.options : options_;
  RETURN_IF_ERROR(Annotate(s.o.Validate(), name + ".options"));
  if (SharedOptionsKey(s.o) != SharedOptionsKey(options_)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ".options: the latent space, perceptual resolution and layers, Adam's betas "
                     "and eps and the schedule must be the batch's"));
  }
  if (vgg_ == nullptr && (s.o.w_perceptual > 0 || s.o.noise_w_perceptual > 0)) {
    return absl::InvalidArgumentError(name + ".options: the perceptual loss needs a VGG16");
  }
  if (lpips_ == nullptr && s.o.w_lpips > 0) {
    return absl::InvalidArgumentError(name + ".options: the LPIPS loss needs an LPIPS network");
  }
  if (vgg_ != nullptr && (s.o.w_perceptual > 0 || s.o.noise_w_perceptual > 0)) {
    torch::NoGradGuard no_grad;
    s.target_features = vgg_->Forward(Downsample(s.target * s.perc_mask));
  }
  if (lpips_ != nullptr) {
    torch::NoGradGuard no_grad;
    s.target_lpips =
        lpips_->Features(DownsampleArea(s.target * s.perc_mask, options_.perceptual_resolution));
  }
  const bool projector = s.o.schedule == EmbedSchedule::kStyleGan2Projector;
  if (projector && s.o.steps > 0 && s.o.w_noise_factor > 0) {
    ASSIGN_OR_RETURN(s.sigma_w, Embedder::SigmaW(*generator_, s.o.mean_w_samples));
  }
  if (cp.has_value()) {
    const EmbedCheckpoint& c = *cp;
    if (!c.latent.defined() || c.latent.sizes() != torch::IntArrayRef({rows, dim}) ||
        c.noise.size() != static_cast<size_t>(generator_->num_noise_maps()) || c.step < 0) {
      return absl::InvalidArgumentError(name + ": resume checkpoint does not fit this embedding");
    }
    s.step = c.step;
    s.latent = c.latent.to(device).clone();
    s.m = c.adam_m.to(device).clone();
    s.v = c.adam_v.to(device).clone();
    for (size_t l = 0; l < c.noise.size(); ++l) {
      s.noise.push_back(c.noise[l].to(device).clone());
      bool has_state = l < c.noise_m.size() && l < c.noise_v.size();
      s.noise_m.push_back(has_state ? c.noise_m[l].to(device).clone()
                                    : torch::zeros_like(s.noise[l]));
      s.noise_v.push_back(has_state ? c.noise_v[l].to(device).clone()
                                    : torch::zeros_like(s.noise[l]));
    }
    s.best_loss = c.best_step > 0 ? c.best_loss : std::numeric_limits<double>::infinity();
    s.best_step = c.best_step;
  } else {
    switch (s.o.init) {
      case LatentInit::kMeanW: {
        torch::Tensor mean = generator_->FileMeanW();
        if (mean.defined()) {
          mean = mean.to(device, torch::kFloat32);
        } else {
          ASSIGN_OR_RETURN(mean, Embedder::MeanW(*generator_, s.o.mean_w_samples));
        }
        s.latent = mean.view({1, dim}).expand({rows, dim}).clone();
        break;
      }
      case LatentInit::kZeros:
        s.latent = torch::zeros({rows, dim}, torch::TensorOptions(device));
        break;
      case LatentInit::kUniform: {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(t.seed ^ kUniformSeedSalt);
        s.latent = (torch::rand({rows, dim}, gen) * 2 - 1).mul_(s.o.uniform_range).to(device);
        break;
      }
      case LatentInit::kGiven: {
        if (!t.init_latent.defined() || t.init_latent.dim() != 2 ||
            t.init_latent.size(0) != layers || t.init_latent.size(1) != dim) {
          return absl::InvalidArgumentError(
              absl::StrCat(name, ".init_latent: expected [", layers, ", ", dim, "]"));
        }
        RETURN_IF_ERROR(CheckFinite(t.init_latent, name + ".init_latent"));
        torch::Tensor w = t.init_latent.to(device, torch::kFloat32);
        // In W space the given W+ is collapsed to its mean row.
        s.latent = (rows == 1 ? w.mean(0, true) : w).clone();
        break;
      }
    }
    s.m = torch::zeros_like(s.latent);
    s.v = torch::zeros_like(s.latent);
    // The projector starts its maps from N(0, 1), as NVIDIA's and rosinality's do; the
    // Image2StyleGAN recipe from the model's own (constant maps where it has them).
    s.noise = projector ? generator_->MakeNoise(t.seed, 1) : generator_->DefaultNoise(t.seed, 1);
    for (const auto& n : s.noise) {
      s.noise_m.push_back(torch::zeros_like(n));
      s.noise_v.push_back(torch::zeros_like(n));
    }
  }
  if (s.step >= s.o.steps + s.o.noise_steps) s.done = true;
  return absl::OkStatus();
}

absl::StatusOr<int> EmbedBatch::Add(const EmbedTarget& target,
                                    const std::optional<EmbedCheckpoint>& resume,
                                    const std::string& name) {
  auto state = std::make_unique<ImageState>();
  RETURN_IF_ERROR(
      TorchCall("preparing " + name, [&] { return Prepare(target, resume, name, state.get()); }));
  state->handle = next_handle_++;
  const int handle = state->handle;
  images_.emplace(handle, std::move(state));
  return handle;
}

int EmbedBatch::step(int handle) const {
  auto it = images_.find(handle);
  return it == images_.end() ? -1 : it->second->step;
}

int EmbedBatch::num_running() const {
  int n = 0;
  for (const auto& [h, s] : images_) n += s->done ? 0 : 1;
  return n;
}

bool EmbedBatch::empty() const { return images_.empty(); }

std::vector<int> EmbedBatch::Finished() const {
  std::vector<int> done;
  for (const auto& [h, s] : images_) {
    if (s->done) done.push_back(h);
  }
  return done;
}

void EmbedBatch::Cancel(int handle, const absl::Status& why) {
  auto it = images_.find(handle);
  if (it == images_.end() || it->second->done) return;
  it->second->done = true;
  it->second->result.reason = StopReason::kCancelled;
  it->second->result.status = why;
}

absl::StatusOr<EmbedCheckpoint> EmbedBatch::Checkpoint(int handle) const {
  auto it = images_.find(handle);
  if (it == images_.end()) return absl::NotFoundError(absl::StrCat("image ", handle));
  const ImageState& s = *it->second;
  EmbedCheckpoint c;
  RETURN_IF_ERROR(TorchCall("checkpoint", [&] {
    c.step = s.step;
    c.latent = s.latent.detach().cpu();
    c.adam_m = s.m.cpu();
    c.adam_v = s.v.cpu();
    for (size_t l = 0; l < s.noise.size(); ++l) {
      c.noise.push_back(s.noise[l].detach().cpu());
      c.noise_m.push_back(s.noise_m[l].cpu());
      c.noise_v.push_back(s.noise_v[l].cpu());
    }
    c.best_loss = s.best_loss;
    c.best_step = s.best_step;
    return absl::OkStatus();
  }));
  return c;
}

absl::StatusOr<EmbedResult> EmbedBatch::Take(int handle) {
  auto it = images_.find(handle);
  if (it == images_.end()) return absl::NotFoundError(absl::StrCat("image ", handle));
  ImageState& s = *it->second;
  if (!s.done) return absl::FailedPreconditionError(absl::StrCat("image ", handle, " is running"));
  const int64_t layers = generator_->num_layers(), dim = generator_->latent_size();
  EmbedResult r = std::move(s.result);
  r.steps = s.step;
  RETURN_IF_ERROR(TorchCall("result", [&] {
    r.latent = s.latent.detach().expand({layers, dim}).contiguous().cpu();
    for (const auto& n : s.noise) r.noise.push_back(n.detach().cpu());
    return absl::OkStatus();
  }));
  if (lpips_ != nullptr && r.reason != StopReason::kFailed && s.step > 0) {
    RETURN_IF_ERROR(TorchCall("result metrics", [&] { return MeasureResult(s, &r); }));
  }
  images_.erase(it);
  return r;
}

// PSNR and LPIPS of the image's current latent, rendered with its noise maps, over the
// same masks as the loss.
absl::Status EmbedBatch::MeasureResult(const ImageState& s, EmbedResult* r) const {
  torch::NoGradGuard no_grad;
  const int64_t layers = generator_->num_layers(), dim = generator_->latent_size();
  torch::Tensor syn =
      (generator_->Forward(s.latent.expand({layers, dim}).unsqueeze(0), s.noise) + 1) / 2;
  const double mse =
      (((syn - s.target).square() * s.mse_mask).sum() / (s.mse_mask.sum() * 3)).item<double>();
  r->result_psnr = 10 * std::log10(1 / std::max(mse, 1e-12));
  r->result_lpips =
      lpips_
          ->Distance(
              lpips_->Features(DownsampleArea(syn * s.perc_mask, options_.perceptual_resolution)),
              s.target_lpips)
          .item<double>();
  return absl::OkStatus();
}

absl::Status EmbedBatch::Step(const EmbedCallbacks& callbacks, std::vector<StepMetrics>* metrics) {
  std::vector<ImageState*> w_group, noise_group;
  for (auto& [h, s] : images_) {
    if (s->done) continue;
    (s->step < s->o.steps ? w_group : noise_group).push_back(s.get());
  }
  if (!w_group.empty()) {
    RETURN_IF_ERROR(
        TorchCall("embedding step", [&] { return StepGroup(w_group, false, callbacks, metrics); }));
  }
  if (!noise_group.empty()) {
    RETURN_IF_ERROR(
        TorchCall("noise step", [&] { return StepGroup(noise_group, true, callbacks, metrics); }));
  }
  return absl::OkStatus();
}

// One optimiser step for the images in `group`, all in the same phase.
absl::Status EmbedBatch::StepGroup(std::vector<ImageState*>& group, bool noise_phase,
                                   const EmbedCallbacks& callbacks,
                                   std::vector<StepMetrics>* metrics) {
  const int64_t layers = generator_->num_layers(), dim = generator_->latent_size();
  const int64_t b = static_cast<int64_t>(group.size());
  const torch::Device device = generator_->device();
  // The projector's W phase optimises the noise maps along with w.
  // The schedule is shared by the batch; everything else below is per image.
  const bool projector = !noise_phase && options_.schedule == EmbedSchedule::kStyleGan2Projector;
  const bool train_noise = noise_phase || projector;
  std::vector<torch::Tensor> lat, targets_v, mse_masks, perc_masks;
  for (ImageState* s : group) {
    lat.push_back(s->latent);
    targets_v.push_back(s->target);
    mse_masks.push_back(s->mse_mask);
    perc_masks.push_back(s->perc_mask);
  }
  torch::Tensor w = torch::stack(lat).detach();  // [B, rows, D]
  if (!noise_phase) w.requires_grad_(true);
  const int64_t maps_count = generator_->num_noise_maps();
  std::vector<torch::Tensor> noise(maps_count);
  for (int64_t l = 0; l < maps_count; ++l) {
    std::vector<torch::Tensor> maps;
    for (ImageState* s : group) maps.push_back(s->noise[l]);
    noise[l] = torch::cat(maps).detach();
    if (train_noise) noise[l].requires_grad_(true);
  }
  // Per-image learning rates, and the projector's noise on w.
  std::vector<double> lr(b);
  for (int64_t i = 0; i < b; ++i) lr[i] = noise_phase ? group[i]->o.noise_lr : group[i]->o.lr;
  torch::Tensor w_in = w;
  if (projector) {
    std::vector<torch::Tensor> kicks;
    bool noisy = false;
    for (int64_t i = 0; i < b; ++i) {
      const EmbedOptions& o = group[i]->o;
      const int step = group[i]->step;
      lr[i] = o.lr * ProjectorLrScale(step, o.steps, o.lr_rampup, o.lr_rampdown);
      const double scale =
          group[i]->sigma_w * ProjectorWNoiseScale(step, o.steps, o.w_noise_factor, o.w_noise_ramp);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(group[i]->seed, step));
      kicks.push_back(torch::randn({w.size(1), dim}, gen) * scale);
      noisy = noisy || scale > 0;
    }
    if (noisy) w_in = w + torch::stack(kicks).to(device);
  }
  // Per-image loss weights [B]; a term is computed when any image weighs it.
  std::vector<float> wm(b), wp(b), wl(b), wr(b);
  for (int64_t i = 0; i < b; ++i) {
    const EmbedOptions& o = group[i]->o;
    wm[i] = static_cast<float>(noise_phase ? o.noise_w_mse : o.w_mse);
    wp[i] = static_cast<float>(noise_phase ? o.noise_w_perceptual : o.w_perceptual);
    wl[i] = static_cast<float>(noise_phase ? 0.0 : o.w_lpips);
    wr[i] = static_cast<float>(projector ? o.noise_regularize : 0.0);
  }
  auto any = [](const std::vector<float>& v) {
    return std::any_of(v.begin(), v.end(), [](float x) { return x > 0; });
  };
  auto weights = [&](const std::vector<float>& v) { return torch::tensor(v).to(device); };
  torch::Tensor wplus = w_in.size(1) == 1 ? w_in.expand({b, layers, dim}) : w_in;
  torch::Tensor syn = (generator_->Forward(wplus, noise) + 1) / 2;  // [0, 1]
  torch::Tensor target = torch::cat(targets_v), mse_mask = torch::cat(mse_masks);
  torch::Tensor mse = ((syn - target).square() * mse_mask).sum({1, 2, 3}) /
                      (mse_mask.sum({1, 2, 3}) * 3);  // per image, over the masked pixels
  torch::Tensor perc = torch::zeros_like(mse);
  torch::Tensor perc_mask = torch::cat(perc_masks);
  if (any(wp)) {
    for (ImageState* s : group) {  // an image that joined without a VGG term of its own
      if (!s->target_features.relu1_1.defined()) {
        torch::NoGradGuard no_grad;
        s->target_features = vgg_->Forward(Downsample(s->target * s->perc_mask));
      }
    }
    Vgg16Features tf;
    auto cat = [&](auto member) {
      std::vector<torch::Tensor> v;
      for (ImageState* s : group) v.push_back(member(s->target_features));
      return torch::cat(v);
    };
    tf.relu1_1 = cat([](const Vgg16Features& f) { return f.relu1_1; });
    tf.relu1_2 = cat([](const Vgg16Features& f) { return f.relu1_2; });
    tf.relu3_2 = cat([](const Vgg16Features& f) { return f.relu3_2; });
    tf.relu4_2 = cat([](const Vgg16Features& f) { return f.relu4_2; });
    perc = Perceptual(vgg_->Forward(Downsample(syn * perc_mask)), tf);
  }
  torch::Tensor lp = torch::full_like(mse, -1);
  torch::Tensor loss = weights(wm) * mse;  // [B]
  if (any(wp)) loss = loss + weights(wp) * perc;
  if (any(wl)) {
    LpipsFeatures tf(group[0]->target_lpips.size());
    for (size_t k = 0; k < tf.size(); ++k) {
      std::vector<torch::Tensor> v;
      for (ImageState* s : group) v.push_back(s->target_lpips[k]);
      tf[k] = torch::cat(v);
    }
    lp = lpips_->Distance(
        lpips_->Features(DownsampleArea(syn * perc_mask, options_.perceptual_resolution)), tf);
    loss = loss + weights(wl) * lp;
  }
  if (any(wr)) loss = loss + weights(wr) * NoiseRegularizer(noise);
  loss.sum().backward();

  // Per-image health, then one host copy of the metrics.
  std::vector<torch::Tensor> grads;
  if (!noise_phase) grads.push_back(w.grad().flatten(1));
  if (train_noise) {
    for (const auto& n : noise) grads.push_back(n.grad().flatten(1));
  }
  torch::Tensor grad_ok = torch::isfinite(torch::cat(grads, 1)).all(1);
  torch::Tensor host = torch::stack({loss.detach(), mse.detach(), perc.detach(), lp.detach(),
                                     grad_ok.to(torch::kFloat32)})
                           .cpu();
  auto acc = host.accessor<float, 2>();
  // An image whose loss or gradient is not finite keeps its last state and fails below.
  std::vector<bool> healthy(b);
  for (int64_t i = 0; i < b; ++i) healthy[i] = acc[4][i] > 0.5f && std::isfinite(acc[0][i]);

  std::vector<int> t(b);
  for (int64_t i = 0; i < b; ++i) {
    t[i] = group[i]->step - (noise_phase ? group[i]->o.steps : 0) + 1;
  }
  torch::NoGradGuard no_grad;
  if (train_noise) {
    for (int64_t l = 0; l < maps_count; ++l) {
      std::vector<torch::Tensor> ms, vs;
      for (ImageState* s : group) {
        ms.push_back(s->noise_m[l]);
        vs.push_back(s->noise_v[l]);
      }
      torch::Tensor p = noise[l].detach().clone(), m = torch::cat(ms), v = torch::cat(vs);
      AdamStep(p, m, v, noise[l].grad(), t, lr, options_.beta1, options_.beta2, options_.eps);
      if (projector) RenormalizeNoise(p);
      for (int64_t i = 0; i < b; ++i) {
        if (!healthy[i]) continue;
        group[i]->noise[l] = p.narrow(0, i, 1);
        group[i]->noise_m[l] = m.narrow(0, i, 1);
        group[i]->noise_v[l] = v.narrow(0, i, 1);
      }
    }
  }
  if (!noise_phase) {
    std::vector<torch::Tensor> ms, vs;
    for (ImageState* s : group) {
      ms.push_back(s->m);
      vs.push_back(s->v);
    }
    torch::Tensor p = w.detach().clone(), m = torch::stack(ms), v = torch::stack(vs);
    AdamStep(p, m, v, w.grad(), t, lr, options_.beta1, options_.beta2, options_.eps);
    for (int64_t i = 0; i < b; ++i) {
      if (!healthy[i]) continue;
      group[i]->latent = p[i];
      group[i]->m = m[i];
      group[i]->v = v[i];
    }
  }

  for (int64_t i = 0; i < b; ++i) {
    ImageState& s = *group[i];
    const EmbedOptions& o = s.o;
    StepMetrics sm;
    sm.image = s.handle;
    sm.step = s.step + 1;
    sm.noise_phase = noise_phase;
    sm.loss = acc[0][i];
    sm.mse = acc[1][i];
    sm.perceptual = acc[2][i];
    sm.lpips = wl[i] > 0 ? acc[3][i] : -1;  // reported where it is in the image's loss
    sm.psnr = 10 * std::log10(1 / std::max(sm.mse, 1e-12));
    if (!healthy[i]) {
      s.done = true;
      s.result.reason = StopReason::kFailed;
      s.result.status = absl::InternalError(absl::StrCat(
          "non-finite ", std::isfinite(sm.loss) ? "gradient" : "loss", " at step ", sm.step,
          noise_phase ? " (noise phase)" : "", "; the latent is the last finite one"));
      continue;
    }
    s.step = sm.step;
    s.result.final = sm;
    metrics->push_back(sm);
    if (callbacks.on_preview && o.preview_every > 0 && s.step % o.preview_every == 0) {
      callbacks.on_preview(s.handle, s.step, syn[i].detach().clamp(0, 1));
    }
    // Stop rules: the W+ phase ends on steps, target PSNR or plateau (then the noise
    // phase, if any, starts); the noise phase ends the same way.
    const int phase_end = noise_phase ? o.steps + o.noise_steps : o.steps;
    StopReason reason = StopReason::kSteps;
    bool phase_over = s.step >= phase_end;
    if (!phase_over && o.target_psnr > 0 && sm.psnr >= o.target_psnr) {
      phase_over = true;
      reason = StopReason::kTargetPsnr;
    }
    if (sm.loss < s.best_loss * (1 - o.plateau_rel_eps)) {
      s.best_loss = sm.loss;
      s.best_step = s.step;
    }
    if (!phase_over && o.plateau_window > 0 && s.step - s.best_step >= o.plateau_window) {
      phase_over = true;
      reason = StopReason::kPlateau;
    }
    if (phase_over) {
      s.result.reason = reason;
      s.best_loss = std::numeric_limits<double>::infinity();
      s.best_step = 0;
      if (noise_phase || o.noise_steps == 0) {
        s.done = true;
      } else {
        s.step = o.steps;  // on to the noise phase, with fresh Adam moments
        for (size_t l = 0; l < s.noise.size(); ++l) {
          s.noise_m[l] = torch::zeros_like(s.noise[l]);
          s.noise_v[l] = torch::zeros_like(s.noise[l]);
        }
      }
    }
    if (callbacks.on_checkpoint && o.checkpoint_every > 0 && s.step % o.checkpoint_every == 0) {
      ASSIGN_OR_RETURN(EmbedCheckpoint c, Checkpoint(s.handle));
      callbacks.on_checkpoint(s.handle, c);
    }
  }
  return absl::OkStatus();
}

}  // namespace i2s
