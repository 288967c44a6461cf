// The Service's job RPCs: Embed (a job from a photo), WatchJob, GetJob, ListJobs,
// CancelJob.
#include <utility>

#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/embed_masks.h"
#include "server/api/error_writer.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/service.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"
#include "server/jobs/job.h"

namespace i2s {

absl::StatusOr<std::pair<std::string, const ModelInfo*>> Service::SubmitEmbed(
    const Caller& caller, const v1::EmbedRequest& req) {
  if (!accepting_) return absl::UnavailableError("the server is shutting down");
  auto found = impl_->registry->Find(req.model());
  if (!found.ok()) return Annotate(found.status(), "model");
  const ModelInfo* model = *found;
  EmbedJobSpec spec;
  spec.model = model->name;
  spec.seed = req.seed();
  for (const auto& [k, v] : req.labels()) spec.labels[k] = v;
  spec.preview_every = req.preview_every();
  spec.return_reconstruction = req.return_reconstruction();
  ASSIGN_OR_RETURN(PrepareOptions prepare,
                   PrepareOptionsOf(req.align(), req.resize(), model->resolution));
  spec.return_aligned_image = req.return_aligned_image();
  ASSIGN_OR_RETURN(spec.options, EmbedOptionsOf(req.options()));
  if (spec.options.w_lpips > 0 && !impl_->registry->has_lpips()) {
    return absl::FailedPreconditionError(
        "options.w_lpips: this server has no LPIPS (start it with --lpips; "
        "ServerInfo.has_lpips)");
  }
  if (spec.options.init == LatentInit::kGiven) {
    v1::LatentRef ref;
    ref.set_latent_id(req.options().init_latent_id());
    ASSIGN_OR_RETURN(LatentInput r,
                     impl_->Resolve(caller, ref, *model, "options.init_latent_id", 0));
    spec.init_latent = r.w;
  }

  // The size limits were checked from the header by Embed; decoding and alignment run
  // here, on a WorkPool thread (--max-concurrent-images of them bound the memory).
  ASSIGN_OR_RETURN(torch::Tensor image,
                   DecodeRgbImage(req.image(), impl_->decode_limits(), "image"));
  ASSIGN_OR_RETURN(EmbedMasks masks,
                   DecodeEmbedMasks(req, impl_->decode_limits(), static_cast<int>(image.size(2)),
                                    static_cast<int>(image.size(1)), model->resolution));
  prepare.keep = masks.PhotoKeep();
  // Alignment: a face detection, then a resampling: 50 ms for a 512x512 photo, 0.4 s at
  // 2048x2048 (docs/PERFORMANCE.md).
  ASSIGN_OR_RETURN(PreparedImage prepared,
                   PrepareImage(image, prepare, impl_->face_detector, "align"));
  image = torch::Tensor();
  prepare.keep = torch::Tensor();
  spec.image = prepared.image.contiguous();
  if (prepared.alignment) spec.alignment_json = AlignmentInfoToJson(*prepared.alignment);
  RETURN_IF_ERROR(ApplyEmbedMasks(masks, prepared, &spec));
  const std::string hash = req.request_id().empty() ? "" : RequestHash(req);
  ASSIGN_OR_RETURN(
      Scheduler::Submission sub,
      impl_->scheduler->Submit(std::move(spec), req.request_id(), hash, caller.tenant));
  return std::make_pair(sub.job_id, model);
}

grpc::ServerWriteReactor<v1::JobEvent>* Service::Embed(CallbackServerContext* ctx,
                                                       const v1::EmbedRequest* req) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return new ErrorWriter<v1::JobEvent>(caller.status());
  auto lease = impl_->streams.Acquire(caller->tenant);
  if (!lease.ok()) return new ErrorWriter<v1::JobEvent>(lease.status());
  if (!accepting_) {
    return new ErrorWriter<v1::JobEvent>(absl::UnavailableError("the server is shutting down"));
  }
  // What needs only the request is checked here, at once; the rest on the pool.
  const ServiceLimits& lim = impl_->limits;
  absl::Status bad = CheckEmbedRequest(*req, {lim.max_steps, lim.max_morph_frames});
  if (bad.ok()) bad = CheckImageLimits(req->image(), impl_->decode_limits(), "image").status();
  for (const auto& [bytes, field] :
       {std::pair{&req->mask(), "mask"}, std::pair{&req->perceptual_mask(), "perceptual_mask"}}) {
    if (bad.ok() && !bytes->empty()) {
      bad = CheckImageLimits(*bytes, impl_->decode_limits(), field).status();
    }
  }
  if (!bad.ok()) return new ErrorWriter<v1::JobEvent>(bad);
  // The stream is pending until the pool's task has made the job; this gRPC thread goes
  // back to gRPC now. The request lives until the reactor's OnDone, after the task.
  auto* reactor = new EventStreamReactor(&impl_->heartbeats, impl_->scheduler,
                                         req->cancel_on_disconnect(), *std::move(lease));
  absl::Status queued =
      impl_->image_pool->Submit(caller->tenant, [this, ctx, req, reactor, caller = *caller] {
        if (ctx->IsCancelled()) {  // the caller left while it waited: nothing to do
          reactor->Fail(absl::CancelledError("the call was cancelled before its image was read"));
          return;
        }
        auto submitted = SubmitEmbed(caller, *req);
        if (!submitted.ok()) {
          reactor->Fail(submitted.status());
          return;
        }
        auto cursor = impl_->scheduler->Watch(submitted->first, 0);
        if (!cursor.ok()) {
          reactor->Fail(cursor.status());
          return;
        }
        reactor->Attach(*std::move(cursor), submitted->first, submitted->second->resolution);
      });
  if (!queued.ok()) reactor->Fail(queued);
  return reactor;
}

grpc::ServerWriteReactor<v1::JobEvent>* Service::WatchJob(CallbackServerContext* ctx,
                                                          const v1::WatchJobRequest* req) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return new ErrorWriter<v1::JobEvent>(caller.status());
  if (absl::Status bad = CheckWatchJobRequest(*req); !bad.ok()) {
    return new ErrorWriter<v1::JobEvent>(bad);
  }
  auto view = impl_->JobFor(*caller, req->job_id());
  if (!view.ok()) return new ErrorWriter<v1::JobEvent>(view.status());
  auto lease = impl_->streams.Acquire(caller->tenant);
  if (!lease.ok()) return new ErrorWriter<v1::JobEvent>(lease.status());
  auto cursor = impl_->scheduler->Watch(req->job_id(), req->after_sequence());
  if (!cursor.ok()) return new ErrorWriter<v1::JobEvent>(cursor.status());
  auto model = impl_->registry->Find(view->record.model);
  const int resolution = model.ok() ? (*model)->resolution : 0;
  return new EventStreamReactor(&impl_->heartbeats, impl_->scheduler, *std::move(cursor),
                                req->job_id(), false, resolution, *std::move(lease));
}

grpc::ServerUnaryReactor* Service::GetJob(CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                          v1::Job* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->job_id().empty()) return Done(ctx, Field("job_id", "empty"));
  auto view = impl_->JobFor(*caller, req->job_id());
  if (view.ok()) ToProto(*view, resp);
  return Done(ctx, view.status());
}

grpc::ServerUnaryReactor* Service::ListJobs(CallbackServerContext* ctx,
                                            const v1::ListJobsRequest* req,
                                            v1::ListJobsResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  auto tenant = Impl::ListingTenant(*caller, req->all_tenants());
  if (!tenant.ok()) return Done(ctx, tenant.status());
  auto page = PageOf(req->page_size(), req->page_token());
  if (!page.ok()) return Done(ctx, page.status());
  auto states = JobStatesOf(req->states());
  if (!states.ok()) return Done(ctx, states.status());
  auto list = impl_->scheduler->ListJobs(*page, *states, *tenant);
  if (list.ok()) {
    for (const JobView& v : list->jobs) ToProto(v, resp->add_jobs());
    resp->set_next_page_token(list->next_page_token);
  }
  return Done(ctx, list.status());
}

grpc::ServerUnaryReactor* Service::CancelJob(CallbackServerContext* ctx,
                                             const v1::CancelJobRequest* req, v1::Job* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->job_id().empty()) return Done(ctx, Field("job_id", "empty"));
  auto owned = impl_->JobFor(*caller, req->job_id());
  if (!owned.ok()) return Done(ctx, owned.status());
  auto view = impl_->scheduler->Cancel(req->job_id());
  if (view.ok()) ToProto(*view, resp);
  return Done(ctx, view.status());
}

}  // namespace i2s
