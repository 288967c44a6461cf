// Semantic directions in W / W+: latent editing as InterFaceGAN (Shen et al., CVPR 2020)
// and GANSpace (Härkönen et al., NeurIPS 2020) do it, as pure functions on tensors.
//
//   import:   the files users have (InterFaceGAN boundary .npy, per-layer .npy, GANSpace
//             .npz) -> Direction, checked against the model's latent layout;
//   compute:  mean(to) - mean(from) of two sets of latents (expression transfer, generalised);
//   apply:    w' = w + sum_i alpha_i * sigma_i * d_i on a range of rows, optionally
//             conditioned (each d_i made orthogonal to other directions first);
//   frames:   the same for a list of alphas, [A, L, D], for streaming;
//   storage:  the vector as .npy bytes; name, sigma and source_format are kept beside it.
//
// Every error is InvalidArgument (bad input) or Internal (a torch failure after the checks)
// and its message starts with the field it is about ("file: ...", "alphas: ...").
// Thread-safe: no shared state; a Direction is a value (its tensor is never modified).
#ifndef I2S_SERVER_ENGINE_DIRECTIONS_H_
#define I2S_SERVER_ENGINE_DIRECTIONS_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

// The shape of one W+ latent of a model: [num_layers, latent_size] (18 x 512 for FFHQ 1024).
struct LatentLayout {
  int num_layers = 0;
  int latent_size = 0;
};

// One editing direction. Either a W direction ([D]: the same vector added to every row in
// the edited range) or a per-layer W+ direction ([L, D]: row l added to row l).
struct Direction {
  std::string name;
  // float32, on the CPU, finite, not all zero; [D] or [L, D].
  torch::Tensor vector;
  // The step that alpha = 1 takes is sigma * vector, so alpha is in units of sigma.
  // GANSpace: the component's standard deviation of W along it (lat_stdev); 1 elsewhere.
  double sigma = 1.0;
  // Where it came from: kInterFaceGanFormat, kPerLayerFormat, kGanSpaceFormat,
  // kMeanDifferenceFormat, or what a stored direction recorded.
  std::string source_format;
};

inline constexpr char kInterFaceGanFormat[] = "interfacegan_npy";  // [1, D] or [D] .npy
inline constexpr char kPerLayerFormat[] = "wplus_npy";             // [L, D] or [1, L, D] .npy
inline constexpr char kGanSpaceFormat[] = "ganspace_npz";          // lat_comp + lat_stdev
inline constexpr char kMeanDifferenceFormat[] = "mean_difference";

// |alpha| above this is refused. InterFaceGAN's own sweeps stay within [-3, 3] (unit
// boundaries) and GANSpace's within about [-10, 10] sigma; 100 leaves room for directions
// that are not unit-length while stopping values that only produce noise or overflow.
inline constexpr double kMaxAlpha = 100.0;
// Frames per DirectionFrames call: 4096 x 18 x 512 float32 is 151 MB.
inline constexpr int kMaxDirectionFrames = 4096;

// InvalidArgument "<field>: ..." unless `d` is usable with latents of `layout`: a float32
// CPU tensor of shape [D] or [L, D] matching it, finite, not all zero; sigma finite and > 0;
// a name that is not empty.
absl::Status ValidateDirection(const Direction& d, const LatentLayout& layout,
                               absl::string_view field);

struct DirectionImportOptions {
  // The model the directions are for.
  LatentLayout layout;
  // Name of the imported direction; GANSpace components are named "<name>_pc<index>".
  std::string name = "direction";
  // Which GANSpace components to import (indices into lat_comp); empty = all of them.
  // Ignored for .npy files.
  std::vector<int> components;
  // The field errors are about (the message starts with "<field>: ").
  std::string field = "file";
};

// A direction file from its bytes, told apart by content (a zip is GANSpace's .npz, anything
// else .npy):
//  - .npy float32 [D] or [1, D]: an InterFaceGAN boundary (its train_boundary saves the SVM
//    normal as float32 [1, D], unit length) -> one [D] direction;
//  - .npy float32 [L, D] or [1, L, D] with L = layout.num_layers: per-layer -> [L, D];
//  - .npz with the members GANSpace's decomposition.py writes: `lat_comp` [N, 1, D] (any
//    number of size-1 axes between N and D; [N, D] too) and `lat_stdev` [N] -> one [D]
//    direction per chosen component, sigma = lat_stdev[i]. Its other members (lat_mean,
//    act_comp, act_mean, act_stdev, var_ratio, random_stdevs) are not used. GANSpace writes
//    them with np.savez_compressed: deflated members are read (server/formats/inflate.h).
//    lat_comp is in W only when GANSpace ran with --use_w (its file name ends in "_w");
//    without it the components are Z directions and lat_stdev is all ones, which the bytes
//    cannot show.
// Other shapes, dtypes other than float32, NaN/Inf, all-zero vectors, sigma <= 0 and
// component indices out of range are refused.
absl::StatusOr<std::vector<Direction>> ImportDirections(absl::string_view bytes,
                                                        const DirectionImportOptions& options);

// The .npy case of ImportDirections: exactly one direction.
absl::StatusOr<Direction> ParseDirectionNpy(absl::string_view bytes,
                                            const DirectionImportOptions& options);
// The .npz (GANSpace) case of ImportDirections.
absl::StatusOr<std::vector<Direction>> ParseGanSpaceNpz(absl::string_view bytes,
                                                        const DirectionImportOptions& options);

// mean(to) - mean(from), each a set of latents [N, L, D] (N >= 1) or one latent [L, D]:
// an [L, D] direction, or with `collapse_to_w` the mean of its rows, [D]. Both sets must
// have the same L and D (N may differ). source_format kMeanDifferenceFormat, sigma 1.
// With from = {neutral}, to = {expression}, ApplyDirections(w, {d}, {lambda}) is
// ExpressionTransfer(w, neutral, expression, lambda). Errors name "from", "to" or "name".
absl::StatusOr<Direction> MeanDifferenceDirection(const torch::Tensor& from,
                                                  const torch::Tensor& to, bool collapse_to_w,
                                                  std::string name);

struct ApplyDirectionsOptions {
  // Rows [first_layer, last_layer] (inclusive) are edited; the others come back
  // bit-identical. last_layer = -1 means the last row.
  int first_layer = 0;
  int last_layer = -1;
  // Conditional manipulation (InterFaceGAN section 2.3): before it is added, each direction
  // is made orthogonal to every direction here, row by row. With d a row of the direction
  // ([D] directions: the vector itself, for every row) and C the matrix whose rows are the
  // same rows of the conditions, p = d - C^T (C C^T)^+ C d (the least-squares residual,
  // computed in float64 by modified Gram-Schmidt over C's rows, where a row whose residual
  // is below 1e-6 of its norm is dependent on the earlier ones and skipped), and the row
  // used is p * |d| / |p|: InterFaceGAN's project_boundary returns p / |p| for its unit
  // boundaries, and keeping |d| makes alpha mean the same with or without conditions.
  // A direction row that the conditions span (|p| < 1e-6 |d|) is an error; an all-zero
  // row of a per-layer direction stays zero. Conditions are validated like directions
  // (their sigma and name are not used).
  std::vector<Direction> conditions;
};

// w' = w + sum_i alphas[i] * directions[i].sigma * directions[i].vector on the chosen rows.
// w is [L, D] or [N, L, D] (any float dtype, any device; computed in float32 on w's
// device); the result is [N, L, D] float32 ([1, L, D] for an [L, D] w), every latent of
// the batch edited alike. The directions are added one after another in the given order
// (float32 rounding: for one direction a row is exactly w + float(alpha * sigma) * d).
// alphas: one per direction, finite, |alpha| <= kMaxAlpha. Errors name "w",
// "directions[i]", "alphas", "layers" or "conditions[j]".
absl::StatusOr<torch::Tensor> ApplyDirections(const torch::Tensor& w,
                                              const std::vector<Direction>& directions,
                                              const std::vector<double>& alphas,
                                              const ApplyDirectionsOptions& options = {});

// One latent (w: [L, D] or [1, L, D]) edited once per frame: frame f is
// ApplyDirections(w, directions, frame_alphas[f], options)[0], bit for bit; the result is
// [A, L, D] with A = frame_alphas.size() in 1..kMaxDirectionFrames, and each frame_alphas[f]
// has one alpha per direction. The conditioning is done once for all frames.
absl::StatusOr<torch::Tensor> DirectionFrames(const torch::Tensor& w,
                                              const std::vector<Direction>& directions,
                                              const std::vector<std::vector<double>>& frame_alphas,
                                              const ApplyDirectionsOptions& options = {});
// The same along one direction: frame f uses alphas[f].
absl::StatusOr<torch::Tensor> DirectionFrames(const torch::Tensor& w, const Direction& direction,
                                              const std::vector<double>& alphas,
                                              const ApplyDirectionsOptions& options = {});

// Storage: the vector as .npy bytes (float32, C order, [D] or [L, D]); the caller keeps
// name, sigma and source_format beside it. InvalidArgument "direction: ..." when `d` is
// not a valid direction of any layout (checked as by ValidateDirection against its own
// shape).
absl::StatusOr<std::string> SerializeDirectionVector(const Direction& d);
// The inverse: a Direction from stored .npy bytes and the metadata kept beside them,
// validated against `layout` (errors start with `field`). Unlike ImportDirections the
// shape must be exactly [D] or [L, D].
absl::StatusOr<Direction> ParseStoredDirection(absl::string_view npy_bytes, std::string name,
                                               double sigma, std::string source_format,
                                               const LatentLayout& layout,
                                               absl::string_view field = "direction");

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_DIRECTIONS_H_
