#include "common/grpc/status.h"

#include <string>

namespace i2s {

#define I2S_SAME_CODE(name, grpc_name)                                                           \
  static_assert(                                                                                 \
      static_cast<int>(absl::StatusCode::name) == static_cast<int>(grpc::StatusCode::grpc_name), \
      "absl and gRPC disagree on " #name)
I2S_SAME_CODE(kOk, OK);
I2S_SAME_CODE(kCancelled, CANCELLED);
I2S_SAME_CODE(kUnknown, UNKNOWN);
I2S_SAME_CODE(kInvalidArgument, INVALID_ARGUMENT);
I2S_SAME_CODE(kDeadlineExceeded, DEADLINE_EXCEEDED);
I2S_SAME_CODE(kNotFound, NOT_FOUND);
I2S_SAME_CODE(kAlreadyExists, ALREADY_EXISTS);
I2S_SAME_CODE(kPermissionDenied, PERMISSION_DENIED);
I2S_SAME_CODE(kResourceExhausted, RESOURCE_EXHAUSTED);
I2S_SAME_CODE(kFailedPrecondition, FAILED_PRECONDITION);
I2S_SAME_CODE(kAborted, ABORTED);
I2S_SAME_CODE(kOutOfRange, OUT_OF_RANGE);
I2S_SAME_CODE(kUnimplemented, UNIMPLEMENTED);
I2S_SAME_CODE(kInternal, INTERNAL);
I2S_SAME_CODE(kUnavailable, UNAVAILABLE);
I2S_SAME_CODE(kDataLoss, DATA_LOSS);
I2S_SAME_CODE(kUnauthenticated, UNAUTHENTICATED);
#undef I2S_SAME_CODE

grpc::Status GrpcStatusFrom(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace i2s
