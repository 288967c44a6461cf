#include "server/latents/render.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"

namespace i2s {

absl::StatusOr<std::vector<torch::Tensor>> NoiseFor(const LatentInput& source, const Generator& g,
                                                    NoiseMode mode, const std::string& field) {
  switch (mode) {
    case NoiseMode::kNone:
      return std::vector<torch::Tensor>{};
    case NoiseMode::kSeeded:
      return g.MakeNoise(source.noise_seed, 1);
    case NoiseMode::kConstant:
      if (g.ConstantNoise().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": NOISE_CONSTANT: this ",
                                                       g.architecture(),
                                                       " model has no constant noise maps"));
      }
      return g.ConstantNoise();
    case NoiseMode::kLatent:
      if (source.noise_npz.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field,
                         ": NOISE_LATENT: the latent has no noise maps of its "
                         "own (only embeddings with noise_steps do)"));
      }
      break;
    case NoiseMode::kAuto:
      if (source.noise_npz.empty()) return g.DefaultNoise(source.noise_seed, 1);
      break;
  }
  ASSIGN_OR_RETURN(auto maps, ParseNpz(source.noise_npz));
  std::vector<torch::Tensor> out;
  for (auto& [name, a] : maps) out.push_back(FloatArrayToTensor(a).to(g.device()));
  return out;
}

absl::StatusOr<EncodedImage> EncodeImage(const torch::Tensor& image, ImageEncoding encoding,
                                         int jpeg_quality) {
  EncodedImage out;
  const int64_t size = image.size(-1);
  out.width = static_cast<int>(size);
  out.height = static_cast<int>(size);
  out.encoding = encoding;
  if (encoding == ImageEncoding::kRawFloat32) {
    out.data = SerializeNpy(TensorToFloatArray(image));
    return out;
  }
  ASSIGN_OR_RETURN(out.data, EncodeRgb8(GeneratorOutputToRgb8(image),
                                        encoding == ImageEncoding::kJpeg ? EncodeFormat::kJpeg
                                                                         : EncodeFormat::kPng,
                                        jpeg_quality));
  return out;
}

absl::StatusOr<torch::Tensor> RenderRaw(Generator& g, const torch::Tensor& w,
                                        const LatentInput& noise_source, NoiseMode noise,
                                        const std::string& field, const RenderBlend& blend) {
  ASSIGN_OR_RETURN(auto maps, NoiseFor(noise_source, g, noise, absl::StrCat(field, ".noise_mode")));
  torch::Tensor img;
  if (blend.with.defined()) {
    ASSIGN_OR_RETURN(img, g.SynthesizeBlend(w.unsqueeze(0), blend.with.unsqueeze(0), maps,
                                            blend.start_layer, blend.mask));
  } else {
    ASSIGN_OR_RETURN(img, g.Synthesize(w.unsqueeze(0), maps));
  }
  return img[0].cpu();
}

absl::StatusOr<EncodedImage> RenderLatent(Generator& g, const torch::Tensor& w,
                                          const LatentInput& noise_source,
                                          const RenderSettings& settings, const std::string& field,
                                          torch::Tensor* raw) {
  ASSIGN_OR_RETURN(torch::Tensor img,
                   RenderRaw(g, w, noise_source, settings.noise, field, settings.blend));
  ASSIGN_OR_RETURN(EncodedImage encoded,
                   EncodeImage(img, settings.encoding, settings.jpeg_quality));
  if (raw != nullptr) *raw = std::move(img);
  return encoded;
}

}  // namespace i2s
