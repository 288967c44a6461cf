// libFuzzer target: the request checks of the API (server/api/request_check). The first
// byte picks one of the request messages, the rest is parsed as its protobuf wire bytes
// (what a client sends); the matching Check*Request must return OK or InvalidArgument,
// and what it lets through must hold the ranges that the service's conversions rely on.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/defaults.h"
#include "server/api/request_check.h"

namespace {

using i2s::RequestLimits;

void Expect(bool ok) {
  if (!ok) std::abort();
}

// A refusal must be InvalidArgument with "<field>: <problem>".
void ExpectValidationStatus(const absl::Status& s) {
  if (s.ok()) return;
  Expect(s.code() == absl::StatusCode::kInvalidArgument);
  Expect(s.message().find(": ") != absl::string_view::npos);
}

void ExpectLabelsBounded(const google::protobuf::Map<std::string, std::string>& labels) {
  Expect(labels.size() <= 64);
  for (const auto& [k, v] : labels) Expect(!k.empty() && k.size() <= 63 && v.size() <= 256);
}

void ExpectRefUsable(const i2s::v1::LatentRef& ref) {
  if (ref.has_latent_id()) {
    Expect(!ref.latent_id().empty());
    return;
  }
  Expect(ref.has_values());
  for (float x : ref.values().values()) Expect(std::isfinite(x));
}

template <typename Message>
bool Parse(Message& m, const uint8_t* data, size_t size) {
  return m.ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0] % 14;
  ++data;
  --size;
  const RequestLimits limits{5000, 300};
  namespace v1 = i2s::v1;
  switch (which) {
    case 0: {
      v1::EmbedRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckEmbedRequest(r, limits);
      ExpectValidationStatus(s);
      if (s.ok()) {
        const v1::EmbedOptions& o = r.options();
        const int64_t steps = o.has_steps() ? o.steps() : 1000;
        const int64_t noise = o.has_noise_steps() ? o.noise_steps() : 0;
        Expect(steps >= 0 && noise >= 0 && steps + noise >= 1 && steps + noise <= 5000);
        if (o.has_lr()) Expect(std::isfinite(o.lr()) && o.lr() > 0 && o.lr() <= 10);
        if (o.has_w_mse()) Expect(std::isfinite(o.w_mse()) && o.w_mse() >= 0);
        if (o.has_perceptual_resolution()) {
          Expect(o.perceptual_resolution() >= 8 && o.perceptual_resolution() <= 1024);
        }
        Expect(v1::LatentInit_IsValid(o.init()) && v1::LatentSpace_IsValid(o.space()));
        Expect(r.preview_every() >= 0 && r.request_id().size() <= 128);
        Expect(std::isfinite(r.align().min_confidence()));
        ExpectLabelsBounded(r.labels());
      }
      break;
    }
    case 1: {
      v1::SynthesizeRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckSynthesizeRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        ExpectRefUsable(r.latent());
        Expect(r.render().jpeg_quality() >= 0 && r.render().jpeg_quality() <= 100);
      }
      break;
    }
    case 2: {
      v1::MorphRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckMorphRequest(r, limits);
      ExpectValidationStatus(s);
      if (s.ok()) {
        const int frames = r.frames() == 0 ? i2s::defaults::kMorphFrames : r.frames();
        Expect(frames >= 2 && frames <= 300);
        ExpectRefUsable(r.a());
        ExpectRefUsable(r.b());
      }
      break;
    }
    case 3: {
      v1::StyleMixRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckStyleMixRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        Expect(r.crossover() >= 0);
        ExpectLabelsBounded(r.labels());
      }
      break;
    }
    case 4: {
      v1::ExpressionTransferRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckExpressionTransferRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        Expect(std::isfinite(r.strength()) && std::abs(r.strength()) <= 100);
        Expect(r.first_layer() >= 0);
        if (r.has_last_layer()) Expect(r.last_layer() >= r.first_layer());
      }
      break;
    }
    case 5: {
      v1::ImportLatentRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckImportLatentRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) Expect(!r.npy().empty());
      break;
    }
    case 6: {
      v1::AlignFaceRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckAlignFaceRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) Expect(r.size() == 0 || (r.size() >= 8 && r.size() <= 1024));
      break;
    }
    case 7: {
      v1::ListLatentsRequest r;
      if (!Parse(r, data, size)) return 0;
      ExpectValidationStatus(i2s::CheckListLatentsRequest(r));
      break;
    }
    case 8: {
      v1::ListJobsRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckListJobsRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        auto states = i2s::JobStatesOf(r.states());
        Expect(states.ok());
        auto page = i2s::PageOf(r.page_size(), r.page_token());
        Expect(page.ok() && page->page_size >= 1 && page->page_size <= 1000);
      }
      break;
    }
    case 9: {
      v1::LocalBlendRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckLocalBlendRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        Expect(!r.mask().empty() && r.start_layer() >= 0);
        Expect(!r.has_feather() || r.feather() >= 0);
        ExpectRefUsable(r.base());
        ExpectRefUsable(r.source());
      }
      break;
    }
    case 10: {
      v1::ImportDirectionRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckImportDirectionRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        Expect(!r.file().empty() && !r.name().empty() && r.name().size() <= 64);
        for (int c : r.components()) Expect(c >= 0);
      }
      break;
    }
    case 11: {
      v1::ComputeDirectionRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckComputeDirectionRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        Expect(r.from_latents_size() >= 1 && r.to_latents_size() >= 1);
        for (const auto& ref : r.from_latents()) ExpectRefUsable(ref);
        for (const auto& ref : r.to_latents()) ExpectRefUsable(ref);
      }
      break;
    }
    case 12: {
      v1::ApplyDirectionsRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckApplyDirectionsRequest(r);
      ExpectValidationStatus(s);
      if (s.ok()) {
        Expect(r.steps_size() >= 1 && r.steps_size() <= i2s::defaults::kMaxDirectionSteps);
        for (const auto& step : r.steps()) {
          Expect(std::isfinite(step.alpha()) &&
                 std::abs(step.alpha()) <= i2s::defaults::kMaxDirectionAlpha);
        }
        Expect(r.first_layer() >= 0);
        if (r.has_last_layer()) Expect(r.last_layer() >= r.first_layer());
        ExpectRefUsable(r.latent());
        ExpectLabelsBounded(r.labels());
      }
      break;
    }
    case 13: {
      v1::DirectionFramesRequest r;
      if (!Parse(r, data, size)) return 0;
      const absl::Status s = i2s::CheckDirectionFramesRequest(r, limits);
      ExpectValidationStatus(s);
      if (s.ok()) {
        Expect(r.alphas_size() >= 1 && r.alphas_size() <= 300);
        for (double a : r.alphas()) Expect(std::isfinite(a));
        ExpectRefUsable(r.latent());
      }
      break;
    }
  }
  return 0;
}
