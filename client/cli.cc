#include "client/cli.h"

#include <google/protobuf/util/json_util.h>
#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/media.h"
#include "client/progress.h"
#include "server/base/point_list.h"
#include "server/base/signals.h"
#include "server/base/status_macros.h"

#ifndef I2S_VERSION
#define I2S_VERSION "dev"
#endif

namespace i2s::client {

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kCancelled:
      return kExitCancelled;
    case absl::StatusCode::kDeadlineExceeded:
      return kExitTimeout;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return kExitInvalid;
    case absl::StatusCode::kResourceExhausted:
      return kExitBusy;
    case absl::StatusCode::kUnavailable:
      return kExitUnreachable;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitDenied;
    default:
      return kExitError;
  }
}

std::string Explain(const absl::Status& status, const std::string& server) {
  std::string message(status.message());
  // The server's hint names the API field; the flag is what a CLI user types.
  absl::StrReplaceAll({{"set align.on_no_face = RESIZE", "use --on-no-face resize"}}, &message);
  switch (status.code()) {
    case absl::StatusCode::kUnavailable: {
      // gRPC's own connection failures, as opposed to the server saying it is unavailable.
      std::string reason;
      if (absl::StrContains(message, "Connection refused")) {
        reason = "connection refused";
      } else if (absl::StrContains(message, "DNS resolution failed") ||
                 absl::StrContains(message, "name resolution")) {
        reason = "the host name does not resolve";
      } else if (absl::StrContains(message, "failed to connect") ||
                 absl::StrContains(message, "Failed to connect")) {
        reason = "no connection";
      }
      if (!reason.empty()) {
        return absl::StrCat("cannot reach i2s_server at ", server, " (", reason,
                            "). Is it running? Point --server or I2S_SERVER at it.");
      }
      return absl::StrCat("the server at ", server, " is unavailable: ", message);
    }
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrCat("no answer from ", server,
                          " within the time allowed (raise --timeout, in seconds)");
    case absl::StatusCode::kResourceExhausted:
      return absl::StrCat("the server is busy or a limit was reached: ", message);
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat("the server refused the request: ", message);
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return absl::StrCat("the server failed: ", message);
    default:
      return message;
  }
}

namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------- signals

// Ctrl-C / SIGTERM, counted by the signal thread. While jobs are followed (armed) the
// follower decides what they mean; otherwise they end the process at once.
std::atomic<int> g_sigint{0};
std::atomic<int> g_sigterm{0};
std::atomic<bool> g_armed{false};

// Reads the signal queue (server/base/signals.h: the handlers catch a signal in whichever
// thread the kernel delivers it to, so threads a library started before main cannot
// let Ctrl-C kill the process).
void SignalThread(SignalQueue* queue) {
  while (true) {
    const int sig = queue->Next();
    if (!g_armed.load()) {
      static constexpr char kMessage[] = "\ni2s_client: interrupted\n";
      (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
      _exit(130);
    }
    (sig == SIGINT ? g_sigint : g_sigterm).fetch_add(1);
  }
}

// ------------------------------------------------------------------------- globals

struct Globals {
  std::string server = "localhost:50051";
  double timeout = 30;
  bool tls = false;
  std::string ca_cert, client_cert, client_key, server_name, token_file;
  bool json = false;
  bool quiet = false;
  bool no_color = false;
  std::string on_interrupt = "ask";
  // Filled in from the environment.
  bool stdin_tty = false, stdout_tty = false, stderr_tty = false;
  TextStyle err_style, out_style;
};

// A failure with its exit code and a sentence for the user.
struct Failure {
  int code;
  std::string message;
};

nlohmann::json ProtoJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string text;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return nlohmann::json::parse(text);
}

std::string StateName(v1::JobState state) {
  return state == v1::JOB_STATE_UNSPECIFIED ? "SUBMITTING" : v1::JobState_Name(state);
}

std::string FormatTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms),
                          absl::LocalTimeZone());
}

std::string Lower(std::string s) {
  absl::AsciiStrToLower(&s);
  return s;
}

std::string Extension(const std::string& path) { return Lower(fs::path(path).extension()); }

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (!in.good() && !in.eof()) return absl::InternalError(absl::StrCat(path, ": cannot read"));
  return buffer.str();
}

absl::Status CheckWritable(const std::string& path, bool force) {
  if (path == "-") return absl::OkStatus();
  std::error_code ec;
  if (fs::exists(path, ec) && !force) {
    return absl::AlreadyExistsError(
        absl::StrCat(path, " already exists (use --force to overwrite it)"));
  }
  return absl::OkStatus();
}

// Writes `bytes` to `path` ("-" = stdout) through a temporary file and a rename, so that
// a failed write leaves no half-written output.
absl::Status WriteOutput(const std::string& path, const std::string& bytes, bool force) {
  if (path == "-") {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
    return absl::OkStatus();
  }
  if (absl::Status s = CheckWritable(path, force); !s.ok()) return s;
  std::error_code ec;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string temp = absl::StrCat(path, ".tmp-", getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      fs::remove(temp, ec);
      return absl::InternalError(absl::StrCat(path, ": cannot write"));
    }
  }
  fs::rename(temp, target, ec);
  if (ec) {
    fs::remove(temp, ec);
    return absl::InternalError(absl::StrCat(path, ": cannot write (", ec.message(), ")"));
  }
  return absl::OkStatus();
}

// PNG bytes from the server -> the bytes of `path`'s format (.png as is, .jpg re-encoded).
absl::StatusOr<std::string> ConvertPng(const std::string& png, const std::string& path) {
  const std::string ext = Extension(path);
  if (path == "-" || ext == ".png") return png;
  try {
    cv::Mat image = cv::imdecode(
        cv::Mat(1, static_cast<int>(png.size()), CV_8UC1, const_cast<char*>(png.data())),
        cv::IMREAD_COLOR);
    if (image.empty()) return absl::InternalError("the server sent an undecodable image");
    std::vector<uchar> out;
    if (!cv::imencode(ext, image, out)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": cannot write images of type '", ext, "' (use .png or .jpg)"));
    }
    return std::string(out.begin(), out.end());
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
}

absl::StatusOr<RgbFrame> DecodeFrame(const std::string& png) {
  try {
    cv::Mat bgr = cv::imdecode(
        cv::Mat(1, static_cast<int>(png.size()), CV_8UC1, const_cast<char*>(png.data())),
        cv::IMREAD_COLOR);
    if (bgr.empty()) return absl::InternalError("the server sent an undecodable frame");
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    RgbFrame frame;
    frame.width = rgb.cols;
    frame.height = rgb.rows;
    frame.rgb.assign(rgb.data, rgb.data + rgb.total() * 3);
    return frame;
  } catch (const cv::Exception& e) {
    return absl::InternalError(e.what());
  }
}

// ------------------------------------------------------------------------- follower

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
// handles Ctrl-C (cancel / detach / resume) and SIGTERM (detach). Used by `embed`, `jobs
// watch` and the edit commands that embed a path first.
class Follower {
 public:
  Follower(Client& client, const Globals& globals, FollowOptions options)
      : client_(client), g_(globals), options_(std::move(options)), display_(stderr) {}

  // Follows the job fed by `stream`.
  void Add(std::string label, std::string stem, std::unique_ptr<Stream<v1::JobEvent>> stream) {
    auto t = std::make_unique<Tracked>();
    t->view.label = std::move(label);
    t->stem = std::move(stem);
    t->stream = std::move(stream);
    jobs_.push_back(std::move(t));
  }

  std::vector<std::unique_ptr<Tracked>>& jobs() { return jobs_; }

  void Run() {
    seen_sigint_ = g_sigint.load();
    seen_sigterm_ = g_sigterm.load();
    g_armed = true;
    std::vector<std::thread> threads;
    for (size_t i = 0; i < jobs_.size(); ++i) threads.emplace_back([this, i] { Read(*jobs_[i]); });
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        cv_.wait_for(lock, std::chrono::milliseconds(100));
        if (AllDone()) break;
        if (g_sigterm.load() > seen_sigterm_) {
          seen_sigterm_ = g_sigterm.load();
          DetachAll();
        }
        if (g_sigint.load() > seen_sigint_) {
          seen_sigint_ = g_sigint.load();
          Interrupted(lock);
        }
        Draw();
      }
      Draw();
    }
    for (auto& thread : threads) thread.join();
    g_armed = false;
  }

 private:
  bool AllDone() const {
    for (const auto& t : jobs_) {
      if (!t->done) return false;
    }
    return true;
  }

  // One job's reader thread.
  void Read(Tracked& t) {
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
        if (event.has_progress() && event.progress().has_preview() &&
            !options_.preview_dir.empty()) {
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

  // Plain progress lines when stderr is not a terminal: state changes and every tenth.
  void Log(Tracked& t) {
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

  void Draw() {
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

  // Ctrl-C while following: ask (on a terminal), or do what --on-interrupt says.
  void Interrupted(std::unique_lock<std::mutex>& lock) {
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

  // One key from the terminal, without waiting for Enter; 'd' on a second Ctrl-C, 'r'
  // when every job ended meanwhile.
  char ReadKey() {
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
      if (g_sigint.load() > seen_sigint_ || g_sigterm.load() > seen_sigterm_) break;
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
    seen_sigint_ = g_sigint.load();
    seen_sigterm_ = g_sigterm.load();
    if (raw) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return key;
  }

  void DetachAll() {
    detached_ = true;
    for (auto& t : jobs_) {
      if (t->done || t->view.finished()) continue;
      t->view.detached = true;
      t->stream->Cancel();
    }
  }

  void CancelAll(std::unique_lock<std::mutex>& lock) {
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
int JobExitCode(const Tracked& t) {
  if (t.view.state == v1::SUCCEEDED) return kExitOk;
  if (t.view.detached) return kExitDetached;
  if (t.view.state == v1::FAILED) return kExitJobFailed;
  if (t.view.state == v1::CANCELLED) return kExitCancelled;
  if (!t.error.ok()) return ExitCodeFor(t.error);
  return kExitError;
}

// ------------------------------------------------------------------------- the CLI

struct EmbedFlags {
  std::vector<std::string> images;
  std::string model;
  std::optional<int> steps, noise_steps, plateau, perceptual_resolution;
  std::optional<double> lr, w_mse, w_perceptual, target_psnr, noise_lr, w_lpips;
  std::string space;  // empty: the schedule's default
  std::string schedule;
  std::string init = "mean";
  std::string resize = "crop";
  uint64_t seed = 0;
  std::vector<std::string> labels;
  std::string request_id;
  std::string save_recon;
  std::string preview_dir;
  int preview_every = 25;
  bool detach = false;
  bool force = false;
  // FFHQ alignment (AlignFlags)
  std::string align = "none";  // none, auto, landmarks
  std::string landmarks;       // a file of 5 or 68 points; implies "landmarks"
  std::string on_no_face = "fail";
  std::optional<double> min_confidence;
  bool no_padding = false;
  std::string save_aligned;
};

struct RenderFlags {
  std::string output;
  int quality = 0;
  uint64_t noise_seed = 0;
  bool force = false;
};

class Cli {
 public:
  int Run(int argc, char** argv);

 private:
  void Setup(CLI::App& app);
  void On(CLI::App* command, int (Cli::*handler)()) { handlers_[command] = handler; }
  Client& client() {
    if (client_ == nullptr) client_ = Client::Create(options_);
    return *client_;
  }
  // --server, --timeout, TLS and the token -> options_. Files that cannot be read are
  // usage errors (exit 2), named.
  absl::Status MakeClientOptions();
  ClientOptions options_;

  // Prints a failure (and, with --json, a JSON error document) and returns its code.
  int Fail(const std::string& context, const absl::Status& status) {
    return Fail(context, status, ExitCodeFor(status));
  }
  int Fail(const std::string& context, const absl::Status& status, int code) {
    const std::string sentence = context.empty()
                                     ? Explain(status, g_.server)
                                     : absl::StrCat(context, ": ", Explain(status, g_.server));
    std::fprintf(stderr, "i2s_client: %s\n", sentence.c_str());
    if (g_.json) {
      Emit({{"error",
             {{"code", absl::StatusCodeToString(status.code())},
              {"message", sentence},
              {"exit_code", code}}}});
    }
    return code;
  }
  void Emit(const nlohmann::json& document) { std::cout << document.dump() << std::endl; }
  void Note(const std::string& line) {
    if (!g_.quiet) std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::string Bold(const std::string& text) const {
    return g_.out_style.color ? absl::StrCat("\x1b[1m", text, "\x1b[0m") : text;
  }
  void PrintTable(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows);
  void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields);

  // A latent named by ID, or a path that is imported (.npy) or embedded (an image) first.
  absl::StatusOr<std::string> ResolveLatent(const std::string& arg, const std::string& model);

  absl::StatusOr<v1::EmbedRequest> BuildEmbedRequest(const EmbedFlags& f);
  int FollowAndReport(Follower& follower, bool embed, const EmbedFlags* flags);
  // Writes a job's PNG `png` to `path` (converted to its format); on failure says
  // "LABEL: WHAT not written: why" and returns false.
  bool SaveImage(const std::string& label, const std::string& what, const std::string& path,
                 const absl::StatusOr<std::string>& png, bool force);

  // An output option (`flag` = `where`) that takes one image file per stem: a file when
  // there is one image, else a directory; each file must be writable. kExitOk or the
  // code of the failure (reported).
  int CheckImageOutputs(const std::string& flag, const std::string& where,
                        const std::vector<std::string>& stems, bool force);

  int Embed();
  int Align();
  int JobsList();
  int JobsGet();
  int JobsWatch();
  int JobsCancel();
  int LatentsList();
  int LatentsGet();
  int LatentsRemove();
  int LatentsExport();
  int LatentsImport();
  int Synth();
  int Morph();
  int StyleMix();
  int Expression();
  int Info();
  int Usage();
  int Health();

  Globals g_;
  std::unique_ptr<Client> client_;
  std::map<CLI::App*, int (Cli::*)()> handlers_;

  EmbedFlags embed_;
  std::vector<std::string> job_ids_;
  std::vector<std::string> job_states_;
  int limit_ = 20;
  bool all_tenants_ = false;
  std::string latent_id_;
  std::vector<std::string> latent_ids_;
  bool include_values_ = false;
  std::string model_;
  std::string file_;
  std::vector<std::string> labels_;
  uint64_t noise_seed_ = 0;
  std::string request_id_;
  RenderFlags export_r_, synth_r_, morph_r_, mix_r_,
      expr_r_;  // per command: each has its own default output
  std::string format_;
  std::string a_, b_, c_;
  int frames_ = 16;
  double fps_ = 8;
  int crossover_ = -1;
  double lambda_ = 0;
  int first_layer_ = 0;
  std::optional<int> last_layer_;
  bool store_ = false;
  std::optional<int> embed_steps_;
  std::string health_service_;
  std::string usage_tenant_;
  EmbedFlags align_;  // the align command: image, model, alignment flags
  int align_size_ = 0;
  std::string align_out_;
  bool align_force_ = false;
};

// The alignment flags of `embed` and `align` (both fill an EmbedFlags).
void AddAlignFlags(CLI::App* cmd, EmbedFlags* f, bool for_embed) {
  cmd->add_option("--align", f->align,
                  for_embed ? "FFHQ face alignment first: none, auto (the server finds the face), "
                              "landmarks (from --landmarks)"
                            : "auto (the server finds the face) or landmarks (from --landmarks)")
      ->check(for_embed ? CLI::IsMember({"none", "auto", "landmarks"})
                        : CLI::IsMember({"auto", "landmarks"}))
      ->capture_default_str();
  cmd->add_option("--landmarks", f->landmarks,
                  "a text file of 5 points (eye, eye, nose, mouth corner, mouth corner) or 68 "
                  "(iBUG 300-W), 'x y' per line in the photo's pixels; implies --align landmarks");
  cmd->add_option("--on-no-face", f->on_no_face,
                  "auto finding no face: fail, or resize (crop/pad as --resize) instead")
      ->check(CLI::IsMember({"fail", "resize"}))
      ->capture_default_str();
  cmd->add_option("--min-confidence", f->min_confidence,
                  "auto: a face found with less confidence (0..1) counts as none (server "
                  "default 0.5)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--no-padding", f->no_padding,
                "leave black what the crop takes from outside the photo (FFHQ fills it with a "
                "blurred reflection)");
}

const char kExitCodes[] =
    "Exit codes: 0 ok, 1 other error (local file, existing output, server fault),\n"
    "  2 usage, 3 server unreachable or not serving, 4 not found, 5 invalid argument,\n"
    "  6 job failed, 7 cancelled, 8 timed out, 9 server busy / limit reached,\n"
    "  10 detached (jobs keep running), 11 permission denied, 130 interrupted.";

bool ParseLabels(const std::vector<std::string>& in,
                 google::protobuf::Map<std::string, std::string>* out) {
  for (const std::string& kv : in) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return false;
    (*out)[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return true;
}

// A CLI11 validator for KEY=VALUE labels.
const CLI::Validator kLabelValidator(
    [](std::string& value) -> std::string {
      const size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0) return "a label is KEY=VALUE, got '" + value + "'";
      return "";
    },
    "KEY=VALUE");

void AddRenderFlags(CLI::App* cmd, RenderFlags& r, const std::string& default_output) {
  r.output = default_output;
  cmd->add_option("-o,--output", r.output,
                  "where to write the image: .png, .jpg, or - for stdout (PNG)")
      ->capture_default_str();
  cmd->add_option("--jpeg-quality", r.quality, "JPEG quality 1..100 (default 90)")
      ->check(CLI::Range(1, 100));
  cmd->add_flag("-f,--force", r.force, "overwrite an existing output file");
}

void Cli::Setup(CLI::App& app) {
  app.set_help_all_flag("--help-all", "help for every subcommand");
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("-s,--server", g_.server, "i2s_server address, host:port")
      ->envname("I2S_SERVER")
      ->capture_default_str();
  app.add_option("--timeout", g_.timeout, "seconds to wait for each call (0 = no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--tls", g_.tls,
               "connect with TLS (implied by --ca-cert, --client-cert); the server's "
               "certificate is checked against --ca-cert or the system's roots")
      ->envname("I2S_TLS");
  app.add_option("--ca-cert", g_.ca_cert, "PEM CA bundle that signed the server's certificate")
      ->envname("I2S_CA_CERT");
  app.add_option("--client-cert", g_.client_cert,
                 "PEM client certificate, for a server that requires mutual TLS")
      ->envname("I2S_CLIENT_CERT");
  app.add_option("--client-key", g_.client_key, "PEM private key of --client-cert")
      ->envname("I2S_CLIENT_KEY");
  app.add_option("--tls-server-name", g_.server_name,
                 "the name the server's certificate must carry (default: the --server host)");
  app.add_option("--token-file", g_.token_file,
                 "file holding the bearer token for a server with --auth-tokens (or set "
                 "I2S_TOKEN; never put a token on the command line)")
      ->envname("I2S_TOKEN_FILE");
  app.add_flag("--json", g_.json,
               "print results as JSON, one document per line, for scripts (progress goes to "
               "stderr, or nowhere with --quiet)");
  app.add_flag("-q,--quiet", g_.quiet, "no progress or notes on stderr (errors still)");
  app.add_flag("--no-color", g_.no_color, "no colours (also: NO_COLOR set, or not a terminal)");
  app.add_option("--on-interrupt", g_.on_interrupt,
                 "what Ctrl-C does while following jobs: ask (on a terminal), cancel the "
                 "jobs, or detach and leave them running")
      ->check(CLI::IsMember({"ask", "cancel", "detach"}))
      ->capture_default_str();
  app.set_version_flag("--version", std::string("i2s_client ") + I2S_VERSION);
  app.footer(absl::StrCat(
      "Examples:\n"
      "  i2s_client info\n"
      "  i2s_client embed face1.png face2.jpg --steps 1500 --save-recon recon/\n"
      "  i2s_client morph lat_a lat_b --frames 48 --out morph.mp4\n"
      "  i2s_client --json latents ls | jq -r .id\n"
      "Latents and jobs are named by ID (lat_..., job_...). Where a command takes a latent,\n"
      "a file may be given instead: a .npy is imported, an image is embedded first.\n\n",
      kExitCodes));

  // embed
  {
    EmbedFlags& f = embed_;
    CLI::App* cmd = app.add_subcommand(
        "embed", "embed images into W+ (one job per image, followed with live progress)");
    cmd->add_option("images", f.images, "image files (PNG, JPEG, BMP)")->required();
    cmd->add_option("-m,--model", f.model, "model name (default: the server's default)");
    cmd->add_option("--steps", f.steps, "W+ optimiser steps (server default 1000)");
    cmd->add_option("--lr", f.lr, "Adam learning rate (default 0.01)");
    cmd->add_option("--w-mse", f.w_mse, "pixel MSE weight (default 1)");
    cmd->add_option("--w-perceptual", f.w_perceptual,
                    "VGG16 perceptual weight (default 1; 0 skips VGG)");
    cmd->add_option("--space", f.space,
                    "latent space: w+ (per layer) or w (shared); default w+, or w with "
                    "--schedule stylegan2-projector")
        ->check(CLI::IsMember({"w+", "w"}));
    cmd->add_option("--schedule", f.schedule,
                    "image2stylegan (default: constant-rate Adam) or stylegan2-projector "
                    "(NVIDIA's recipe; its defaults: w, lr 0.1, LPIPS only, noise maps optimised)")
        ->check(CLI::IsMember({"image2stylegan", "stylegan2-projector"}));
    cmd->add_option("--w-lpips", f.w_lpips,
                    "LPIPS weight (default 0, 1 with stylegan2-projector; needs a server with "
                    "--lpips)");
    cmd->add_option("--init", f.init,
                    "initial latent: mean, zeros, uniform, or a latent ID / .npy to start from")
        ->capture_default_str();
    cmd->add_option("--target-psnr", f.target_psnr, "stop once PSNR reaches this (dB)");
    cmd->add_option("--plateau", f.plateau,
                    "stop when the loss improved < 1e-4 relative over this many steps");
    cmd->add_option("--noise-steps", f.noise_steps,
                    "Image2StyleGAN++ noise-map steps after the W+ phase (default 0)");
    cmd->add_option("--noise-lr", f.noise_lr, "noise phase learning rate (default 0.1)");
    cmd->add_option("--perceptual-resolution", f.perceptual_resolution,
                    "VGG input size (default 256)");
    cmd->add_option("--resize", f.resize,
                    "non-square or other-size images: crop (centre) or pad (replicate edge)")
        ->check(CLI::IsMember({"crop", "pad"}))
        ->capture_default_str();
    cmd->add_option("--seed", f.seed, "noise-map seed; same inputs + seed = same result")
        ->capture_default_str();
    cmd->add_option("-l,--label", f.labels, "KEY=VALUE copied to the latent (repeatable)")
        ->check(kLabelValidator);
    cmd->add_option("--request-id", f.request_id,
                    "idempotency key: a repeat returns the first job (with several images, "
                    "image i gets ID-i)");
    cmd->add_option("--save-recon", f.save_recon,
                    "write the final reconstructions: a .png/.jpg file (one image) or a "
                    "directory (IMAGE-STEM.png each)");
    cmd->add_option("--preview", f.preview_dir,
                    "write the server's preview images during the run into this directory");
    cmd->add_option("--preview-every", f.preview_every,
                    "steps between previews (at most one a second is sent)")
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    cmd->add_flag("-d,--detach", f.detach,
                  "submit, print the job IDs and return (follow later with `jobs watch`)");
    cmd->add_flag("-f,--force", f.force, "overwrite existing output files");
    AddAlignFlags(cmd, &f, /*for_embed=*/true);
    cmd->add_option("--save-aligned", f.save_aligned,
                    "write the aligned photos (the embedding targets): a .png file (one image) "
                    "or a directory");
    cmd->footer(
        "Examples:\n"
        "  i2s_client embed face.png\n"
        "  i2s_client embed selfie.jpg --align auto --save-aligned aligned.png\n"
        "  i2s_client embed cat.jpg --landmarks cat-points.txt   (eyes, nose, mouth corners)\n"
        "  i2s_client embed a.png b.png c.png --steps 2000 --noise-steps 500 --save-recon out/\n"
        "  i2s_client embed face.png --target-psnr 30 --preview previews/\n"
        "  JOB=$(i2s_client --json embed --detach face.png | jq -r .job_id)\n"
        "Ctrl-C asks whether to cancel the jobs or detach (they keep running on the server).");
    On(cmd, &Cli::Embed);
  }

  // jobs
  {
    CLI::App* jobs = app.add_subcommand("jobs", "list, inspect, follow and cancel embedding jobs");
    jobs->require_subcommand(1);
    CLI::App* ls = jobs->add_subcommand("ls", "list jobs, newest first");
    ls->alias("list");
    ls->add_option("--state", job_states_,
                   "only jobs in these states (queued, running, succeeded, failed, cancelled)")
        ->check(CLI::IsMember({"queued", "running", "succeeded", "failed", "cancelled"},
                              CLI::ignore_case));
    ls->add_option("-n,--limit", limit_, "at most this many (0 = all)")->capture_default_str();
    ls->add_flag("--all-tenants", all_tenants_, "every tenant's, not only yours (admin token)");
    On(ls, &Cli::JobsList);
    CLI::App* get = jobs->add_subcommand("get", "show one job");
    get->add_option("job", latent_id_, "job ID")->required();
    On(get, &Cli::JobsGet);
    CLI::App* watch = jobs->add_subcommand(
        "watch", "follow jobs with live progress until they end (replays what happened)");
    watch->add_option("jobs", job_ids_, "job IDs")->required();
    watch->add_option("--save-recon", embed_.save_recon,
                      "write each finished job's reconstruction (file or directory)");
    watch->add_flag("-f,--force", embed_.force, "overwrite existing reconstruction files");
    On(watch, &Cli::JobsWatch);
    CLI::App* cancel = jobs->add_subcommand("cancel", "cancel queued or running jobs");
    cancel->add_option("jobs", job_ids_, "job IDs")->required();
    On(cancel, &Cli::JobsCancel);
  }

  // latents
  {
    CLI::App* latents = app.add_subcommand("latents", "list, show, export, import, delete latents");
    latents->require_subcommand(1);
    CLI::App* ls = latents->add_subcommand("ls", "list latents, newest first");
    ls->alias("list");
    ls->add_option("-m,--model", model_, "only latents of this model");
    ls->add_option("-n,--limit", limit_, "at most this many (0 = all)")->capture_default_str();
    ls->add_flag("--all-tenants", all_tenants_, "every tenant's, not only yours (admin token)");
    On(ls, &Cli::LatentsList);
    CLI::App* get = latents->add_subcommand("get", "show one latent's metadata");
    get->add_option("latent", latent_id_, "latent ID")->required();
    get->add_flag("--values", include_values_, "include the W+ values");
    On(get, &Cli::LatentsGet);
    CLI::App* rm = latents->add_subcommand("rm", "delete latents");
    rm->alias("delete");
    rm->add_option("latents", latent_ids_, "latent IDs")->required();
    On(rm, &Cli::LatentsRemove);
    CLI::App* exp =
        latents->add_subcommand("export", "write a latent as .npy (float32 [layers, 512])");
    exp->add_option("latent", latent_id_, "latent ID")->required();
    exp->add_option("-o,--output", export_r_.output,
                    "output file (default LATENT.npy; - = stdout)");
    exp->add_flag("-f,--force", export_r_.force, "overwrite an existing file");
    On(exp, &Cli::LatentsExport);
    CLI::App* imp = latents->add_subcommand(
        "import", "store a W+ (.npy, float32 [layers, 512] or [512]) as a latent");
    imp->add_option("file", file_, ".npy file")->required();
    imp->add_option("-m,--model", model_, "model it belongs to (default: the server's default)");
    imp->add_option("-l,--label", labels_, "KEY=VALUE (repeatable)")->check(kLabelValidator);
    imp->add_option("--noise-seed", noise_seed_, "seed of the noise maps it renders with");
    imp->add_option("--request-id", request_id_, "idempotency key");
    On(imp, &Cli::LatentsImport);
  }

  // synth
  {
    CLI::App* cmd = app.add_subcommand("synth", "render a latent to an image");
    cmd->add_option("latent", a_, "latent ID, or a .npy / image file")->required();
    AddRenderFlags(cmd, synth_r_, "");
    cmd->add_option("--format", format_,
                    "png, jpeg, or npy (raw float32 [3,R,R]); default from the file name")
        ->check(CLI::IsMember({"png", "jpeg", "npy"}));
    cmd->add_option("-m,--model", model_, "model (for a .npy or image given as a file)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    cmd->footer(
        "Examples:\n  i2s_client synth lat_123 -o face.png\n  i2s_client synth w.npy -o - > "
        "face.png\n");
    On(cmd, &Cli::Synth);
  }

  // morph
  {
    CLI::App* cmd = app.add_subcommand(
        "morph", "interpolate from latent A to latent B in W+: a video, a GIF or PNG frames");
    cmd->add_option("a", a_, "start: latent ID, or a .npy / image file")->required();
    cmd->add_option("b", b_, "end: latent ID, or a .npy / image file")->required();
    cmd->add_option("-n,--frames", frames_, "frames, including both ends")
        ->check(CLI::Range(2, 100000))
        ->capture_default_str();
    morph_r_.output = "morph.mp4";
    cmd->add_option("-o,--out,--output", morph_r_.output,
                    "FILE.mp4 / .avi / .mkv (video), FILE.gif, or a directory (PNG frames)")
        ->capture_default_str();
    cmd->add_option("--fps", fps_, "frames per second of the video or GIF")
        ->check(CLI::Range(0.1, 240.0))
        ->capture_default_str();
    cmd->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    cmd->add_flag("-f,--force", morph_r_.force, "overwrite existing output");
    cmd->footer(
        "Examples:\n  i2s_client morph lat_a lat_b --frames 48 --out morph.mp4\n"
        "  i2s_client morph a.png b.png --frames 12 --out morph.gif   (embeds both first)\n"
        "  i2s_client morph lat_a lat_b --out frames/\n");
    On(cmd, &Cli::Morph);
  }

  // stylemix
  {
    CLI::App* cmd = app.add_subcommand(
        "stylemix", "coarse layers from CONTENT, the rest from STYLE (style mixing)");
    cmd->add_option("content", a_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("style", b_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("-k,--crossover", crossover_, "layers [0, K) come from CONTENT (0..num_layers)")
        ->required();
    AddRenderFlags(cmd, mix_r_, "stylemix.png");
    cmd->add_flag("--store", store_, "store the mixed latent and print its ID");
    cmd->add_option("-l,--label", labels_, "KEY=VALUE for the stored latent")
        ->check(kLabelValidator);
    cmd->add_option("--request-id", request_id_, "idempotency key");
    cmd->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    cmd->footer("Example:\n  i2s_client stylemix lat_a lat_b --crossover 8 -o mix.png --store\n");
    On(cmd, &Cli::StyleMix);
  }

  // expression
  {
    CLI::App* cmd = app.add_subcommand(
        "expression", "TARGET + LAMBDA * (EXPRESSION - NEUTRAL): move an expression onto a face");
    cmd->add_option("target", a_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("neutral", b_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("expression", c_, "latent ID, or a .npy / image file")->required();
    cmd->add_option("--lambda", lambda_, "strength, -100..100 (the paper uses about 1-2)")
        ->required();
    cmd->add_option("--first-layer", first_layer_, "first layer changed (default 0)");
    cmd->add_option("--last-layer", last_layer_, "last layer changed (default the last)");
    AddRenderFlags(cmd, expr_r_, "expression.png");
    cmd->add_flag("--store", store_, "store the result latent and print its ID");
    cmd->add_option("-l,--label", labels_, "KEY=VALUE for the stored latent")
        ->check(kLabelValidator);
    cmd->add_option("--request-id", request_id_, "idempotency key");
    cmd->add_option("-m,--model", model_, "model (for files given instead of IDs)");
    cmd->add_option("--embed-steps", embed_steps_, "steps when an image file is embedded first");
    cmd->footer(
        "Example:\n  i2s_client expression lat_me lat_neutral lat_smile --lambda 1.5 -o "
        "smile.png\n");
    On(cmd, &Cli::Expression);
  }

  // align
  {
    EmbedFlags& f = align_;
    f.align = "auto";
    CLI::App* cmd = app.add_subcommand(
        "align", "FFHQ-align a face photo on the server, as `embed --align` would, and save it");
    cmd->add_option("image", f.images, "photo (PNG, JPEG, BMP)")->required()->expected(1);
    cmd->add_option("-o,--out", align_out_, "aligned image (.png or .jpg)")->required();
    cmd->add_option("-m,--model", f.model, "whose resolution (default: the server's default)");
    cmd->add_option("--size", align_size_, "side of the aligned image instead (8..1024)")
        ->check(CLI::Range(8, 1024));
    cmd->add_option("--resize", f.resize, "for --on-no-face resize: crop or pad")
        ->check(CLI::IsMember({"crop", "pad"}))
        ->capture_default_str();
    AddAlignFlags(cmd, &f, /*for_embed=*/false);
    cmd->add_flag("-f,--force", align_force_, "overwrite an existing output file");
    cmd->footer(
        "Examples:\n"
        "  i2s_client align selfie.jpg -o aligned.png\n"
        "  i2s_client --json align photo.jpg -o face.png --size 1024 | jq .alignment.transform\n"
        "  i2s_client align cat.png -o cat-aligned.png --landmarks cat-points.txt\n"
        "The JSON (--json) holds the landmarks, the crop square and the transform photo -> "
        "aligned\nimage, whose inverse pastes an edited render back into the photo.");
    On(cmd, &Cli::Align);
  }

  On(app.add_subcommand("info", "server version, models, devices, limits and queue"), &Cli::Info);
  {
    CLI::App* cmd = app.add_subcommand(
        "usage", "what a tenant keeps on the server (latents, jobs, request IDs) and its quotas");
    cmd->add_option("--tenant", usage_tenant_, "another tenant's (admin tokens only)");
    cmd->add_flag("--all-tenants", all_tenants_, "every tenant's (admin tokens only)");
    On(cmd, &Cli::Usage);
  }
  CLI::App* health =
      app.add_subcommand("health", "is the server serving? (exit 0 yes, 3 no or unreachable)");
  health->add_option("--service", health_service_, "a service name (default: the whole server)");
  On(health, &Cli::Health);
}

int Cli::Run(int argc, char** argv) {
  g_.stdin_tty = isatty(STDIN_FILENO);
  g_.stdout_tty = isatty(STDOUT_FILENO);
  g_.stderr_tty = isatty(STDERR_FILENO);
  CLI::App app{"i2s_client: embed images into StyleGAN's W+ space and edit them, on i2s_server"};
  app.name("i2s_client");
  Setup(app);
  // Colours and glyphs only on terminals; NO_COLOR (no-color.org) and --no-color turn
  // colours off; Unicode glyphs only in a UTF-8 locale.
  auto finish_style = [this] {
    const char* no_color = std::getenv("NO_COLOR");
    const bool color_ok = !g_.no_color && (no_color == nullptr || *no_color == '\0');
    std::string locale;
    for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
      const char* v = std::getenv(name);
      if (v != nullptr && *v != '\0') {
        locale = v;
        break;
      }
    }
    const bool utf8 =
        absl::StrContains(Lower(locale), "utf-8") || absl::StrContains(Lower(locale), "utf8");
    g_.err_style = {color_ok && g_.stderr_tty, utf8 && g_.stderr_tty};
    g_.out_style = {color_ok && g_.stdout_tty, utf8 && g_.stdout_tty};
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  finish_style();
  // The deepest subcommand given (`jobs ls` -> ls) names the handler.
  CLI::App* command = &app;
  while (!command->get_subcommands().empty()) command = command->get_subcommands().front();
  auto handler = handlers_.find(command);
  if (handler == handlers_.end()) {
    std::fprintf(stderr, "i2s_client: %s needs a subcommand (see --help)\n",
                 command->get_name().c_str());
    return kExitUsage;
  }
  if (absl::Status ok = MakeClientOptions(); !ok.ok()) {
    std::fprintf(stderr, "i2s_client: %s\n", std::string(ok.message()).c_str());
    return kExitUsage;
  }
  return (this->*handler->second)();
}

absl::Status Cli::MakeClientOptions() {
  options_.server = g_.server;
  options_.timeout = absl::Seconds(g_.timeout);
  options_.tls = g_.tls || !g_.ca_cert.empty() || !g_.client_cert.empty();
  const auto read = [](const std::string& path, const char* flag) -> absl::StatusOr<std::string> {
    auto text = ReadFile(path);
    if (!text.ok()) return Annotate(text.status(), flag);
    return text;
  };
  if (!g_.ca_cert.empty()) {
    ASSIGN_OR_RETURN(options_.ca_cert_pem, read(g_.ca_cert, "--ca-cert"));
  }
  if (g_.client_cert.empty() != g_.client_key.empty()) {
    return absl::InvalidArgumentError("--client-cert and --client-key go together");
  }
  if (!g_.client_cert.empty()) {
    ASSIGN_OR_RETURN(options_.client_cert_pem, read(g_.client_cert, "--client-cert"));
    ASSIGN_OR_RETURN(options_.client_key_pem, read(g_.client_key, "--client-key"));
  }
  if (!g_.server_name.empty() && !options_.tls) {
    return absl::InvalidArgumentError("--tls-server-name needs --tls");
  }
  options_.server_name = g_.server_name;
  if (!g_.token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, read(g_.token_file, "--token-file"));
    options_.token = std::string(absl::StripAsciiWhitespace(token));
    if (options_.token.empty()) return absl::InvalidArgumentError("--token-file: empty");
  } else if (const char* env = std::getenv("I2S_TOKEN"); env != nullptr && *env != '\0') {
    options_.token = std::string(absl::StripAsciiWhitespace(env));
  }
  for (char c : options_.token) {
    if (c <= ' ' || c >= 0x7f) {
      return absl::InvalidArgumentError("the token must be printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------------- output

void Cli::PrintTable(const std::vector<std::string>& header,
                     const std::vector<std::vector<std::string>>& rows) {
  std::vector<int> width(header.size(), 0);
  for (size_t c = 0; c < header.size(); ++c) width[c] = VisibleWidth(header[c]);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], VisibleWidth(row[c]));
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t c = 0; c < cells.size(); ++c) {
      out += cells[c];
      if (c + 1 < cells.size()) out += std::string(width[c] - VisibleWidth(cells[c]) + 2, ' ');
    }
    return out;
  };
  std::cout << Bold(line(header)) << "\n";
  for (const auto& row : rows) std::cout << line(row) << "\n";
  std::cout.flush();
}

void Cli::PrintFields(const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& [k, v] : fields) width = std::max(width, k.size());
  for (const auto& [k, v] : fields) {
    if (v.empty()) continue;
    std::cout << Bold(k) << std::string(width - k.size() + 2, ' ') << v << "\n";
  }
  std::cout.flush();
}

// ------------------------------------------------------------------------- embed

// The alignment flags -> AlignOptions (reading the landmark file).
absl::StatusOr<v1::AlignOptions> AlignOptionsOf(const EmbedFlags& f) {
  v1::AlignOptions a;
  if (!f.landmarks.empty()) {
    a.set_mode(v1::AlignOptions::LANDMARKS);
    ASSIGN_OR_RETURN(std::string text, ReadFile(f.landmarks));
    ASSIGN_OR_RETURN(auto points, ParsePointList(text, f.landmarks));
    for (const auto& [x, y] : points) {
      v1::Point* p = a.add_landmarks();
      p->set_x(x);
      p->set_y(y);
    }
  } else if (f.align == "landmarks") {
    return absl::InvalidArgumentError("--align landmarks: needs --landmarks FILE");
  } else {
    a.set_mode(f.align == "auto" ? v1::AlignOptions::AUTO : v1::AlignOptions::NONE);
  }
  a.set_on_no_face(f.on_no_face == "resize" ? v1::AlignOptions::RESIZE : v1::AlignOptions::FAIL);
  if (f.min_confidence) a.set_min_confidence(*f.min_confidence);
  a.set_no_padding(f.no_padding);
  return a;
}

// "haar, confidence 1.00, scale 1.46, rotation 2.4 degrees" (or the fallback's note).
std::string DescribeAlignment(const v1::Alignment& a) {
  if (a.method() == "none") return absl::StrCat("not aligned: ", a.note());
  if (a.transform_size() != 6) return absl::StrCat("aligned (", a.method(), ")");
  const double s = std::hypot(a.transform(0), a.transform(3));
  const double degrees = -std::atan2(a.transform(3), a.transform(0)) * 180 / M_PI;
  return absl::StrFormat("aligned (%s, confidence %.2f, scale %.3f, rotation %.1f degrees)",
                         a.method(), a.confidence(), s, degrees);
}

absl::StatusOr<v1::EmbedRequest> Cli::BuildEmbedRequest(const EmbedFlags& f) {
  v1::EmbedRequest request;
  request.set_model(f.model);
  request.set_resize(f.resize == "pad" ? v1::PAD : v1::CENTER_CROP);
  request.set_seed(f.seed);
  v1::EmbedOptions& o = *request.mutable_options();
  if (f.steps) o.set_steps(*f.steps);
  if (f.lr) o.set_lr(*f.lr);
  if (f.w_mse) o.set_w_mse(*f.w_mse);
  if (f.w_perceptual) o.set_w_perceptual(*f.w_perceptual);
  if (f.target_psnr) o.set_target_psnr_db(*f.target_psnr);
  if (f.plateau) o.set_plateau_window(*f.plateau);
  if (f.noise_steps) o.set_noise_steps(*f.noise_steps);
  if (f.noise_lr) o.set_noise_lr(*f.noise_lr);
  if (f.perceptual_resolution) o.set_perceptual_resolution(*f.perceptual_resolution);
  if (!f.space.empty()) o.set_space(f.space == "w" ? v1::W : v1::W_PLUS);
  if (f.schedule == "stylegan2-projector") o.set_schedule(v1::STYLEGAN2_PROJECTOR);
  if (f.schedule == "image2stylegan") o.set_schedule(v1::IMAGE2STYLEGAN);
  if (f.w_lpips) o.set_w_lpips(*f.w_lpips);
  if (f.init == "mean") {
    o.set_init(v1::MEAN_W);
  } else if (f.init == "zeros") {
    o.set_init(v1::ZEROS);
  } else if (f.init == "uniform") {
    o.set_init(v1::UNIFORM);
  } else {
    auto id = ResolveLatent(f.init, f.model);
    if (!id.ok()) return id.status();
    o.set_init(v1::FROM_LATENT);
    o.set_init_latent_id(*id);
  }
  ParseLabels(f.labels, request.mutable_labels());
  if (!f.preview_dir.empty()) request.set_preview_every(f.preview_every);
  request.set_return_reconstruction(!f.save_recon.empty());
  ASSIGN_OR_RETURN(*request.mutable_align(), AlignOptionsOf(f));
  request.set_return_aligned_image(!f.save_aligned.empty());
  return request;
}

// Where the reconstruction of image `index` of `count` goes ("" = nowhere).
std::string ReconPath(const std::string& save_recon, const std::string& stem, int count) {
  if (save_recon.empty()) return "";
  const std::string ext = Extension(save_recon);
  if (count == 1 && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) return save_recon;
  return (fs::path(save_recon) / (stem + ".png")).string();
}

// Distinct file stems for the images ("face", "face-2", ...).
std::vector<std::string> Stems(const std::vector<std::string>& labels) {
  std::vector<std::string> stems;
  std::map<std::string, int> seen;
  for (const std::string& label : labels) {
    std::string stem = fs::path(label).stem().string();
    if (stem.empty()) stem = "image";
    const int n = ++seen[stem];
    stems.push_back(n == 1 ? stem : absl::StrCat(stem, "-", n));
  }
  return stems;
}

bool Cli::SaveImage(const std::string& label, const std::string& what, const std::string& path,
                    const absl::StatusOr<std::string>& png, bool force) {
  absl::Status written = png.status();
  if (png.ok()) {
    auto bytes = ConvertPng(*png, path);
    written = bytes.ok() ? WriteOutput(path, *bytes, force) : bytes.status();
  }
  if (!written.ok()) {
    std::fprintf(stderr, "i2s_client: %s: %s not written: %s\n", label.c_str(), what.c_str(),
                 Explain(written, g_.server).c_str());
  }
  return written.ok();
}

int Cli::FollowAndReport(Follower& follower, bool embed, const EmbedFlags* flags) {
  follower.Run();
  int code = kExitOk;
  const int count = static_cast<int>(follower.jobs().size());
  for (auto& t : follower.jobs()) {
    const JobView& v = t->view;
    std::string recon_path;
    if (flags != nullptr && v.state == v1::SUCCEEDED) {
      recon_path = ReconPath(flags->save_recon, t->stem, count);
      if (!recon_path.empty()) {
        absl::StatusOr<std::string> png =
            absl::FailedPreconditionError("the server sent no reconstruction for this job");
        if (!t->reconstruction.empty()) {
          png = t->reconstruction;
        } else if (!embed) {
          // A watched job: render its latent (same noise maps as the job's own render).
          v1::SynthesizeRequest request;
          request.mutable_latent()->set_latent_id(v.latent_id);
          auto image = client().Synthesize(request);
          png = image.ok() ? absl::StatusOr<std::string>(image->image().data()) : image.status();
        }
        if (!SaveImage(v.label, "reconstruction", recon_path, png, flags->force)) {
          recon_path.clear();
          if (code == kExitOk) code = kExitError;
        }
      }
    }
    std::string aligned_path;
    if (flags != nullptr && v.state == v1::SUCCEEDED && embed) {
      aligned_path = ReconPath(flags->save_aligned, t->stem, count);
      if (!aligned_path.empty()) {
        absl::StatusOr<std::string> png =
            absl::FailedPreconditionError("the server sent no aligned image for this job");
        if (!t->aligned.empty()) png = t->aligned;
        if (!SaveImage(v.label, "aligned image", aligned_path, png, flags->force)) {
          aligned_path.clear();
          if (code == kExitOk) code = kExitError;
        }
      }
    }
    const int job_code = JobExitCode(*t);
    if (code == kExitOk) code = job_code;
    if (g_.json) {
      nlohmann::json doc;
      if (embed) doc["image"] = v.label;
      doc["job_id"] = v.job_id;
      doc["state"] = v.detached && !v.finished() ? "DETACHED" : StateName(v.state);
      if (v.state == v1::SUCCEEDED) {
        doc["latent_id"] = v.latent_id;
        doc["metrics"] = ProtoJson(v.final_metrics);
        if (!v.stop_reason.empty()) doc["stop_reason"] = v.stop_reason;
        if (!recon_path.empty()) doc["reconstruction"] = recon_path;
        if (t->alignment) doc["alignment"] = ProtoJson(*t->alignment);
        if (!aligned_path.empty()) doc["aligned_image"] = aligned_path;
      }
      if (job_code != kExitOk && job_code != kExitDetached) {
        doc["error"] = {{"message", v.error}, {"exit_code", job_code}};
      }
      Emit(doc);
      continue;
    }
    switch (v.state) {
      case v1::SUCCEEDED:
        std::cout << absl::StrFormat(
            "%s  %s  PSNR %.2f dB%s  %d steps (%s)%s\n", v.label, v.latent_id,
            v.final_metrics.psnr_db(),
            v.final_metrics.has_lpips() ? absl::StrFormat("  LPIPS %.4f", v.final_metrics.lpips())
                                        : "",
            v.final_metrics.steps(), v.stop_reason, recon_path.empty() ? "" : "  -> " + recon_path);
        if (t->alignment) {
          std::cout << "  " << DescribeAlignment(*t->alignment)
                    << (aligned_path.empty() ? "" : "  -> " + aligned_path) << "\n";
        }
        break;
      default:
        if (v.detached && !v.finished()) {
          std::cout << absl::StrFormat(
              "%s  %s  detached, still %s (follow: i2s_client jobs watch %s)\n", v.label, v.job_id,
              Lower(StateName(v.state)), v.job_id);
        } else if (v.state == v1::FAILED) {
          std::fprintf(stderr, "i2s_client: %s: the job %s failed: %s\n", v.label.c_str(),
                       v.job_id.c_str(), v.error.c_str());
        } else if (v.state == v1::CANCELLED) {
          std::fprintf(stderr, "i2s_client: %s: the job %s was cancelled at step %d\n",
                       v.label.c_str(), v.job_id.c_str(), v.step);
        } else {
          std::fprintf(stderr, "i2s_client: %s: %s\n", v.label.c_str(),
                       t->error.ok() ? "the stream ended before the job did"
                                     : Explain(t->error, g_.server).c_str());
        }
    }
  }
  std::cout.flush();
  return code;
}

int Cli::CheckImageOutputs(const std::string& flag, const std::string& where,
                           const std::vector<std::string>& stems, bool force) {
  if (where.empty()) return kExitOk;
  const int n = static_cast<int>(stems.size());
  const std::string ext = Extension(where);
  if (n > 1 && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
    return Fail(flag,
                absl::InvalidArgumentError(
                    absl::StrCat("with ", n, " images this must be a directory, not ", where)),
                kExitUsage);
  }
  for (const std::string& stem : stems) {
    absl::Status s = CheckWritable(ReconPath(where, stem, n), force);
    if (!s.ok()) return Fail("cannot embed", s, kExitError);
  }
  return kExitOk;
}

int Cli::Align() {
  const EmbedFlags& f = align_;
  absl::Status writable = CheckWritable(align_out_, align_force_);
  if (!writable.ok()) return Fail("cannot align", writable, kExitError);
  auto bytes = ReadFile(f.images[0]);
  if (!bytes.ok()) return Fail("cannot align", bytes.status());
  auto align = AlignOptionsOf(f);
  if (!align.ok()) return Fail("cannot align", align.status());
  v1::AlignFaceRequest request;
  request.set_model(f.model);
  request.set_size(align_size_);
  request.set_image(*std::move(bytes));
  *request.mutable_align() = *align;
  request.set_resize(f.resize == "pad" ? v1::PAD : v1::CENTER_CROP);
  auto response = client().AlignFace(request);
  if (!response.ok()) return Fail(absl::StrCat("cannot align ", f.images[0]), response.status());
  v1::Alignment a = response->alignment();
  auto image = ConvertPng(a.aligned().data(), align_out_);
  absl::Status written =
      image.ok() ? WriteOutput(align_out_, *image, align_force_) : image.status();
  if (!written.ok()) return Fail("cannot write the aligned image", written, kExitError);
  a.clear_aligned();
  if (g_.json) {
    Emit({{"image", f.images[0]}, {"output", align_out_}, {"alignment", ProtoJson(a)}});
  } else {
    std::cout << f.images[0] << "  " << DescribeAlignment(a) << "  -> " << align_out_ << "\n";
  }
  return kExitOk;
}

int Cli::Embed() {
  EmbedFlags& f = embed_;
  const std::vector<std::string> stems = Stems(f.images);
  // Everything that can be checked locally is checked before any job starts.
  std::vector<std::string> images;
  for (const std::string& path : f.images) {
    auto bytes = ReadFile(path);
    if (!bytes.ok()) return Fail("cannot embed", bytes.status());
    images.push_back(std::move(*bytes));
  }
  if (int c = CheckImageOutputs("--save-recon", f.save_recon, stems, f.force); c != kExitOk) {
    return c;
  }
  if (!f.landmarks.empty() && f.images.size() > 1) {
    return Fail("--landmarks", absl::InvalidArgumentError("landmarks are for one image at a time"),
                kExitUsage);
  }
  if (!f.save_aligned.empty()) {
    if (f.align == "none" && f.landmarks.empty()) {
      return Fail("--save-aligned", absl::InvalidArgumentError("needs --align auto or --landmarks"),
                  kExitUsage);
    }
    if (int c = CheckImageOutputs("--save-aligned", f.save_aligned, stems, f.force); c != kExitOk) {
      return c;
    }
  }
  if (!f.preview_dir.empty()) {
    std::error_code ec;
    fs::create_directories(f.preview_dir, ec);
    if (ec) {
      return Fail("--preview",
                  absl::InternalError(absl::StrCat(f.preview_dir, ": ", ec.message())));
    }
  }
  auto base = BuildEmbedRequest(f);
  if (!base.ok()) return Fail("cannot embed", base.status());

  Follower follower(client(), g_, FollowOptions{f.preview_dir});
  for (size_t i = 0; i < images.size(); ++i) {
    v1::EmbedRequest request = *base;
    request.set_image(std::move(images[i]));
    if (!f.request_id.empty()) {
      request.set_request_id(images.size() == 1 ? f.request_id
                                                : absl::StrCat(f.request_id, "-", i));
    }
    follower.Add(f.images[i], stems[i], client().Embed(request));
  }
  if (f.detach) {
    // Wait for each job to be accepted (its first event names it), then let go.
    int code = kExitOk;
    for (auto& t : follower.jobs()) {
      auto first = t->stream->Next();
      if (first.ok() && first->has_value()) {
        t->view.Apply(**first);
        t->stream->Cancel();
        if (g_.json) {
          Emit({{"image", t->view.label},
                {"job_id", t->view.job_id},
                {"state", StateName(t->view.state)}});
        } else {
          std::cout << t->view.label << "  " << t->view.job_id << "  "
                    << Lower(StateName(t->view.state)) << "\n";
        }
      } else {
        const absl::Status s =
            first.ok() ? absl::InternalError("the server ended the stream without a job")
                       : first.status();
        const int c = Fail(absl::StrCat("cannot embed ", t->view.label), s);
        if (code == kExitOk) code = c;
      }
    }
    std::cout.flush();
    return code;
  }
  return FollowAndReport(follower, /*embed=*/true, &f);
}

absl::StatusOr<std::string> Cli::ResolveLatent(const std::string& arg, const std::string& model) {
  std::error_code ec;
  if (!fs::exists(arg, ec)) {
    if (absl::StartsWith(arg, "lat_")) return arg;
    return absl::NotFoundError(
        absl::StrCat("'", arg, "' is neither a file nor a latent ID (latent IDs start with lat_)"));
  }
  auto bytes = ReadFile(arg);
  if (!bytes.ok()) return bytes.status();
  if (Extension(arg) == ".npy") {
    v1::ImportLatentRequest request;
    request.set_model(model);
    request.set_npy(std::move(*bytes));
    auto latent = client().ImportLatent(request);
    if (!latent.ok()) {
      return absl::Status(latent.status().code(),
                          absl::StrCat("importing ", arg, ": ", latent.status().message()));
    }
    Note(absl::StrCat("imported ", arg, " as ", latent->id()));
    return latent->id();
  }
  EmbedFlags f;
  f.model = model;
  f.steps = embed_steps_;
  auto request = BuildEmbedRequest(f);
  if (!request.ok()) return request.status();
  request->set_image(std::move(*bytes));
  Follower follower(client(), g_, FollowOptions{});
  follower.Add(arg, fs::path(arg).stem().string(), client().Embed(*request));
  follower.Run();
  const Tracked& t = *follower.jobs()[0];
  if (t.view.state == v1::SUCCEEDED) {
    Note(absl::StrFormat("embedded %s as %s (PSNR %.2f dB)", arg, t.view.latent_id,
                         t.view.final_metrics.psnr_db()));
    return t.view.latent_id;
  }
  if (!t.error.ok()) {
    return absl::Status(t.error.code(), absl::StrCat("embedding ", arg, ": ", t.error.message()));
  }
  const int code = JobExitCode(t);
  return absl::Status(
      code == kExitCancelled  ? absl::StatusCode::kCancelled
      : code == kExitDetached ? absl::StatusCode::kCancelled
                              : absl::StatusCode::kAborted,
      absl::StrCat("embedding ", arg, " did not finish: ",
                   t.view.error.empty() ? Lower(StateName(t.view.state)) : t.view.error));
}

// ------------------------------------------------------------------------- jobs

absl::StatusOr<v1::JobState> ParseState(const std::string& name) {
  v1::JobState state;
  if (!v1::JobState_Parse(absl::AsciiStrToUpper(name), &state)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown job state ", name));
  }
  return state;
}

int Cli::JobsList() {
  std::vector<v1::JobState> states;
  for (const std::string& s : job_states_) states.push_back(*ParseState(s));
  auto jobs = client().ListJobs(states, limit_, all_tenants_);
  if (!jobs.ok()) return Fail("cannot list jobs", jobs.status());
  if (g_.json) {
    for (const auto& job : *jobs) Emit(ProtoJson(job));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& job : *jobs) {
    rows.push_back(
        {job.id(), StateName(job.state()), job.model(),
         absl::StrCat(job.step(), "/", job.total_steps()),
         job.metrics().psnr_db() > 0 ? absl::StrFormat("%.2f", job.metrics().psnr_db()) : "-",
         job.latent_id().empty() ? "-" : job.latent_id(), FormatTime(job.created_unix_ms())});
  }
  PrintTable({"JOB", "STATE", "MODEL", "STEP", "PSNR", "LATENT", "CREATED"}, rows);
  return kExitOk;
}

int Cli::JobsGet() {
  auto job = client().GetJob(latent_id_);
  if (!job.ok()) return Fail(absl::StrCat("cannot show job ", latent_id_), job.status());
  if (g_.json) {
    Emit(ProtoJson(*job));
    return kExitOk;
  }
  std::string took;
  if (job->finished_unix_ms() > 0 && job->started_unix_ms() > 0) {
    took = absl::StrCat(
        " (ran ", FormatDuration((job->finished_unix_ms() - job->started_unix_ms()) / 1e3), ")");
  }
  PrintFields({
      {"job", job->id()},
      {"state", StateName(job->state())},
      {"queue position", job->queue_position() > 0 ? std::to_string(job->queue_position()) : ""},
      {"model", job->model()},
      {"device", job->device()},
      {"step", absl::StrCat(job->step(), "/", job->total_steps())},
      {"loss", job->step() > 0 ? absl::StrFormat("%.5f", job->metrics().loss()) : ""},
      {"psnr", job->step() > 0 ? absl::StrFormat("%.2f dB", job->metrics().psnr_db()) : ""},
      {"latent", job->latent_id()},
      {"error", job->error_message()},
      {"request id", job->request_id()},
      {"created", FormatTime(job->created_unix_ms())},
      {"started", job->started_unix_ms() > 0 ? FormatTime(job->started_unix_ms()) : ""},
      {"finished", job->finished_unix_ms() > 0 ? FormatTime(job->finished_unix_ms()) + took : ""},
  });
  return kExitOk;
}

int Cli::JobsWatch() {
  const int n = static_cast<int>(job_ids_.size());
  const std::string ext = Extension(embed_.save_recon);
  if (n > 1 && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) {
    return Fail("--save-recon",
                absl::InvalidArgumentError(absl::StrCat(
                    "with ", n, " jobs this must be a directory, not ", embed_.save_recon)),
                kExitUsage);
  }
  Follower follower(client(), g_, FollowOptions{});
  for (const std::string& id : job_ids_) follower.Add(id, id, client().WatchJob(id, 0));
  return FollowAndReport(follower, /*embed=*/false, &embed_);
}

int Cli::JobsCancel() {
  int code = kExitOk;
  for (const std::string& id : job_ids_) {
    auto job = client().CancelJob(id);
    if (!job.ok()) {
      const int c = Fail(absl::StrCat("cannot cancel job ", id), job.status());
      if (code == kExitOk) code = c;
      continue;
    }
    if (g_.json) {
      Emit(ProtoJson(*job));
    } else {
      std::cout << id << "  " << StateName(job->state()) << "\n";
    }
  }
  std::cout.flush();
  return code;
}

// ------------------------------------------------------------------------- latents

std::string Labels(const v1::Latent& latent) {
  std::vector<std::string> parts;
  std::map<std::string, std::string> sorted(latent.labels().begin(), latent.labels().end());
  for (const auto& [k, v] : sorted) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, ",");
}

int Cli::LatentsList() {
  auto latents = client().ListLatents(model_, limit_, all_tenants_);
  if (!latents.ok()) return Fail("cannot list latents", latents.status());
  if (g_.json) {
    for (const auto& latent : *latents) Emit(ProtoJson(latent));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : *latents) {
    rows.push_back({l.id(), l.model(), l.source(),
                    l.has_metrics() && l.metrics().psnr_db() > 0
                        ? absl::StrFormat("%.2f", l.metrics().psnr_db())
                        : "-",
                    FormatTime(l.created_unix_ms()), Labels(l)});
  }
  PrintTable({"LATENT", "MODEL", "SOURCE", "PSNR", "CREATED", "LABELS"}, rows);
  return kExitOk;
}

int Cli::LatentsGet() {
  auto latent = client().GetLatent(latent_id_, include_values_);
  if (!latent.ok()) return Fail(absl::StrCat("cannot show latent ", latent_id_), latent.status());
  if (g_.json) {
    Emit(ProtoJson(*latent));
    return kExitOk;
  }
  const auto& l = *latent;
  PrintFields({
      {"latent", l.id()},
      {"model", l.model()},
      {"fingerprint", l.fingerprint()},
      {"shape", absl::StrCat(l.num_layers(), " x ", l.latent_size())},
      {"source", l.source()},
      {"job", l.job_id()},
      {"parents", absl::StrJoin(l.parents(), ", ")},
      {"params", l.params_json() == "{}" ? "" : l.params_json()},
      {"psnr", l.has_metrics() ? absl::StrFormat("%.2f dB after %d steps", l.metrics().psnr_db(),
                                                 l.metrics().steps())
                               : ""},
      {"lpips", l.has_metrics() && l.metrics().has_lpips()
                    ? absl::StrFormat("%.4f", l.metrics().lpips())
                    : ""},
      {"noise",
       l.has_noise() ? "own optimised maps" : absl::StrCat("drawn from seed ", l.noise_seed())},
      {"labels", Labels(l)},
      {"created", FormatTime(l.created_unix_ms())},
  });
  if (include_values_) {
    for (int row = 0; row < l.num_layers(); ++row) {
      std::string line = absl::StrFormat("layer %2d:", row);
      for (int c = 0; c < l.latent_size(); ++c) {
        absl::StrAppendFormat(&line, " %.5g", l.values(row * l.latent_size() + c));
      }
      std::cout << line << "\n";
    }
  }
  return kExitOk;
}

int Cli::LatentsRemove() {
  int code = kExitOk;
  for (const std::string& id : latent_ids_) {
    absl::Status s = client().DeleteLatent(id);
    if (!s.ok()) {
      const int c = Fail(absl::StrCat("cannot delete latent ", id), s);
      if (code == kExitOk) code = c;
      continue;
    }
    if (g_.json) {
      Emit({{"latent_id", id}, {"deleted", true}});
    } else {
      std::cout << "deleted " << id << "\n";
    }
  }
  std::cout.flush();
  return code;
}

int Cli::LatentsExport() {
  const std::string path = export_r_.output.empty() ? latent_id_ + ".npy" : export_r_.output;
  if (absl::Status s = CheckWritable(path, export_r_.force); !s.ok()) {
    return Fail("cannot export", s, kExitError);
  }
  auto exported = client().ExportLatent(latent_id_);
  if (!exported.ok()) {
    return Fail(absl::StrCat("cannot export latent ", latent_id_), exported.status());
  }
  if (absl::Status s = WriteOutput(path, exported->npy(), export_r_.force); !s.ok()) {
    return Fail("cannot export", s, kExitError);
  }
  if (g_.json) {
    Emit({{"latent_id", latent_id_},
          {"path", path},
          {"num_layers", exported->latent().num_layers()},
          {"latent_size", exported->latent().latent_size()}});
  } else if (path != "-") {
    std::cout << latent_id_ << "  -> " << path << "\n";
  }
  return kExitOk;
}

int Cli::LatentsImport() {
  auto bytes = ReadFile(file_);
  if (!bytes.ok()) return Fail("cannot import", bytes.status());
  v1::ImportLatentRequest request;
  request.set_model(model_);
  request.set_npy(std::move(*bytes));
  request.set_noise_seed(noise_seed_);
  request.set_request_id(request_id_);
  ParseLabels(labels_, request.mutable_labels());
  auto latent = client().ImportLatent(request);
  if (!latent.ok()) return Fail(absl::StrCat("cannot import ", file_), latent.status());
  if (g_.json) {
    Emit(ProtoJson(*latent));
  } else {
    std::cout << latent->id() << "\n";
  }
  return kExitOk;
}

// ------------------------------------------------------------------------- edits

v1::RenderOptions RenderFor(const RenderFlags& r, const std::string& format) {
  v1::RenderOptions options;
  options.set_format(format == "jpeg" ? v1::JPEG : format == "npy" ? v1::RAW_FLOAT32 : v1::PNG);
  options.set_jpeg_quality(r.quality);
  options.set_noise_seed(r.noise_seed);
  return options;
}

// The render format for an output path: an explicit --format, else from the extension.
absl::StatusOr<std::string> FormatForPath(const std::string& path, const std::string& format) {
  const std::string ext = Extension(path);
  if (!format.empty()) return format;
  if (path == "-" || ext == ".png") return std::string("png");
  if (ext == ".jpg" || ext == ".jpeg") return std::string("jpeg");
  if (ext == ".npy") return std::string("npy");
  return absl::InvalidArgumentError(absl::StrCat(path, ": unknown image type '", ext,
                                                 "' (use .png, .jpg or .npy, or give --format)"));
}

int Cli::Synth() {
  auto id = ResolveLatent(a_, model_);
  if (!id.ok()) return Fail("cannot render", id.status());
  const std::string path = synth_r_.output.empty() ? *id + ".png" : synth_r_.output;
  auto format = FormatForPath(path, format_);
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(path, synth_r_.force); !s.ok()) {
    return Fail("cannot render", s, kExitError);
  }
  v1::SynthesizeRequest request;
  request.mutable_latent()->set_latent_id(*id);
  *request.mutable_render() = RenderFor(synth_r_, *format);
  auto response = client().Synthesize(request);
  if (!response.ok()) return Fail(absl::StrCat("cannot render ", *id), response.status());
  if (absl::Status s = WriteOutput(path, response->image().data(), synth_r_.force); !s.ok()) {
    return Fail("cannot render", s, kExitError);
  }
  if (g_.json) {
    Emit({{"latent_id", *id},
          {"path", path},
          {"format", *format},
          {"width", response->image().width()},
          {"height", response->image().height()}});
  } else if (path != "-") {
    std::cout << *id << "  -> " << path << "\n";
  }
  return kExitOk;
}

int Cli::Morph() {
  const std::string& out = morph_r_.output;
  const SequenceKind kind = SequenceKindForPath(out);
  if (kind != SequenceKind::kDirectory) {
    if (absl::Status s = CheckWritable(out, morph_r_.force); !s.ok()) {
      return Fail("cannot morph", s, kExitError);
    }
  }
  auto a = ResolveLatent(a_, model_);
  if (!a.ok()) return Fail("cannot morph", a.status());
  auto b = ResolveLatent(b_, model_);
  if (!b.ok()) return Fail("cannot morph", b.status());
  v1::MorphRequest request;
  request.mutable_a()->set_latent_id(*a);
  request.mutable_b()->set_latent_id(*b);
  request.set_frames(frames_);
  request.mutable_render()->set_format(v1::PNG);
  auto stream = client().Morph(request);
  std::vector<RgbFrame> frames;
  LiveDisplay display(stderr);
  const bool live = g_.stderr_tty && !g_.quiet;
  const absl::Time start = absl::Now();
  while (true) {
    auto next = stream->Next();
    if (!next.ok()) {
      if (live) display.Erase();
      return Fail(absl::StrCat("cannot morph ", *a, " into ", *b), next.status());
    }
    if (!next->has_value()) break;
    auto frame = DecodeFrame((*next)->image().data());
    if (!frame.ok()) return Fail("cannot morph", frame.status());
    frames.push_back(std::move(*frame));
    if (live) {
      const double done = static_cast<double>(frames.size()) / frames_;
      const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
      display.Draw(
          {absl::StrCat("morph  ", ProgressBar(done, 24, g_.err_style.unicode), " ", frames.size(),
                        "/", frames_, " frames  ETA ", FormatDuration(elapsed / done - elapsed))});
    }
  }
  if (absl::Status s = WriteFrameSequence(frames, out, fps_, morph_r_.force); !s.ok()) {
    return Fail("cannot write the morph", s,
                s.code() == absl::StatusCode::kAlreadyExists ? kExitError : ExitCodeFor(s));
  }
  const char* kinds[] = {"video", "gif", "directory"};
  if (g_.json) {
    Emit({{"a", *a},
          {"b", *b},
          {"path", out},
          {"kind", kinds[static_cast<int>(kind)]},
          {"frames", frames.size()},
          {"fps", fps_}});
  } else {
    std::cout << absl::StrFormat("%s -> %s  %d frames  -> %s\n", *a, *b, frames.size(), out);
  }
  return kExitOk;
}

int Cli::StyleMix() {
  auto format = FormatForPath(mix_r_.output, "");
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(mix_r_.output, mix_r_.force); !s.ok()) {
    return Fail("cannot mix", s, kExitError);
  }
  auto content = ResolveLatent(a_, model_);
  if (!content.ok()) return Fail("cannot mix", content.status());
  auto style = ResolveLatent(b_, model_);
  if (!style.ok()) return Fail("cannot mix", style.status());
  v1::StyleMixRequest request;
  request.mutable_content()->set_latent_id(*content);
  request.mutable_style()->set_latent_id(*style);
  request.set_crossover(crossover_);
  *request.mutable_render() = RenderFor(mix_r_, *format);
  request.set_store_result(store_);
  request.set_request_id(request_id_);
  ParseLabels(labels_, request.mutable_labels());
  auto response = client().StyleMix(request);
  if (!response.ok()) return Fail("cannot mix", response.status());
  if (absl::Status s = WriteOutput(mix_r_.output, response->image().data(), mix_r_.force);
      !s.ok()) {
    return Fail("cannot mix", s, kExitError);
  }
  if (g_.json) {
    nlohmann::json doc = {{"content", *content},
                          {"style", *style},
                          {"crossover", crossover_},
                          {"path", mix_r_.output}};
    if (response->has_latent()) doc["latent"] = ProtoJson(response->latent());
    Emit(doc);
  } else if (mix_r_.output != "-") {
    std::cout << absl::StrFormat("%s + %s (crossover %d)  -> %s%s\n", *content, *style, crossover_,
                                 mix_r_.output,
                                 response->has_latent() ? "  " + response->latent().id() : "");
  }
  return kExitOk;
}

int Cli::Expression() {
  auto format = FormatForPath(expr_r_.output, "");
  if (!format.ok()) return Fail("-o", format.status(), kExitUsage);
  if (absl::Status s = CheckWritable(expr_r_.output, expr_r_.force); !s.ok()) {
    return Fail("cannot transfer the expression", s, kExitError);
  }
  std::string ids[3];
  const std::string* args[3] = {&a_, &b_, &c_};
  for (int i = 0; i < 3; ++i) {
    auto id = ResolveLatent(*args[i], model_);
    if (!id.ok()) return Fail("cannot transfer the expression", id.status());
    ids[i] = *id;
  }
  v1::ExpressionTransferRequest request;
  request.mutable_target()->set_latent_id(ids[0]);
  request.mutable_neutral()->set_latent_id(ids[1]);
  request.mutable_expression()->set_latent_id(ids[2]);
  request.set_strength(lambda_);
  request.set_first_layer(first_layer_);
  if (last_layer_) request.set_last_layer(*last_layer_);
  *request.mutable_render() = RenderFor(expr_r_, *format);
  request.set_store_result(store_);
  request.set_request_id(request_id_);
  ParseLabels(labels_, request.mutable_labels());
  auto response = client().ExpressionTransfer(request);
  if (!response.ok()) return Fail("cannot transfer the expression", response.status());
  if (absl::Status s = WriteOutput(expr_r_.output, response->image().data(), expr_r_.force);
      !s.ok()) {
    return Fail("cannot transfer the expression", s, kExitError);
  }
  if (g_.json) {
    nlohmann::json doc = {{"target", ids[0]},
                          {"neutral", ids[1]},
                          {"expression", ids[2]},
                          {"lambda", lambda_},
                          {"path", expr_r_.output}};
    if (response->has_latent()) doc["latent"] = ProtoJson(response->latent());
    Emit(doc);
  } else if (expr_r_.output != "-") {
    std::cout << absl::StrFormat("%s + %g * (%s - %s)  -> %s%s\n", ids[0], lambda_, ids[2], ids[1],
                                 expr_r_.output,
                                 response->has_latent() ? "  " + response->latent().id() : "");
  }
  return kExitOk;
}

// ------------------------------------------------------------------------- info

int Cli::Info() {
  auto info = client().GetServerInfo();
  if (!info.ok()) return Fail("", info.status());
  if (g_.json) {
    Emit(ProtoJson(*info));
    return kExitOk;
  }
  const auto& l = info->limits();
  PrintFields({
      {"server", absl::StrCat(g_.server, " (i2s_server ", info->version(), ")")},
      {"caller", !info->auth_required() ? std::string("no authentication (one tenant)")
                                        : absl::StrCat("tenant \"", info->caller_tenant(), "\"",
                                                       info->caller_admin() ? " (admin)" : "")},
      {"devices", absl::StrJoin(info->devices(), ", ")},
      {"jobs", absl::StrCat(info->running_jobs(), " running, ", info->queued_jobs(),
                            " queued (queue limit ", l.queue_limit(), ", batch up to ",
                            l.max_batch(), ")")},
      {"limits",
       absl::StrCat("images up to ", l.max_image_bytes() >> 20, " MiB and ", l.max_image_pixels(),
                    " pixels; up to ", l.max_steps(), " steps; up to ", l.max_morph_frames(),
                    " morph frames; messages up to ", l.max_message_bytes() >> 20, " MiB")},
      {"lpips", info->has_lpips() ? "yes (loss term, stylegan2-projector, reported metric)"
                                  : "no (the server has no --lpips)"},
  });
  std::cout << "\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : info->models()) {
    std::string notes;
    if (m.is_default()) notes = "default";
    if (m.is_demo()) notes += notes.empty() ? "demo (random weights)" : ", demo (random weights)";
    std::vector<std::string> channels;
    for (int32_t c : m.channels()) channels.push_back(absl::StrCat(c));
    std::string config =
        absl::StrCat(m.mapping_layers(), " mapping, channels ", absl::StrJoin(channels, "/"), ", ",
                     m.num_noise_maps(), " noise maps");
    if (m.conv_clamp() > 0) absl::StrAppend(&config, ", conv_clamp ", m.conv_clamp());
    if (m.has_file_mean_w()) absl::StrAppend(&config, ", mean w from the file");
    rows.push_back({m.name(), m.architecture(), absl::StrCat(m.resolution(), "x", m.resolution()),
                    absl::StrCat(m.num_layers(), "x", m.latent_size()),
                    m.fingerprint().substr(0, 19), config, notes});
  }
  PrintTable({"MODEL", "ARCH", "RESOLUTION", "W+", "FINGERPRINT", "CONFIGURATION", ""}, rows);
  return kExitOk;
}

int Cli::Usage() {
  pb::GetUsageRequest request;
  request.set_tenant(usage_tenant_);
  request.set_all_tenants(all_tenants_);
  auto usage = client().GetUsage(request);
  if (!usage.ok()) return Fail("", usage.status());
  if (g_.json) {
    Emit(ProtoJson(*usage));
    return kExitOk;
  }
  const pb::Quotas& q = usage->quotas();
  // "used / limit", or just "used" where there is no limit (0).
  const auto of = [](int64_t used, int64_t limit) {
    return limit > 0 ? absl::StrCat(used, " / ", limit) : absl::StrCat(used);
  };
  std::vector<std::vector<std::string>> rows;
  for (const pb::TenantUsage& u : usage->usage()) {
    rows.push_back({u.tenant().empty() ? "\"\"" : u.tenant(),
                    of(u.latents() + u.unfinished_jobs(), q.max_latents()),
                    of(u.latent_bytes(), q.max_latent_bytes()), of(u.jobs(), q.max_jobs()),
                    absl::StrCat(u.unfinished_jobs()), of(u.job_bytes(), q.max_job_bytes()),
                    absl::StrCat(u.request_ids())});
  }
  PrintTable({"TENANT", "LATENTS+RESERVED", "LATENT BYTES", "JOBS", "UNFINISHED", "JOB BYTES",
              "REQUEST IDS"},
             rows);
  const auto hours = [](double seconds) {
    return seconds > 0 ? absl::StrCat(seconds / 3600, " h") : std::string("kept");
  };
  std::cout << "\nfinished jobs expire after " << hours(q.job_retention_seconds())
            << "; request IDs after " << hours(q.request_id_retention_seconds()) << "\n";
  return kExitOk;
}

int Cli::Health() {
  auto health = client().CheckHealth(health_service_);
  if (!health.ok()) return Fail("", health.status());
  const bool serving = *health == client::Health::kServing;
  const char* word = serving                                  ? "SERVING"
                     : *health == client::Health::kNotServing ? "NOT_SERVING"
                                                              : "UNKNOWN";
  if (g_.json) {
    Emit({{"server", g_.server}, {"status", word}});
  } else {
    std::cout << g_.server << "  " << word << "\n";
  }
  if (!serving) {
    std::fprintf(stderr, "i2s_client: the server at %s answers but is not serving (%s)%s\n",
                 g_.server.c_str(), word,
                 *health == client::Health::kNotServing ? "; it may be shutting down" : "");
  }
  return serving ? kExitOk : kExitUnreachable;
}

}  // namespace

int RunCli(int argc, char** argv) {
  auto signals = SignalQueue::Install({SIGINT, SIGTERM});
  if (!signals.ok()) {
    std::fprintf(stderr, "i2s_client: %s\n", std::string(signals.status().message()).c_str());
    return kExitUsage;
  }
  // Lives as long as the process: the detached thread reads it until exit.
  std::thread(SignalThread, signals->release()).detach();
  Cli cli;
  const int code = cli.Run(argc, argv);
  std::cout.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  return code;
}

}  // namespace i2s::client
