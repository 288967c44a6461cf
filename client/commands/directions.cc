#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/commands/commands.h"
#include "client/commands/flags.h"
#include "client/files.h"
#include "client/media.h"
#include "client/output.h"

namespace i2s::client::cli {
namespace {

// "A-B" or "A": the rows an edit changes, into first / last.
absl::Status ParseLayers(const std::string& text, int* first, std::optional<int>* last) {
  std::vector<std::string> parts = absl::StrSplit(text, '-');
  int a = 0, b = 0;
  if (parts.size() == 1 && absl::SimpleAtoi(parts[0], &a)) {
    *first = a;
    *last = a;
    return absl::OkStatus();
  }
  if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &a) && absl::SimpleAtoi(parts[1], &b)) {
    *first = a;
    *last = b;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--layers: '", text, "' is not FIRST-LAST or LAYER (e.g. 0-7)"));
}

// "NAME=ALPHA" -> a step.
absl::StatusOr<v1::DirectionStep> ParseStep(const std::string& text) {
  const size_t eq = text.rfind('=');
  double alpha = 0;
  if (eq == std::string::npos || eq == 0 || !absl::SimpleAtod(text.substr(eq + 1), &alpha)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--direction: '", text, "' is not NAME=ALPHA (e.g. smile=1.5)"));
  }
  v1::DirectionStep step;
  step.set_name(text.substr(0, eq));
  step.set_alpha(alpha);
  return step;
}

// "FROM:TO:COUNT" (evenly spaced, ends included) or "A,B,C" -> the alphas of the frames.
absl::StatusOr<std::vector<double>> ParseAlphas(const std::string& text) {
  std::vector<double> out;
  std::vector<std::string> range = absl::StrSplit(text, ':');
  if (range.size() == 3) {
    double from = 0, to = 0;
    int count = 0;
    if (absl::SimpleAtod(range[0], &from) && absl::SimpleAtod(range[1], &to) &&
        absl::SimpleAtoi(range[2], &count) && count >= 1 && count <= 100000) {
      for (int i = 0; i < count; ++i) {
        out.push_back(count == 1 ? from : from + (to - from) * i / (count - 1));
      }
      return out;
    }
  } else {
    for (absl::string_view part : absl::StrSplit(text, ',')) {
      double a = 0;
      if (!absl::SimpleAtod(part, &a)) break;
      out.push_back(a);
    }
    if (!out.empty() &&
        out.size() == static_cast<size_t>(std::count(text.begin(), text.end(), ',') + 1)) {
      return out;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--alphas: '", text, "' is not FROM:TO:COUNT (e.g. -3:3:13) or a list (e.g. -2,0,2)"));
}

// `directions ls / import / compute / get / rm / frames` and `edit`.
class DirectionCommands : public CommandGroup {
 public:
  DirectionCommands(Context& ctx, EmbedCommand& embed) : CommandGroup(ctx), embed_(embed) {}
  void Add(CLI::App& app);

 private:
  int List();
  int Import();
  int Compute();
  int Get();
  int Remove();
  int Frames();
  int Edit();
  void PrintDirection(const v1::Direction& d);

  EmbedCommand& embed_;
  std::string model_, name_, file_, latent_, layers_, alphas_, out_;
  std::vector<int> components_;
  std::vector<std::string> from_, to_, steps_, conditions_, labels_;
  std::string request_id_;
  bool collapse_ = false, values_ = false, all_tenants_ = false, store_ = false, force_ = false;
  int limit_ = 0;
  double fps_ = 8;
  std::optional<int> embed_steps_;
  RenderFlags render_;
  PasteFlags paste_;
};

void DirectionCommands::Add(CLI::App& app) {
  CLI::App* group = app.add_subcommand(
      "directions", "semantic directions (InterFaceGAN, GANSpace, mean differences) per model");
  group->require_subcommand(1);
  {
    CLI::App* ls = group->add_subcommand("ls", "list directions by name");
    ls->alias("list");
    ls->add_option("-m,--model", model_, "only this model's");
    ls->add_option("-n,--limit", limit_, "at most this many (0 = all)")->capture_default_str();
    ls->add_flag("--all-tenants", all_tenants_, "every tenant's, not only yours (admin token)");
    On(ls, [this] { return List(); });
  }
  {
    CLI::App* imp = group->add_subcommand(
        "import", "import a direction file: InterFaceGAN .npy, per-layer .npy or GANSpace .npz");
    imp->add_option("file", file_, "the file")->required()->check(CLI::ExistingFile);
    imp->add_option("--name", name_, "its name (GANSpace components: NAME_pcK)")->required();
    imp->add_option("-m,--model", model_, "the model it is for (default: the server's default)");
    imp->add_option("--component", components_,
                    "GANSpace: a component to import (repeatable; "
                    "default all)");
    imp->footer(
        "Examples:\n  i2s_client directions import stylegan_ffhq_smile_w_boundary.npy --name "
        "smile\n"
        "  i2s_client directions import ganspace_ffhq_w.npz --name gs --component 0 "
        "--component 1\n");
    On(imp, [this] { return Import(); });
  }
  {
    CLI::App* c =
        group->add_subcommand("compute", "NAME = mean(--to latents) - mean(--from latents)");
    c->add_option("name", name_, "the direction's name")->required();
    c->add_option("--from", from_, "latent IDs (or .npy / image files)")->required();
    c->add_option("--to", to_, "latent IDs (or .npy / image files)")->required();
    c->add_flag("--collapse-to-w", collapse_, "average the rows into one W direction");
    c->add_option("-m,--model", model_, "model (default: the latents')");
    c->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    c->footer(
        "Example:\n  i2s_client directions compute smile --from lat_n1 lat_n2 --to lat_s1 "
        "lat_s2\n");
    On(c, [this] { return Compute(); });
  }
  {
    CLI::App* get = group->add_subcommand("get", "show a direction");
    get->add_option("name", name_, "its name")->required();
    get->add_option("-m,--model", model_, "its model (default: the server's default)");
    get->add_flag("--values", values_, "include the values");
    On(get, [this] { return Get(); });
  }
  {
    CLI::App* rm = group->add_subcommand("rm", "delete a direction");
    rm->alias("delete");
    rm->add_option("name", name_, "its name")->required();
    rm->add_option("-m,--model", model_, "its model (default: the server's default)");
    On(rm, [this] { return Remove(); });
  }
  {
    CLI::App* f = group->add_subcommand(
        "frames", "frames of LATENT along a direction, one per alpha (GIF, video or PNGs)");
    f->add_option("latent", latent_, "latent ID, or a .npy / image file")->required();
    f->add_option("name", name_, "the direction")->required();
    f->add_option("--alphas", alphas_, "FROM:TO:COUNT or A,B,C (in units of sigma)")->required();
    f->add_option("--out", out_, "a .gif, .mp4/.avi or a directory")->required();
    f->add_option("--fps", fps_, "frames per second")->capture_default_str();
    f->add_option("--layers", layers_, "rows changed: FIRST-LAST (default all)");
    f->add_option("--condition", conditions_, "keep these directions unchanged (repeatable)");
    f->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    f->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    f->add_flag("-f,--force", force_, "overwrite an existing output");
    f->footer(
        "Example:\n  i2s_client directions frames lat_me smile --alphas -3:3:13 --out "
        "smile.gif\n");
    On(f, [this] { return Frames(); });
  }
  {
    CLI::App* e = app.add_subcommand(
        "edit", "LATENT + sum of ALPHA * sigma * direction over a range of layers");
    e->add_option("latent", latent_, "latent ID, or a .npy / image file")->required();
    e->add_option("-d,--direction", steps_, "NAME=ALPHA, added in order (repeatable)")->required();
    e->add_option("--layers", layers_, "rows changed: FIRST-LAST or LAYER (default all)");
    e->add_option("--condition", conditions_,
                  "make each direction orthogonal to this one first (repeatable)");
    AddRenderFlags(e, render_, "edit.png");
    e->add_flag("--store", store_, "store the edited latent and print its ID (edits chain)");
    e->add_option("-l,--label", labels_, "KEY=VALUE for the stored latent")
        ->check(LabelValidator());
    e->add_option("--request-id", request_id_, "idempotency key");
    e->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    e->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    AddPasteFlags(e, &paste_, /*for_edit=*/true);
    e->footer(
        "Examples:\n  i2s_client edit lat_me --direction smile=1.5 --layers 0-7 -o smile.png\n"
        "  i2s_client edit lat_me -d smile=1 -d age=-2 --condition glasses --store\n");
    On(e, [this] { return Edit(); });
  }
}

void DirectionCommands::PrintDirection(const v1::Direction& d) {
  PrintFields({
      {"direction", d.name()},
      {"model", d.model()},
      {"fingerprint", d.fingerprint()},
      {"shape", d.num_layers() == 1 ? absl::StrCat(d.latent_size(), " (W)")
                                    : absl::StrCat(d.num_layers(), " x ", d.latent_size())},
      {"sigma", absl::StrFormat("%g", d.sigma())},
      {"norm", absl::StrFormat("%.6g", d.norm())},
      {"source", d.source()},
      {"params", d.params_json()},
      {"created", FormatTime(d.created_unix_ms())},
  });
}

int DirectionCommands::List() {
  auto list = client().ListDirections(model_, limit_, all_tenants_);
  if (!list.ok()) return Fail("cannot list directions", list.status());
  if (g_.json) {
    for (const auto& d : *list) Emit(ProtoJson(d));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : *list) {
    rows.push_back({d.name(), d.model(), d.num_layers() == 1 ? "W" : "W+",
                    absl::StrFormat("%g", d.sigma()), d.source(), FormatTime(d.created_unix_ms())});
  }
  PrintTable({"NAME", "MODEL", "KIND", "SIGMA", "SOURCE", "CREATED"}, rows);
  return kExitOk;
}

int DirectionCommands::Import() {
  auto bytes = ReadFile(file_);
  if (!bytes.ok()) return Fail("cannot import", bytes.status());
  v1::ImportDirectionRequest request;
  request.set_model(model_);
  request.set_name(name_);
  request.set_file(*std::move(bytes));
  for (int c : components_) request.add_components(c);
  auto response = client().ImportDirection(request);
  if (!response.ok()) return Fail(absl::StrCat("cannot import ", file_), response.status());
  if (g_.json) {
    for (const auto& d : response->directions()) Emit(ProtoJson(d));
    return kExitOk;
  }
  for (const auto& d : response->directions()) {
    std::cout << absl::StrFormat("%s  %s  sigma %g  norm %.4g  (%s)\n", d.name(),
                                 d.num_layers() == 1 ? "W" : "W+", d.sigma(), d.norm(), d.model());
  }
  return kExitOk;
}

int DirectionCommands::Compute() {
  v1::ComputeDirectionRequest request;
  request.set_model(model_);
  request.set_name(name_);
  request.set_collapse_to_w(collapse_);
  for (auto [args, out] : {std::pair{&from_, request.mutable_from_latents()},
                           std::pair{&to_, request.mutable_to_latents()}}) {
    for (const std::string& arg : *args) {
      auto id = embed_.ResolveLatent(arg, model_, embed_steps_);
      if (!id.ok()) return Fail("cannot compute the direction", id.status());
      out->Add()->set_latent_id(*id);
    }
  }
  auto d = client().ComputeDirection(request);
  if (!d.ok()) return Fail(absl::StrCat("cannot compute ", name_), d.status());
  if (g_.json) {
    Emit(ProtoJson(*d));
  } else {
    PrintDirection(*d);
  }
  return kExitOk;
}

int DirectionCommands::Get() {
  v1::GetDirectionRequest request;
  request.set_model(model_);
  request.set_name(name_);
  request.set_include_values(values_);
  auto d = client().GetDirection(request);
  if (!d.ok()) return Fail(absl::StrCat("cannot show direction ", name_), d.status());
  if (g_.json) {
    Emit(ProtoJson(*d));
    return kExitOk;
  }
  PrintDirection(*d);
  if (values_) {
    for (int row = 0; row < d->num_layers(); ++row) {
      std::vector<std::string> cells;
      for (int c = 0; c < d->latent_size(); ++c) {
        cells.push_back(absl::StrFormat("%.6g", d->values(row * d->latent_size() + c)));
      }
      std::cout << absl::StrFormat("row %2d: ", row) << absl::StrJoin(cells, " ") << "\n";
    }
  }
  return kExitOk;
}

int DirectionCommands::Remove() {
  absl::Status s = client().DeleteDirection(model_, name_);
  if (!s.ok()) return Fail(absl::StrCat("cannot delete direction ", name_), s);
  if (g_.json) {
    Emit({{"deleted", name_}});
  } else {
    std::cout << "deleted " << name_ << "\n";
  }
  return kExitOk;
}

int DirectionCommands::Frames() {
  auto alphas = ParseAlphas(alphas_);
  if (!alphas.ok()) return Fail("--alphas", alphas.status(), kExitUsage);
  v1::DirectionFramesRequest request;
  if (!layers_.empty()) {
    int first = 0;
    std::optional<int> last;
    if (absl::Status s = ParseLayers(layers_, &first, &last); !s.ok()) {
      return Fail("--layers", s, kExitUsage);
    }
    request.set_first_layer(first);
    if (last) request.set_last_layer(*last);
  }
  if (SequenceKindForPath(out_) != SequenceKind::kDirectory) {
    if (absl::Status s = CheckWritable(out_, force_); !s.ok()) {
      return Fail("cannot render the frames", s, kExitError);
    }
  }
  auto id = embed_.ResolveLatent(latent_, model_, embed_steps_);
  if (!id.ok()) return Fail("cannot render the frames", id.status());
  request.mutable_latent()->set_latent_id(*id);
  request.set_direction(name_);
  for (double a : *alphas) request.add_alphas(a);
  for (const std::string& c : conditions_) request.add_condition_on(c);
  request.mutable_render()->set_format(v1::PNG);
  auto stream = client().DirectionFrames(request);
  std::vector<RgbFrame> frames;
  while (true) {
    auto next = stream->Next();
    if (!next.ok())
      return Fail(absl::StrCat("cannot render ", *id, " along ", name_), next.status());
    if (!next->has_value()) break;
    auto frame = DecodeFrame((*next)->image().data());
    if (!frame.ok()) return Fail("cannot render the frames", frame.status());
    frames.push_back(std::move(*frame));
  }
  if (absl::Status s = WriteFrameSequence(frames, out_, fps_, force_); !s.ok()) {
    return Fail("cannot write the frames", s,
                s.code() == absl::StatusCode::kAlreadyExists ? kExitError : ExitCodeFor(s));
  }
  if (g_.json) {
    Emit({{"latent", *id},
          {"direction", name_},
          {"alphas", *alphas},
          {"path", out_},
          {"frames", frames.size()}});
  } else {
    std::cout << absl::StrFormat("%s along %s  %d frames  -> %s\n", *id, name_, frames.size(),
                                 out_);
  }
  return kExitOk;
}

int DirectionCommands::Edit() {
  v1::ApplyDirectionsRequest request;
  for (const std::string& s : steps_) {
    auto step = ParseStep(s);
    if (!step.ok()) return Fail("--direction", step.status(), kExitUsage);
    *request.add_steps() = *std::move(step);
  }
  if (!layers_.empty()) {
    int first = 0;
    std::optional<int> last;
    if (absl::Status s = ParseLayers(layers_, &first, &last); !s.ok()) {
      return Fail("--layers", s, kExitUsage);
    }
    request.set_first_layer(first);
    if (last) request.set_last_layer(*last);
  }
  auto format = FormatForPath(render_.output, "");
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(render_.output, render_.force); !s.ok()) {
    return Fail("cannot edit", s, kExitError);
  }
  auto paste = PasteIntoOf(paste_, render_.force);
  if (!paste.ok()) return Fail("cannot edit", paste.status());
  auto id = embed_.ResolveLatent(latent_, model_, embed_steps_);
  if (!id.ok()) return Fail("cannot edit", id.status());
  request.mutable_latent()->set_latent_id(*id);
  for (const std::string& c : conditions_) request.add_condition_on(c);
  *request.mutable_render() = RenderFor(render_, *format);
  if (*paste) *request.mutable_paste_into() = **paste;
  request.set_store_result(store_);
  request.set_request_id(request_id_);
  ParseLabels(labels_, request.mutable_labels());
  auto response = client().ApplyDirections(request);
  if (!response.ok()) return Fail(absl::StrCat("cannot edit ", *id), response.status());
  if (absl::Status s = WriteOutput(render_.output, response->image().data(), render_.force);
      !s.ok()) {
    return Fail("cannot edit", s, kExitError);
  }
  if (*paste) {
    if (absl::Status s = WriteOutput(paste_.output, response->pasted().data(), render_.force);
        !s.ok()) {
      return Fail("cannot write the pasted photo", s, kExitError);
    }
  }
  if (g_.json) {
    nlohmann::json steps = nlohmann::json::array();
    for (const auto& s : request.steps())
      steps.push_back({{"name", s.name()}, {"alpha", s.alpha()}});
    nlohmann::json doc = {{"latent_id", *id}, {"steps", steps}, {"path", render_.output}};
    if (response->has_latent()) doc["latent"] = ProtoJson(response->latent());
    if (*paste) doc["pasted"] = paste_.output;
    Emit(doc);
  } else if (render_.output != "-") {
    std::cout << absl::StrFormat("%s %s  -> %s%s\n", *id, absl::StrJoin(steps_, " "),
                                 render_.output,
                                 response->has_latent() ? "  " + response->latent().id() : "");
  }
  return kExitOk;
}

}  // namespace

std::unique_ptr<CommandGroup> AddDirectionCommands(CLI::App& app, Context& ctx,
                                                   EmbedCommand& embed) {
  auto group = std::make_unique<DirectionCommands>(ctx, embed);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
