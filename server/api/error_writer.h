// A server stream refused before it starts: the reactor that finishes at once with `status`
// (converted by ToGrpcStatus) and deletes itself when gRPC is done with it.
//   if (!lease.ok()) return new ErrorWriter<v1::JobEvent>(lease.status());
#ifndef I2S_SERVER_API_ERROR_WRITER_H_
#define I2S_SERVER_API_ERROR_WRITER_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "server/api/status.h"

namespace i2s {

template <typename T>
class ErrorWriter : public grpc::ServerWriteReactor<T> {
 public:
  explicit ErrorWriter(const absl::Status& status) { this->Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace i2s

#endif  // I2S_SERVER_API_ERROR_WRITER_H_
