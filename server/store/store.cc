#include "server/store/store.h"

namespace i2s {

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";  // a value outside the enum (e.g. read from a newer database)
}

bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

std::string RequestScope(const std::string& method, const std::string& tenant) {
  return tenant.empty() ? method : method + "@" + tenant;
}

}  // namespace i2s
