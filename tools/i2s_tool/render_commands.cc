// The commands that render or map latents with a generator: synth, morph, stylemix,
// expression, map.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/edits.h"
#include "server/engine/model_files.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "tools/i2s_tool/command.h"
#include "tools/i2s_tool/latent_files.h"

namespace i2s::tool {
namespace {

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

}  // namespace

std::vector<Command> AddSynthCommand(CLI::App* app, Common* common) {
  auto a = std::make_shared<SynthArgs>();
  CLI::App* synth = app->add_subcommand("synth", "Render W+ latents with a generator");
  synth->add_option("--generator", a->generator, "generator weight file")->required();
  synth->add_option("--latent", a->latent, "float32 .npy, [L, 512] or [N, L, 512]")->required();
  synth
      ->add_option("--out", a->out,
                   "OUT.png: 8-bit RGB (OUT-i.png for N > 1); OUT.npy: raw float32 NCHW output")
      ->required();
  AddNoiseOptions(synth, &a->noise);
  AddCommonOptions(synth, common);
  return {{synth, [a, common] { return Synth(*common, *a); }}};
}

std::vector<Command> AddEditCommands(CLI::App* app, Common* common) {
  auto morph_args = std::make_shared<EditArgs>();
  auto mix_args = std::make_shared<EditArgs>();
  auto expr_args = std::make_shared<EditArgs>();
  CLI::App* morph = app->add_subcommand("morph", "Render a morph between two latents");
  morph->add_option("--generator", morph_args->generator, "generator weight file")->required();
  morph->add_option("--a", morph_args->a, "first latent .npy")->required();
  morph->add_option("--b", morph_args->b, "second latent .npy")->required();
  morph->add_option("--frames", morph_args->frames, "number of frames, endpoints included")
      ->check(CLI::Range(2, 10000))
      ->capture_default_str();
  CLI::App* stylemix =
      app->add_subcommand("stylemix", "Coarse layers from one latent, fine from another");
  stylemix->add_option("--generator", mix_args->generator, "generator weight file")->required();
  stylemix->add_option("--content", mix_args->a, "latent .npy giving rows [0, crossover)")
      ->required();
  stylemix->add_option("--style", mix_args->b, "latent .npy giving rows [crossover, L)")
      ->required();
  stylemix->add_option("--crossover", mix_args->crossover, "first row taken from --style")
      ->capture_default_str();
  CLI::App* expression = app->add_subcommand("expression", "w1 + lambda * (expression - neutral)");
  expression->add_option("--generator", expr_args->generator, "generator weight file")->required();
  expression->add_option("--target", expr_args->a, "latent .npy to edit (w1)")->required();
  expression->add_option("--neutral", expr_args->b, "latent .npy of the neutral face (w2)")
      ->required();
  expression->add_option("--expression", expr_args->c, "latent .npy with the expression (w3)")
      ->required();
  expression->add_option("--lambda", expr_args->lambda, "strength")->capture_default_str();
  expression->add_option("--first-layer", expr_args->first_layer, "first W+ row edited")
      ->capture_default_str();
  expression->add_option("--last-layer", expr_args->last_layer, "last W+ row edited (-1: the last)")
      ->capture_default_str();
  for (auto [cmd, args] : {std::pair{morph, morph_args.get()},
                           {stylemix, mix_args.get()},
                           {expression, expr_args.get()}}) {
    cmd->add_option("--out", args->out, "OUT.png (OUT-i.png for several) or OUT.npy (raw NCHW)")
        ->required();
    cmd->add_option("--latent-out", args->latent_out, "also write the edited W+ latents (.npy)");
    AddNoiseOptions(cmd, &args->noise);
    AddCommonOptions(cmd, common);
  }
  return {
      {morph, [a = morph_args, common] { return Edit(*common, *a, EditKind::kMorph); }},
      {stylemix, [a = mix_args, common] { return Edit(*common, *a, EditKind::kStyleMix); }},
      {expression, [a = expr_args, common] { return Edit(*common, *a, EditKind::kExpression); }}};
}

std::vector<Command> AddMapCommand(CLI::App* app, Common* common) {
  auto a = std::make_shared<MapArgs>();
  CLI::App* map = app->add_subcommand(
      "map", "Run the mapping network: z [N, 512] -> w [N, 512] (or W+ [N, L, 512])");
  map->add_option("--generator", a->generator, "generator weight file")->required();
  map->add_option("--z", a->z, "float32 .npy, [N, 512]");
  map->add_option("--random", a->random, "instead of --z: N standard-normal z from --seed")
      ->check(CLI::PositiveNumber);
  map->add_option("--seed", a->seed, "seed for --random")->capture_default_str();
  map->add_flag("--wplus", a->wplus,
                "write W+ [N, L, 512] (w repeated on every layer), ready for synth");
  map->add_option("--out", a->out, "output .npy (with --wplus also .npz: NVIDIA's projected_w.npz)")
      ->required();
  AddCommonOptions(map, common);
  return {{map, [a, common] { return Map(*common, *a); }}};
}

}  // namespace i2s::tool
