#include "client/media.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace i2s::client {
namespace {

namespace fs = std::filesystem;

// Smooth gradients (red along x, green along y, blue along the diagonal, drifting with
// t) and a flat square that moves with t.
RgbFrame MakeFrame(int width, int height, int t) {
  RgbFrame frame{width, height, std::vector<uint8_t>(size_t{3} * width * height)};
  const int side = std::max(4, std::min(width, height) / 4);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &frame.rgb[(size_t{1} * y * width + x) * 3];
      const int sx = (3 * t) % (width - side), sy = (2 * t) % (height - side);
      if (x >= sx && x < sx + side && y >= sy && y < sy + side) {
        p[0] = 240, p[1] = 200, p[2] = 30;
        continue;
      }
      p[0] = static_cast<uint8_t>(255 * x / (width - 1));
      p[1] = static_cast<uint8_t>(255 * y / (height - 1));
      p[2] = static_cast<uint8_t>((128 * (x + y) / (width + height - 2) + 16 * t) % 256);
    }
  }
  return frame;
}

std::vector<RgbFrame> MakeFrames(int width, int height, int count) {
  std::vector<RgbFrame> frames;
  for (int t = 0; t < count; ++t) frames.push_back(MakeFrame(width, height, t));
  return frames;
}

RgbFrame FromBgr(const cv::Mat& bgr) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  RgbFrame frame{rgb.cols, rgb.rows, {}};
  frame.rgb.assign(rgb.data, rgb.data + rgb.total() * 3);
  return frame;
}

// Decodes with OpenCV's FFmpeg backend, a decoder independent of our encoder.
std::vector<RgbFrame> ReadWithFfmpeg(const fs::path& path) {
  cv::VideoCapture capture(path.string(), cv::CAP_FFMPEG);
  EXPECT_TRUE(capture.isOpened()) << path;
  std::vector<RgbFrame> frames;
  for (cv::Mat bgr; capture.read(bgr);) frames.push_back(FromBgr(bgr));
  return frames;
}

// The largest over the three channels of the mean absolute difference.
double MeanAbsError(const RgbFrame& a, const RgbFrame& b) {
  double sum[3] = {0, 0, 0};
  for (size_t i = 0; i < a.rgb.size(); ++i) sum[i % 3] += std::abs(a.rgb[i] - b.rgb[i]);
  return *std::max_element(sum, sum + 3) / (a.rgb.size() / 3);
}

double Psnr(const RgbFrame& a, const RgbFrame& b) {
  double squares = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) squares += std::pow(a.rgb[i] - b.rgb[i], 2);
  return 10 * std::log10(255.0 * 255.0 * a.rgb.size() / std::max(squares, 1e-9));
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::set<std::string> Listing(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename());
  return names;
}

class MediaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("media_test_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

TEST_F(MediaTest, GifHasHeaderScreenSizeLoopAndTrailer) {
  absl::StatusOr<std::string> gif = EncodeGif(MakeFrames(37, 21, 3), 10);
  ASSERT_TRUE(gif.ok()) << gif.status();
  EXPECT_EQ(gif->substr(0, 6), "GIF89a");
  EXPECT_EQ(gif->substr(6, 4), std::string("\x25\x00\x15\x00", 4));  // 37 x 21
  EXPECT_NE(gif->find("NETSCAPE2.0"), std::string::npos);
  EXPECT_EQ(gif->back(), '\x3B');
}

TEST_F(MediaTest, GifDecodesCloseToTheInput) {
  for (auto [width, height] : {std::pair{37, 21}, std::pair{64, 64}}) {
    const std::vector<RgbFrame> frames = MakeFrames(width, height, 6);
    const fs::path path = dir_ / ("anim_" + std::to_string(width) + ".gif");
    ASSERT_TRUE(WriteFrameSequence(frames, path.string(), 12.5, false).ok());
    const std::vector<RgbFrame> decoded = ReadWithFfmpeg(path);
    ASSERT_EQ(decoded.size(), frames.size());
    for (size_t i = 0; i < frames.size(); ++i) {
      ASSERT_EQ(decoded[i].width, width);
      ASSERT_EQ(decoded[i].height, height);
      // Measured at most 8.0 (37x21) and 7.7 (64x64). These frames spread ~4000
      // (37x21) to ~20000 (64x64) colours through the whole RGB cube (red, green and the
      // drifting blue vary independently), so each of the 256 palette boxes spans ~40
      // levels per channel; a photo measures ~3.8 (see media.cc).
      EXPECT_LT(MeanAbsError(frames[i], decoded[i]), 9.0) << width << "x" << height << " " << i;
    }
  }
}

// A grey ramp has 256 colours, but pixels map through 8-level cells: the error is the
// lookup's alone: 4,3,2,1,0,1,2,3 across each cell, 2.0 on average.
TEST_F(MediaTest, GifOfAGreyRampIsLimitedByTheLookupCells) {
  RgbFrame ramp{256, 4, std::vector<uint8_t>(256 * 4 * 3)};
  for (size_t i = 0; i < ramp.rgb.size(); ++i) ramp.rgb[i] = static_cast<uint8_t>(i / 3 % 256);
  const fs::path path = dir_ / "ramp.gif";
  ASSERT_TRUE(WriteFrameSequence({ramp}, path.string(), 1, false).ok());
  const std::vector<RgbFrame> decoded = ReadWithFfmpeg(path);
  ASSERT_EQ(decoded.size(), 1u);
  EXPECT_LT(MeanAbsError(ramp, decoded[0]), 2.5);
  for (size_t i = 0; i < ramp.rgb.size(); ++i) {
    ASSERT_LE(std::abs(ramp.rgb[i] - decoded[0].rgb[i]), 8) << i;
  }
}

// At most 256 colours, each the centre of its own 5-bit cell: the palette holds them
// exactly and the decoded GIF must match bit for bit. Noise fills the 4096-entry LZW
// table several times (clear codes); a flat frame makes long strings.
TEST_F(MediaTest, GifOfFewColoursRoundTripsExactly) {
  std::mt19937 random(7);
  std::vector<std::array<uint8_t, 3>> colours;
  std::set<int> cells;
  while (colours.size() < 200) {
    const int r = random() % 32, g = random() % 32, b = random() % 32;
    if (cells.insert(r << 10 | g << 5 | b).second) {
      colours.push_back({static_cast<uint8_t>(8 * r + 4), static_cast<uint8_t>(8 * g + 4),
                         static_cast<uint8_t>(8 * b + 4)});
    }
  }
  std::vector<RgbFrame> frames(3, RgbFrame{97, 83, std::vector<uint8_t>(97 * 83 * 3)});
  for (size_t i = 0; i < frames[0].rgb.size(); i += 3) {
    const auto& noise = colours[random() % colours.size()];
    std::copy(noise.begin(), noise.end(), &frames[0].rgb[i]);
    std::copy(colours[0].begin(), colours[0].end(), &frames[1].rgb[i]);
    const auto& stripe = colours[(i / 3 / 5) % colours.size()];
    std::copy(stripe.begin(), stripe.end(), &frames[2].rgb[i]);
  }
  const fs::path path = dir_ / "exact.gif";
  ASSERT_TRUE(WriteFrameSequence(frames, path.string(), 5, false).ok());
  const std::vector<RgbFrame> decoded = ReadWithFfmpeg(path);
  ASSERT_EQ(decoded.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(decoded[i].rgb, frames[i].rgb) << i;
}

TEST_F(MediaTest, VideoReadsBack) {
  const std::vector<RgbFrame> frames = MakeFrames(64, 64, 10);
  for (const char* name : {"clip.mp4", "clip.AVI"}) {
    const fs::path path = dir_ / name;
    ASSERT_TRUE(WriteFrameSequence(frames, path.string(), 10, false).ok()) << name;
    const std::vector<RgbFrame> decoded = ReadWithFfmpeg(path);
    ASSERT_EQ(decoded.size(), frames.size()) << name;
    for (size_t i = 0; i < frames.size(); ++i) {
      ASSERT_EQ(decoded[i].width, 64);
      ASSERT_EQ(decoded[i].height, 64);
      // Measured 26.8-39.7 dB (H.264, crf 23) and 27.4-42.2 dB (MJPEG): the square's
      // edges and the blue wrap-around are sharp colour edges that 4:2:0 chroma blurs.
      EXPECT_GT(Psnr(frames[i], decoded[i]), 24) << name << " " << i;
    }
  }
  EXPECT_EQ(Listing(dir_), (std::set<std::string>{"clip.mp4", "clip.AVI"}));
}

TEST_F(MediaTest, DirectoryOfPngsReadsBackExactly) {
  const std::vector<RgbFrame> frames = MakeFrames(37, 21, 4);
  const fs::path out = dir_ / "frames";
  ASSERT_TRUE(WriteFrameSequence(frames, out.string() + "/", 10, false).ok());
  EXPECT_EQ(Listing(out), (std::set<std::string>{"frame_000.png", "frame_001.png", "frame_002.png",
                                                 "frame_003.png"}));
  for (size_t i = 0; i < frames.size(); ++i) {
    const cv::Mat bgr = cv::imread((out / ("frame_00" + std::to_string(i) + ".png")).string());
    ASSERT_FALSE(bgr.empty());
    EXPECT_EQ(FromBgr(bgr).rgb, frames[i].rgb) << i;
  }
}

TEST_F(MediaTest, DirectoryNamesHaveEnoughDigits) {
  const std::vector<RgbFrame> frames(1001, RgbFrame{2, 2, std::vector<uint8_t>(12, 9)});
  ASSERT_TRUE(WriteFrameSequence(frames, (dir_ / "many").string(), 10, false).ok());
  EXPECT_EQ(Listing(dir_ / "many").size(), 1001u);
  EXPECT_TRUE(fs::exists(dir_ / "many" / "frame_0000.png"));
  EXPECT_TRUE(fs::exists(dir_ / "many" / "frame_1000.png"));
}

TEST_F(MediaTest, RefusesToOverwriteUnlessAsked) {
  const fs::path gif = dir_ / "out.gif";
  ASSERT_TRUE(WriteFrameSequence(MakeFrames(16, 16, 2), gif.string(), 10, false).ok());
  const std::string before = ReadFile(gif);
  absl::Status status = WriteFrameSequence(MakeFrames(16, 16, 3), gif.string(), 10, false);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(status.message(), gif.string() + " already exists (use --force to overwrite)");
  EXPECT_EQ(ReadFile(gif), before);
  ASSERT_TRUE(WriteFrameSequence(MakeFrames(16, 16, 3), gif.string(), 10, true).ok());
  EXPECT_NE(ReadFile(gif), before);

  const fs::path frames_dir = dir_ / "frames";
  fs::create_directories(frames_dir);
  std::ofstream(frames_dir / "frame_001.png") << "old";
  status = WriteFrameSequence(MakeFrames(16, 16, 3), frames_dir.string(), 10, false);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(status.message().find((frames_dir / "frame_001.png").string()), std::string::npos);
  EXPECT_EQ(Listing(frames_dir), std::set<std::string>{"frame_001.png"});
  ASSERT_TRUE(WriteFrameSequence(MakeFrames(16, 16, 3), frames_dir.string(), 10, true).ok());
  EXPECT_FALSE(cv::imread((frames_dir / "frame_001.png").string()).empty());
  EXPECT_EQ(Listing(dir_), (std::set<std::string>{"out.gif", "frames"}));
}

TEST_F(MediaTest, RejectsBadFramesAndLeavesNothing) {
  const std::string gif = (dir_ / "bad.gif").string();
  EXPECT_EQ(WriteFrameSequence({}, gif, 10, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeGif({}, 10).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<RgbFrame> mixed = {MakeFrame(16, 16, 0), MakeFrame(16, 12, 1)};
  EXPECT_EQ(WriteFrameSequence(mixed, gif, 10, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteFrameSequence(mixed, (dir_ / "d").string(), 10, false).code(),
            absl::StatusCode::kInvalidArgument);
  RgbFrame short_data = MakeFrame(16, 16, 0);
  short_data.rgb.pop_back();
  EXPECT_EQ(EncodeGif({short_data}, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeGif({MakeFrame(16, 16, 0)}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Listing(dir_).empty());
}

TEST_F(MediaTest, SequenceKindFollowsThePath) {
  EXPECT_EQ(SequenceKindForPath("out.mp4"), SequenceKind::kVideo);
  EXPECT_EQ(SequenceKindForPath("a/b/out.MKV"), SequenceKind::kVideo);
  EXPECT_EQ(SequenceKindForPath("out.avi"), SequenceKind::kVideo);
  EXPECT_EQ(SequenceKindForPath("out.Mov"), SequenceKind::kVideo);
  EXPECT_EQ(SequenceKindForPath("out.gif"), SequenceKind::kGif);
  EXPECT_EQ(SequenceKindForPath("OUT.GIF"), SequenceKind::kGif);
  EXPECT_EQ(SequenceKindForPath("frames"), SequenceKind::kDirectory);
  EXPECT_EQ(SequenceKindForPath("frames.png"), SequenceKind::kDirectory);
  EXPECT_EQ(SequenceKindForPath("out.gif/"), SequenceKind::kDirectory);
  fs::create_directories(dir_ / "looks_like.mp4");
  EXPECT_EQ(SequenceKindForPath((dir_ / "looks_like.mp4").string()), SequenceKind::kDirectory);
}

}  // namespace
}  // namespace i2s::client
