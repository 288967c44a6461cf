// A small Prometheus metrics registry: counters, histograms and callback gauges with
// labels, rendered in the text exposition format (version 0.0.4) that Prometheus scrapes.
// Names and labels follow Prometheus conventions (snake_case, base units: seconds, bytes;
// counters end in _total). Abseil only.
//
// Thread-safe: metrics may be updated from any thread while another renders.
#ifndef I2S_SERVER_BASE_METRICS_H_
#define I2S_SERVER_BASE_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace i2s {

class MetricsRegistry {
 public:
  // Label values, in the order of the family's label names.
  using Labels = std::vector<std::string>;

  // At most this many label sets per counter or histogram. Past it, a new label set is
  // counted under "overflow" in every label, so no label source (a bug, or values a caller
  // chooses) can grow a scrape without bound: a family renders at most kMaxSeries + 1
  // series.
  static constexpr size_t kMaxSeries = 1024;

  class Counter {
   public:
    void Inc(const Labels& labels = {}, double by = 1);
    double Value(const Labels& labels = {}) const;

   private:
    friend class MetricsRegistry;
    mutable std::mutex mu_;
    std::map<Labels, double> values_;
  };

  class Histogram {
   public:
    void Observe(const Labels& labels, double value);

   private:
    friend class MetricsRegistry;
    struct Series {
      std::vector<uint64_t> buckets;  // per upper bound, not cumulative
      uint64_t count = 0;
      double sum = 0;
    };
    explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {}
    const std::vector<double> bounds_;  // ascending upper bounds; +Inf is implicit
    mutable std::mutex mu_;
    std::map<Labels, Series> series_;
  };

  // Called on every scrape; returns (label values, value) pairs.
  using GaugeFn = std::function<std::vector<std::pair<Labels, double>>()>;

  // The registry owns the metrics; the pointers live as long as it does.
  Counter* AddCounter(const std::string& name, const std::string& help,
                      std::vector<std::string> label_names = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names, std::vector<double> bounds);
  void AddGauge(const std::string& name, const std::string& help,
                std::vector<std::string> label_names, GaugeFn fn);

  // Every family, in the order added.
  std::string Render() const;

  // Powers of `factor` from `start`, `count` bounds (histogram buckets).
  static std::vector<double> ExponentialBuckets(double start, double factor, int count);

 private:
  struct Family {
    std::string name, help, type;
    std::vector<std::string> label_names;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Histogram> histogram;
    GaugeFn gauge;
  };
  mutable std::mutex mu_;  // guards families_ (the list, not the values)
  std::vector<std::unique_ptr<Family>> families_;
};

}  // namespace i2s

#endif  // I2S_SERVER_BASE_METRICS_H_
