// 2-D points written as text (landmark files, command-line values). No dependencies beyond
// Abseil, so the client can read the same files as the server's tools.
#ifndef I2S_COMMON_POINT_LIST_H_
#define I2S_COMMON_POINT_LIST_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

// Numbers separated by spaces, tabs, commas, semicolons or new lines, taken in pairs
// (x y); '#' starts a comment that runs to the end of the line. InvalidArgument naming
// `field` for something that is not a finite number, or an odd count.
absl::StatusOr<std::vector<std::pair<double, double>>> ParsePointList(absl::string_view text,
                                                                      const std::string& field);

}  // namespace i2s

#endif  // I2S_COMMON_POINT_LIST_H_
