// The scheduler in-process, on a tiny demo model and a real SQLite store: lifecycle and
// events, cancellation before the next step, queue limit, device tasks between steps
// and deadlines, and resume from a checkpoint after a restart.
#include "server/jobs/scheduler.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "server/formats/npy.h"
#include "server/store/forwarding_store.h"
#include "server/store/sqlite_store.h"

namespace i2s {
namespace {

using Kind = JobEvent::Kind;

std::unique_ptr<ModelRegistry> TinyRegistry() {
  RegistryOptions o;
  ModelSource m;
  m.name = "demo";
  m.demo = true;
  m.demo_resolution = 16;
  m.demo_fmap_base = 128;
  o.models.push_back(m);
  o.devices.push_back(torch::kCPU);
  auto r = ModelRegistry::Create(o);
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

EmbedJobSpec Spec(int steps, uint64_t seed = 1) {
  EmbedJobSpec spec;
  spec.model = "demo";
  torch::manual_seed(static_cast<int64_t>(seed));
  spec.image = torch::rand({3, 16, 16});
  spec.options.steps = steps;
  spec.options.w_perceptual = 0;
  spec.options.mean_w_samples = 100;
  spec.seed = seed;
  return spec;
}

// Reads events until `until` holds for one (returned last) or `seconds` pass.
std::vector<JobEvent> ReadUntil(EventCursor& c, const std::function<bool(const JobEvent&)>& until,
                                double seconds = 120) {
  std::vector<JobEvent> out;
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (auto ev = c.Next()) {
      out.push_back(*ev);
      if (until(*ev)) return out;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  ADD_FAILURE() << "timed out after " << out.size() << " events";
  return out;
}

bool Terminal(const JobEvent& e) { return e.terminal(); }

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("sched_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    registry_ = TinyRegistry();
    OpenStore();
  }
  void OpenStore() {
    auto s = SqliteStore::Open((dir_ / "db.sqlite").string());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  std::unique_ptr<Scheduler> Start(SchedulerOptions o = {}) {
    auto s = Scheduler::Create(o, registry_.get(), store_.get());
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }

  std::filesystem::path dir_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(SchedulerTest, SpecAndCheckpointBytesRoundTrip) {
  EmbedJobSpec spec = Spec(7, 3);
  spec.labels = {{"a", "b"}};
  spec.init_latent = torch::randn({6, 512});
  spec.options.init = LatentInit::kGiven;
  auto back = ParseSpec(SerializeSpec(spec));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal(back->image, spec.image));
  EXPECT_TRUE(torch::equal(back->init_latent, spec.init_latent));
  EXPECT_EQ(OptionsKey(back->options), OptionsKey(spec.options));
  EXPECT_EQ(back->labels, spec.labels);
  EXPECT_EQ(back->seed, 3u);
  EXPECT_TRUE(back->alignment_json.empty());
  EXPECT_FALSE(back->return_aligned_image);
  EXPECT_FALSE(ParseSpec("not a zip").ok());
  // The alignment record travels with the spec (as JSON, compared parsed).
  spec.alignment_json = R"({"method":"haar","confidence":0.8,"transform":[1,0,2,0,1,3]})";
  spec.return_aligned_image = true;
  back = ParseSpec(SerializeSpec(spec));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(nlohmann::json::parse(back->alignment_json),
            nlohmann::json::parse(spec.alignment_json));
  EXPECT_TRUE(back->return_aligned_image);
  EXPECT_FALSE(back->mse_mask.defined());
  // So do the masks and their record.
  spec.mse_mask = torch::rand({1, 32, 32});
  spec.perceptual_mask = torch::ones({1, 32, 32});
  spec.masks_json = R"({"frame":"photo","mask":{"binary":false}})";
  back = ParseSpec(SerializeSpec(spec));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(torch::equal(back->mse_mask, spec.mse_mask));
  EXPECT_TRUE(torch::equal(back->perceptual_mask, spec.perceptual_mask));
  EXPECT_EQ(nlohmann::json::parse(back->masks_json), nlohmann::json::parse(spec.masks_json));

  EmbedCheckpoint c;
  c.step = 4;
  c.latent = torch::randn({6, 512});
  c.adam_m = torch::randn({6, 512});
  c.adam_v = torch::rand({6, 512});
  c.noise = {torch::randn({1, 1, 4, 4})};
  c.noise_m = {torch::randn({1, 1, 4, 4})};
  c.noise_v = {torch::rand({1, 1, 4, 4})};
  c.best_loss = std::numeric_limits<double>::infinity();
  auto cb = ParseCheckpoint(SerializeCheckpoint(c));
  ASSERT_TRUE(cb.ok()) << cb.status();
  EXPECT_EQ(cb->step, 4);
  EXPECT_TRUE(std::isinf(cb->best_loss));
  EXPECT_TRUE(torch::equal(cb->adam_v, c.adam_v));
  EXPECT_TRUE(torch::equal(cb->noise_m[0], c.noise_m[0]));
}

TEST_F(SchedulerTest, JobRunsToAStoredLatentWithOrderedEvents) {
  auto s = Start();
  auto sub = s->Submit(Spec(6), "", "");
  ASSERT_TRUE(sub.ok()) << sub.status();
  auto cursor = s->Watch(sub->job_id, 0);
  ASSERT_TRUE(cursor.ok());
  auto events = ReadUntil(**cursor, Terminal);
  ASSERT_EQ(events.size(), 9u);  // queued, running, 6 progress, succeeded
  EXPECT_EQ(events[0].kind, Kind::kQueued);
  EXPECT_EQ(events[1].kind, Kind::kRunning);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].sequence, int64_t(i) + 1);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(events[2 + i].step, i + 1);
  ASSERT_EQ(events.back().kind, Kind::kSucceeded);
  auto latent = store_->GetLatent(events.back().latent_id);
  ASSERT_TRUE(latent.ok()) << latent.status();
  EXPECT_EQ(latent->job_id, sub->job_id);
  EXPECT_EQ(latent->num_layers, 6);
  EXPECT_EQ(latent->fingerprint, registry_->models()[0].fingerprint);
  auto view = s->GetJob(sub->job_id);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->record.state, JobState::kSucceeded);
  EXPECT_EQ(view->last_sequence, 9);
}

// Retention: a finished job leaves the store and memory, with its request ID, once its
// time is up; its latent stays; a repeat of its request ID is then a new job.
TEST_F(SchedulerTest, FinishedJobsExpireWithTheirRequestIdsButNotTheirLatents) {
  SchedulerOptions o;
  o.job_retention_ms = 300;
  o.request_id_retention_ms = 0;  // keys go with their jobs only
  o.expire_every_ms = 50;
  auto s = Start(o);
  auto sub = s->Submit(Spec(2), "key-1", "hash");
  ASSERT_TRUE(sub.ok()) << sub.status();
  auto cursor = s->Watch(sub->job_id, 0);
  ASSERT_TRUE(cursor.ok());
  auto events = ReadUntil(**cursor, Terminal);
  ASSERT_EQ(events.back().kind, Kind::kSucceeded);
  const std::string latent_id = events.back().latent_id;
  auto again = s->Submit(Spec(2), "key-1", "hash");  // within the retention: the same job
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->existing);
  EXPECT_EQ(again->job_id, sub->job_id);
  EXPECT_TRUE(s->GetJob(sub->job_id).ok());

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (s->GetJob(sub->job_id).ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(s->GetJob(sub->job_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJob(sub->job_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->FindRequest("Embed", "key-1", "hash").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetLatent(latent_id).ok());
  auto fresh = s->Submit(Spec(2), "key-1", "hash");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->existing);
  EXPECT_NE(fresh->job_id, sub->job_id);
  s->Shutdown();
}

TEST_F(SchedulerTest, CancelTakesEffectBeforeTheNextStep) {
  auto s = Start();
  auto sub = s->Submit(Spec(100000), "", "");
  ASSERT_TRUE(sub.ok());
  auto cursor = *s->Watch(sub->job_id, 0);
  ReadUntil(*cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress && e.step >= 2; });
  ASSERT_TRUE(s->Cancel(sub->job_id).ok());
  // Steps done once the cancel is recorded: the worker may be inside one more step (the
  // reader may lag behind the worker, so this is read from the job, not the stream).
  auto at_cancel = s->GetJob(sub->job_id);
  ASSERT_TRUE(at_cancel.ok());
  auto rest = ReadUntil(*cursor, Terminal);
  ASSERT_EQ(rest.back().kind, Kind::kCancelled);
  int last_step = 0;
  for (const auto& e : rest) {
    if (e.kind == Kind::kProgress) last_step = std::max(last_step, e.step);
  }
  EXPECT_LE(last_step, at_cancel->step + 1);  // at most the step already running
  EXPECT_EQ(s->Cancel(sub->job_id).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s->Cancel("job_nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, QueueLimitAndDeviceTasksBetweenSteps) {
  SchedulerOptions o;
  o.queue_limit = 1;
  o.max_batch = 1;
  auto s = Start(o);
  auto running = s->Submit(Spec(100000), "", "");
  ASSERT_TRUE(running.ok());
  auto cursor = *s->Watch(running->job_id, 0);
  ReadUntil(*cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress; });
  ASSERT_TRUE(s->Submit(Spec(5), "", "").ok());  // waits
  auto full = s->Submit(Spec(5), "", "");
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("limit 1"), std::string::npos);

  // A task runs between steps although the embedding never ends.
  std::promise<absl::Status> done;
  auto t0 = std::chrono::steady_clock::now();
  s->RunTask([](int device) { return device == 0 ? absl::OkStatus() : absl::InternalError("?"); },
             absl::InfiniteFuture(), [&](absl::Status st) { done.set_value(st); });
  EXPECT_TRUE(done.get_future().get().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  std::promise<absl::Status> late;
  s->RunTask([](int) { return absl::OkStatus(); }, absl::Now() - absl::Seconds(1),
             [&](absl::Status st) { late.set_value(st); });
  EXPECT_EQ(late.get_future().get().code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(s->Cancel(running->job_id).ok());
}

// Fair use of the device: bounded task queues per device and per tenant, and tasks of a
// caller that left dropped unrun.
TEST_F(SchedulerTest, DeviceTasksAreBoundedAndDroppedWhenTheirCallerLeft) {
  SchedulerOptions o;
  o.task_queue_limit = 3;
  o.tenant_task_limit = 2;
  auto s = Start(o);
  std::promise<void> gate;  // the test decides when the worker is free again
  std::shared_future<void> opened = gate.get_future().share();
  std::promise<void> blocking;
  s->RunTask(
      [&](int) {
        blocking.set_value();
        opened.wait();
        return absl::OkStatus();
      },
      absl::InfiniteFuture(), [](absl::Status) {}, "z");
  blocking.get_future().wait();  // the worker is busy; what follows waits in its queue

  std::mutex mu;
  std::map<std::string, absl::Status> results;
  std::atomic<int> ran{0};
  auto task = [&](const std::string& name, const std::string& tenant,
                  std::function<bool()> cancelled = nullptr) {
    s->RunTask(
        [&](int) {
          ++ran;
          return absl::OkStatus();
        },
        absl::InfiniteFuture(),
        [&, name](absl::Status st) {
          std::lock_guard<std::mutex> lock(mu);
          results[name] = st;
        },
        tenant, std::move(cancelled));
  };
  task("a1", "a");
  task("a2", "a", [] { return true; });  // its caller has gone
  task("a3", "a");                       // a's share (2) is taken
  task("b1", "b");
  task("b2", "b");  // the device's queue (3) is full
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(results.count("a3"), 1u);
    EXPECT_EQ(results["a3"].code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(absl::StrContains(results["a3"].message(), "--tenant-device-queue-limit"))
        << results["a3"];
    ASSERT_EQ(results.count("b2"), 1u);
    EXPECT_EQ(results["b2"].code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(absl::StrContains(results["b2"].message(), "--device-queue-limit"))
        << results["b2"];
  }
  gate.set_value();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (results.size() == 5) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(results.size(), 5u);
  EXPECT_TRUE(results["a1"].ok());
  EXPECT_TRUE(results["b1"].ok());
  EXPECT_EQ(results["a2"].code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(ran, 2);  // a1 and b1; a2 never ran
}

// Renders cannot starve a running job: between two optimiser steps, tasks take at most
// their share of the device (here a half: as long as one step), then the job steps.
TEST_F(SchedulerTest, TasksAndStepsShareTheDevice) {
  SchedulerOptions o;
  o.task_share = 0.5;
  o.task_queue_limit = 100;
  o.tenant_task_limit = 100;
  auto s = Start(o);
  auto job = s->Submit(Spec(100000), "", "");
  ASSERT_TRUE(job.ok());
  auto cursor = *s->Watch(job->job_id, 0);
  ReadUntil(*cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress && e.step >= 3; });
  // Each task takes 20 ms, longer than a step of this tiny model: one task per step.
  constexpr int kTasks = 40;
  std::vector<int> step_seen(kTasks, -1);
  std::atomic<int> done{0};
  for (int i = 0; i < kTasks; ++i) {
    s->RunTask(
        [&, i](int) {
          step_seen[i] = s->GetJob(job->job_id)->step;
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          return absl::OkStatus();
        },
        absl::InfiniteFuture(),
        [&](absl::Status st) {
          EXPECT_TRUE(st.ok()) << st;
          ++done;
        },
        "renders");
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (done < kTasks && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(done, kTasks);
  // Before: all 40 tasks ran back to back between two steps (the job stood still for
  // 0.8 s). Now the job steps between them.
  const int advanced = step_seen.back() - step_seen.front();
  EXPECT_GE(advanced, kTasks / 4) << "steps during the renders: " << advanced;
  ASSERT_TRUE(s->Cancel(job->job_id).ok());
}

// Admission takes tenants in turn and caps one tenant's running jobs.
TEST_F(SchedulerTest, AdmissionTakesTenantsInTurnAndCapsRunningJobsPerTenant) {
  {
    SchedulerOptions o;
    o.max_batch = 1;
    auto s = Start(o);
    auto first = s->Submit(Spec(100000), "", "", "a");
    ASSERT_TRUE(first.ok());
    auto cursor = *s->Watch(first->job_id, 0);
    ReadUntil(*cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress; });
    std::vector<std::string> ids;
    for (const char* tenant : {"a", "a", "b"})
      ids.push_back(s->Submit(Spec(2), "", "", tenant)->job_id);
    ASSERT_TRUE(s->Cancel(first->job_id).ok());
    std::vector<std::pair<int64_t, std::string>> started;
    for (const std::string& id : ids) {
      auto c = *s->Watch(id, 0);
      ReadUntil(*c, Terminal);
      started.emplace_back(s->GetJob(id)->record.started_unix_ms, id);
    }
    std::sort(started.begin(), started.end());
    // FIFO would run a, a, b; b's job is admitted right after the first of a's.
    EXPECT_EQ(started[0].second, ids[2]) << "b's job did not get its turn";
    s->Shutdown();
  }
  {
    // A tenant at its cap waits while another tenant's job has the turn; with nobody else
    // waiting it is admitted anyway (the cap does not leave the device idle).
    SchedulerOptions o;
    o.max_batch = 3;
    o.tenant_max_running = 1;
    auto s = Start(o);
    auto progress = [](const JobEvent& e) { return e.kind == Kind::kProgress; };
    std::vector<std::string> running;
    for (const char* tenant : {"a", "c", "c"}) {  // a runs 1 (its cap), c runs 2 (over it)
      running.push_back(s->Submit(Spec(100000), "", "", tenant)->job_id);
      ReadUntil(**s->Watch(running.back(), 0), progress);
    }
    EXPECT_EQ(s->running(), 3);
    const std::string a2 = s->Submit(Spec(100000), "", "", "a")->job_id;
    const std::string b1 = s->Submit(Spec(100000), "", "", "b")->job_id;
    ASSERT_TRUE(s->Cancel(running[1]).ok());  // a slot: a's turn by name, but a is at its cap
    ReadUntil(**s->Watch(b1, 0), progress);
    EXPECT_EQ(s->GetJob(a2)->record.state, JobState::kQueued);
    ASSERT_TRUE(s->Cancel(running[2]).ok());  // nobody else waits: a2 runs over the cap
    ReadUntil(**s->Watch(a2, 0), progress);
    for (const std::string& id : {running[0], a2, b1}) ASSERT_TRUE(s->Cancel(id).ok());
    s->Shutdown();
  }
}

// A job's log keeps every lifecycle event and the newest coalesce_backlog progress events:
// a replay, even of a long finished job, is a history in order, and a reader near the end
// gets every event there.
TEST_F(SchedulerTest, EventLogIsBoundedAndReplaysStayConsistent) {
  SchedulerOptions o;
  o.coalesce_backlog = 5;
  auto s = Start(o);
  auto sub = s->Submit(Spec(40), "", "");
  ASSERT_TRUE(sub.ok()) << sub.status();
  std::vector<JobEvent> live = ReadUntil(**s->Watch(sub->job_id, 0), Terminal);
  ASSERT_FALSE(live.empty());
  const int64_t last = live.back().sequence;
  EXPECT_EQ(last, 1 + 1 + 40 + 1);  // queued, running, 40 steps, succeeded

  // Every event of a reader within the backlog of the end: the newest 4 of them.
  std::vector<JobEvent> tail = ReadUntil(**s->Watch(sub->job_id, last - 4), Terminal);
  ASSERT_EQ(tail.size(), 4u);
  for (size_t i = 0; i < tail.size(); ++i) {
    EXPECT_EQ(tail[i].sequence, last - 3 + static_cast<int64_t>(i));
  }
  EXPECT_EQ(tail[2].kind, Kind::kProgress);
  EXPECT_EQ(tail[2].step, 40);

  // From the start: the lifecycle events in order, no sequence twice, the end last.
  std::vector<JobEvent> all = ReadUntil(**s->Watch(sub->job_id, 0), Terminal);
  ASSERT_GE(all.size(), 3u);
  EXPECT_EQ(all[0].kind, Kind::kQueued);
  EXPECT_EQ(all[1].kind, Kind::kRunning);
  EXPECT_EQ(all.back().kind, Kind::kSucceeded);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].sequence, all[i - 1].sequence);

  // A reader from just after the first progress event the log dropped: the oldest kept.
  std::vector<JobEvent> from_dropped = ReadUntil(**s->Watch(sub->job_id, 3), Terminal);
  ASSERT_FALSE(from_dropped.empty());
  EXPECT_GT(from_dropped[0].sequence, 4);
  s->Shutdown();
}

// A job no longer in memory: GetJob and ListJobs read its summary alone (its spec is gone
// from the store) and agree on its steps.
TEST_F(SchedulerTest, FinishedJobsAreLeanAndGetJobAgreesWithListJobs) {
  std::string id;
  {
    auto s = Start();
    EmbedJobSpec spec = Spec(6);
    spec.options.noise_steps = 3;
    auto sub = s->Submit(spec, "", "");
    ASSERT_TRUE(sub.ok()) << sub.status();
    id = sub->job_id;
    ReadUntil(**s->Watch(id, 0), Terminal);
    s->Shutdown();
  }
  auto stored = store_->GetJob(id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state, JobState::kSucceeded);
  EXPECT_EQ(stored->spec, "");
  EXPECT_EQ(stored->checkpoint, "");
  EXPECT_EQ(stored->total_steps, 9);

  auto s = Start();  // a new process: the job is not in memory
  auto got = s->GetJob(id);
  ASSERT_TRUE(got.ok()) << got.status();
  auto listed = s->ListJobs(Page{}, {});
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->jobs.size(), 1u);
  EXPECT_EQ(got->total_steps, 9);
  EXPECT_EQ(listed->jobs[0].total_steps, 9);
  EXPECT_EQ(got->step, listed->jobs[0].step);
  EXPECT_EQ(got->step, 9);
  // Its replay: the end, rebuilt from the store.
  std::vector<JobEvent> replay = ReadUntil(**s->Watch(id, 0), Terminal);
  EXPECT_EQ(replay.back().kind, Kind::kSucceeded);
  s->Shutdown();
}

// Jobs stored before total_steps was a column (-1): the scheduler's start fills it in from
// their specs and releases the finished ones' specs.
TEST_F(SchedulerTest, StartFillsInTheTotalStepsOfOlderJobs) {
  EmbedJobSpec spec = Spec(12);
  spec.options.noise_steps = 5;
  JobRecord done;
  done.id = "job_old_done";
  done.model = "demo";
  done.state = JobState::kSucceeded;
  done.spec = SerializeSpec(spec);
  done.result = R"({"loss":1,"mse":1,"perceptual":0,"psnr":20,"steps":17})";
  done.total_steps = -1;
  // Recent: the start's expiry (7 days) keeps them.
  done.created_unix_ms = absl::ToUnixMillis(absl::Now()) - 2000;
  done.finished_unix_ms = done.created_unix_ms + 1000;
  JobRecord unreadable = done;
  unreadable.id = "job_old_garbled";
  unreadable.spec = "not a spec";
  ASSERT_TRUE(store_->CreateJob(done).ok());
  ASSERT_TRUE(store_->CreateJob(unreadable).ok());

  auto s = Start();
  EXPECT_TRUE(store_->JobsWithoutTotalSteps(10)->empty());
  auto stored = store_->GetJob(done.id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->total_steps, 17);
  EXPECT_EQ(stored->spec, "");
  auto got = s->GetJob(done.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->total_steps, 17);
  got = s->GetJob(unreadable.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->total_steps, 0);  // unknown, shown as such
  s->Shutdown();
}

// Every call goes to a real store, except job updates while `fail_updates` is set.
class UpdatesCanFailStore : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  std::atomic<bool> fail_updates{false};

  absl::Status UpdateJob(const JobRecord& r) override {
    if (fail_updates) return absl::UnavailableError("the database is away (test)");
    return ForwardingStore::UpdateJob(r);
  }
  absl::Status FinishJobWithLatent(const JobRecord& r, const LatentRecord& l) override {
    if (fail_updates) return absl::UnavailableError("the database is away (test)");
    return ForwardingStore::FinishJobWithLatent(r, l);
  }
};

// Every write takes `delay`: a store on a slow disk or far away.
class SlowStore : public ForwardingStore {
 public:
  SlowStore(Store* inner, std::chrono::milliseconds delay)
      : ForwardingStore(inner), delay_(delay) {}
  absl::Status CreateJob(const JobRecord& r) override {
    Wait();
    return ForwardingStore::CreateJob(r);
  }
  absl::Status UpdateJob(const JobRecord& r) override {
    Wait();
    return ForwardingStore::UpdateJob(r);
  }
  absl::Status SaveCheckpoint(const std::string& id, int step, const std::string& bytes,
                              int64_t next, const std::string& owner, int64_t epoch) override {
    Wait();
    return ForwardingStore::SaveCheckpoint(id, step, bytes, next, owner, epoch);
  }
  absl::Status FinishJobWithLatent(const JobRecord& r, const LatentRecord& l) override {
    Wait();
    return ForwardingStore::FinishJobWithLatent(r, l);
  }

 private:
  void Wait() const { std::this_thread::sleep_for(delay_); }
  const std::chrono::milliseconds delay_;
};

// A slow store does not slow the steps: the workers' writes (start, checkpoints, final
// record) go through the writer's queue, and a Submit's writes hold no scheduler lock.
// What a write reports still follows it: the terminal event comes once the final record,
// after every checkpoint before it, is stored.
TEST_F(SchedulerTest, ASlowStoreDoesNotSlowTheSteps) {
  constexpr auto kDelay = std::chrono::milliseconds(250);
  SlowStore slow(store_.get(), kDelay);
  SchedulerOptions o;
  o.checkpoint_every = 2;
  o.max_batch = 2;
  auto s = Scheduler::Create(o, registry_.get(), &slow);
  ASSERT_TRUE(s.ok()) << s.status();
  auto a = (*s)->Submit(Spec(60, 1), "", "");
  ASSERT_TRUE(a.ok()) << a.status();
  auto cursor = *(*s)->Watch(a->job_id, 0);
  // Another job submitted while A runs: its writes (250 ms each) happen meanwhile.
  std::vector<JobEvent> events = ReadUntil(
      *cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress && e.step >= 5; });
  std::thread other([&] { EXPECT_TRUE((*s)->Submit(Spec(30, 2), "", "").ok()); });
  std::vector<JobEvent> more = ReadUntil(*cursor, Terminal, 120);
  other.join();
  events.insert(events.end(), more.begin(), more.end());
  ASSERT_EQ(events.back().kind, Kind::kSucceeded) << events.back().status;
  // Step 5 to step 45: 20 checkpoints, 5 s of writes if the worker waited for them.
  int64_t at5 = 0, at45 = 0;
  for (const JobEvent& e : events) {
    if (e.kind != Kind::kProgress) continue;
    if (e.step == 5) at5 = e.time_unix_ms;
    if (e.step == 45) at45 = e.time_unix_ms;
  }
  ASSERT_GT(at5, 0);
  ASSERT_GT(at45, 0);
  EXPECT_LT(at45 - at5, 2500) << "40 steps with 20 checkpoints of 250 ms each";
  // The end was announced after every write before it: 30 checkpoints and the start.
  EXPECT_GE(events.back().time_unix_ms - events.front().time_unix_ms, 31 * kDelay.count());
  auto stored = store_->GetJob(a->job_id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state, JobState::kSucceeded);
  EXPECT_TRUE(store_->GetLatent(events.back().latent_id, false).ok());
  (*s)->Shutdown();
}

// A queued job whose cancel cannot be stored stays queued, where it was, and the caller is
// told; once the store takes writes again the cancel goes through.
TEST_F(SchedulerTest, QueuedJobWhoseCancelIsNotStoredStaysQueued) {
  UpdatesCanFailStore flaky(store_.get());
  SchedulerOptions o;
  o.max_batch = 1;
  auto created = Scheduler::Create(o, registry_.get(), &flaky);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Scheduler> s = *std::move(created);
  auto running = s->Submit(Spec(100000), "", "");
  ASSERT_TRUE(running.ok());
  auto cursor = *s->Watch(running->job_id, 0);
  ReadUntil(*cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress; });
  auto first = s->Submit(Spec(5), "", ""), second = s->Submit(Spec(5, 2), "", "");
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(s->GetJob(first->job_id)->queue_position, 1);

  flaky.fail_updates = true;
  auto refused = s->Cancel(first->job_id);
  flaky.fail_updates = false;
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("still queued"), std::string::npos) << refused.status();
  auto view = s->GetJob(first->job_id);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->record.state, JobState::kQueued);
  EXPECT_EQ(view->queue_position, 1);  // where it was, ahead of the second
  EXPECT_EQ(s->GetJob(second->job_id)->queue_position, 2);
  EXPECT_EQ(store_->GetJob(first->job_id)->state, JobState::kQueued);

  auto cancelled = s->Cancel(first->job_id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(store_->GetJob(first->job_id)->state, JobState::kCancelled);
  EXPECT_EQ(s->GetJob(second->job_id)->queue_position, 1);
  ASSERT_TRUE(s->Cancel(second->job_id).ok());
  ASSERT_TRUE(s->Cancel(running->job_id).ok());
  ReadUntil(*cursor, Terminal);
}

TEST_F(SchedulerTest, ShutdownCheckpointsAndARestartResumesToTheSameResult) {
  SchedulerOptions o;
  o.checkpoint_every = 3;
  std::string job_id;
  {
    auto s = Start(o);
    auto sub = s->Submit(Spec(40, 5), "", "");
    ASSERT_TRUE(sub.ok());
    job_id = sub->job_id;
    auto cursor = *s->Watch(job_id, 0);
    ReadUntil(*cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress && e.step >= 10; });
    s->Shutdown();
    EXPECT_EQ(cursor->closed().code(), absl::StatusCode::kUnavailable);
  }
  auto record = store_->GetJob(job_id);
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->state, JobState::kQueued);
  EXPECT_GE(record->checkpoint_step, 10);
  store_.reset();
  OpenStore();
  auto s = Start(o);
  auto cursor = *s->Watch(job_id, 0);
  auto events = ReadUntil(*cursor, Terminal);
  ASSERT_EQ(events.back().kind, Kind::kSucceeded);
  int resumed = -1;
  for (const auto& e : events) {
    if (e.kind == Kind::kRunning) resumed = e.resumed_from_step;
  }
  EXPECT_GE(resumed, 10);
  // The same job without the interruption.
  auto fresh = s->Submit(Spec(40, 5), "", "");
  auto fresh_events = ReadUntil(**s->Watch(fresh->job_id, 0), Terminal);
  auto a = store_->GetLatent(events.back().latent_id);
  auto b = store_->GetLatent(fresh_events.back().latent_id);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->values.size(), b->values.size());
  float max_diff = 0;
  for (size_t i = 0; i < a->values.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(a->values[i] - b->values[i]));
  }
  EXPECT_LT(max_diff, 1e-5);
}

// A second process under the same replica ID (a restart while the first one still runs)
// takes the job at a new lease epoch: the first one can no longer store anything of it and
// gives it up at its next lease renewal (its watcher hears so, never an end), and the job
// goes on in the second.
TEST_F(SchedulerTest, ASecondProcessUnderTheSameReplicaIdFencesTheFirst) {
  SchedulerOptions o;
  o.lease_ms = 500;  // renewals every 100 ms
  o.checkpoint_every = 3;
  auto first = Start(o);
  auto sub = first->Submit(Spec(100000), "", "");  // runs until cancelled
  ASSERT_TRUE(sub.ok()) << sub.status();
  auto first_cursor = *first->Watch(sub->job_id, 0);
  ReadUntil(*first_cursor,
            [](const JobEvent& e) { return e.kind == Kind::kProgress && e.step >= 5; });
  EXPECT_EQ(store_->GetJob(sub->job_id)->lease_epoch, 1);

  auto second = Start(o);  // the same (default) replica ID on the same store
  EXPECT_EQ(store_->GetJob(sub->job_id)->lease_epoch, 2);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<JobEvent> seen;
  while (first_cursor->closed().ok() && std::chrono::steady_clock::now() < deadline) {
    if (auto ev = first_cursor->Next()) {
      seen.push_back(*ev);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  EXPECT_EQ(first_cursor->closed().code(), absl::StatusCode::kUnavailable)
      << first_cursor->closed();
  for (const JobEvent& e : seen) EXPECT_FALSE(e.terminal()) << "the first process ended the job";

  auto second_cursor = *second->Watch(sub->job_id, 0);
  ReadUntil(*second_cursor, [](const JobEvent& e) { return e.kind == Kind::kProgress; });
  ASSERT_TRUE(second->Cancel(sub->job_id).ok());
  auto events = ReadUntil(*second_cursor, Terminal);
  EXPECT_EQ(events.back().kind, Kind::kCancelled);
  auto record = store_->GetJob(sub->job_id);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->state, JobState::kCancelled);
  EXPECT_EQ(record->lease_epoch, 2);
}

}  // namespace
}  // namespace i2s
