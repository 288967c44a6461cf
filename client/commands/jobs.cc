#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands/commands.h"
#include "client/files.h"
#include "client/follower.h"
#include "client/output.h"

namespace i2s::client::cli {
namespace {

// `jobs ls / get / watch / cancel`.
class JobsCommands : public CommandGroup {
 public:
  JobsCommands(Context& ctx, EmbedCommand& embed_command)
      : CommandGroup(ctx), embed_command_(embed_command) {}
  void Add(CLI::App& app);

 private:
  int JobsList();
  int JobsGet();
  int JobsWatch();
  int JobsCancel();

  EmbedCommand& embed_command_;
  std::vector<std::string> job_ids_;
  std::vector<std::string> job_states_;
  int limit_ = 20;
  bool all_tenants_ = false;
  std::string job_id_;
  EmbedFlags embed_;  // watch: --save-recon, --force
};

absl::StatusOr<v1::JobState> ParseState(const std::string& name) {
  v1::JobState state;
  if (!v1::JobState_Parse(absl::AsciiStrToUpper(name), &state)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown job state ", name));
  }
  return state;
}

void JobsCommands::Add(CLI::App& app) {
  CLI::App* jobs = app.add_subcommand("jobs", "list, inspect, follow and cancel embedding jobs");
  jobs->require_subcommand(1);
  CLI::App* ls = jobs->add_subcommand("ls", "list jobs, newest first");
  ls->alias("list");
  ls->add_option("--state", job_states_,
                 "only jobs in these states (queued, running, succeeded, failed, cancelled)")
      ->check(CLI::IsMember({"queued", "running", "succeeded", "failed", "cancelled"},
                            CLI::ignore_case));
  ls->add_option("-n,--limit", limit_, "at most this many (0 = all)")->capture_default_str();
  ls->add_flag("--all-tenants", all_tenants_, "every tenant's, not only yours (admin token)");
  On(ls, [this] { return JobsList(); });
  CLI::App* get = jobs->add_subcommand("get", "show one job");
  get->add_option("job", job_id_, "job ID")->required();
  On(get, [this] { return JobsGet(); });
  CLI::App* watch = jobs->add_subcommand(
      "watch", "follow jobs with live progress until they end (replays what happened)");
  watch->add_option("jobs", job_ids_, "job IDs")->required();
  watch->add_option("--save-recon", embed_.save_recon,
                    "write each finished job's reconstruction (file or directory)");
  watch->add_flag("-f,--force", embed_.force, "overwrite existing reconstruction files");
  On(watch, [this] { return JobsWatch(); });
  CLI::App* cancel = jobs->add_subcommand("cancel", "cancel queued or running jobs");
  cancel->add_option("jobs", job_ids_, "job IDs")->required();
  On(cancel, [this] { return JobsCancel(); });
}

int JobsCommands::JobsList() {
  std::vector<v1::JobState> states;
  for (const std::string& s : job_states_) states.push_back(*ParseState(s));
  auto jobs = client().ListJobs(states, limit_, all_tenants_);
  if (!jobs.ok()) return Fail("cannot list jobs", jobs.status());
  if (g_.json) {
    for (const auto& job : *jobs) Emit(ProtoJson(job));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& job : *jobs) {
    rows.push_back(
        {job.id(), StateName(job.state()), job.model(),
         absl::StrCat(job.step(), "/", job.total_steps()),
         job.metrics().psnr_db() > 0 ? absl::StrFormat("%.2f", job.metrics().psnr_db()) : "-",
         job.latent_id().empty() ? "-" : job.latent_id(), FormatTime(job.created_unix_ms())});
  }
  PrintTable({"JOB", "STATE", "MODEL", "STEP", "PSNR", "LATENT", "CREATED"}, rows);
  return kExitOk;
}

int JobsCommands::JobsGet() {
  auto job = client().GetJob(job_id_);
  if (!job.ok()) return Fail(absl::StrCat("cannot show job ", job_id_), job.status());
  if (g_.json) {
    Emit(ProtoJson(*job));
    return kExitOk;
  }
  std::string took;
  if (job->finished_unix_ms() > 0 && job->started_unix_ms() > 0) {
    took = absl::StrCat(
        " (ran ", FormatDuration((job->finished_unix_ms() - job->started_unix_ms()) / 1e3), ")");
  }
  PrintFields({
      {"job", job->id()},
      {"state", StateName(job->state())},
      {"queue position", job->queue_position() > 0 ? std::to_string(job->queue_position()) : ""},
      {"model", job->model()},
      {"device", job->device()},
      {"step", absl::StrCat(job->step(), "/", job->total_steps())},
      {"loss", job->step() > 0 ? absl::StrFormat("%.5f", job->metrics().loss()) : ""},
      {"psnr", job->step() > 0 ? absl::StrFormat("%.2f dB", job->metrics().psnr_db()) : ""},
      {"latent", job->latent_id()},
      {"error", job->error_message()},
      {"request id", job->request_id()},
      {"created", FormatTime(job->created_unix_ms())},
      {"started", job->started_unix_ms() > 0 ? FormatTime(job->started_unix_ms()) : ""},
      {"finished", job->finished_unix_ms() > 0 ? FormatTime(job->finished_unix_ms()) + took : ""},
  });
  return kExitOk;
}

int JobsCommands::JobsWatch() {
  const int n = static_cast<int>(job_ids_.size());
  const std::string ext = Extension(embed_.save_recon);
  if (n > 1 && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
    return Fail("--save-recon",
                absl::InvalidArgumentError(absl::StrCat(
                    "with ", n, " jobs this must be a directory, not ", embed_.save_recon)),
                kExitUsage);
  }
  Follower follower(client(), g_, FollowOptions{});
  for (const std::string& id : job_ids_) follower.Add(id, id, client().WatchJob(id, 0));
  return embed_command_.FollowAndReport(follower, /*embed=*/false, &embed_);
}

int JobsCommands::JobsCancel() {
  int code = kExitOk;
  for (const std::string& id : job_ids_) {
    auto job = client().CancelJob(id);
    if (!job.ok()) {
      const int c = Fail(absl::StrCat("cannot cancel job ", id), job.status());
      if (code == kExitOk) code = c;
      continue;
    }
    if (g_.json) {
      Emit(ProtoJson(*job));
    } else {
      std::cout << id << "  " << StateName(job->state()) << "\n";
    }
  }
  std::cout.flush();
  return code;
}

}  // namespace

std::unique_ptr<CommandGroup> AddJobsCommands(CLI::App& app, Context& ctx, EmbedCommand& embed) {
  auto group = std::make_unique<JobsCommands>(ctx, embed);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
