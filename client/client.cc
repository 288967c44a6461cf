#include "client/client.h"

#include <utility>

namespace i2s::client {

std::unique_ptr<Client> Client::Create(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.ca_cert_pem;
    ssl.pem_cert_chain = options.client_cert_pem;
    ssl.pem_private_key = options.client_key_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!options.server_name.empty()) {
      args.SetSslTargetNameOverride(options.server_name);
    }
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  auto channel = grpc::CreateCustomChannel(options.server, credentials, args);
  return std::make_unique<Client>(std::move(channel), options);
}

Client::Client(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options)
    : options_(options),
      channel_(std::move(channel)),
      stub_(pb::ImageToStyleGan::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> Client::NewContext(bool deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
  if (deadline && options_.timeout > absl::ZeroDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  }
  return context;
}

namespace {

// Runs one unary call of `stub` and converts its status.
template <typename Response, typename Call>
absl::StatusOr<Response> Unary(std::unique_ptr<grpc::ClientContext> context, Call&& call) {
  Response response;
  absl::Status status = FromGrpcStatus(call(context.get(), &response));
  if (!status.ok()) return status;
  return response;
}

}  // namespace

absl::StatusOr<pb::ServerInfo> Client::GetServerInfo() {
  return Unary<pb::ServerInfo>(NewContext(true), [&](auto* c, auto* r) {
    return stub_->GetServerInfo(c, pb::GetServerInfoRequest(), r);
  });
}

absl::StatusOr<pb::GetUsageResponse> Client::GetUsage(const pb::GetUsageRequest& request) {
  return Unary<pb::GetUsageResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->GetUsage(c, request, r); });
}

absl::StatusOr<pb::AlignFaceResponse> Client::AlignFace(const pb::AlignFaceRequest& request) {
  return Unary<pb::AlignFaceResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->AlignFace(c, request, r); });
}

absl::StatusOr<Health> Client::CheckHealth(const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  auto response = Unary<grpc::health::v1::HealthCheckResponse>(
      NewContext(true), [&](auto* c, auto* r) { return health_->Check(c, request, r); });
  if (!response.ok()) return response.status();
  switch (response->status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return Health::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return Health::kNotServing;
    default:
      return Health::kUnknown;
  }
}

std::unique_ptr<Stream<pb::JobEvent>> Client::Embed(const pb::EmbedRequest& request) {
  auto context = NewContext(false);
  auto reader = stub_->Embed(context.get(), request);
  return std::make_unique<Stream<pb::JobEvent>>(std::move(context), std::move(reader));
}

std::unique_ptr<Stream<pb::JobEvent>> Client::WatchJob(const std::string& job_id,
                                                       int64_t after_sequence) {
  pb::WatchJobRequest request;
  request.set_job_id(job_id);
  request.set_after_sequence(after_sequence);
  auto context = NewContext(false);
  auto reader = stub_->WatchJob(context.get(), request);
  return std::make_unique<Stream<pb::JobEvent>>(std::move(context), std::move(reader));
}

absl::StatusOr<pb::Job> Client::GetJob(const std::string& job_id) {
  pb::GetJobRequest request;
  request.set_job_id(job_id);
  return Unary<pb::Job>(NewContext(true),
                        [&](auto* c, auto* r) { return stub_->GetJob(c, request, r); });
}

absl::StatusOr<std::vector<pb::Job>> Client::ListJobs(const std::vector<pb::JobState>& states,
                                                      int limit, bool all_tenants) {
  std::vector<pb::Job> jobs;
  pb::ListJobsRequest request;
  request.set_all_tenants(all_tenants);
  for (pb::JobState s : states) request.add_states(s);
  do {
    request.set_page_size(limit > 0 ? std::min(1000, limit - static_cast<int>(jobs.size())) : 1000);
    auto page = Unary<pb::ListJobsResponse>(
        NewContext(true), [&](auto* c, auto* r) { return stub_->ListJobs(c, request, r); });
    if (!page.ok()) return page.status();
    for (auto& job : *page->mutable_jobs()) jobs.push_back(std::move(job));
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() && (limit <= 0 || static_cast<int>(jobs.size()) < limit));
  return jobs;
}

absl::StatusOr<pb::Job> Client::CancelJob(const std::string& job_id) {
  pb::CancelJobRequest request;
  request.set_job_id(job_id);
  return Unary<pb::Job>(NewContext(true),
                        [&](auto* c, auto* r) { return stub_->CancelJob(c, request, r); });
}

absl::StatusOr<pb::Latent> Client::GetLatent(const std::string& latent_id, bool include_values) {
  pb::GetLatentRequest request;
  request.set_latent_id(latent_id);
  request.set_include_values(include_values);
  return Unary<pb::Latent>(NewContext(true),
                           [&](auto* c, auto* r) { return stub_->GetLatent(c, request, r); });
}

absl::StatusOr<std::vector<pb::Latent>> Client::ListLatents(const std::string& model, int limit,
                                                            bool all_tenants) {
  std::vector<pb::Latent> latents;
  pb::ListLatentsRequest request;
  request.set_all_tenants(all_tenants);
  request.set_model(model);
  do {
    request.set_page_size(limit > 0 ? std::min(1000, limit - static_cast<int>(latents.size()))
                                    : 1000);
    auto page = Unary<pb::ListLatentsResponse>(
        NewContext(true), [&](auto* c, auto* r) { return stub_->ListLatents(c, request, r); });
    if (!page.ok()) return page.status();
    for (auto& latent : *page->mutable_latents()) latents.push_back(std::move(latent));
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() &&
           (limit <= 0 || static_cast<int>(latents.size()) < limit));
  return latents;
}

absl::Status Client::DeleteLatent(const std::string& latent_id) {
  pb::DeleteLatentRequest request;
  request.set_latent_id(latent_id);
  return Unary<pb::DeleteLatentResponse>(
             NewContext(true), [&](auto* c, auto* r) { return stub_->DeleteLatent(c, request, r); })
      .status();
}

absl::StatusOr<pb::Latent> Client::ImportLatent(const pb::ImportLatentRequest& request) {
  return Unary<pb::Latent>(NewContext(true),
                           [&](auto* c, auto* r) { return stub_->ImportLatent(c, request, r); });
}

absl::StatusOr<pb::ExportLatentResponse> Client::ExportLatent(const std::string& latent_id) {
  pb::ExportLatentRequest request;
  request.set_latent_id(latent_id);
  return Unary<pb::ExportLatentResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->ExportLatent(c, request, r); });
}

absl::StatusOr<pb::SynthesizeResponse> Client::Synthesize(const pb::SynthesizeRequest& request) {
  return Unary<pb::SynthesizeResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->Synthesize(c, request, r); });
}

std::unique_ptr<Stream<pb::MorphFrame>> Client::Morph(const pb::MorphRequest& request) {
  auto context = NewContext(false);
  auto reader = stub_->Morph(context.get(), request);
  return std::make_unique<Stream<pb::MorphFrame>>(std::move(context), std::move(reader));
}

absl::StatusOr<pb::PasteBackResponse> Client::PasteBack(const pb::PasteBackRequest& request) {
  return Unary<pb::PasteBackResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->PasteBack(c, request, r); });
}

absl::StatusOr<pb::LocalBlendResponse> Client::LocalBlend(const pb::LocalBlendRequest& request) {
  return Unary<pb::LocalBlendResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->LocalBlend(c, request, r); });
}

absl::StatusOr<pb::ImportDirectionResponse> Client::ImportDirection(
    const pb::ImportDirectionRequest& request) {
  return Unary<pb::ImportDirectionResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->ImportDirection(c, request, r); });
}

absl::StatusOr<pb::Direction> Client::ComputeDirection(const pb::ComputeDirectionRequest& request) {
  return Unary<pb::Direction>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->ComputeDirection(c, request, r); });
}

absl::StatusOr<std::vector<pb::Direction>> Client::ListDirections(const std::string& model,
                                                                  int limit, bool all_tenants) {
  std::vector<pb::Direction> out;
  pb::ListDirectionsRequest request;
  request.set_all_tenants(all_tenants);
  request.set_model(model);
  do {
    request.set_page_size(limit > 0 ? std::min(1000, limit - static_cast<int>(out.size())) : 1000);
    auto page = Unary<pb::ListDirectionsResponse>(
        NewContext(true), [&](auto* c, auto* r) { return stub_->ListDirections(c, request, r); });
    if (!page.ok()) return page.status();
    for (auto& d : *page->mutable_directions()) out.push_back(std::move(d));
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() && (limit <= 0 || static_cast<int>(out.size()) < limit));
  return out;
}

absl::StatusOr<pb::Direction> Client::GetDirection(const pb::GetDirectionRequest& request) {
  return Unary<pb::Direction>(NewContext(true),
                              [&](auto* c, auto* r) { return stub_->GetDirection(c, request, r); });
}

absl::Status Client::DeleteDirection(const std::string& model, const std::string& name) {
  pb::DeleteDirectionRequest request;
  request.set_model(model);
  request.set_name(name);
  return Unary<pb::DeleteDirectionResponse>(
             NewContext(true),
             [&](auto* c, auto* r) { return stub_->DeleteDirection(c, request, r); })
      .status();
}

absl::StatusOr<pb::EditResponse> Client::ApplyDirections(
    const pb::ApplyDirectionsRequest& request) {
  return Unary<pb::EditResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->ApplyDirections(c, request, r); });
}

std::unique_ptr<Stream<pb::MorphFrame>> Client::DirectionFrames(
    const pb::DirectionFramesRequest& request) {
  auto context = NewContext(false);
  auto reader = stub_->DirectionFrames(context.get(), request);
  return std::make_unique<Stream<pb::MorphFrame>>(std::move(context), std::move(reader));
}

absl::StatusOr<pb::EditResponse> Client::StyleMix(const pb::StyleMixRequest& request) {
  return Unary<pb::EditResponse>(NewContext(true),
                                 [&](auto* c, auto* r) { return stub_->StyleMix(c, request, r); });
}

absl::StatusOr<pb::EditResponse> Client::ExpressionTransfer(
    const pb::ExpressionTransferRequest& request) {
  return Unary<pb::EditResponse>(
      NewContext(true), [&](auto* c, auto* r) { return stub_->ExpressionTransfer(c, request, r); });
}

}  // namespace i2s::client
