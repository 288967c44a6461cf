// The checks of API requests that need nothing but the request and the server's limits:
// ranges, enum values, sizes, which fields go together. What needs a model (latent
// shapes, layer counts), the store (IDs) or the image bytes is checked where those are
// at hand, in service.cc. Every refusal is InvalidArgument naming the field.
//
// The service runs the matching Check*Request right after authenticating a call, so the
// conversions after it can trust the values. No LibTorch, no gRPC runtime (only the
// protobuf messages): the fuzz build runs these on arbitrary bytes (request_check_fuzz).
#ifndef I2S_SERVER_API_REQUEST_CHECK_H_
#define I2S_SERVER_API_REQUEST_CHECK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "i2s/v1/i2s.pb.h"
#include "server/store/store.h"

namespace i2s {

// The limits these checks apply (ServiceLimits' fields of the same names).
struct RequestLimits {
  int max_steps = 100000;
  int max_morph_frames = 1000;
};

// InvalidArgument "<field>: <problem>".
absl::Status Field(absl::string_view field, absl::string_view problem);

absl::Status CheckRequestId(const std::string& id);  // at most 128 characters
// At most 64 labels; keys of 1-63 characters, values of at most 256.
absl::Status CheckLabels(const google::protobuf::Map<std::string, std::string>& labels);
absl::StatusOr<Page> PageOf(int32_t size, const std::string& token);  // size in [0, 1000]
absl::StatusOr<std::vector<JobState>> JobStatesOf(const google::protobuf::RepeatedField<int>& s);
// format known; jpeg_quality in [0, 100].
absl::Status CheckRenderOptions(const v1::RenderOptions& o, const std::string& field);
// Set fields in range (steps and noise_steps within max_steps, and at least one step in
// all; learning rates in (0, 10]; weights in [0, 1e6], not both 0; ...), enums known,
// init_latent_id exactly with FROM_LATENT.
absl::Status CheckEmbedOptions(const v1::EmbedOptions& o, int max_steps);
// Enums known; landmarks only with LANDMARKS; min_confidence in [0, 1].
absl::Status CheckAlignOptions(const v1::AlignOptions& a, v1::ResizeMode resize);
// A latent_id (not empty) or inline values (finite); which shape is the model's business.
absl::Status CheckLatentRef(const v1::LatentRef& ref, const std::string& field);

absl::Status CheckEmbedRequest(const v1::EmbedRequest& r, const RequestLimits& limits);
absl::Status CheckSynthesizeRequest(const v1::SynthesizeRequest& r);
absl::Status CheckLocalBlendRequest(const v1::LocalBlendRequest& r);
// A direction's name: 1..64 of [A-Za-z0-9_.-].
absl::Status CheckDirectionName(const std::string& name, const std::string& field);
absl::Status CheckImportDirectionRequest(const v1::ImportDirectionRequest& r);
absl::Status CheckComputeDirectionRequest(const v1::ComputeDirectionRequest& r);
absl::Status CheckApplyDirectionsRequest(const v1::ApplyDirectionsRequest& r);
absl::Status CheckDirectionFramesRequest(const v1::DirectionFramesRequest& r,
                                         const RequestLimits& limits);
absl::Status CheckMorphRequest(const v1::MorphRequest& r, const RequestLimits& limits);
absl::Status CheckStyleMixRequest(const v1::StyleMixRequest& r);  // crossover >= 0
// strength in [-100, 100]; layers >= 0 and first <= last when both set.
absl::Status CheckExpressionTransferRequest(const v1::ExpressionTransferRequest& r);
absl::Status CheckImportLatentRequest(const v1::ImportLatentRequest& r);
absl::Status CheckAlignFaceRequest(const v1::AlignFaceRequest& r);  // size 0 or in [8, 1024]
// A photo; 1 to kMaxPasteFaces faces, each a latent, a transform of 0 or 6 finite numbers,
// render options; the paste options (region, blend, feather in [0, 0.5], PNG or JPEG,
// jpeg_quality). `paste_into` of the render RPCs is checked the same way by theirs.
absl::Status CheckPasteBackRequest(const v1::PasteBackRequest& r);
absl::Status CheckListLatentsRequest(const v1::ListLatentsRequest& r);
absl::Status CheckListJobsRequest(const v1::ListJobsRequest& r);
absl::Status CheckWatchJobRequest(const v1::WatchJobRequest& r);  // job_id, after_sequence >= 0

}  // namespace i2s

#endif  // I2S_SERVER_API_REQUEST_CHECK_H_
