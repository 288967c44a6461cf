#include "client/commands/embed.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/files.h"
#include "client/output.h"
#include "common/defaults.h"
#include "common/point_list.h"
#include "common/status_macros.h"

namespace i2s::client::cli {
namespace {

namespace fs = std::filesystem;

// Where the reconstruction of image `index` of `count` goes ("" = nowhere).
std::string ReconPath(const std::string& save_recon, const std::string& stem, int count) {
  if (save_recon.empty()) return "";
  const std::string ext = Extension(save_recon);
  if (count == 1 && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) return save_recon;
  return (fs::path(save_recon) / (stem + ".png")).string();
}

// Distinct file stems for the images ("face", "face-2", ...).
std::vector<std::string> Stems(const std::vector<std::string>& labels) {
  std::vector<std::string> stems;
  std::map<std::string, int> seen;
  for (const std::string& label : labels) {
    std::string stem = fs::path(label).stem().string();
    if (stem.empty()) stem = "image";
    const int n = ++seen[stem];
    stems.push_back(n == 1 ? stem : absl::StrCat(stem, "-", n));
  }
  return stems;
}

}  // namespace

void EmbedCommand::Add(CLI::App& app) {
  EmbedFlags& f = embed_;
  CLI::App* cmd = app.add_subcommand(
      "embed", "embed images into W+ (one job per image, followed with live progress)");
  cmd->add_option("images", f.images, "image files (PNG, JPEG, BMP)")->required();
  cmd->add_option("-m,--model", f.model, "model name (default: the server's default)");
  cmd->add_option("--steps", f.steps,
                  absl::StrCat("W+ optimiser steps (server default ", defaults::kSteps, ")"));
  cmd->add_option("--lr", f.lr, absl::StrCat("Adam learning rate (default ", defaults::kLr, ")"));
  cmd->add_option("--w-mse", f.w_mse,
                  absl::StrCat("pixel MSE weight (default ", defaults::kWMse, ")"));
  cmd->add_option(
      "--w-perceptual", f.w_perceptual,
      absl::StrCat("VGG16 perceptual weight (default ", defaults::kWPerceptual, "; 0 skips VGG)"));
  cmd->add_option("--space", f.space,
                  "latent space: w+ (per layer) or w (shared); default w+, or w with "
                  "--schedule stylegan2-projector")
      ->check(CLI::IsMember({"w+", "w"}));
  cmd->add_option(
         "--schedule", f.schedule,
         absl::StrCat("image2stylegan (default: constant-rate Adam) or stylegan2-projector "
                      "(NVIDIA's recipe; its defaults: w, lr ",
                      defaults::kProjectorLr, ", LPIPS only, noise maps optimised)"))
      ->check(CLI::IsMember({"image2stylegan", "stylegan2-projector"}));
  cmd->add_option(
      "--w-lpips", f.w_lpips,
      absl::StrCat("LPIPS weight (default ", defaults::kWLpips, ", ", defaults::kProjectorWLpips,
                   " with stylegan2-projector; needs a server with --lpips)"));
  cmd->add_option("--init", f.init,
                  "initial latent: mean, zeros, uniform, or a latent ID / .npy to start from")
      ->capture_default_str();
  cmd->add_option("--target-psnr", f.target_psnr, "stop once PSNR reaches this (dB)");
  cmd->add_option("--plateau", f.plateau,
                  "stop when the loss improved < 1e-4 relative over this many steps");
  cmd->add_option("--noise-steps", f.noise_steps,
                  absl::StrCat("Image2StyleGAN++ noise-map steps after the W+ phase (default ",
                               defaults::kNoiseSteps, ")"));
  cmd->add_option("--noise-lr", f.noise_lr,
                  absl::StrCat("noise phase learning rate (default ", defaults::kNoiseLr, ")"));
  cmd->add_option("--perceptual-resolution", f.perceptual_resolution,
                  absl::StrCat("VGG input size (default ", defaults::kPerceptualResolution, ")"));
  cmd->add_option("--resize", f.resize,
                  "non-square or other-size images: crop (centre) or pad (replicate edge)")
      ->check(CLI::IsMember({"crop", "pad"}))
      ->capture_default_str();
  cmd->add_option("--seed", f.seed, "noise-map seed; same inputs + seed = same result")
      ->capture_default_str();
  cmd->add_option("-l,--label", f.labels, "KEY=VALUE copied to the latent (repeatable)")
      ->check(LabelValidator());
  cmd->add_option("--request-id", f.request_id,
                  "idempotency key: a repeat returns the first job (with several images, "
                  "image i gets ID-i)");
  cmd->add_option("--save-recon", f.save_recon,
                  "write the final reconstructions: a .png/.jpg file (one image) or a "
                  "directory (IMAGE-STEM.png each)");
  cmd->add_option("--preview", f.preview_dir,
                  "write the server's preview images during the run into this directory");
  cmd->add_option("--preview-every", f.preview_every,
                  "steps between previews (at most one a second is sent)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_flag("-d,--detach", f.detach,
                "submit, print the job IDs and return (follow later with `jobs watch`)");
  cmd->add_flag("-f,--force", f.force, "overwrite existing output files");
  AddAlignFlags(cmd, &f, /*for_embed=*/true);
  cmd->add_option("--save-aligned", f.save_aligned,
                  "write the aligned photos (the embedding targets): a .png file (one image) "
                  "or a directory");
  cmd->add_option("--mask", f.mask,
                  "masked embedding (inpainting): an image, white = fit, black = leave to the "
                  "generator, grey = weigh; masks the perceptual loss too unless "
                  "--perceptual-mask is given")
      ->check(CLI::ExistingFile);
  cmd->add_option("--perceptual-mask", f.perceptual_mask,
                  "a separate mask for the perceptual (VGG16 / LPIPS) loss")
      ->check(CLI::ExistingFile);
  cmd->add_option("--mask-frame", f.mask_frame,
                  "where the masks are drawn: over the photo (its size; aligned or resized "
                  "with it) or over the aligned target (the model's resolution)")
      ->check(CLI::IsMember({"photo", "aligned"}))
      ->capture_default_str();
  cmd->footer(
      "Examples:\n"
      "  i2s_client embed face.png\n"
      "  i2s_client embed selfie.jpg --align auto --save-aligned aligned.png\n"
      "  i2s_client embed cat.jpg --landmarks cat-points.txt   (eyes, nose, mouth corners)\n"
      "  i2s_client embed a.png b.png c.png --steps 2000 --noise-steps 500 --save-recon out/\n"
      "  i2s_client embed face.png --target-psnr 30 --preview previews/\n"
      "  i2s_client embed group.jpg --align auto --all-faces --save-recon out/\n"
      "  i2s_client embed scratched.jpg --mask keep.png --align auto --save-recon filled.png\n"
      "  JOB=$(i2s_client --json embed --detach face.png | jq -r .job_id)\n"
      "Ctrl-C asks whether to cancel the jobs or detach (they keep running on the server).");
  On(cmd, [this] { return Embed(); });
}

// The alignment flags -> AlignOptions (reading the landmark file).
absl::StatusOr<v1::AlignOptions> AlignOptionsOf(const EmbedFlags& f) {
  v1::AlignOptions a;
  if (!f.landmarks.empty()) {
    a.set_mode(v1::AlignOptions::LANDMARKS);
    ASSIGN_OR_RETURN(std::string text, ReadFile(f.landmarks));
    ASSIGN_OR_RETURN(auto points, ParsePointList(text, f.landmarks));
    for (const auto& [x, y] : points) {
      v1::Point* p = a.add_landmarks();
      p->set_x(x);
      p->set_y(y);
    }
  } else if (f.align == "landmarks") {
    return absl::InvalidArgumentError("--align landmarks: needs --landmarks FILE");
  } else {
    a.set_mode(f.align == "auto" ? v1::AlignOptions::AUTO : v1::AlignOptions::NONE);
  }
  a.set_on_no_face(f.on_no_face == "resize" ? v1::AlignOptions::RESIZE : v1::AlignOptions::FAIL);
  if (f.min_confidence) a.set_min_confidence(*f.min_confidence);
  a.set_no_padding(f.no_padding);
  if (f.face != 0 || f.all_faces) {
    if (a.mode() != v1::AlignOptions::AUTO) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.all_faces ? "--all-faces" : "--face", ": needs --align auto"));
    }
    a.set_face(f.face);
  }
  return a;
}

// "haar, confidence 1.00, scale 1.46, rotation 2.4 degrees" (or the fallback's note).
std::string DescribeAlignment(const v1::Alignment& a) {
  if (a.method() == "none") return absl::StrCat("not aligned: ", a.note());
  if (a.transform_size() != 6) return absl::StrCat("aligned (", a.method(), ")");
  const double s = std::hypot(a.transform(0), a.transform(3));
  const double degrees = -std::atan2(a.transform(3), a.transform(0)) * 180 / M_PI;
  return absl::StrFormat("aligned (%s, confidence %.2f, scale %.3f, rotation %.1f degrees)",
                         a.method(), a.confidence(), s, degrees);
}

absl::StatusOr<v1::EmbedRequest> EmbedCommand::BuildEmbedRequest(const EmbedFlags& f) {
  v1::EmbedRequest request;
  request.set_model(f.model);
  request.set_resize(f.resize == "pad" ? v1::PAD : v1::CENTER_CROP);
  request.set_seed(f.seed);
  v1::EmbedOptions& o = *request.mutable_options();
  if (f.steps) o.set_steps(*f.steps);
  if (f.lr) o.set_lr(*f.lr);
  if (f.w_mse) o.set_w_mse(*f.w_mse);
  if (f.w_perceptual) o.set_w_perceptual(*f.w_perceptual);
  if (f.target_psnr) o.set_target_psnr_db(*f.target_psnr);
  if (f.plateau) o.set_plateau_window(*f.plateau);
  if (f.noise_steps) o.set_noise_steps(*f.noise_steps);
  if (f.noise_lr) o.set_noise_lr(*f.noise_lr);
  if (f.perceptual_resolution) o.set_perceptual_resolution(*f.perceptual_resolution);
  if (!f.space.empty()) o.set_space(f.space == "w" ? v1::W : v1::W_PLUS);
  if (f.schedule == "stylegan2-projector") o.set_schedule(v1::STYLEGAN2_PROJECTOR);
  if (f.schedule == "image2stylegan") o.set_schedule(v1::IMAGE2STYLEGAN);
  if (f.w_lpips) o.set_w_lpips(*f.w_lpips);
  if (f.init == "mean") {
    o.set_init(v1::MEAN_W);
  } else if (f.init == "zeros") {
    o.set_init(v1::ZEROS);
  } else if (f.init == "uniform") {
    o.set_init(v1::UNIFORM);
  } else {
    auto id = ResolveLatent(f.init, f.model, /*embed_steps=*/std::nullopt);
    if (!id.ok()) return id.status();
    o.set_init(v1::FROM_LATENT);
    o.set_init_latent_id(*id);
  }
  ParseLabels(f.labels, request.mutable_labels());
  if (!f.preview_dir.empty()) request.set_preview_every(f.preview_every);
  request.set_return_reconstruction(!f.save_recon.empty());
  ASSIGN_OR_RETURN(*request.mutable_align(), AlignOptionsOf(f));
  request.set_return_aligned_image(!f.save_aligned.empty());
  if (!f.mask.empty()) {
    ASSIGN_OR_RETURN(*request.mutable_mask(), ReadFile(f.mask));
  }
  if (!f.perceptual_mask.empty()) {
    ASSIGN_OR_RETURN(*request.mutable_perceptual_mask(), ReadFile(f.perceptual_mask));
  }
  request.set_mask_frame(f.mask_frame == "aligned" ? v1::MASK_FRAME_ALIGNED : v1::MASK_FRAME_PHOTO);
  return request;
}

bool EmbedCommand::SaveImage(const std::string& label, const std::string& what,
                             const std::string& path, const absl::StatusOr<std::string>& png,
                             bool force) {
  absl::Status written = png.status();
  if (png.ok()) {
    auto bytes = ConvertPng(*png, path);
    written = bytes.ok() ? WriteOutput(path, *bytes, force) : bytes.status();
  }
  if (!written.ok()) {
    std::fprintf(stderr, "i2s_client: %s: %s not written: %s\n", label.c_str(), what.c_str(),
                 Explain(written, g_.server).c_str());
  }
  return written.ok();
}

int EmbedCommand::FollowAndReport(Follower& follower, bool embed, const EmbedFlags* flags) {
  follower.Run();
  int code = kExitOk;
  const int count = static_cast<int>(follower.jobs().size());
  for (auto& t : follower.jobs()) {
    const JobView& v = t->view;
    std::string recon_path;
    if (flags != nullptr && v.state == v1::SUCCEEDED) {
      recon_path = ReconPath(flags->save_recon, t->stem, count);
      if (!recon_path.empty()) {
        absl::StatusOr<std::string> png =
            absl::FailedPreconditionError("the server sent no reconstruction for this job");
        if (!t->reconstruction.empty()) {
          png = t->reconstruction;
        } else if (!embed) {
          // A watched job: render its latent (same noise maps as the job's own render).
          v1::SynthesizeRequest request;
          request.mutable_latent()->set_latent_id(v.latent_id);
          auto image = client().Synthesize(request);
          png = image.ok() ? absl::StatusOr<std::string>(image->image().data()) : image.status();
        }
        if (!SaveImage(v.label, "reconstruction", recon_path, png, flags->force)) {
          recon_path.clear();
          if (code == kExitOk) code = kExitError;
        }
      }
    }
    std::string aligned_path;
    if (flags != nullptr && v.state == v1::SUCCEEDED && embed) {
      aligned_path = ReconPath(flags->save_aligned, t->stem, count);
      if (!aligned_path.empty()) {
        absl::StatusOr<std::string> png =
            absl::FailedPreconditionError("the server sent no aligned image for this job");
        if (!t->aligned.empty()) png = t->aligned;
        if (!SaveImage(v.label, "aligned image", aligned_path, png, flags->force)) {
          aligned_path.clear();
          if (code == kExitOk) code = kExitError;
        }
      }
    }
    const int job_code = JobExitCode(*t);
    if (code == kExitOk) code = job_code;
    if (g_.json) {
      nlohmann::json doc;
      if (embed) doc["image"] = v.label;
      doc["job_id"] = v.job_id;
      doc["state"] = v.detached && !v.finished() ? "DETACHED" : StateName(v.state);
      if (v.state == v1::SUCCEEDED) {
        doc["latent_id"] = v.latent_id;
        doc["metrics"] = ProtoJson(v.final_metrics);
        if (!v.stop_reason.empty()) doc["stop_reason"] = v.stop_reason;
        if (!recon_path.empty()) doc["reconstruction"] = recon_path;
        if (t->alignment) doc["alignment"] = ProtoJson(*t->alignment);
        if (!aligned_path.empty()) doc["aligned_image"] = aligned_path;
      }
      if (job_code != kExitOk && job_code != kExitDetached) {
        doc["error"] = {{"message", v.error}, {"exit_code", job_code}};
      }
      Emit(doc);
      continue;
    }
    switch (v.state) {
      case v1::SUCCEEDED:
        std::cout << absl::StrFormat(
            "%s  %s  PSNR %.2f dB%s  %d steps (%s)%s\n", v.label, v.latent_id,
            v.final_metrics.psnr_db(),
            v.final_metrics.has_lpips() ? absl::StrFormat("  LPIPS %.4f", v.final_metrics.lpips())
                                        : "",
            v.final_metrics.steps(), v.stop_reason, recon_path.empty() ? "" : "  -> " + recon_path);
        if (t->alignment) {
          std::cout << "  " << DescribeAlignment(*t->alignment)
                    << (aligned_path.empty() ? "" : "  -> " + aligned_path) << "\n";
        }
        break;
      default:
        if (v.detached && !v.finished()) {
          std::cout << absl::StrFormat(
              "%s  %s  detached, still %s (follow: i2s_client jobs watch %s)\n", v.label, v.job_id,
              Lower(StateName(v.state)), v.job_id);
        } else if (v.state == v1::FAILED) {
          std::fprintf(stderr, "i2s_client: %s: the job %s failed: %s\n", v.label.c_str(),
                       v.job_id.c_str(), v.error.c_str());
        } else if (v.state == v1::CANCELLED) {
          std::fprintf(stderr, "i2s_client: %s: the job %s was cancelled at step %d\n",
                       v.label.c_str(), v.job_id.c_str(), v.step);
        } else {
          std::fprintf(stderr, "i2s_client: %s: %s\n", v.label.c_str(),
                       t->error.ok() ? "the stream ended before the job did"
                                     : Explain(t->error, g_.server).c_str());
        }
    }
  }
  std::cout.flush();
  return code;
}

int EmbedCommand::CheckImageOutputs(const std::string& flag, const std::string& where,
                                    const std::vector<std::string>& stems, bool force) {
  if (where.empty()) return kExitOk;
  const int n = static_cast<int>(stems.size());
  const std::string ext = Extension(where);
  if (n > 1 && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
    return Fail(flag,
                absl::InvalidArgumentError(
                    absl::StrCat("with ", n, " images this must be a directory, not ", where)),
                kExitUsage);
  }
  for (const std::string& stem : stems) {
    absl::Status s = CheckWritable(ReconPath(where, stem, n), force);
    if (!s.ok()) return Fail("cannot embed", s, kExitError);
  }
  return kExitOk;
}

int EmbedCommand::Embed() {
  EmbedFlags& f = embed_;
  // Everything that can be checked locally is checked before any job starts.
  std::vector<std::string> images;
  for (const std::string& path : f.images) {
    auto bytes = ReadFile(path);
    if (!bytes.ok()) return Fail("cannot embed", bytes.status());
    images.push_back(std::move(*bytes));
  }
  auto base = BuildEmbedRequest(f);
  if (!base.ok()) return Fail("cannot embed", base.status());
  // One job per image, or with --all-faces one per face the server finds in each.
  struct Job {
    size_t image;
    int face;
    std::string label, stem;
  };
  std::vector<Job> jobs;
  {
    const std::vector<std::string> stems = Stems(f.images);
    for (size_t i = 0; i < images.size(); ++i) {
      int faces = 1;
      if (f.all_faces) {
        v1::AlignFaceRequest count;
        count.set_model(f.model);
        count.set_size(8);  // only the faces are needed
        count.set_image(images[i]);
        *count.mutable_align() = base->align();
        count.set_resize(base->resize());
        auto found = client().AlignFace(count);
        if (!found.ok()) return Fail(absl::StrCat("cannot embed ", f.images[i]), found.status());
        faces = std::max(1, found->faces_size());  // 0: fell back to --on-no-face resize
      }
      for (int k = 0; k < faces; ++k) {
        if (!f.all_faces) {
          jobs.push_back({i, f.face, f.images[i], stems[i]});
        } else {
          jobs.push_back(
              {i, k, absl::StrCat(f.images[i], " face ", k), absl::StrCat(stems[i], "-face", k)});
        }
      }
    }
  }
  std::vector<std::string> stems;
  for (const Job& j : jobs) stems.push_back(j.stem);
  if (int c = CheckImageOutputs("--save-recon", f.save_recon, stems, f.force); c != kExitOk) {
    return c;
  }
  if (!f.landmarks.empty() && f.images.size() > 1) {
    return Fail("--landmarks", absl::InvalidArgumentError("landmarks are for one image at a time"),
                kExitUsage);
  }
  if (!f.save_aligned.empty()) {
    if (f.align == "none" && f.landmarks.empty()) {
      return Fail("--save-aligned", absl::InvalidArgumentError("needs --align auto or --landmarks"),
                  kExitUsage);
    }
    if (int c = CheckImageOutputs("--save-aligned", f.save_aligned, stems, f.force); c != kExitOk) {
      return c;
    }
  }
  if (!f.preview_dir.empty()) {
    std::error_code ec;
    fs::create_directories(f.preview_dir, ec);
    if (ec) {
      return Fail("--preview",
                  absl::InternalError(absl::StrCat(f.preview_dir, ": ", ec.message())));
    }
  }

  Follower follower(client(), g_, FollowOptions{f.preview_dir});
  for (size_t n = 0; n < jobs.size(); ++n) {
    const Job& j = jobs[n];
    v1::EmbedRequest request = *base;
    request.set_image(images[j.image]);
    request.mutable_align()->set_face(j.face);
    if (!f.request_id.empty()) {
      request.set_request_id(jobs.size() == 1 ? f.request_id : absl::StrCat(f.request_id, "-", n));
    }
    follower.Add(j.label, j.stem, client().Embed(request));
  }
  if (f.detach) {
    // Wait for each job to be accepted (its first event names it), then let go.
    int code = kExitOk;
    for (auto& t : follower.jobs()) {
      auto first = t->stream->Next();
      if (first.ok() && first->has_value()) {
        t->view.Apply(**first);
        t->stream->Cancel();
        if (g_.json) {
          Emit({{"image", t->view.label},
                {"job_id", t->view.job_id},
                {"state", StateName(t->view.state)}});
        } else {
          std::cout << t->view.label << "  " << t->view.job_id << "  "
                    << Lower(StateName(t->view.state)) << "\n";
        }
      } else {
        const absl::Status s =
            first.ok() ? absl::InternalError("the server ended the stream without a job")
                       : first.status();
        const int c = Fail(absl::StrCat("cannot embed ", t->view.label), s);
        if (code == kExitOk) code = c;
      }
    }
    std::cout.flush();
    return code;
  }
  return FollowAndReport(follower, /*embed=*/true, &f);
}

absl::StatusOr<std::string> EmbedCommand::ResolveLatent(const std::string& arg,
                                                        const std::string& model,
                                                        std::optional<int> embed_steps) {
  std::error_code ec;
  if (!fs::exists(arg, ec)) {
    if (absl::StartsWith(arg, "lat_")) return arg;
    return absl::NotFoundError(
        absl::StrCat("'", arg, "' is neither a file nor a latent ID (latent IDs start with lat_)"));
  }
  auto bytes = ReadFile(arg);
  if (!bytes.ok()) return bytes.status();
  if (Extension(arg) == ".npy") {
    v1::ImportLatentRequest request;
    request.set_model(model);
    request.set_npy(std::move(*bytes));
    auto latent = client().ImportLatent(request);
    if (!latent.ok()) {
      return absl::Status(latent.status().code(),
                          absl::StrCat("importing ", arg, ": ", latent.status().message()));
    }
    Note(absl::StrCat("imported ", arg, " as ", latent->id()));
    return latent->id();
  }
  EmbedFlags f;
  f.model = model;
  f.steps = embed_steps;
  auto request = BuildEmbedRequest(f);
  if (!request.ok()) return request.status();
  request->set_image(std::move(*bytes));
  Follower follower(client(), g_, FollowOptions{});
  follower.Add(arg, fs::path(arg).stem().string(), client().Embed(*request));
  follower.Run();
  const Tracked& t = *follower.jobs()[0];
  if (t.view.state == v1::SUCCEEDED) {
    Note(absl::StrFormat("embedded %s as %s (PSNR %.2f dB)", arg, t.view.latent_id,
                         t.view.final_metrics.psnr_db()));
    return t.view.latent_id;
  }
  if (!t.error.ok()) {
    return absl::Status(t.error.code(), absl::StrCat("embedding ", arg, ": ", t.error.message()));
  }
  const int code = JobExitCode(t);
  return absl::Status(
      code == kExitCancelled  ? absl::StatusCode::kCancelled
      : code == kExitDetached ? absl::StatusCode::kCancelled
                              : absl::StatusCode::kAborted,
      absl::StrCat("embedding ", arg, " did not finish: ",
                   t.view.error.empty() ? Lower(StateName(t.view.state)) : t.view.error));
}

}  // namespace i2s::client::cli
