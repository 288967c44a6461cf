// How i2s_client prints results: tables and fields for people (bold headers on a colour
// terminal), one JSON document per line for scripts (--json), and the small formatters
// both use.
#ifndef I2S_CLIENT_OUTPUT_H_
#define I2S_CLIENT_OUTPUT_H_

#include <google/protobuf/message.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "client/progress.h"
#include "i2s/v1/i2s.pb.h"

namespace i2s::client::cli {

// A message as JSON with the proto's field names and every primitive field present.
nlohmann::json ProtoJson(const google::protobuf::Message& message);

// Writes one JSON document as a line on stdout.
void EmitJson(const nlohmann::json& document);

// QUEUED, RUNNING, ... ("SUBMITTING" before the server named the job's state).
std::string StateName(v1::JobState state);

// Local time "2026-01-31 12:00:00", "-" for 0.
std::string FormatTime(int64_t unix_ms);

std::string Lower(std::string s);

// `text` in bold when `style` has colours.
std::string Bold(const TextStyle& style, const std::string& text);

// Columns padded to the widest cell (terminal width of the text), the header in bold.
void PrintTable(const TextStyle& style, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

// "name  value" lines, names padded to the longest; empty values are left out.
void PrintFields(const TextStyle& style,
                 const std::vector<std::pair<std::string, std::string>>& fields);

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_OUTPUT_H_
