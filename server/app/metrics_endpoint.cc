#include "server/app/metrics_endpoint.h"

#include <unistd.h>

#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/app/listener.h"
#include "server/base/log.h"
#include "server/base/token_file.h"

namespace i2s {
namespace {

// The bearer token of /metrics: the file's first line, trimmed, under the API's rule for
// tokens (CheckToken).
absl::StatusOr<std::string> ReadMetricsToken(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-token-file ", path, ": cannot read"));
  }
  const std::string token(absl::StripAsciiWhitespace(line));
  if (absl::Status ok = CheckToken(token); !ok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-token-file ", path, ": first line: ", ok.message()));
  }
  return token;
}

// Resident memory of this process (from /proc/self/statm).
double ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

}  // namespace

void AddProcessGauges(const std::string& version, MetricsRegistry* metrics) {
  using Series = std::vector<std::pair<MetricsRegistry::Labels, double>>;
  metrics->AddGauge("i2s_build_info", "Version of this server (always 1).", {"version"}, [version] {
    return Series{{{version}, 1}};
  });
  metrics->AddGauge("i2s_process_resident_memory_bytes", "Resident memory of the server process.",
                    {}, [] {
                      return Series{{{}, ResidentBytes()}};
                    });
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartMetricsEndpoint(const Flags& f,
                                                                        MetricsRegistry* metrics) {
  if (f.metrics_address.empty()) return nullptr;
  std::string token;
  if (!f.metrics_token_file.empty()) {
    auto read = ReadMetricsToken(f.metrics_token_file);
    if (!read.ok()) return read.status();
    token = *std::move(read);
  }
  auto started = MetricsHttpServer::Start(f.metrics_address, metrics, token);
  if (!started.ok()) return started.status();
  const std::string host = f.metrics_address.substr(0, f.metrics_address.rfind(':'));
  LogNote(absl::StrCat("metrics on http://", host.empty() ? "0.0.0.0" : host, ":",
                       (*started)->port(), "/metrics"));
  if (!f.metrics_port_file.empty()) WritePortFile(f.metrics_port_file, (*started)->port());
  return started;
}

}  // namespace i2s
