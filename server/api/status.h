// The one place where absl::Status and grpc::Status convert into each other (style rule
// 5), for the service and the client library: the code values of the two enums are the
// same (google.rpc.Code), checked at compile time.
#ifndef I2S_SERVER_API_STATUS_H_
#define I2S_SERVER_API_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace i2s {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace i2s

#endif  // I2S_SERVER_API_STATUS_H_
