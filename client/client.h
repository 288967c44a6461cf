// The i2s client library: a small, synchronous C++ wrapper around the generated stubs of
// i2s.v1.ImageToStyleGan (and grpc.health.v1.Health) for programs that talk to
// i2s_server. Calls return absl::Status / absl::StatusOr with the server's gRPC code and
// message unchanged; list calls follow page tokens; streams are read one message at a
// time. `i2s_client` is a thin command line over this library.
//
// Thread safety: a Client may be used from several threads at once (each call has its
// own grpc::ClientContext). A Stream is read by one thread; Cancel() may come from any.
#ifndef I2S_CLIENT_CLIENT_H_
#define I2S_CLIENT_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/grpc/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "i2s/v1/i2s.grpc.pb.h"

namespace i2s::client {

namespace pb = ::i2s::v1;

struct ClientOptions {
  std::string server = "localhost:50051";  // host:port (any gRPC target URI)
  // Deadline of each unary call; 0 = none. The streams (Embed, WatchJob, Morph) have no
  // deadline: an embedding or a long morph takes as long as it takes, message by message.
  absl::Duration timeout = absl::Seconds(30);
  int max_message_bytes = 64 << 20;  // receive limit: renders and exported latents
  // Transport security. Plaintext unless `tls`; with it the server's certificate is
  // checked against ca_cert_pem (the system's roots when empty) and, for mutual TLS,
  // client_cert_pem/client_key_pem are presented. server_name overrides the name the
  // certificate must carry (default: the host of `server`).
  bool tls = false;
  std::string ca_cert_pem, client_cert_pem, client_key_pem, server_name;
  // Bearer token for a server with --auth-tokens; sent on every call as
  // "authorization: Bearer <token>". Empty: none.
  std::string token;
};

// A server stream (Embed, WatchJob, Morph).
template <typename T>
class Stream {
 public:
  Stream(std::unique_ptr<grpc::ClientContext> context,
         std::unique_ptr<grpc::ClientReader<T>> reader)
      : context_(std::move(context)), reader_(std::move(reader)) {}
  ~Stream() {
    if (!finished_) {
      context_->TryCancel();
      T drained;
      while (reader_->Read(&drained)) {
      }
      reader_->Finish();
    }
  }

  // The next message; std::nullopt once the server ended the stream with OK; the
  // stream's status otherwise. Not to be called again after either end.
  absl::StatusOr<std::optional<T>> Next() {
    T message;
    if (reader_->Read(&message)) return std::optional<T>(std::move(message));
    finished_ = true;
    absl::Status status = FromGrpcStatus(reader_->Finish());
    if (!status.ok()) return status;
    return std::optional<T>();
  }

  // Ends the call from the client's side (a blocked Next() returns CANCELLED). For an
  // Embed stream this does not cancel the job unless it asked for cancel_on_disconnect.
  void Cancel() { context_->TryCancel(); }

 private:
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<T>> reader_;
  bool finished_ = false;
};

enum class Health { kServing, kNotServing, kUnknown };

class Client {
 public:
  // Makes the channel; connects lazily (the first call reports an unreachable server).
  static std::unique_ptr<Client> Create(const ClientOptions& options);
  // For tests and embedding programs that bring their own channel.
  Client(std::shared_ptr<grpc::Channel> channel, const ClientOptions& options);

  const ClientOptions& options() const { return options_; }

  absl::StatusOr<pb::ServerInfo> GetServerInfo();
  absl::StatusOr<pb::GetUsageResponse> GetUsage(const pb::GetUsageRequest& request);
  absl::StatusOr<pb::AlignFaceResponse> AlignFace(const pb::AlignFaceRequest& request);
  // The standard health check of `service` ("" = the whole server).
  absl::StatusOr<Health> CheckHealth(const std::string& service = "");

  std::unique_ptr<Stream<pb::JobEvent>> Embed(const pb::EmbedRequest& request);
  std::unique_ptr<Stream<pb::JobEvent>> WatchJob(const std::string& job_id,
                                                 int64_t after_sequence = 0);
  absl::StatusOr<pb::Job> GetJob(const std::string& job_id);
  // Newest first, following pages until `limit` jobs (0 = all) or the last page.
  // all_tenants: every tenant's jobs (admin tokens only).
  absl::StatusOr<std::vector<pb::Job>> ListJobs(const std::vector<pb::JobState>& states, int limit,
                                                bool all_tenants = false);
  absl::StatusOr<pb::Job> CancelJob(const std::string& job_id);

  absl::StatusOr<pb::Latent> GetLatent(const std::string& latent_id, bool include_values);
  // Newest first, following pages until `limit` latents (0 = all); `model` "" = any.
  absl::StatusOr<std::vector<pb::Latent>> ListLatents(const std::string& model, int limit,
                                                      bool all_tenants = false);
  absl::Status DeleteLatent(const std::string& latent_id);
  absl::StatusOr<pb::Latent> ImportLatent(const pb::ImportLatentRequest& request);
  absl::StatusOr<pb::ExportLatentResponse> ExportLatent(const std::string& latent_id);

  absl::StatusOr<pb::SynthesizeResponse> Synthesize(const pb::SynthesizeRequest& request);
  std::unique_ptr<Stream<pb::MorphFrame>> Morph(const pb::MorphRequest& request);
  absl::StatusOr<pb::EditResponse> StyleMix(const pb::StyleMixRequest& request);
  absl::StatusOr<pb::EditResponse> ExpressionTransfer(const pb::ExpressionTransferRequest& request);
  absl::StatusOr<pb::PasteBackResponse> PasteBack(const pb::PasteBackRequest& request);
  absl::StatusOr<pb::LocalBlendResponse> LocalBlend(const pb::LocalBlendRequest& request);
  // Semantic directions. ListDirections follows the pages (limit 0 = all).
  absl::StatusOr<pb::ImportDirectionResponse> ImportDirection(
      const pb::ImportDirectionRequest& request);
  absl::StatusOr<pb::Direction> ComputeDirection(const pb::ComputeDirectionRequest& request);
  absl::StatusOr<std::vector<pb::Direction>> ListDirections(const std::string& model, int limit,
                                                            bool all_tenants);
  absl::StatusOr<pb::Direction> GetDirection(const pb::GetDirectionRequest& request);
  absl::Status DeleteDirection(const std::string& model, const std::string& name);
  absl::StatusOr<pb::EditResponse> ApplyDirections(const pb::ApplyDirectionsRequest& request);
  std::unique_ptr<Stream<pb::MorphFrame>> DirectionFrames(
      const pb::DirectionFramesRequest& request);

 private:
  // A context with the unary deadline (when `deadline` and options_.timeout > 0).
  std::unique_ptr<grpc::ClientContext> NewContext(bool deadline) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::ImageToStyleGan::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace i2s::client

#endif  // I2S_CLIENT_CLIENT_H_
