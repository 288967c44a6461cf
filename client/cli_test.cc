#include "client/cli.h"

#include <gtest/gtest.h>

namespace i2s::client {
namespace {

TEST(ExitCodeTest, EachFailureClassHasItsOwnCode) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("x")), kExitUnreachable);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("x")), kExitNotFound);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("x")), kExitInvalid);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("x")), kExitInvalid);
  EXPECT_EQ(ExitCodeFor(absl::CancelledError("x")), kExitCancelled);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("x")), kExitTimeout);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError("x")), kExitBusy);
  EXPECT_EQ(ExitCodeFor(absl::UnauthenticatedError("x")), kExitDenied);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("x")), kExitError);
}

TEST(ExplainTest, ConnectionFailuresBecomeSentences) {
  const std::string refused = Explain(
      absl::UnavailableError("failed to connect to all addresses; last error: UNKNOWN: "
                             "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection "
                             "refused"),
      "127.0.0.1:1");
  EXPECT_EQ(refused,
            "cannot reach i2s_server at 127.0.0.1:1 (connection refused). Is it running? Point "
            "--server or I2S_SERVER at it.");
  EXPECT_EQ(Explain(absl::UnavailableError("the server is shutting down"), "h:1"),
            "the server at h:1 is unavailable: the server is shutting down");
  EXPECT_EQ(Explain(absl::InvalidArgumentError("options.steps: must be in [0, 100000]"), "h:1"),
            "options.steps: must be in [0, 100000]");
  EXPECT_NE(Explain(absl::DeadlineExceededError("Deadline Exceeded"), "h:1").find("--timeout"),
            std::string::npos);
}

}  // namespace
}  // namespace i2s::client
