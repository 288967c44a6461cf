#include "server/base/metrics.h"

#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace i2s {
namespace {

TEST(MetricsTest, CountersGaugesAndEscaping) {
  MetricsRegistry r;
  auto* rpcs =
      r.AddCounter("i2s_rpc_requests_total", "RPCs by method and code.", {"method", "code"});
  rpcs->Inc({"Embed", "OK"});
  rpcs->Inc({"Embed", "OK"}, 2);
  rpcs->Inc({"Get\"x\\\n", "NOT_FOUND"});
  r.AddGauge("i2s_queue_length", "Jobs waiting.", {}, [] {
    return std::vector<std::pair<MetricsRegistry::Labels, double>>{{{}, 7}};
  });
  r.AddGauge("i2s_ratio", "A fraction.", {"device"}, [] {
    return std::vector<std::pair<MetricsRegistry::Labels, double>>{{{"cpu"}, 0.25}};
  });
  EXPECT_EQ(rpcs->Value({"Embed", "OK"}), 3);
  EXPECT_EQ(r.Render(),
            "# HELP i2s_rpc_requests_total RPCs by method and code.\n"
            "# TYPE i2s_rpc_requests_total counter\n"
            "i2s_rpc_requests_total{method=\"Embed\",code=\"OK\"} 3\n"
            "i2s_rpc_requests_total{method=\"Get\\\"x\\\\\\n\",code=\"NOT_FOUND\"} 1\n"
            "# HELP i2s_queue_length Jobs waiting.\n"
            "# TYPE i2s_queue_length gauge\n"
            "i2s_queue_length 7\n"
            "# HELP i2s_ratio A fraction.\n"
            "# TYPE i2s_ratio gauge\n"
            "i2s_ratio{device=\"cpu\"} 0.25\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  MetricsRegistry r;
  auto* h = r.AddHistogram("i2s_step_seconds", "Step time.", {"device"}, {0.1, 1, 0.01});
  for (double v : {0.005, 0.01, 0.05, 0.5, 5.0}) h->Observe({"cpu"}, v);
  EXPECT_EQ(r.Render(),
            "# HELP i2s_step_seconds Step time.\n"
            "# TYPE i2s_step_seconds histogram\n"
            "i2s_step_seconds_bucket{device=\"cpu\",le=\"0.01\"} 2\n"
            "i2s_step_seconds_bucket{device=\"cpu\",le=\"0.1\"} 3\n"
            "i2s_step_seconds_bucket{device=\"cpu\",le=\"1\"} 4\n"
            "i2s_step_seconds_bucket{device=\"cpu\",le=\"+Inf\"} 5\n"
            "i2s_step_seconds_sum{device=\"cpu\"} 5.5649999999999995\n"
            "i2s_step_seconds_count{device=\"cpu\"} 5\n");
  EXPECT_EQ(MetricsRegistry::ExponentialBuckets(0.001, 10, 3),
            (std::vector<double>{0.001, 0.01, 0.1}));
}

TEST(MetricsTest, LabelSetsAreCappedAndTheRestCountAsOverflow) {
  MetricsRegistry r;
  auto* c = r.AddCounter("c_total", "c.", {"method", "code"});
  auto* h = r.AddHistogram("h_seconds", "h.", {"method"}, {1});
  const int n = static_cast<int>(MetricsRegistry::kMaxSeries) + 500;
  for (int i = 0; i < n; ++i) {
    c->Inc({absl::StrCat("m", i), "OK"});
    h->Observe({absl::StrCat("m", i)}, 0.5);
  }
  c->Inc({"m0", "OK"});  // an existing label set still counts under its own labels
  EXPECT_EQ(c->Value({"m0", "OK"}), 2);
  EXPECT_EQ(c->Value({"overflow", "overflow"}), 500);
  const std::string text = r.Render();
  size_t counter_lines = 0, count_lines = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "c_total{")) ++counter_lines;
    if (absl::StartsWith(line, "h_seconds_count{")) ++count_lines;
  }
  EXPECT_EQ(counter_lines, MetricsRegistry::kMaxSeries + 1);
  EXPECT_EQ(count_lines, MetricsRegistry::kMaxSeries + 1);
  EXPECT_NE(text.find("h_seconds_count{method=\"overflow\"} 500\n"), std::string::npos);
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry r;
  auto* c = r.AddCounter("n_total", "n.");
  auto* h = r.AddHistogram("h_seconds", "h.", {}, {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c->Inc();
        h->Observe({}, 0.5);
        if (i % 1000 == 0) (void)r.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->Value(), 40000);
  EXPECT_NE(r.Render().find("h_seconds_count 40000\n"), std::string::npos);
}

}  // namespace
}  // namespace i2s
