#include "client/output.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace i2s::client::cli {

nlohmann::json ProtoJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return nlohmann::json::parse(text);
}

std::string StateName(v1::JobState state) {
  return state == v1::JOB_STATE_UNSPECIFIED ? "SUBMITTING" : v1::JobState_Name(state);
}

std::string FormatTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms),
                          absl::LocalTimeZone());
}

std::string Lower(std::string s) {
  absl::AsciiStrToLower(&s);
  return s;
}

void EmitJson(const nlohmann::json& document) { std::cout << document.dump() << std::endl; }

std::string Bold(const TextStyle& style, const std::string& text) {
  return style.color ? absl::StrCat("\x1b[1m", text, "\x1b[0m") : text;
}

void PrintTable(const TextStyle& style, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<int> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = VisibleWidth(header[c]);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], VisibleWidth(row[c]));
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t c = 0; c < cells.size(); ++c) {
      out += cells[c];
      if (c + 1 < cells.size()) out += std::string(width[c] - VisibleWidth(cells[c]) + 2, ' ');
    }
    return out;
  };
  std::cout << Bold(style, line(header)) << "\n";
  for (const auto& row : rows) std::cout << line(row) << "\n";
  std::cout.flush();
}

void PrintFields(const TextStyle& style,
                 const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& [k, v] : fields) width = std::max(width, k.size());
  for (const auto& [k, v] : fields) {
    if (v.empty()) continue;
    std::cout << Bold(style, k) << std::string(width - k.size() + 2, ' ') << v << "\n";
  }
  std::cout.flush();
}

}  // namespace i2s::client::cli
