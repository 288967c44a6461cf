#include "server/jobs/scheduler_internal.h"

#include <nlohmann/json.hpp>

#include "server/imaging/prepare.h"

namespace i2s::scheduler_internal {

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

JobRecord WithoutBlobs(JobRecord r) {
  // Released, not just emptied: clear() keeps a spec's megabytes allocated.
  std::string().swap(r.spec);
  std::string().swap(r.checkpoint);
  return r;
}

LatentMetrics MetricsFromJson(const std::string& s) {
  LatentMetrics m;
  if (s.empty()) return m;
  try {
    auto j = nlohmann::json::parse(s);
    m.loss = j.at("loss");
    m.mse = j.at("mse");
    m.perceptual = j.at("perceptual");
    m.psnr = j.at("psnr");
    m.steps = j.at("steps");
    m.lpips = j.value("lpips", -1.0);
  } catch (const std::exception&) {
  }
  return m;
}

std::string ProgressJson(const Progress& p) {
  return nlohmann::json{{"step", p.step},         {"loss", p.metrics.loss},
                        {"mse", p.metrics.mse},   {"perceptual", p.metrics.perceptual},
                        {"psnr", p.metrics.psnr}, {"lpips", p.metrics.lpips},
                        {"device", p.device},     {"next_sequence", p.next_sequence}}
      .dump();
}

std::optional<Progress> ProgressFromJson(const std::string& s) {
  if (s.empty()) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(s);
    Progress p;
    p.step = j.at("step");
    p.metrics.loss = j.at("loss");
    p.metrics.mse = j.at("mse");
    p.metrics.perceptual = j.at("perceptual");
    p.metrics.psnr = j.at("psnr");
    p.metrics.lpips = j.value("lpips", -1.0);
    p.metrics.steps = p.step;
    p.device = j.at("device");
    p.next_sequence = j.at("next_sequence");
    return p;
  } catch (const std::exception&) {
    return std::nullopt;  // written by another release: shown without progress
  }
}

// The terminal event of a finished job, rebuilt from its stored record.
JobEvent TerminalEventOf(const JobRecord& r, LatentStore* store) {
  JobEvent ev;
  ev.metrics = MetricsFromJson(r.result);
  ev.step = ev.metrics.steps;
  if (r.state == JobState::kSucceeded) {
    ev.kind = JobEvent::Kind::kSucceeded;
    ev.latent_id = r.latent_id;
    // The alignment, if any, lives on with the latent (params_json).
    auto latent = store->GetLatent(r.latent_id, /*with_values=*/false);
    if (latent.ok()) ev.alignment_json = AlignmentOfLatentParams(latent->params_json);
  } else {
    ev.kind =
        r.state == JobState::kCancelled ? JobEvent::Kind::kCancelled : JobEvent::Kind::kFailed;
    ev.status = absl::Status(static_cast<absl::StatusCode>(r.error_code), r.error_message);
  }
  return ev;
}

}  // namespace i2s::scheduler_internal
