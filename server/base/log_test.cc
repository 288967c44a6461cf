#include "server/base/log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

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

TEST(LogRateLimitTest, WritesABurstPerPeriodAndCountsWhatItDrops) {
  LogRateLimit limit(3, std::chrono::seconds(10));
  const auto t0 = LogRateLimit::Clock::time_point() + std::chrono::hours(1);
  int64_t dropped = -1;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limit.Admit(t0 + std::chrono::seconds(i), &dropped));
    EXPECT_EQ(dropped, 0);
  }
  // The rest of the window: nothing written, everything counted.
  for (int i = 0; i < 1000; ++i) {
    EXPECT_FALSE(limit.Admit(t0 + std::chrono::milliseconds(3000 + i), &dropped));
  }
  // A new window: the first line says how many were dropped, the next ones start from 0.
  ASSERT_TRUE(limit.Admit(t0 + std::chrono::seconds(10), &dropped));
  EXPECT_EQ(dropped, 1000);
  ASSERT_TRUE(limit.Admit(t0 + std::chrono::seconds(11), &dropped));
  EXPECT_EQ(dropped, 0);
}

TEST(LogRateLimitTest, ThreadsShareOneBudget) {
  LogRateLimit limit(50, std::chrono::hours(1));
  std::atomic<int> written{0};
  std::atomic<int64_t> reported{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        int64_t dropped = 0;
        if (limit.Admit(&dropped)) {
          ++written;
          reported += dropped;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(written.load(), 50);
  EXPECT_EQ(reported.load(), 0);  // nothing was dropped before the 50 were written
}

}  // namespace
}  // namespace i2s
