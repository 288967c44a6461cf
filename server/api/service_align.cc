// The Service's AlignFace: a photo prepared as an Embed would prepare it (decoded, fitted
// or aligned to the FFHQ crop), returned with what was done, without a job.
#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/service.h"
#include "server/api/status.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"

namespace i2s {

grpc::ServerUnaryReactor* Service::AlignFace(CallbackServerContext* ctx,
                                             const v1::AlignFaceRequest* req,
                                             v1::AlignFaceResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  absl::Status bad = CheckAlignFaceRequest(*req);
  if (bad.ok()) bad = CheckImageLimits(req->image(), impl_->decode_limits(), "image").status();
  if (!bad.ok()) return Done(ctx, bad);
  // Decoding and alignment on the WorkPool; this gRPC thread goes back to gRPC now.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto run = [this, req, resp]() -> absl::Status {
    int size = req->size();
    if (size == 0) {
      auto found = impl_->registry->Find(req->model());
      if (!found.ok()) return Annotate(found.status(), "model");
      size = (*found)->resolution;
    }
    ASSIGN_OR_RETURN(PrepareOptions prepare, PrepareOptionsOf(req->align(), req->resize(), size));
    ASSIGN_OR_RETURN(torch::Tensor image,
                     DecodeRgbImage(req->image(), impl_->decode_limits(), "image"));
    ASSIGN_OR_RETURN(PreparedImage prepared,
                     PrepareImage(image, prepare, impl_->face_detector, "align"));
    v1::Alignment* out = resp->mutable_alignment();
    ToProto(*prepared.alignment, out);
    for (const FaceDetection& face : prepared.faces) ToProto(face, resp->add_faces());
    ASSIGN_OR_RETURN(std::string png,
                     EncodeRgb8(UnitImageToRgb8(prepared.image), EncodeFormat::kPng));
    SetPng(png, size, out->mutable_aligned());
    return absl::OkStatus();
  };
  absl::Status queued = impl_->image_pool->Submit(caller->tenant, [ctx, reactor, run] {
    reactor->Finish(
        ToGrpcStatus(ctx->IsCancelled()
                         ? absl::CancelledError("the call was cancelled before its image was read")
                         : run()));
  });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

}  // namespace i2s
