// Translation between the proto (i2s.v1) and the domain types of the layers below: jobs
// and their events, latents, alignments, images, models, usage and limits one way;
// options (embedding, alignment, rendering) the other. The requests are checked first
// (request_check.h), so these trust the values; what needs a model, the store or the
// caller is the handlers' business. No gRPC runtime (only the protobuf messages).
#ifndef I2S_SERVER_API_CONVERT_H_
#define I2S_SERVER_API_CONVERT_H_

#include <google/protobuf/map.h>
#include <google/protobuf/message.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "i2s/v1/i2s.pb.h"
#include "server/api/service_limits.h"
#include "server/engine/embed_options.h"
#include "server/imaging/prepare.h"
#include "server/jobs/job.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"
#include "server/latents/render.h"
#include "server/store/store.h"

namespace i2s {

// AIP-155: the same request_id with the same request is a repeat; the hash covers the
// whole request, serialised deterministically (map order fixed).
std::string RequestHash(const google::protobuf::Message& m);

std::map<std::string, std::string> LabelsOf(
    const google::protobuf::Map<std::string, std::string>& labels);

// EmbedOptions (checked by CheckEmbedOptions): the schedule's defaults, with the fields
// that are set. init FROM_LATENT becomes LatentInit::kGiven; the caller resolves the latent.
absl::StatusOr<EmbedOptions> EmbedOptionsOf(const v1::EmbedOptions& o);

// A request's AlignOptions (and resize) -> PrepareOptions for a target of `size`
// (CheckAlignOptions first).
absl::StatusOr<PrepareOptions> PrepareOptionsOf(const v1::AlignOptions& a, v1::ResizeMode resize,
                                                int size);

// RenderOptions -> how to pick the noise and encode (JPEG quality 0: 90).
RenderSettings RenderSettingsOf(const v1::RenderOptions& o);

void ToProto(const LatentMetrics& m, v1::EmbedMetrics* out);
void ToProto(const AlignmentInfo& a, v1::Alignment* out);
void ToProto(const FaceDetection& d, v1::DetectedFace* out);
void ToProto(const LatentRecord& r, v1::Latent* out);  // values only if `r` has them
void ToProto(const JobView& v, v1::Job* out);
// `resolution`: the size of the job's preview and result pictures.
void ToProto(const JobEvent& e, int resolution, v1::JobEvent* out);
void ToProto(const EncodedImage& image, v1::Image* out);
void ToProto(const ModelInfo& m, v1::ModelInfo* out);
void ToProto(const TenantUsage& u, v1::TenantUsage* out);
// Values only if `r` has them; Direction.norm is the caller's (it needs the values).
void ToProto(const DirectionRecord& r, v1::Direction* out);
// The quotas and retention in force (the store's and the scheduler's).
void ToProto(const StorageQuota& q, const SchedulerOptions& s, v1::Quotas* out);
// The limits in force, except the quotas.
void ToProto(const ServiceLimits& l, const SchedulerOptions& s, v1::Limits* out);
// A PNG of `size` x `size` pixels.
void SetPng(const std::string& png, int size, v1::Image* out);

}  // namespace i2s

#endif  // I2S_SERVER_API_CONVERT_H_
