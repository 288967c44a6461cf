// The one place where absl::Status becomes grpc::Status (style rule 5): the code values
// of the two enums are the same (google.rpc.Code), checked at compile time.
#ifndef I2S_SERVER_API_STATUS_H_
#define I2S_SERVER_API_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace i2s {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace i2s

#endif  // I2S_SERVER_API_STATUS_H_
