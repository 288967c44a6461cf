#include "server/base/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace i2s {
namespace {

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::abs(v) < 9.007199254740992e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  // The shortest of %.15g / %.17g that reads back as the same double.
  std::string text = absl::StrFormat("%.15g", v);
  if (std::strtod(text.c_str(), nullptr) != v) text = absl::StrFormat("%.17g", v);
  return text;
}

// label="value" pairs; values escape backslash, double quote and newline.
std::string LabelText(const std::vector<std::string>& names, const MetricsRegistry::Labels& values,
                      const std::string& extra = "") {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (!out.empty()) out += ",";
    absl::StrAppend(&out, names[i], "=\"");
    for (char c : values[i]) {
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '"') {
        out += "\\\"";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += c;
      }
    }
    out += "\"";
  }
  if (!extra.empty()) absl::StrAppend(&out, out.empty() ? "" : ",", extra);
  return out.empty() ? "" : absl::StrCat("{", out, "}");
}

}  // namespace

void MetricsRegistry::Counter::Inc(const Labels& labels, double by) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(labels);
  if (it == values_.end() && values_.size() >= kMaxSeries) {
    values_[Labels(labels.size(), "overflow")] += by;
    return;
  }
  values_[labels] += by;
}

double MetricsRegistry::Counter::Value(const Labels& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void MetricsRegistry::Histogram::Observe(const Labels& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  const bool full = series_.size() >= kMaxSeries && series_.find(labels) == series_.end();
  Series& s = series_[full ? Labels(labels.size(), "overflow") : labels];
  if (s.buckets.empty()) s.buckets.assign(bounds_.size(), 0);
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);  // first >= value
  if (it != bounds_.end()) ++s.buckets[it - bounds_.begin()];
  ++s.count;
  s.sum += value;
}

MetricsRegistry::Counter* MetricsRegistry::AddCounter(const std::string& name,
                                                      const std::string& help,
                                                      std::vector<std::string> label_names) {
  auto f = std::make_unique<Family>();
  f->name = name;
  f->help = help;
  f->type = "counter";
  f->label_names = std::move(label_names);
  f->counter.reset(new Counter());
  Counter* c = f->counter.get();
  std::lock_guard<std::mutex> lock(mu_);
  families_.push_back(std::move(f));
  return c;
}

MetricsRegistry::Histogram* MetricsRegistry::AddHistogram(const std::string& name,
                                                          const std::string& help,
                                                          std::vector<std::string> label_names,
                                                          std::vector<double> bounds) {
  std::sort(bounds.begin(), bounds.end());
  auto f = std::make_unique<Family>();
  f->name = name;
  f->help = help;
  f->type = "histogram";
  f->label_names = std::move(label_names);
  f->histogram.reset(new Histogram(std::move(bounds)));
  Histogram* h = f->histogram.get();
  std::lock_guard<std::mutex> lock(mu_);
  families_.push_back(std::move(f));
  return h;
}

void MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                               std::vector<std::string> label_names, GaugeFn fn) {
  auto f = std::make_unique<Family>();
  f->name = name;
  f->help = help;
  f->type = "gauge";
  f->label_names = std::move(label_names);
  f->gauge = std::move(fn);
  std::lock_guard<std::mutex> lock(mu_);
  families_.push_back(std::move(f));
}

std::vector<double> MetricsRegistry::ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  for (int i = 0; i < count; ++i, start *= factor) out.push_back(start);
  return out;
}

std::string MetricsRegistry::Render() const {
  std::vector<const Family*> families;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& f : families_) families.push_back(f.get());
  }
  std::string out;
  for (const Family* f : families) {
    absl::StrAppend(&out, "# HELP ", f->name, " ", f->help, "\n# TYPE ", f->name, " ", f->type,
                    "\n");
    if (f->counter) {
      std::lock_guard<std::mutex> lock(f->counter->mu_);
      for (const auto& [labels, v] : f->counter->values_) {
        absl::StrAppend(&out, f->name, LabelText(f->label_names, labels), " ", Number(v), "\n");
      }
    } else if (f->histogram) {
      const Histogram& h = *f->histogram;
      std::lock_guard<std::mutex> lock(h.mu_);
      for (const auto& [labels, s] : h.series_) {
        uint64_t cumulative = 0;
        for (size_t i = 0; i < h.bounds_.size(); ++i) {
          cumulative += s.buckets[i];
          absl::StrAppend(
              &out, f->name, "_bucket",
              LabelText(f->label_names, labels, absl::StrCat("le=\"", Number(h.bounds_[i]), "\"")),
              " ", cumulative, "\n");
        }
        absl::StrAppend(&out, f->name, "_bucket", LabelText(f->label_names, labels, "le=\"+Inf\""),
                        " ", s.count, "\n");
        absl::StrAppend(&out, f->name, "_sum", LabelText(f->label_names, labels), " ",
                        Number(s.sum), "\n");
        absl::StrAppend(&out, f->name, "_count", LabelText(f->label_names, labels), " ", s.count,
                        "\n");
      }
    } else if (f->gauge) {
      for (const auto& [labels, v] : f->gauge()) {
        absl::StrAppend(&out, f->name, LabelText(f->label_names, labels), " ", Number(v), "\n");
      }
    }
  }
  return out;
}

}  // namespace i2s
