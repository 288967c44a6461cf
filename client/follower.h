// The job follower of i2s_client: follows jobs to their end (one reader thread per job
// applying events to a JobView, re-attaching after a broken stream), draws their progress
// on stderr, and handles Ctrl-C (cancel / detach / resume) and SIGTERM (detach). Used by
// `embed`, `jobs watch` and the edit commands that embed a file first.
#ifndef I2S_CLIENT_FOLLOWER_H_
#define I2S_CLIENT_FOLLOWER_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/context.h"
#include "client/progress.h"

namespace i2s::client::cli {

// Ctrl-C / SIGTERM, counted by RunCli's signal thread. While jobs are followed (armed) the
// follower decides what they mean; otherwise they end the process at once.
struct SignalCounts {
  std::atomic<int> sigint{0};
  std::atomic<int> sigterm{0};
  std::atomic<bool> armed{false};
};
// The process's counts.
SignalCounts& Signals();

// One followed job: its view, the stream that feeds it, and what it brought back.
struct Tracked {
  JobView view;
  std::string stem;  // file name stem for previews and reconstructions
  std::unique_ptr<Stream<v1::JobEvent>> stream;
  std::string reconstruction;              // PNG from the succeeded event
  std::optional<v1::Alignment> alignment;  // from the succeeded event, image data moved out
  std::string aligned;                     // the aligned image (PNG), when sent
  absl::Status error;                      // following failed (the job itself may be fine)
  bool cancel_requested = false, cancel_sent = false;
  bool done = false;  // its reader thread ended
  v1::JobState logged_state = v1::JOB_STATE_UNSPECIFIED;
  int logged_tenth = 0;
  bool logged_any = false;
};

struct FollowOptions {
  std::string preview_dir;  // "" = do not save previews
};

// Follows jobs to their end, one reader thread per job, drawing progress on stderr, and
// handles Ctrl-C (cancel / detach / resume) and SIGTERM (detach). Used from the main
// thread; `client` and `globals` must outlive it.
class Follower {
 public:
  Follower(Client& client, const Globals& globals, FollowOptions options)
      : client_(client), g_(globals), options_(std::move(options)), display_(stderr) {}

  // Follows the job fed by `stream`.
  void Add(std::string label, std::string stem, std::unique_ptr<Stream<v1::JobEvent>> stream);

  std::vector<std::unique_ptr<Tracked>>& jobs() { return jobs_; }

  // Follows every job added to its end (or until detached); returns after the last
  // reader thread ended and the display's last redraw.
  void Run();

 private:
  bool AllDone() const;
  // One job's reader thread.
  void Read(Tracked& t);
  // Plain progress lines when stderr is not a terminal: state changes and every tenth.
  void Log(Tracked& t);
  void Draw();
  // Ctrl-C while following: ask (on a terminal), or do what --on-interrupt says.
  void Interrupted(std::unique_lock<std::mutex>& lock);
  // One key from the terminal, without waiting for Enter; 'd' on a second Ctrl-C, 'r'
  // when every job ended meanwhile.
  char ReadKey();
  void DetachAll();
  void CancelAll(std::unique_lock<std::mutex>& lock);

  Client& client_;
  const Globals& g_;
  FollowOptions options_;
  LiveDisplay display_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Tracked>> jobs_;
  absl::Time last_draw_ = absl::InfinitePast();
  int seen_sigint_ = 0, seen_sigterm_ = 0;
  bool cancelled_all_ = false, detached_ = false;
};

// The exit code of a followed job.
int JobExitCode(const Tracked& t);

}  // namespace i2s::client::cli

#endif  // I2S_CLIENT_FOLLOWER_H_
