#include "server/base/log.h"

#include <gtest/gtest.h>

namespace i2s {
namespace {

TEST(LogTest, TextLinesQuoteOnlyWhatNeedsIt) {
  SetLogFormat(LogFormat::kText);
  LogEvent e("job_finished");
  e.Str("job_id", "job_1").Str("error", "disk is \"full\"").Int("steps", 12).Num("psnr", 31.25);
  EXPECT_EQ(e.Line(),
            "i2s_server: job_finished job_id=job_1 error=\"disk is \\\"full\\\"\" steps=12 "
            "psnr=31.25");
}

TEST(LogTest, JsonLinesEscapeEveryField) {
  SetLogFormat(LogFormat::kJson);
  LogEvent e("latent_stored");
  e.Str("latent_id", "lat_1")
      .Str("note", "tab\there\nnewline \x01\"q\"")
      .Int("n", -3)
      .Num("x", 0.5);
  const std::string line = e.Line();
  SetLogFormat(LogFormat::kText);
  // {"time":"2026-12-01T11:46:32.123Z", ...: the time is 24 characters.
  ASSERT_EQ(line.substr(0, 9), "{\"time\":\"");
  ASSERT_GT(line.size(), 35u);
  EXPECT_EQ(line[9 + 24], '"');
  EXPECT_EQ(line[9 + 10], 'T');
  EXPECT_EQ(line.substr(9 + 25),
            ",\"event\":\"latent_stored\",\"latent_id\":\"lat_1\","
            "\"note\":\"tab\\there\\nnewline \\u0001\\\"q\\\"\",\"n\":-3,\"x\":0.5}");
}

}  // namespace
}  // namespace i2s
