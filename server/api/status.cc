#include "server/api/status.h"

#include "common/grpc/status.h"
#include "server/base/private_detail.h"

namespace i2s {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  // A store's message with its host, port, database and user stays in the log.
  return GrpcStatusFrom(PublicStatus(status));
}

}  // namespace i2s
