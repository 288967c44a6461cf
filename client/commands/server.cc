#include <cstdint>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands/commands.h"
#include "client/output.h"

namespace i2s::client::cli {
namespace {

// What the server says about itself: `info`, `usage`, `health`.
class ServerCommands : public CommandGroup {
 public:
  explicit ServerCommands(Context& ctx) : CommandGroup(ctx) {}
  void Add(CLI::App& app);

 private:
  int Info();
  int Usage();
  int Health();

  std::string usage_tenant_;
  bool all_tenants_ = false;
  std::string health_service_;
};

void ServerCommands::Add(CLI::App& app) {
  On(app.add_subcommand("info", "server version, models, devices, limits and queue"),
     [this] { return Info(); });
  {
    CLI::App* cmd = app.add_subcommand(
        "usage", "what a tenant keeps on the server (latents, jobs, request IDs) and its quotas");
    cmd->add_option("--tenant", usage_tenant_, "another tenant's (admin tokens only)");
    cmd->add_flag("--all-tenants", all_tenants_, "every tenant's (admin tokens only)");
    On(cmd, [this] { return Usage(); });
  }
  CLI::App* health =
      app.add_subcommand("health", "is the server serving? (exit 0 yes, 3 no or unreachable)");
  health->add_option("--service", health_service_, "a service name (default: the whole server)");
  On(health, [this] { return Health(); });
}

int ServerCommands::Info() {
  auto info = client().GetServerInfo();
  if (!info.ok()) return Fail("", info.status());
  if (g_.json) {
    Emit(ProtoJson(*info));
    return kExitOk;
  }
  const auto& l = info->limits();
  PrintFields({
      {"server", absl::StrCat(g_.server, " (i2s_server ", info->version(), ")")},
      {"caller", !info->auth_required() ? std::string("no authentication (one tenant)")
                                        : absl::StrCat("tenant \"", info->caller_tenant(), "\"",
                                                       info->caller_admin() ? " (admin)" : "")},
      {"devices", absl::StrJoin(info->devices(), ", ")},
      {"jobs", absl::StrCat(info->running_jobs(), " running, ", info->queued_jobs(),
                            " queued (queue limit ", l.queue_limit(), ", batch up to ",
                            l.max_batch(), ")")},
      {"limits",
       absl::StrCat("images up to ", l.max_image_bytes() >> 20, " MiB and ", l.max_image_pixels(),
                    " pixels; up to ", l.max_steps(), " steps; up to ", l.max_morph_frames(),
                    " morph frames; messages up to ", l.max_message_bytes() >> 20, " MiB")},
      {"lpips", info->has_lpips() ? "yes (loss term, stylegan2-projector, reported metric)"
                                  : "no (the server has no --lpips)"},
  });
  std::cout << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : info->models()) {
    std::string notes;
    if (m.is_default()) notes = "default";
    if (m.is_demo()) notes += notes.empty() ? "demo (random weights)" : ", demo (random weights)";
    std::vector<std::string> channels;
    for (int32_t c : m.channels()) channels.push_back(absl::StrCat(c));
    std::string config =
        absl::StrCat(m.mapping_layers(), " mapping, channels ", absl::StrJoin(channels, "/"), ", ",
                     m.num_noise_maps(), " noise maps");
    if (m.conv_clamp() > 0) absl::StrAppend(&config, ", conv_clamp ", m.conv_clamp());
    if (m.has_file_mean_w()) absl::StrAppend(&config, ", mean w from the file");
    rows.push_back({m.name(), m.architecture(), absl::StrCat(m.resolution(), "x", m.resolution()),
                    absl::StrCat(m.num_layers(), "x", m.latent_size()),
                    m.fingerprint().substr(0, 19), config, notes});
  }
  PrintTable({"MODEL", "ARCH", "RESOLUTION", "W+", "FINGERPRINT", "CONFIGURATION", ""}, rows);
  return kExitOk;
}

int ServerCommands::Usage() {
  pb::GetUsageRequest request;
  request.set_tenant(usage_tenant_);
  request.set_all_tenants(all_tenants_);
  auto usage = client().GetUsage(request);
  if (!usage.ok()) return Fail("", usage.status());
  if (g_.json) {
    Emit(ProtoJson(*usage));
    return kExitOk;
  }
  const pb::Quotas& q = usage->quotas();
  // "used / limit", or just "used" where there is no limit (0).
  const auto of = [](int64_t used, int64_t limit) {
    return limit > 0 ? absl::StrCat(used, " / ", limit) : absl::StrCat(used);
  };
  std::vector<std::vector<std::string>> rows;
  for (const pb::TenantUsage& u : usage->usage()) {
    rows.push_back({u.tenant().empty() ? "\"\"" : u.tenant(),
                    of(u.latents() + u.unfinished_jobs(), q.max_latents()),
                    of(u.latent_bytes(), q.max_latent_bytes()), of(u.jobs(), q.max_jobs()),
                    absl::StrCat(u.unfinished_jobs()), of(u.job_bytes(), q.max_job_bytes()),
                    absl::StrCat(u.request_ids())});
  }
  PrintTable({"TENANT", "LATENTS+RESERVED", "LATENT BYTES", "JOBS", "UNFINISHED", "JOB BYTES",
              "REQUEST IDS"},
             rows);
  const auto hours = [](double seconds) {
    return seconds > 0 ? absl::StrCat(seconds / 3600, " h") : std::string("kept");
  };
  std::cout << "\nfinished jobs expire after " << hours(q.job_retention_seconds())
            << "; request IDs after " << hours(q.request_id_retention_seconds()) << "\n";
  return kExitOk;
}

int ServerCommands::Health() {
  auto health = client().CheckHealth(health_service_);
  if (!health.ok()) return Fail("", health.status());
  const bool serving = *health == client::Health::kServing;
  const char* word = serving                                  ? "SERVING"
                     : *health == client::Health::kNotServing ? "NOT_SERVING"
                                                              : "UNKNOWN";
  if (g_.json) {
    Emit({{"server", g_.server}, {"status", word}});
  } else {
    std::cout << g_.server << "  " << word << "\n";
  }
  if (!serving) {
    std::fprintf(stderr, "i2s_client: the server at %s answers but is not serving (%s)%s\n",
                 g_.server.c_str(), word,
                 *health == client::Health::kNotServing ? "; it may be shutting down" : "");
  }
  return serving ? kExitOk : kExitUnreachable;
}

}  // namespace

std::unique_ptr<CommandGroup> AddServerCommands(CLI::App& app, Context& ctx) {
  auto group = std::make_unique<ServerCommands>(ctx);
  group->Add(app);
  return group;
}

}  // namespace i2s::client::cli
