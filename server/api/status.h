// How the service answers a failed call: absl::Status -> grpc::Status through the one
// conversion (common/grpc/status.h), after a status holding private detail (a store's
// host, port, database and user) was replaced by its public sentence (PublicStatus).
#ifndef I2S_SERVER_API_STATUS_H_
#define I2S_SERVER_API_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace i2s {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace i2s

#endif  // I2S_SERVER_API_STATUS_H_
