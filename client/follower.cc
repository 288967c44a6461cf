#include "client/follower.h"

#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/errors.h"
#include "client/files.h"

namespace i2s::client::cli {

namespace fs = std::filesystem;

SignalCounts& Signals() {
  static SignalCounts counts;
  return counts;
}

void Follower::Add(std::string label, std::string stem,
                   std::unique_ptr<Stream<v1::JobEvent>> stream) {
  auto t = std::make_unique<Tracked>();
  t->view.label = std::move(label);
  t->stem = std::move(stem);
  t->stream = std::move(stream);
  jobs_.push_back(std::move(t));
}

void Follower::Run() {
  seen_sigint_ = Signals().sigint.load();
  seen_sigterm_ = Signals().sigterm.load();
  Signals().armed = true;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs_.size(); ++i) threads.emplace_back([this, i] { Read(*jobs_[i]); });
  {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      if (AllDone()) break;
      if (Signals().sigterm.load() > seen_sigterm_) {
        seen_sigterm_ = Signals().sigterm.load();
        DetachAll();
      }
      if (Signals().sigint.load() > seen_sigint_) {
        seen_sigint_ = Signals().sigint.load();
        Interrupted(lock);
      }
      Draw();
    }
    Draw();
  }
  for (auto& thread : threads) thread.join();
  Signals().armed = false;
}

bool Follower::AllDone() const {
  for (const auto& t : jobs_) {
    if (!t->done) return false;
  }
  return true;
}

void Follower::Read(Tracked& t) {
  absl::Time reconnect_until = absl::InfinitePast();
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    Stream<v1::JobEvent>* stream = t.stream.get();
    lock.unlock();
    auto next = stream->Next();
    lock.lock();
    if (next.ok() && next->has_value()) {
      reconnect_until = absl::InfinitePast();
      const v1::JobEvent& event = **next;
      t.view.Apply(event);
      if (event.has_succeeded() && event.succeeded().has_reconstruction()) {
        t.reconstruction = event.succeeded().reconstruction().data();
      }
      if (event.has_succeeded() && event.succeeded().has_alignment()) {
        t.alignment = event.succeeded().alignment();
        t.aligned = t.alignment->aligned().data();
        t.alignment->clear_aligned();
      }
      if (event.has_progress() && event.progress().has_preview() && !options_.preview_dir.empty()) {
        const std::string path =
            (fs::path(options_.preview_dir) /
             absl::StrFormat("%s-step%06d.png", t.stem, event.progress().step()))
                .string();
        const std::string data = event.progress().preview().data();
        lock.unlock();
        absl::Status written = WriteOutput(path, data, /*force=*/true);
        lock.lock();
        if (!written.ok()) t.view.error = std::string(written.message());
      }
      if (t.cancel_requested && !t.cancel_sent && !t.view.job_id.empty() && !t.view.finished()) {
        t.cancel_sent = true;
        const std::string id = t.view.job_id;
        lock.unlock();
        (void)client_.CancelJob(id);
        lock.lock();
      }
      Log(t);
      cv_.notify_all();
      continue;
    }
    if (next.ok()) {  // the server ended the stream
      if (!t.view.finished() && !t.view.job_id.empty()) {
        const std::string id = t.view.job_id;
        lock.unlock();
        auto job = client_.GetJob(id);
        lock.lock();
        if (job.ok()) t.view.ApplyJob(*job);
      }
      break;
    }
    if (t.view.detached) break;
    // The connection broke (e.g. the server restarted): the job lives on in the
    // server's store, so re-attach after the last event seen, for up to a minute.
    // CANCELLED that the client did not ask for comes from a server going down (its
    // gRPC shutdown cancels the calls still open).
    const absl::StatusCode code = next.status().code();
    if ((code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kCancelled) &&
        !t.view.job_id.empty()) {
      const absl::Time now = absl::Now();
      if (reconnect_until == absl::InfinitePast()) {
        reconnect_until = now + absl::Seconds(60);
        if (!g_.quiet) {
          std::fprintf(stderr, "%s: connection lost; re-attaching to %s\n", t.view.label.c_str(),
                       t.view.job_id.c_str());
        }
      }
      if (now < reconnect_until) {
        const std::string id = t.view.job_id;
        const int64_t after = t.view.last_sequence;
        lock.unlock();
        absl::SleepFor(absl::Seconds(1));
        auto again = client_.WatchJob(id, after);
        lock.lock();
        if (t.view.detached) break;
        t.stream = std::move(again);
        continue;
      }
    }
    t.error = next.status();
    if (t.view.error.empty()) t.view.error = Explain(t.error, g_.server);
    break;
  }
  t.done = true;
  Log(t);
  cv_.notify_all();
}

void Follower::Log(Tracked& t) {
  if (g_.quiet || g_.stderr_tty) return;
  const JobView& v = t.view;
  const int tenth = v.total_steps > 0 ? v.step * 10 / v.total_steps : 0;
  const bool changed = !t.logged_any || v.state != t.logged_state;
  const bool progressed = v.state == v1::RUNNING && tenth > t.logged_tenth && tenth < 10;
  if (!changed && !progressed && !(t.done && !v.finished() && !v.error.empty())) return;
  if (v.state == v1::JOB_STATE_UNSPECIFIED && v.error.empty()) return;
  t.logged_any = true;
  t.logged_state = v.state;
  t.logged_tenth = std::max(t.logged_tenth, tenth);
  std::fprintf(stderr, "%s\n", LogLine(v).c_str());
  std::fflush(stderr);
}

void Follower::Draw() {
  if (g_.quiet || !g_.stderr_tty) return;
  const absl::Time now = absl::Now();
  const bool final = AllDone();
  if (!final && now - last_draw_ < absl::Milliseconds(100)) return;
  last_draw_ = now;
  int label_width = 0;
  for (const auto& t : jobs_) {
    label_width = std::max(label_width, std::min(40, VisibleWidth(t->view.label)));
  }
  const int width = TerminalWidth(STDERR_FILENO) - 1;
  std::vector<std::string> lines;
  for (const auto& t : jobs_) {
    lines.push_back(LiveLine(t->view, label_width, width, g_.err_style));
  }
  display_.Draw(lines);
}

void Follower::Interrupted(std::unique_lock<std::mutex>& lock) {
  std::string mode = g_.on_interrupt;
  if (mode == "ask" && !(g_.stdin_tty && g_.stderr_tty)) mode = "detach";
  if (cancelled_all_) mode = "detach";  // a second Ctrl-C after "cancel" lets go
  if (mode == "ask") {
    display_.Erase();
    std::fprintf(stderr,
                 "Interrupted. [c] cancel the job%s on the server, [d] detach (%s running, "
                 "follow again with `jobs watch`), [r] resume watching? [d] ",
                 jobs_.size() > 1 ? "s" : "", jobs_.size() > 1 ? "they keep" : "it keeps");
    std::fflush(stderr);
    lock.unlock();
    const char key = ReadKey();
    lock.lock();
    std::fprintf(stderr, "%c\n", key == '\n' ? 'd' : key);
    if (key == 'r') return;
    mode = key == 'c' ? "cancel" : "detach";
  }
  if (mode == "cancel") {
    CancelAll(lock);
  } else {
    DetachAll();
  }
}

char Follower::ReadKey() {
  termios saved{};
  const bool raw = tcgetattr(STDIN_FILENO, &saved) == 0;
  if (raw) {
    termios t = saved;
    t.c_lflag &= ~(ICANON | ECHO);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &t);
  }
  char key = 'd';
  while (true) {
    if (Signals().sigint.load() > seen_sigint_ || Signals().sigterm.load() > seen_sigterm_) break;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (AllDone()) {
        key = 'r';
        break;
      }
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char c = 0;
      if (read(STDIN_FILENO, &c, 1) != 1) break;  // EOF: detach
      c = static_cast<char>(absl::ascii_tolower(static_cast<unsigned char>(c)));
      if (c == 'c' || c == 'd' || c == 'r' || c == '\n') {
        key = c;
        break;
      }
    }
  }
  seen_sigint_ = Signals().sigint.load();
  seen_sigterm_ = Signals().sigterm.load();
  if (raw) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  return key;
}

void Follower::DetachAll() {
  detached_ = true;
  for (auto& t : jobs_) {
    if (t->done || t->view.finished()) continue;
    t->view.detached = true;
    t->stream->Cancel();
  }
}

void Follower::CancelAll(std::unique_lock<std::mutex>& lock) {
  cancelled_all_ = true;
  std::vector<std::string> ids;
  for (auto& t : jobs_) {
    if (t->done || t->view.finished()) continue;
    t->cancel_requested = true;
    if (!t->view.job_id.empty() && !t->cancel_sent) {
      t->cancel_sent = true;
      ids.push_back(t->view.job_id);
    }
  }
  lock.unlock();
  for (const std::string& id : ids) (void)client_.CancelJob(id);
  lock.lock();
}

int JobExitCode(const Tracked& t) {
  if (t.view.state == v1::SUCCEEDED) return kExitOk;
  if (t.view.detached) return kExitDetached;
  if (t.view.state == v1::FAILED) return kExitJobFailed;
  if (t.view.state == v1::CANCELLED) return kExitCancelled;
  if (!t.error.ok()) return ExitCodeFor(t.error);
  return kExitError;
}

}  // namespace i2s::client::cli
