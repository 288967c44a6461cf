#include "server/base/private_detail.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "common/status_macros.h"

namespace i2s {
namespace {

TEST(PrivateDetailTest, TheCallerSeesTheCodeAndAnIncidentNotTheDetail) {
  const absl::Status raw = absl::UnavailableError(
      "postgres (host=db.internal port=5432 dbname=i2s user=svc): cannot connect");
  const absl::Status marked = WithPrivateDetail(raw);
  EXPECT_TRUE(HasPrivateDetail(marked));
  EXPECT_FALSE(HasPrivateDetail(raw));
  const absl::Status shown = PublicStatus(marked);
  EXPECT_EQ(shown.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(absl::StrContains(shown.message(), "db.internal")) << shown;
  EXPECT_FALSE(absl::StrContains(shown.message(), "5432")) << shown;
  EXPECT_FALSE(absl::StrContains(shown.message(), "svc")) << shown;
  EXPECT_TRUE(absl::StartsWith(shown.message(), "the data store failed (incident ")) << shown;
  EXPECT_FALSE(HasPrivateDetail(shown));
  EXPECT_EQ(PublicStatus(raw), raw);  // unmarked: unchanged
  EXPECT_TRUE(PublicStatus(absl::OkStatus()).ok());
  EXPECT_FALSE(HasPrivateDetail(WithPrivateDetail(absl::OkStatus())));
}

TEST(PrivateDetailTest, AnnotateKeepsTheMark) {
  const absl::Status marked = WithPrivateDetail(absl::InternalError("postgres (host=x): boom"));
  const absl::Status annotated = Annotate(marked, "PutLatent");
  EXPECT_EQ(annotated.message(), "PutLatent: postgres (host=x): boom");
  EXPECT_TRUE(HasPrivateDetail(annotated));
  EXPECT_FALSE(absl::StrContains(PublicStatus(annotated).message(), "host=x"));
}

}  // namespace
}  // namespace i2s
