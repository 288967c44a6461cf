// Local files of i2s_client: inputs read whole, outputs written through a temporary name
// and a rename (so a failed write leaves nothing half-written), images converted to the
// output's format.
#ifndef I2S_CLIENT_FILES_H_
#define I2S_CLIENT_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/media.h"

namespace i2s::client::cli {

// The lower-case extension of `path` (".png"), "" for none.
std::string Extension(const std::string& path);

// The bytes of `path`: NotFound (no such file), InvalidArgument (a directory), Internal.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// AlreadyExists when `path` exists and not `force` ("-", stdout, always passes).
absl::Status CheckWritable(const std::string& path, bool force);

// Writes `bytes` to `path` ("-" = stdout) through a temporary file and a rename, so that
// a failed write leaves no half-written output.
absl::Status WriteOutput(const std::string& path, const std::string& bytes, bool force);

// PNG bytes from the server -> the bytes of `path`'s format (.png as is, .jpg re-encoded).
absl::StatusOr<std::string> ConvertPng(const std::string& png, const std::string& path);

// PNG bytes from the server -> an RGB frame for the media writers.
absl::StatusOr<RgbFrame> DecodeFrame(const std::string& png);

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_FILES_H_
