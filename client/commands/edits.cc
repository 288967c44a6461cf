#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/commands/commands.h"
#include "client/commands/flags.h"
#include "client/files.h"
#include "client/media.h"
#include "client/output.h"
#include "client/progress.h"
#include "common/defaults.h"
#include "common/status_macros.h"

namespace i2s::client::cli {
namespace {

// The edits: `synth` (render), `morph`, `stylemix`, `expression`. Latents given as files
// are imported (.npy) or embedded (images) first.
class EditCommands : public CommandGroup {
 public:
  EditCommands(Context& ctx, EmbedCommand& embed_command)
      : CommandGroup(ctx), embed_command_(embed_command) {}
  void Add(CLI::App& app);

 private:
  int Synth();
  int Morph();
  int StyleMix();
  int Expression();
  // Writes a pasted photo to --pasted (when it was asked for); an exit code.
  int WritePasted(const v1::Image& pasted, bool force);
  absl::StatusOr<std::string> ResolveLatent(const std::string& arg, const std::string& model) {
    return embed_command_.ResolveLatent(arg, model, embed_steps_);
  }

  EmbedCommand& embed_command_;
  std::string model_;
  std::vector<std::string> labels_;
  std::string request_id_;
  RenderFlags synth_r_, morph_r_, mix_r_, expr_r_;  // per command: each has its own default output
  std::string format_;
  std::string a_, b_, c_;
  int frames_ = defaults::kMorphFrames;
  double fps_ = 8;
  int crossover_ = -1;
  double lambda_ = 0;
  int first_layer_ = 0;
  std::optional<int> last_layer_;
  bool store_ = false;
  std::optional<int> embed_steps_;
  PasteFlags paste_;  // --paste-into of synth, stylemix, expression
};

void EditCommands::Add(CLI::App& app) {
  // synth
  {
    CLI::App* cmd = app.add_subcommand("synth", "render a latent to an image");
    cmd->add_option("latent", a_, "latent ID, or a .npy / image file")->required();
    AddRenderFlags(cmd, synth_r_, "");
    cmd->add_option("--format", format_,
                    "png, jpeg, or npy (raw float32 [3,R,R]); default from the file name")
        ->check(CLI::IsMember({"png", "jpeg", "npy"}));
    cmd->add_option("-m,--model", model_, "model (for a .npy or image given as a file)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    AddPasteFlags(cmd, &paste_, /*for_edit=*/true);
    cmd->footer(
        "Examples:\n  i2s_client synth lat_123 -o face.png\n  i2s_client synth w.npy -o - > "
        "face.png\n  i2s_client synth lat_123 -o face.png --paste-into photo.jpg --pasted "
        "back.jpg\n");
    On(cmd, [this] { return Synth(); });
  }

  // morph
  {
    CLI::App* cmd = app.add_subcommand(
        "morph", "interpolate from latent A to latent B in W+: a video, a GIF or PNG frames");
    cmd->add_option("a", a_, "start: latent ID, or a .npy / image file")->required();
    cmd->add_option("b", b_, "end: latent ID, or a .npy / image file")->required();
    cmd->add_option("-n,--frames", frames_, "frames, including both ends")
        ->check(CLI::Range(2, 100000))
        ->capture_default_str();
    morph_r_.output = "morph.mp4";
    cmd->add_option("-o,--out,--output", morph_r_.output,
                    "FILE.mp4 / .avi / .mkv (video), FILE.gif, or a directory (PNG frames)")
        ->capture_default_str();
    cmd->add_option("--fps", fps_, "frames per second of the video or GIF")
        ->check(CLI::Range(0.1, 240.0))
        ->capture_default_str();
    cmd->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    cmd->add_flag("-f,--force", morph_r_.force, "overwrite existing output");
    cmd->add_option("--paste-into", paste_.photo,
                    "also paste every frame into A's photo (the one A was aligned from); "
                    "needs --pasted");
    cmd->add_option("--pasted", paste_.output,
                    "where the pasted frames go: FILE.mp4 / .avi / .mkv, FILE.gif, or a "
                    "directory");
    cmd->add_option("--blend", paste_.blend, "paste-back: feather or seamless")
        ->check(CLI::IsMember({"feather", "seamless"}))
        ->capture_default_str();
    cmd->footer(
        "Examples:\n  i2s_client morph lat_a lat_b --frames 48 --out morph.mp4\n"
        "  i2s_client morph lat_a lat_b --out m.gif --paste-into a.jpg --pasted a-morph.mp4\n"
        "  i2s_client morph a.png b.png --frames 12 --out morph.gif   (embeds both first)\n"
        "  i2s_client morph lat_a lat_b --out frames/\n");
    On(cmd, [this] { return Morph(); });
  }

  // stylemix
  {
    CLI::App* cmd = app.add_subcommand(
        "stylemix", "coarse layers from CONTENT, the rest from STYLE (style mixing)");
    cmd->add_option("content", a_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("style", b_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("-k,--crossover", crossover_, "layers [0, K) come from CONTENT (0..num_layers)")
        ->required();
    AddRenderFlags(cmd, mix_r_, "stylemix.png");
    cmd->add_flag("--store", store_, "store the mixed latent and print its ID");
    cmd->add_option("-l,--label", labels_, "KEY=VALUE for the stored latent")
        ->check(LabelValidator());
    cmd->add_option("--request-id", request_id_, "idempotency key");
    cmd->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    AddPasteFlags(cmd, &paste_, /*for_edit=*/true);
    cmd->footer(
        "Examples:\n  i2s_client stylemix lat_a lat_b --crossover 8 -o mix.png --store\n"
        "  i2s_client stylemix lat_a lat_b -k 8 -o mix.png --paste-into a.jpg --pasted "
        "a-mixed.jpg\n");
    On(cmd, [this] { return StyleMix(); });
  }

  // expression
  {
    CLI::App* cmd = app.add_subcommand(
        "expression", "TARGET + LAMBDA * (EXPRESSION - NEUTRAL): move an expression onto a face");
    cmd->add_option("target", a_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("neutral", b_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("expression", c_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("--lambda", lambda_, "strength, -100..100 (the paper uses about 1-2)")
        ->required();
    cmd->add_option("--first-layer", first_layer_, "first layer changed (default 0)");
    cmd->add_option("--last-layer", last_layer_, "last layer changed (default the last)");
    AddRenderFlags(cmd, expr_r_, "expression.png");
    cmd->add_flag("--store", store_, "store the result latent and print its ID");
    cmd->add_option("-l,--label", labels_, "KEY=VALUE for the stored latent")
        ->check(LabelValidator());
    cmd->add_option("--request-id", request_id_, "idempotency key");
    cmd->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    cmd->footer(
        "Example:\n  i2s_client expression lat_me lat_neutral lat_smile --lambda 1.5 -o "
        "smile.png\n");
    AddPasteFlags(cmd, &paste_, /*for_edit=*/true);
    On(cmd, [this] { return Expression(); });
  }
}

int EditCommands::WritePasted(const v1::Image& pasted, bool force) {
  if (paste_.photo.empty()) return kExitOk;
  if (absl::Status s = WriteOutput(paste_.output, pasted.data(), force); !s.ok()) {
    return Fail("cannot write the pasted photo", s, kExitError);
  }
  return kExitOk;
}

int EditCommands::Synth() {
  auto id = ResolveLatent(a_, model_);
  if (!id.ok()) return Fail("cannot render", id.status());
  const std::string path = synth_r_.output.empty() ? *id + ".png" : synth_r_.output;
  auto format = FormatForPath(path, format_);
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(path, synth_r_.force); !s.ok()) {
    return Fail("cannot render", s, kExitError);
  }
  auto paste = PasteIntoOf(paste_, synth_r_.force);
  if (!paste.ok()) return Fail("cannot render", paste.status());
  v1::SynthesizeRequest request;
  request.mutable_latent()->set_latent_id(*id);
  *request.mutable_render() = RenderFor(synth_r_, *format);
  if (*paste) *request.mutable_paste_into() = **paste;
  auto response = client().Synthesize(request);
  if (!response.ok()) return Fail(absl::StrCat("cannot render ", *id), response.status());
  if (absl::Status s = WriteOutput(path, response->image().data(), synth_r_.force); !s.ok()) {
    return Fail("cannot render", s, kExitError);
  }
  if (int c = WritePasted(response->pasted(), synth_r_.force); c != kExitOk) return c;
  if (g_.json) {
    nlohmann::json doc = {{"latent_id", *id},
                          {"path", path},
                          {"format", *format},
                          {"width", response->image().width()},
                          {"height", response->image().height()}};
    if (*paste) doc["pasted"] = paste_.output;
    Emit(doc);
  } else if (path != "-") {
    std::cout << *id << "  -> " << path << (*paste ? "  pasted -> " + paste_.output : "") << "\n";
  }
  return kExitOk;
}

int EditCommands::Morph() {
  const std::string& out = morph_r_.output;
  const SequenceKind kind = SequenceKindForPath(out);
  if (kind != SequenceKind::kDirectory) {
    if (absl::Status s = CheckWritable(out, morph_r_.force); !s.ok()) {
      return Fail("cannot morph", s, kExitError);
    }
  }
  const bool pasting = !paste_.photo.empty();
  if (pasting != !paste_.output.empty()) {
    return Fail(pasting ? "--paste-into" : "--pasted",
                absl::InvalidArgumentError("--paste-into PHOTO and --pasted OUT go together"),
                kExitUsage);
  }
  if (pasting && SequenceKindForPath(paste_.output) != SequenceKind::kDirectory) {
    if (absl::Status s = CheckWritable(paste_.output, morph_r_.force); !s.ok()) {
      return Fail("cannot morph", s, kExitError);
    }
  }
  auto a = ResolveLatent(a_, model_);
  if (!a.ok()) return Fail("cannot morph", a.status());
  auto b = ResolveLatent(b_, model_);
  if (!b.ok()) return Fail("cannot morph", b.status());
  v1::MorphRequest request;
  request.mutable_a()->set_latent_id(*a);
  request.mutable_b()->set_latent_id(*b);
  request.set_frames(frames_);
  request.mutable_render()->set_format(v1::PNG);
  if (pasting) {
    auto photo = ReadFile(paste_.photo);
    if (!photo.ok()) return Fail("cannot morph", photo.status());
    v1::PasteInto& p = *request.mutable_paste_into();
    p.set_photo(*std::move(photo));
    *p.mutable_options() = BlendOptionsOf(paste_);
  }
  auto stream = client().Morph(request);
  std::vector<RgbFrame> frames, pasted;
  LiveDisplay display(stderr);
  const bool live = g_.stderr_tty && !g_.quiet;
  const absl::Time start = absl::Now();
  while (true) {
    auto next = stream->Next();
    if (!next.ok()) {
      if (live) display.Erase();
      return Fail(absl::StrCat("cannot morph ", *a, " into ", *b), next.status());
    }
    if (!next->has_value()) break;
    auto frame = DecodeFrame((*next)->image().data());
    if (!frame.ok()) return Fail("cannot morph", frame.status());
    frames.push_back(std::move(*frame));
    if (pasting) {
      auto whole = DecodeFrame((*next)->pasted().data());
      if (!whole.ok()) return Fail("cannot morph", whole.status());
      pasted.push_back(std::move(*whole));
    }
    if (live) {
      const double done = static_cast<double>(frames.size()) / frames_;
      const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
      display.Draw(
          {absl::StrCat("morph  ", ProgressBar(done, 24, g_.err_style.unicode), " ", frames.size(),
                        "/", frames_, " frames  ETA ", FormatDuration(elapsed / done - elapsed))});
    }
  }
  if (absl::Status s = WriteFrameSequence(frames, out, fps_, morph_r_.force); !s.ok()) {
    return Fail("cannot write the morph", s,
                s.code() == absl::StatusCode::kAlreadyExists ? kExitError : ExitCodeFor(s));
  }
  if (pasting) {
    if (absl::Status s = WriteFrameSequence(pasted, paste_.output, fps_, morph_r_.force); !s.ok()) {
      return Fail("cannot write the pasted morph", s,
                  s.code() == absl::StatusCode::kAlreadyExists ? kExitError : ExitCodeFor(s));
    }
  }
  const char* kinds[] = {"video", "gif", "directory"};
  if (g_.json) {
    nlohmann::json doc = {{"a", *a},
                          {"b", *b},
                          {"path", out},
                          {"kind", kinds[static_cast<int>(kind)]},
                          {"frames", frames.size()},
                          {"fps", fps_}};
    if (pasting) doc["pasted"] = paste_.output;
    Emit(doc);
  } else {
    std::cout << absl::StrFormat("%s -> %s  %d frames  -> %s\n", *a, *b, frames.size(), out);
  }
  return kExitOk;
}

int EditCommands::StyleMix() {
  auto format = FormatForPath(mix_r_.output, "");
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(mix_r_.output, mix_r_.force); !s.ok()) {
    return Fail("cannot mix", s, kExitError);
  }
  auto paste = PasteIntoOf(paste_, mix_r_.force);
  if (!paste.ok()) return Fail("cannot mix", paste.status());
  auto content = ResolveLatent(a_, model_);
  if (!content.ok()) return Fail("cannot mix", content.status());
  auto style = ResolveLatent(b_, model_);
  if (!style.ok()) return Fail("cannot mix", style.status());
  v1::StyleMixRequest request;
  request.mutable_content()->set_latent_id(*content);
  request.mutable_style()->set_latent_id(*style);
  request.set_crossover(crossover_);
  *request.mutable_render() = RenderFor(mix_r_, *format);
  if (*paste) *request.mutable_paste_into() = **paste;
  request.set_store_result(store_);
  request.set_request_id(request_id_);
  ParseLabels(labels_, request.mutable_labels());
  auto response = client().StyleMix(request);
  if (!response.ok()) return Fail("cannot mix", response.status());
  if (absl::Status s = WriteOutput(mix_r_.output, response->image().data(), mix_r_.force);
      !s.ok()) {
    return Fail("cannot mix", s, kExitError);
  }
  if (int c = WritePasted(response->pasted(), mix_r_.force); c != kExitOk) return c;
  if (g_.json) {
    nlohmann::json doc = {{"content", *content},
                          {"style", *style},
                          {"crossover", crossover_},
                          {"path", mix_r_.output}};
    if (response->has_latent()) doc["latent"] = ProtoJson(response->latent());
    if (*paste) doc["pasted"] = paste_.output;
    Emit(doc);
  } else if (mix_r_.output != "-") {
    std::cout << absl::StrFormat("%s + %s (crossover %d)  -> %s%s\n", *content, *style, crossover_,
                                 mix_r_.output,
                                 response->has_latent() ? "  " + response->latent().id() : "");
  }
  return kExitOk;
}

int EditCommands::Expression() {
  auto format = FormatForPath(expr_r_.output, "");
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(expr_r_.output, expr_r_.force); !s.ok()) {
    return Fail("cannot transfer the expression", s, kExitError);
  }
  auto paste = PasteIntoOf(paste_, expr_r_.force);
  if (!paste.ok()) return Fail("cannot transfer the expression", paste.status());
  std::string ids[3];
  const std::string* args[3] = {&a_, &b_, &c_};
  for (int i = 0; i < 3; ++i) {
    auto id = ResolveLatent(*args[i], model_);
    if (!id.ok()) return Fail("cannot transfer the expression", id.status());
    ids[i] = *id;
  }
  v1::ExpressionTransferRequest request;
  request.mutable_target()->set_latent_id(ids[0]);
  request.mutable_neutral()->set_latent_id(ids[1]);
  request.mutable_expression()->set_latent_id(ids[2]);
  request.set_strength(lambda_);
  request.set_first_layer(first_layer_);
  if (last_layer_) request.set_last_layer(*last_layer_);
  *request.mutable_render() = RenderFor(expr_r_, *format);
  if (*paste) *request.mutable_paste_into() = **paste;
  request.set_store_result(store_);
  request.set_request_id(request_id_);
  ParseLabels(labels_, request.mutable_labels());
  auto response = client().ExpressionTransfer(request);
  if (!response.ok()) return Fail("cannot transfer the expression", response.status());
  if (absl::Status s = WriteOutput(expr_r_.output, response->image().data(), expr_r_.force);
      !s.ok()) {
    return Fail("cannot transfer the expression", s, kExitError);
  }
  if (int c = WritePasted(response->pasted(), expr_r_.force); c != kExitOk) return c;
  if (g_.json) {
    nlohmann::json doc = {{"target", ids[0]},
                          {"neutral", ids[1]},
                          {"expression", ids[2]},
                          {"lambda", lambda_},
                          {"path", expr_r_.output}};
    if (response->has_latent()) doc["latent"] = ProtoJson(response->latent());
    if (*paste) doc["pasted"] = paste_.output;
    Emit(doc);
  } else if (expr_r_.output != "-") {
    std::cout << absl::StrFormat("%s + %g * (%s - %s)  -> %s%s\n", ids[0], lambda_, ids[2], ids[1],
                                 expr_r_.output,
                                 response->has_latent() ? "  " + response->latent().id() : "");
  }
  return kExitOk;
}

}  // namespace

std::unique_ptr<CommandGroup> AddEditCommands(CLI::App& app, Context& ctx, EmbedCommand& embed) {
  auto group = std::make_unique<EditCommands>(ctx, embed);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
