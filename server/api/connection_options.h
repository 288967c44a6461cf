// What one gRPC connection may hold and for how long: the server-side limits that bound a
// caller's connections whether or not it has a token (docs/SECURITY.md, "Connections").
// Applied to the grpc::ServerBuilder before it starts.
#ifndef I2S_SERVER_API_CONNECTION_OPTIONS_H_
#define I2S_SERVER_API_CONNECTION_OPTIONS_H_

#include <grpcpp/server_builder.h>

namespace i2s {

struct ConnectionOptions {
  // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls open at once on one connection; a
  // client queues further calls until one ends.
  int max_streams_per_connection = 100;
  // A connection with no call open for this long is closed (GOAWAY); 0 = never.
  double max_idle_seconds = 900;
  // A connection is closed after this long however busy (GOAWAY; calls then open get
  // `age_grace_seconds` to end, and clients reconnect for new ones); 0 = never.
  double max_age_seconds = 24 * 3600;
  double age_grace_seconds = 1800;
  // The server's own keepalive pings find dead peers: one after this much silence, and
  // the connection is dropped when it is not answered within the timeout.
  double keepalive_seconds = 300, keepalive_timeout_seconds = 20;
  // Keepalive enforcement: a client pinging more often than this without data gets
  // GOAWAY(ENHANCE_YOUR_CALM) after two such pings.
  double min_client_ping_seconds = 60;
  // Threads gRPC may create for this server (its resource quota).
  int max_threads = 256;
  // grpc.health.v1 Watch streams open at once (they need no token): HealthService.
  int max_health_watchers = 64;
};

void ApplyConnectionOptions(const ConnectionOptions& options, grpc::ServerBuilder* builder);

}  // namespace i2s

#endif  // I2S_SERVER_API_CONNECTION_OPTIONS_H_
