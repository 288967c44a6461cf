// The one place where absl::Status and grpc::Status convert into each other (style rule
// 5), for the service and the client library: the code values of the two enums are the
// same (google.rpc.Code), checked at compile time. The service answers callers through
// server/api/status.h's ToGrpcStatus, which hides private detail first.
#ifndef I2S_COMMON_GRPC_STATUS_H_
#define I2S_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace i2s {

// The same code and message (payloads do not travel).
grpc::Status GrpcStatusFrom(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace i2s

#endif  // I2S_COMMON_GRPC_STATUS_H_
