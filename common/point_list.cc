#include "common/point_list.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace i2s {

absl::StatusOr<std::vector<std::pair<double, double>>> ParsePointList(absl::string_view text,
                                                                      const std::string& field) {
  std::vector<double> numbers;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = line.substr(0, line.find('#'));
    for (absl::string_view token :
         absl::StrSplit(line, absl::ByAnyChar(" \t\r,;"), absl::SkipEmpty())) {
      double v;
      if (!absl::SimpleAtod(token, &v) || !std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": '", token, "' is not a number"));
      }
      numbers.push_back(v);
    }
  }
  if (numbers.size() % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", numbers.size(), " numbers; points are pairs of x and y"));
  }
  std::vector<std::pair<double, double>> points;
  for (size_t i = 0; i < numbers.size(); i += 2) points.emplace_back(numbers[i], numbers[i + 1]);
  return points;
}

}  // namespace i2s
