#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/commands/commands.h"
#include "client/commands/flags.h"
#include "client/files.h"
#include "client/output.h"

namespace i2s::client::cli {
namespace {

// `latents ls / get / rm / export / import`.
class LatentsCommands : public CommandGroup {
 public:
  explicit LatentsCommands(Context& ctx) : CommandGroup(ctx) {}
  void Add(CLI::App& app);

 private:
  int LatentsList();
  int LatentsGet();
  int LatentsRemove();
  int LatentsExport();
  int LatentsImport();

  int limit_ = 20;
  bool all_tenants_ = false;
  std::string latent_id_;
  std::vector<std::string> latent_ids_;
  bool include_values_ = false;
  std::string model_;
  std::string file_;
  std::vector<std::string> labels_;
  uint64_t noise_seed_ = 0;
  std::string request_id_;
  RenderFlags export_r_;  // -o and -f only
};

std::string Labels(const v1::Latent& latent) {
  std::vector<std::string> parts;
  std::map<std::string, std::string> sorted(latent.labels().begin(), latent.labels().end());
  for (const auto& [k, v] : sorted) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, ",");
}

void LatentsCommands::Add(CLI::App& app) {
  CLI::App* latents = app.add_subcommand("latents", "list, show, export, import, delete latents");
  latents->require_subcommand(1);
  CLI::App* ls = latents->add_subcommand("ls", "list latents, newest first");
  ls->alias("list");
  ls->add_option("-m,--model", model_, "only latents of this model");
  ls->add_option("-n,--limit", limit_, "at most this many (0 = all)")->capture_default_str();
  ls->add_flag("--all-tenants", all_tenants_, "every tenant's, not only yours (admin token)");
  On(ls, [this] { return LatentsList(); });
  CLI::App* get = latents->add_subcommand("get", "show one latent's metadata");
  get->add_option("latent", latent_id_, "latent ID")->required();
  get->add_flag("--values", include_values_, "include the W+ values");
  On(get, [this] { return LatentsGet(); });
  CLI::App* rm = latents->add_subcommand("rm", "delete latents");
  rm->alias("delete");
  rm->add_option("latents", latent_ids_, "latent IDs")->required();
  On(rm, [this] { return LatentsRemove(); });
  CLI::App* exp =
      latents->add_subcommand("export", "write a latent as .npy (float32 [layers, 512])");
  exp->add_option("latent", latent_id_, "latent ID")->required();
  exp->add_option("-o,--output", export_r_.output, "output file (default LATENT.npy; - = stdout)");
  exp->add_flag("-f,--force", export_r_.force, "overwrite an existing file");
  On(exp, [this] { return LatentsExport(); });
  CLI::App* imp = latents->add_subcommand(
      "import", "store a W+ (.npy, float32 [layers, 512] or [512]) as a latent");
  imp->add_option("file", file_, ".npy file")->required();
  imp->add_option("-m,--model", model_, "model it belongs to (default: the server's default)");
  imp->add_option("-l,--label", labels_, "KEY=VALUE (repeatable)")->check(LabelValidator());
  imp->add_option("--noise-seed", noise_seed_, "seed of the noise maps it renders with");
  imp->add_option("--request-id", request_id_, "idempotency key");
  On(imp, [this] { return LatentsImport(); });
}

int LatentsCommands::LatentsList() {
  auto latents = client().ListLatents(model_, limit_, all_tenants_);
  if (!latents.ok()) return Fail("cannot list latents", latents.status());
  if (g_.json) {
    for (const auto& latent : *latents) Emit(ProtoJson(latent));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : *latents) {
    rows.push_back({l.id(), l.model(), l.source(),
                    l.has_metrics() && l.metrics().psnr_db() > 0
                        ? absl::StrFormat("%.2f", l.metrics().psnr_db())
                        : "-",
                    FormatTime(l.created_unix_ms()), Labels(l)});
  }
  PrintTable({"LATENT", "MODEL", "SOURCE", "PSNR", "CREATED", "LABELS"}, rows);
  return kExitOk;
}

int LatentsCommands::LatentsGet() {
  auto latent = client().GetLatent(latent_id_, include_values_);
  if (!latent.ok()) return Fail(absl::StrCat("cannot show latent ", latent_id_), latent.status());
  if (g_.json) {
    Emit(ProtoJson(*latent));
    return kExitOk;
  }
  const auto& l = *latent;
  PrintFields({
      {"latent", l.id()},
      {"model", l.model()},
      {"fingerprint", l.fingerprint()},
      {"shape", absl::StrCat(l.num_layers(), " x ", l.latent_size())},
      {"source", l.source()},
      {"job", l.job_id()},
      {"parents", absl::StrJoin(l.parents(), ", ")},
      {"params", l.params_json() == "{}" ? "" : l.params_json()},
      {"psnr", l.has_metrics() ? absl::StrFormat("%.2f dB after %d steps", l.metrics().psnr_db(),
                                                 l.metrics().steps())
                               : ""},
      {"lpips", l.has_metrics() && l.metrics().has_lpips()
                    ? absl::StrFormat("%.4f", l.metrics().lpips())
                    : ""},
      {"noise",
       l.has_noise() ? "own optimised maps" : absl::StrCat("drawn from seed ", l.noise_seed())},
      {"labels", Labels(l)},
      {"created", FormatTime(l.created_unix_ms())},
  });
  if (include_values_) {
    for (int row = 0; row < l.num_layers(); ++row) {
      std::string line = absl::StrFormat("layer %2d:", row);
      for (int c = 0; c < l.latent_size(); ++c) {
        absl::StrAppendFormat(&line, " %.5g", l.values(row * l.latent_size() + c));
      }
      std::cout << line << "\n";
    }
  }
  return kExitOk;
}

int LatentsCommands::LatentsRemove() {
  int code = kExitOk;
  for (const std::string& id : latent_ids_) {
    absl::Status s = client().DeleteLatent(id);
    if (!s.ok()) {
      const int c = Fail(absl::StrCat("cannot delete latent ", id), s);
      if (code == kExitOk) code = c;
      continue;
    }
    if (g_.json) {
      Emit({{"latent_id", id}, {"deleted", true}});
    } else {
      std::cout << "deleted " << id << "\n";
    }
  }
  std::cout.flush();
  return code;
}

int LatentsCommands::LatentsExport() {
  const std::string path = export_r_.output.empty() ? latent_id_ + ".npy" : export_r_.output;
  if (absl::Status s = CheckWritable(path, export_r_.force); !s.ok()) {
    return Fail("cannot export", s, kExitError);
  }
  auto exported = client().ExportLatent(latent_id_);
  if (!exported.ok()) {
    return Fail(absl::StrCat("cannot export latent ", latent_id_), exported.status());
  }
  if (absl::Status s = WriteOutput(path, exported->npy(), export_r_.force); !s.ok()) {
    return Fail("cannot export", s, kExitError);
  }
  if (g_.json) {
    Emit({{"latent_id", latent_id_},
          {"path", path},
          {"num_layers", exported->latent().num_layers()},
          {"latent_size", exported->latent().latent_size()}});
  } else if (path != "-") {
    std::cout << latent_id_ << "  -> " << path << "\n";
  }
  return kExitOk;
}

int LatentsCommands::LatentsImport() {
  auto bytes = ReadFile(file_);
  if (!bytes.ok()) return Fail("cannot import", bytes.status());
  v1::ImportLatentRequest request;
  request.set_model(model_);
  request.set_npy(std::move(*bytes));
  request.set_noise_seed(noise_seed_);
  request.set_request_id(request_id_);
  ParseLabels(labels_, request.mutable_labels());
  auto latent = client().ImportLatent(request);
  if (!latent.ok()) return Fail(absl::StrCat("cannot import ", file_), latent.status());
  if (g_.json) {
    Emit(ProtoJson(*latent));
  } else {
    std::cout << latent->id() << "\n";
  }
  return kExitOk;
}

}  // namespace

std::unique_ptr<CommandGroup> AddLatentsCommands(CLI::App& app, Context& ctx) {
  auto group = std::make_unique<LatentsCommands>(ctx);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
