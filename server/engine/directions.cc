#include "server/engine/directions.h"

#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/formats/zip.h"

namespace i2s {
namespace {

// A conditioning row whose Gram-Schmidt residual is below this fraction of its norm adds
// nothing new to the span (float32 inputs carry about 1e-7 relative error); a direction
// row whose residual is below it lies in the span.
constexpr double kSpanTolerance = 1e-6;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// Parser errors (which name no field) as InvalidArgument "<field>: <message>".
absl::Status FileError(absl::string_view field, const absl::Status& status) {
  return Invalid(field, status.message());
}

absl::Status CheckLayout(const LatentLayout& layout) {
  if (layout.num_layers < 1 || layout.latent_size < 1) {
    return Invalid("layout", absl::StrCat("[", layout.num_layers, ", ", layout.latent_size,
                                          "] is not a latent layout"));
  }
  return absl::OkStatus();
}

std::string LayoutString(const LatentLayout& layout) {
  return absl::StrCat("[", layout.num_layers, ", ", layout.latent_size, "]");
}

// w as [N, L, D] float32 (as edits.cc accepts latents).
absl::StatusOr<torch::Tensor> LatentBatch(const torch::Tensor& w, absl::string_view field) {
  if (!w.defined()) return Invalid(field, "missing");
  if (!w.is_floating_point()) return Invalid(field, "expected a floating-point tensor");
  if (w.dim() != 2 && w.dim() != 3) {
    return Invalid(
        field, absl::StrCat("shape ", ShapeString(w.sizes()), ", expected [L, D] or [N, L, D]"));
  }
  if (w.numel() == 0) return Invalid(field, absl::StrCat("empty: ", ShapeString(w.sizes())));
  RETURN_IF_ERROR(CheckFinite(w, field));
  torch::Tensor b = w.dim() == 2 ? w.unsqueeze(0) : w;
  return b.to(torch::kFloat32);
}

absl::Status CheckLayers(int64_t layers, int first_layer, int* last_layer) {
  if (*last_layer < 0) *last_layer = static_cast<int>(layers) - 1;
  if (first_layer < 0 || first_layer > *last_layer || *last_layer >= layers) {
    return Invalid("layers", absl::StrCat("[", first_layer, ", ", *last_layer,
                                          "] is not a range inside [0, ", layers - 1, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckAlphas(const std::vector<double>& alphas, size_t directions,
                         absl::string_view field) {
  if (alphas.size() != directions) {
    return Invalid(field, absl::StrCat(alphas.size(), " values for ", directions,
                                       directions == 1 ? " direction" : " directions"));
  }
  for (size_t i = 0; i < alphas.size(); ++i) {
    const std::string name = alphas.size() == 1 && field != "alphas"
                                 ? std::string(field)
                                 : absl::StrCat(field, "[", i, "]");
    if (!std::isfinite(alphas[i])) return Invalid(name, "not finite");
    if (std::abs(alphas[i]) > kMaxAlpha) {
      return Invalid(name,
                     absl::StrCat(alphas[i], " is outside [-", kMaxAlpha, ", ", kMaxAlpha, "]"));
    }
  }
  return absl::OkStatus();
}

// Rows of `t` ([D] or [L, D]) as [L, D] float64.
torch::Tensor RowsAsDouble(const torch::Tensor& t, int64_t layers) {
  torch::Tensor d = t.to(torch::kFloat64);
  return d.dim() == 1 ? d.unsqueeze(0).expand({layers, d.size(0)}).contiguous() : d;
}

// The directions as they are added: conditioned (ApplyDirectionsOptions::conditions),
// [D] or [L, D] float32 on `device`.
absl::StatusOr<std::vector<torch::Tensor>> PrepareDirections(
    const std::vector<Direction>& directions, const std::vector<Direction>& conditions,
    int64_t layers, const torch::Device& device) {
  std::vector<torch::Tensor> out;
  if (conditions.empty()) {
    for (const Direction& d : directions) out.push_back(d.vector.to(device));
    return out;
  }
  // Rows are [L, D] unless every direction and condition is a [D] vector.
  bool per_layer = false;
  for (const Direction& c : conditions) per_layer |= c.vector.dim() == 2;
  for (const Direction& d : directions) per_layer |= d.vector.dim() == 2;
  const int64_t rows = per_layer ? layers : 1;
  // Orthonormal basis of the conditions' span, row by row (modified Gram-Schmidt); a
  // dependent row contributes a zero vector.
  std::vector<torch::Tensor> basis;
  for (const Direction& c : conditions) {
    torch::Tensor v = RowsAsDouble(c.vector, rows).clone();
    torch::Tensor c_norm = v.norm(2, -1, true);
    for (const torch::Tensor& b : basis) v -= (v * b).sum(-1, true) * b;
    torch::Tensor v_norm = v.norm(2, -1, true);
    torch::Tensor keep = v_norm > kSpanTolerance * c_norm;
    basis.push_back(torch::where(keep, v / v_norm.clamp_min(1e-300), torch::zeros_like(v)));
  }
  for (size_t i = 0; i < directions.size(); ++i) {
    const Direction& d = directions[i];
    torch::Tensor p = RowsAsDouble(d.vector, rows).clone();
    torch::Tensor d_norm = p.norm(2, -1, true);
    for (const torch::Tensor& b : basis) p -= (p * b).sum(-1, true) * b;
    torch::Tensor p_norm = p.norm(2, -1, true);
    torch::Tensor spanned = (d_norm > 0) & (p_norm < kSpanTolerance * d_norm);
    if (spanned.any().item<bool>()) {
      const int64_t row = spanned.view({-1}).nonzero()[0].item<int64_t>();
      return Invalid("conditions",
                     absl::StrCat("directions[", i, "] ('", d.name, "') lies in their span",
                                  per_layer ? absl::StrCat(" at row ", row) : ""));
    }
    torch::Tensor scaled =
        torch::where(d_norm > 0, p * (d_norm / p_norm.clamp_min(1e-300)), torch::zeros_like(p));
    if (!per_layer) scaled = scaled.squeeze(0);
    out.push_back(scaled.to(device, torch::kFloat32));
  }
  return out;
}

// rows (a view of [n, count, D] into the output) += alpha_i * sigma_i * prepared_i, in order.
void AddSteps(torch::Tensor rows, const std::vector<Direction>& directions,
              const std::vector<torch::Tensor>& prepared, const std::vector<double>& alphas,
              int first_layer, int64_t count) {
  for (size_t i = 0; i < prepared.size(); ++i) {
    const torch::Tensor& e = prepared[i];
    torch::Tensor step = e.dim() == 1 ? e : e.narrow(0, first_layer, count);
    rows.add_(step * static_cast<float>(alphas[i] * directions[i].sigma));
  }
}

struct Checked {
  torch::Tensor w;  // [N, L, D] float32
  int last_layer;
};

absl::StatusOr<Checked> CheckEdit(const torch::Tensor& w, const std::vector<Direction>& directions,
                                  const ApplyDirectionsOptions& options) {
  Checked out;
  ASSIGN_OR_RETURN(out.w, LatentBatch(w, "w"));
  const LatentLayout layout{static_cast<int>(out.w.size(1)), static_cast<int>(out.w.size(2))};
  if (directions.empty()) return Invalid("directions", "none given");
  for (size_t i = 0; i < directions.size(); ++i) {
    RETURN_IF_ERROR(ValidateDirection(directions[i], layout, absl::StrCat("directions[", i, "]")));
  }
  for (size_t j = 0; j < options.conditions.size(); ++j) {
    RETURN_IF_ERROR(
        ValidateDirection(options.conditions[j], layout, absl::StrCat("conditions[", j, "]")));
  }
  out.last_layer = options.last_layer;
  RETURN_IF_ERROR(CheckLayers(layout.num_layers, options.first_layer, &out.last_layer));
  return out;
}

// lat_comp's shape without the size-1 axes between N and the last one(s).
std::vector<int64_t> SqueezeMiddle(const std::vector<int64_t>& shape) {
  std::vector<int64_t> out;
  for (size_t k = 0; k < shape.size(); ++k) {
    if (k == 0 || k + 1 == shape.size() || shape[k] != 1) out.push_back(shape[k]);
  }
  return out;
}

}  // namespace

absl::Status ValidateDirection(const Direction& d, const LatentLayout& layout,
                               absl::string_view field) {
  RETURN_IF_ERROR(CheckLayout(layout));
  if (d.name.empty()) return Invalid(field, "the direction has no name");
  const torch::Tensor& v = d.vector;
  if (!v.defined()) return Invalid(field, "no vector");
  if (v.scalar_type() != torch::kFloat32) {
    return Invalid(field, absl::StrCat("dtype ", std::string(c10::toString(v.scalar_type())),
                                       ", expected float32"));
  }
  if (!v.device().is_cpu()) return Invalid(field, "the vector is not on the CPU");
  const bool w_shape = v.dim() == 1 && v.size(0) == layout.latent_size;
  const bool wplus_shape =
      v.dim() == 2 && v.size(0) == layout.num_layers && v.size(1) == layout.latent_size;
  if (!w_shape && !wplus_shape) {
    return Invalid(field, absl::StrCat("shape ", ShapeString(v.sizes()), " does not fit latents ",
                                       LayoutString(layout), ": expected [", layout.latent_size,
                                       "] or ", LayoutString(layout)));
  }
  RETURN_IF_ERROR(CheckFinite(v, field));
  if (!v.ne(0).any().item<bool>()) {
    return Invalid(field, "all zero (a direction needs a non-zero norm)");
  }
  if (!std::isfinite(d.sigma) || d.sigma <= 0) {
    return Invalid(field, absl::StrCat("sigma ", d.sigma, " is not a positive finite number"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Direction> ParseDirectionNpy(absl::string_view bytes,
                                            const DirectionImportOptions& options) {
  const std::string& field = options.field;
  const LatentLayout& layout = options.layout;
  RETURN_IF_ERROR(CheckLayout(layout));
  auto array = ParseNpy(bytes);
  if (!array.ok()) return FileError(field, array.status());
  std::vector<int64_t> shape = array->shape;
  if (shape.size() >= 2 && shape[0] == 1) shape.erase(shape.begin());  // [1, D], [1, L, D]
  Direction d;
  d.name = options.name;
  if (shape.size() == 1 && shape[0] == layout.latent_size) {
    d.source_format = kInterFaceGanFormat;
  } else if (shape.size() == 2 && shape[0] == layout.num_layers && shape[1] == layout.latent_size) {
    d.source_format = kPerLayerFormat;
  } else {
    return Invalid(
        field, absl::StrCat("shape ", array->ShapeString(), " is not a direction for latents ",
                            LayoutString(layout), ": expected [1, ", layout.latent_size, "] or [",
                            layout.latent_size, "] (InterFaceGAN boundary) or ",
                            LayoutString(layout), " (one row per layer)"));
  }
  array->shape = shape;
  ASSIGN_OR_RETURN(d.vector,
                   TorchCall("direction tensor", [&] { return FloatArrayToTensor(*array); }));
  RETURN_IF_ERROR(ValidateDirection(d, layout, field));
  return d;
}

absl::StatusOr<std::vector<Direction>> ParseGanSpaceNpz(absl::string_view bytes,
                                                        const DirectionImportOptions& options) {
  const std::string& field = options.field;
  const LatentLayout& layout = options.layout;
  RETURN_IF_ERROR(CheckLayout(layout));
  auto arrays = ParseNpz(bytes);
  if (!arrays.ok()) return FileError(field, arrays.status());
  const FloatArray* comp = nullptr;
  const FloatArray* stdev = nullptr;
  std::vector<std::string> names;
  for (const auto& [name, array] : *arrays) {
    names.push_back(name);
    if (name == "lat_comp") comp = &array;
    if (name == "lat_stdev") stdev = &array;
  }
  for (auto [member, found] : {std::pair{"lat_comp", comp}, std::pair{"lat_stdev", stdev}}) {
    if (found == nullptr) {
      return Invalid(field, absl::StrCat("no member '", member,
                                         "' (a GANSpace .npz has lat_comp and lat_stdev; found: ",
                                         names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
    }
  }
  const std::vector<int64_t> shape = SqueezeMiddle(comp->shape);
  const bool w_rows = shape.size() == 2 && shape[1] == layout.latent_size;
  const bool wplus_rows =
      shape.size() == 3 && shape[1] == layout.num_layers && shape[2] == layout.latent_size;
  if (!w_rows && !wplus_rows) {
    return Invalid(field, absl::StrCat("lat_comp shape ", comp->ShapeString(),
                                       " does not hold directions for latents ",
                                       LayoutString(layout), ": expected [N, 1, ",
                                       layout.latent_size, "] or [N, ", layout.latent_size, "]"));
  }
  const int64_t n = shape[0];
  if (n == 0) return Invalid(field, "lat_comp has no components");
  if (stdev->numel() != n) {
    return Invalid(field, absl::StrCat("lat_stdev shape ", stdev->ShapeString(), " does not have ",
                                       n, " values, one per lat_comp component"));
  }
  std::vector<int> chosen = options.components;
  if (chosen.empty()) {
    for (int64_t i = 0; i < n; ++i) chosen.push_back(static_cast<int>(i));
  }
  for (int i : chosen) {
    if (i < 0 || i >= n) {
      return Invalid("components", absl::StrCat("index ", i, " is outside [0, ", n, ")"));
    }
  }
  const int64_t size = comp->numel() / n;
  std::vector<int64_t> row_shape(shape.begin() + 1, shape.end());
  std::vector<Direction> out;
  for (int i : chosen) {
    Direction d;
    d.name = absl::StrCat(options.name, "_pc", i);
    d.sigma = stdev->values[i];
    d.source_format = kGanSpaceFormat;
    FloatArray row;
    row.shape = row_shape;
    row.values.assign(comp->values.begin() + i * size, comp->values.begin() + (i + 1) * size);
    ASSIGN_OR_RETURN(d.vector,
                     TorchCall("direction tensor", [&] { return FloatArrayToTensor(row); }));
    RETURN_IF_ERROR(ValidateDirection(d, layout, absl::StrCat(field, ": component ", i)));
    out.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<std::vector<Direction>> ImportDirections(absl::string_view bytes,
                                                        const DirectionImportOptions& options) {
  if (ZipArchive::LooksLikeZip(bytes)) return ParseGanSpaceNpz(bytes, options);
  ASSIGN_OR_RETURN(Direction d, ParseDirectionNpy(bytes, options));
  std::vector<Direction> out;
  out.push_back(std::move(d));
  return out;
}

absl::StatusOr<Direction> MeanDifferenceDirection(const torch::Tensor& from,
                                                  const torch::Tensor& to, bool collapse_to_w,
                                                  std::string name) {
  if (name.empty()) return Invalid("name", "empty");
  ASSIGN_OR_RETURN(torch::Tensor a, LatentBatch(from, "from"));
  ASSIGN_OR_RETURN(torch::Tensor b, LatentBatch(to, "to"));
  if (a.size(1) != b.size(1) || a.size(2) != b.size(2)) {
    return Invalid("to", absl::StrCat("latents ", ShapeString(b.sizes().slice(1)),
                                      " do not match from's ", ShapeString(a.sizes().slice(1))));
  }
  if (a.device() != b.device()) return Invalid("to", "on another device than from");
  Direction d;
  d.name = std::move(name);
  d.source_format = kMeanDifferenceFormat;
  ASSIGN_OR_RETURN(d.vector, TorchCall("mean difference", [&] {
                     torch::NoGradGuard no_grad;
                     torch::Tensor diff = (b.mean(0) - a.mean(0)).to(torch::kCPU);
                     return (collapse_to_w ? diff.mean(0) : diff).contiguous();
                   }));
  const LatentLayout layout{static_cast<int>(a.size(1)), static_cast<int>(a.size(2))};
  if (!d.vector.ne(0).any().item<bool>()) {
    return Invalid("to", collapse_to_w ? "the mean difference averaged over rows is all zero"
                                       : "mean(to) equals mean(from): the difference is all zero");
  }
  RETURN_IF_ERROR(ValidateDirection(d, layout, "to"));
  return d;
}

absl::StatusOr<torch::Tensor> ApplyDirections(const torch::Tensor& w,
                                              const std::vector<Direction>& directions,
                                              const std::vector<double>& alphas,
                                              const ApplyDirectionsOptions& options) {
  ASSIGN_OR_RETURN(Checked c, CheckEdit(w, directions, options));
  RETURN_IF_ERROR(CheckAlphas(alphas, directions.size(), "alphas"));
  return TorchCall("apply directions", [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    ASSIGN_OR_RETURN(std::vector<torch::Tensor> prepared,
                     PrepareDirections(directions, options.conditions, c.w.size(1), c.w.device()));
    const int64_t count = c.last_layer - options.first_layer + 1;
    torch::Tensor out = c.w.clone();
    AddSteps(out.narrow(1, options.first_layer, count), directions, prepared, alphas,
             options.first_layer, count);
    return out;
  });
}

absl::StatusOr<torch::Tensor> DirectionFrames(const torch::Tensor& w,
                                              const std::vector<Direction>& directions,
                                              const std::vector<std::vector<double>>& frame_alphas,
                                              const ApplyDirectionsOptions& options) {
  ASSIGN_OR_RETURN(Checked c, CheckEdit(w, directions, options));
  if (c.w.size(0) != 1) return Invalid("w", "frames take one latent ([L, D] or [1, L, D])");
  if (frame_alphas.empty()) return Invalid("alphas", "no frames");
  if (frame_alphas.size() > static_cast<size_t>(kMaxDirectionFrames)) {
    return Invalid("alphas",
                   absl::StrCat(frame_alphas.size(), " frames, at most ", kMaxDirectionFrames));
  }
  for (size_t f = 0; f < frame_alphas.size(); ++f) {
    RETURN_IF_ERROR(
        CheckAlphas(frame_alphas[f], directions.size(), absl::StrCat("alphas[", f, "]")));
  }
  return TorchCall("direction frames", [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    ASSIGN_OR_RETURN(std::vector<torch::Tensor> prepared,
                     PrepareDirections(directions, options.conditions, c.w.size(1), c.w.device()));
    const int64_t frames = static_cast<int64_t>(frame_alphas.size());
    const int64_t count = c.last_layer - options.first_layer + 1;
    torch::Tensor out = c.w.expand({frames, c.w.size(1), c.w.size(2)}).clone();
    for (int64_t f = 0; f < frames; ++f) {
      AddSteps(out.narrow(0, f, 1).narrow(1, options.first_layer, count), directions, prepared,
               frame_alphas[f], options.first_layer, count);
    }
    return out;
  });
}

absl::StatusOr<torch::Tensor> DirectionFrames(const torch::Tensor& w, const Direction& direction,
                                              const std::vector<double>& alphas,
                                              const ApplyDirectionsOptions& options) {
  std::vector<std::vector<double>> frames;
  for (double alpha : alphas) frames.push_back({alpha});
  return DirectionFrames(w, std::vector<Direction>{direction}, frames, options);
}

absl::StatusOr<std::string> SerializeDirectionVector(const Direction& d) {
  const torch::Tensor& v = d.vector;
  if (!v.defined() || (v.dim() != 1 && v.dim() != 2) || v.numel() == 0) {
    return Invalid("direction",
                   absl::StrCat("shape ", v.defined() ? ShapeString(v.sizes()) : "none",
                                ", expected [D] or [L, D]"));
  }
  const LatentLayout layout{v.dim() == 2 ? static_cast<int>(v.size(0)) : 1,
                            static_cast<int>(v.size(-1))};
  RETURN_IF_ERROR(ValidateDirection(d, layout, "direction"));
  return TorchCall("serialize direction", [&] { return SerializeNpy(TensorToFloatArray(v)); });
}

absl::StatusOr<Direction> ParseStoredDirection(absl::string_view npy_bytes, std::string name,
                                               double sigma, std::string source_format,
                                               const LatentLayout& layout,
                                               absl::string_view field) {
  RETURN_IF_ERROR(CheckLayout(layout));
  auto array = ParseNpy(npy_bytes);
  if (!array.ok()) return FileError(field, array.status());
  Direction d;
  d.name = std::move(name);
  d.sigma = sigma;
  d.source_format = std::move(source_format);
  ASSIGN_OR_RETURN(d.vector,
                   TorchCall("direction tensor", [&] { return FloatArrayToTensor(*array); }));
  RETURN_IF_ERROR(ValidateDirection(d, layout, field));
  return d;
}

}  // namespace i2s
