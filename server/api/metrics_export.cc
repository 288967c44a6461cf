#include "server/api/metrics_export.h"

#include <civetweb.h>
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "i2s/v1/i2s.grpc.pb.h"

// Debian's libcivetweb asks for 100 KiB worker stacks (pthread_attr_setstacksize(102400),
// its USE_STACK_SIZE), and glibc refuses a stack smaller than the process's static TLS
// plus a guard page: with OpenBLAS behind LibTorch's libblas.so.3 (61 KiB of TLS; see
// scripts/setup) pthread_create fails with EINVAL and civetweb cannot start ("Cannot
// create first worker thread"). Defined here, in the executable, this takes the calls of
// every library in the process, and gives a stack of at least 1 MiB; larger requests pass
// through unchanged.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn next = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (next == nullptr) return 0;  // keep the default stack (8 MiB)
  return next(attr, std::max<size_t>(size, size_t{1} << 20));
}

namespace i2s {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

constexpr char kUnknown[] = "unknown";

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  // `known`: whether full_method is one of the server's (else both labels are "unknown").
  RpcMetricsInterceptor(const char* full_method, bool known, MetricsRegistry::Counter* requests,
                        MetricsRegistry::Histogram* seconds)
      : requests_(requests), seconds_(seconds), start_(std::chrono::steady_clock::now()) {
    if (!known) {
      service_ = method_ = kUnknown;
      return;
    }
    // "/package.Service/Method"
    std::string m = full_method;
    if (!m.empty() && m[0] == '/') m.erase(0, 1);
    const size_t slash = m.find('/');
    service_ = slash == std::string::npos ? "" : m.substr(0, slash);
    method_ = slash == std::string::npos ? m : m.substr(slash + 1);
  }
  // A call that ends without sending a status (the client went away) counts as CANCELLED.
  ~RpcMetricsInterceptor() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    requests_->Inc({service_, method_, CodeName(code)});
    seconds_->Observe(
        {service_, method_},
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }

  MetricsRegistry::Counter* requests_;
  MetricsRegistry::Histogram* seconds_;
  const std::chrono::steady_clock::time_point start_;
  std::string service_, method_;
  bool recorded_ = false;
};

// Equal strings in time that depends on their lengths only.
bool ConstantTimeEqual(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

int ServeMetricsRequest(mg_connection* conn, void* data) {
  const auto* server = static_cast<const MetricsHttpServer*>(data);
  const MetricsRegistry* registry = server->registry_;
  const mg_request_info* info = mg_get_request_info(conn);
  if (!server->token_.empty()) {
    const char* header = mg_get_header(conn, "Authorization");
    const std::string expected = "Bearer " + server->token_;
    if (header == nullptr || !ConstantTimeEqual(header, expected)) {
      mg_printf(conn,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"i2s metrics\"\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n");
      return 401;
    }
  }
  if (info == nullptr || info->request_method == nullptr ||
      (std::string(info->request_method) != "GET" && std::string(info->request_method) != "HEAD")) {
    mg_printf(conn,
              "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n"
              "Connection: close\r\n\r\n");
    return 405;
  }
  const std::string body = registry->Render();
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.size());
  if (std::string(info->request_method) == "GET") mg_write(conn, body.data(), body.size());
  return 200;
}

RpcMetricsFactory::RpcMetricsFactory(MetricsRegistry* registry,
                                     absl::flat_hash_set<std::string> known_methods)
    : requests_(registry->AddCounter("i2s_rpc_requests_total",
                                     "RPCs handled, by gRPC service, method and status code.",
                                     {"service", "method", "code"})),
      seconds_(registry->AddHistogram(
          "i2s_rpc_duration_seconds",
          "Time from the start of an RPC to its status (streams: their whole life).",
          {"service", "method"}, MetricsRegistry::ExponentialBuckets(0.0005, 4, 12))),
      known_methods_(std::move(known_methods)) {}

grpc::experimental::Interceptor* RpcMetricsFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* method = info->method();
  const bool known = method != nullptr && known_methods_.contains(method);
  return new RpcMetricsInterceptor(method, known, requests_, seconds_);
}

absl::flat_hash_set<std::string> RpcMetricsFactory::KnownMethods(bool reflection) {
  absl::flat_hash_set<std::string> known;
  // The proto file's own descriptor (EmbedRequest's file declares the service).
  const google::protobuf::ServiceDescriptor* service =
      v1::EmbedRequest::descriptor()->file()->pool()->FindServiceByName(
          v1::ImageToStyleGan::service_full_name());
  for (int i = 0; i < service->method_count(); ++i) {
    known.insert(absl::StrCat("/", service->full_name(), "/", service->method(i)->name()));
  }
  // gRPC's own services, whose descriptors are not in this program's pool.
  known.insert("/grpc.health.v1.Health/Check");
  known.insert("/grpc.health.v1.Health/Watch");
  if (reflection) known.insert("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
  return known;
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, const MetricsRegistry* registry, const std::string& bearer_token) {
  static std::once_flag init;
  std::call_once(init, [] { mg_init_library(0); });
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-address ", address, ": expected HOST:PORT"));
  }
  // civetweb's form: "host:port", or "port" for every address. IPv4 only: Debian's
  // libcivetweb is built without IPv6.
  std::string host = address.substr(0, colon);
  std::string ports = (host.empty() || host == "0.0.0.0") ? address.substr(colon + 1) : address;
  // Eight workers and a 3 s request timeout: a few idle or slow connections cannot hold a
  // scrape back past Prometheus' 10 s default, and a stop waits at most that long.
  const char* options[] = {"listening_ports",    ports.c_str(), "num_threads", "8",
                           "request_timeout_ms", "3000",        nullptr};
  mg_callbacks callbacks{};
  mg_init_data init_data{};
  init_data.callbacks = &callbacks;
  init_data.configuration_options = options;
  char why[256] = {0};
  mg_error_data error{};
  error.text = why;
  error.text_buffer_size = sizeof why;
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  server->registry_ = registry;
  server->token_ = bearer_token;
  server->ctx_ = mg_start2(&init_data, &error);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("--metrics-address ", address, ": cannot listen (",
                                               why[0] != 0 ? why : "in use, or not an address",
                                               ")"));
  }
  mg_set_request_handler(server->ctx_, "/metrics$", ServeMetricsRequest, server.get());
  mg_server_port port[4];
  const int n = mg_get_server_ports(server->ctx_, 4, port);
  if (n < 1) return absl::InternalError("--metrics-address: no listening port");
  server->port_ = port[0].port;
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

}  // namespace i2s
