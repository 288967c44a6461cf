#include "server/engine/embed_schedule.h"

#include <algorithm>
#include <cmath>

namespace i2s {

const char* EmbedScheduleName(EmbedSchedule schedule) {
  switch (schedule) {
    case EmbedSchedule::kImage2StyleGan:
      return "image2stylegan";
    case EmbedSchedule::kStyleGan2Projector:
      return "stylegan2_projector";
  }
  return "?";
}

double ProjectorLrScale(int step, int steps, double rampup, double rampdown) {
  const double t = steps > 0 ? static_cast<double>(step) / steps : 0;
  double down = rampdown > 0 ? std::min(1.0, (1 - t) / rampdown) : 1.0;
  double scale = 0.5 - 0.5 * std::cos(down * M_PI);
  if (rampup > 0) scale *= std::min(1.0, t / rampup);
  return scale;
}

double ProjectorWNoiseScale(int step, int steps, double factor, double ramp) {
  const double t = steps > 0 ? static_cast<double>(step) / steps : 0;
  const double left = ramp > 0 ? std::max(0.0, 1 - t / ramp) : 0.0;
  return factor * left * left;
}

torch::Tensor NoiseRegularizer(const std::vector<torch::Tensor>& maps) {
  torch::Tensor total;
  for (torch::Tensor v : maps) {
    while (true) {
      torch::Tensor r = (v * torch::roll(v, 1, 3)).mean({1, 2, 3}).square() +
                        (v * torch::roll(v, 1, 2)).mean({1, 2, 3}).square();
      total = total.defined() ? total + r : r;
      if (v.size(2) <= 8) break;
      v = torch::avg_pool2d(v, 2);
    }
  }
  return total;
}

void RenormalizeNoise(torch::Tensor& map) {
  map.sub_(map.mean({1, 2, 3}, true));
  map.mul_(map.square().mean({1, 2, 3}, true).rsqrt());
}

}  // namespace i2s
