#include "client/progress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace i2s::client {
namespace {

TEST(FormatDurationTest, Ranges) {
  EXPECT_EQ(FormatDuration(0.42), "0.4s");
  EXPECT_EQ(FormatDuration(47), "47s");
  EXPECT_EQ(FormatDuration(63), "1m03s");
  EXPECT_EQ(FormatDuration(7500), "2h05m");
  EXPECT_EQ(FormatDuration(-1), "-");
  EXPECT_EQ(FormatDuration(std::numeric_limits<double>::infinity()), "-");
  EXPECT_EQ(FormatDuration(std::nan("")), "-");
}

TEST(ProgressBarTest, WidthAndFill) {
  EXPECT_EQ(ProgressBar(0.5, 12, false), "[=====>    ]");
  EXPECT_EQ(ProgressBar(1.0, 6, false), "[====]");
  EXPECT_EQ(ProgressBar(0.0, 6, false), "[    ]");
  EXPECT_EQ(ProgressBar(-3, 6, false), "[    ]");
  EXPECT_EQ(VisibleWidth(ProgressBar(0.3, 20, true)), 20);
  EXPECT_EQ(ProgressBar(0.5, 4, true), "\u2588\u2588\u2591\u2591");
}

TEST(VisibleWidthTest, SkipsEscapesCountsCodePoints) {
  EXPECT_EQ(VisibleWidth("abc"), 3);
  EXPECT_EQ(VisibleWidth("\x1b[32mab\x1b[0m"), 2);
  EXPECT_EQ(VisibleWidth("\u2713 ok"), 4);
}

v1::JobEvent Progress(int step, int total, double psnr) {
  v1::JobEvent e;
  e.set_job_id("job_1");
  e.set_sequence(step + 2);
  auto* p = e.mutable_progress();
  p->set_step(step);
  p->set_total_steps(total);
  p->mutable_metrics()->set_psnr_db(psnr);
  p->mutable_metrics()->set_loss(0.25);
  p->set_steps_per_second(10);
  p->set_eta_seconds((total - step) / 10.0);
  return e;
}

TEST(JobViewTest, FollowsEventsToSuccess) {
  JobView v;
  v.label = "face.png";
  v1::JobEvent queued;
  queued.set_job_id("job_1");
  queued.set_sequence(1);
  queued.mutable_queued()->set_position(3);
  v.Apply(queued);
  EXPECT_EQ(v.state, v1::QUEUED);
  EXPECT_EQ(v.queue_position, 3);
  EXPECT_EQ(v.job_id, "job_1");
  v.Apply(Progress(40, 100, 21.5));
  EXPECT_EQ(v.state, v1::RUNNING);
  EXPECT_EQ(v.step, 40);
  EXPECT_EQ(v.queue_position, 0);
  EXPECT_DOUBLE_EQ(v.psnr_db, 21.5);
  EXPECT_EQ(v.last_sequence, 42);
  v1::JobEvent heartbeat;
  heartbeat.set_job_id("job_1");
  heartbeat.set_sequence(42);
  heartbeat.mutable_heartbeat();
  v.Apply(heartbeat);
  EXPECT_EQ(v.step, 40);
  v1::JobEvent done;
  done.set_job_id("job_1");
  done.set_sequence(103);
  done.mutable_succeeded()->set_latent_id("lat_9");
  done.mutable_succeeded()->mutable_metrics()->set_psnr_db(27.25);
  done.mutable_succeeded()->mutable_metrics()->set_steps(100);
  done.mutable_succeeded()->set_stop_reason("steps");
  v.Apply(done);
  EXPECT_TRUE(v.finished());
  EXPECT_EQ(v.latent_id, "lat_9");
  EXPECT_EQ(v.last_sequence, 103);
  EXPECT_EQ(LogLine(v),
            "face.png (job_1): succeeded: lat_9  PSNR 27.25 dB after 100 steps (steps)");
}

TEST(LiveLineTest, RunningLineFitsAndCarriesTheNumbers) {
  JobView v;
  v.label = "face.png";
  v.Apply(Progress(420, 1000, 24.1));
  const std::string line = LiveLine(v, 10, 200, TextStyle{});
  EXPECT_NE(line.find("420/1000"), std::string::npos) << line;
  EXPECT_NE(line.find("PSNR 24.10 dB"), std::string::npos) << line;
  EXPECT_NE(line.find("10.0 steps/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 58s"), std::string::npos) << line;
  EXPECT_EQ(line.find('\x1b'), std::string::npos) << "no colour asked for";
  for (int width : {20, 33, 60}) {
    EXPECT_LE(VisibleWidth(LiveLine(v, 10, width, TextStyle{true, true})), width);
  }
  const std::string colored = LiveLine(v, 10, 200, TextStyle{true, true});
  EXPECT_NE(colored.find("\x1b[32m"), std::string::npos);
}

TEST(LiveLineTest, LongLabelsKeepTheirEnd) {
  JobView v;
  v.label = "/a/very/long/directory/name/face.png";
  v.state = v1::QUEUED;
  const std::string line = LiveLine(v, 12, 100, TextStyle{});
  EXPECT_EQ(line.substr(0, 14), ".../face.png  ") << line;
}

TEST(LiveLineTest, QueuedFailedDetached) {
  JobView v;
  v.label = "a.png";
  v.job_id = "job_7";
  v.state = v1::QUEUED;
  v.queue_position = 2;
  EXPECT_NE(LiveLine(v, 5, 100, {}).find("queued, position 2"), std::string::npos);
  v.detached = true;
  EXPECT_NE(LiveLine(v, 5, 100, {}).find("detached: job_7 keeps running"), std::string::npos);
  EXPECT_EQ(LogLine(v), "a.png (job_7): detached; it keeps running");
  v.detached = false;
  v.state = v1::FAILED;
  v.error = "out of memory";
  EXPECT_NE(LiveLine(v, 5, 100, {}).find("failed: out of memory"), std::string::npos);
}

}  // namespace
}  // namespace i2s::client
