#include "server/imaging/image_io.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/imaging/image_header.h"

namespace i2s {
namespace {

// Photos shipped by Debian's python3-skimage (451x300 cat, 600x400 coffee cup).
constexpr char kChelsea[] = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png";
constexpr char kCoffee[] = "/usr/lib/python3/dist-packages/skimage/data/coffee.png";

// InvalidArgument whose message starts with "<field>:" and contains every one of `parts`.
::testing::AssertionResult IsInvalidArgument(const absl::Status& status, absl::string_view field,
                                             std::initializer_list<absl::string_view> parts = {}) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "expected InvalidArgument, got " << status;
  }
  if (!absl::StartsWith(status.message(), absl::StrCat(field, ":"))) {
    return ::testing::AssertionFailure()
           << "message does not start with '" << field << ":': " << status;
  }
  for (absl::string_view part : parts) {
    if (!absl::StrContains(status.message(), part)) {
      return ::testing::AssertionFailure() << "message lacks '" << part << "': " << status;
    }
  }
  return ::testing::AssertionSuccess();
}

std::string CvEncode(const cv::Mat& m, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, m, buf, params));
  return std::string(buf.begin(), buf.end());
}

// uint8 [h, w, 3] noise: a worst case for lossy coding, exact under PNG.
torch::Tensor RandomRgb8(int64_t h, int64_t w) {
  return torch::randint(0, 256, {h, w, 3}, torch::TensorOptions().dtype(torch::kUInt8));
}

// uint8 [h, w, 3] smooth ramps, which JPEG keeps close.
torch::Tensor GradientRgb8(int64_t h, int64_t w) {
  auto y = torch::linspace(0, 1, h).view({h, 1}).expand({h, w});
  auto x = torch::linspace(0, 1, w).view({1, w}).expand({h, w});
  return (torch::stack({x, y, (x + y) / 2}, 2) * 255).round().to(torch::kUInt8);
}

// float [3, H, W] in [0, 1] -> uint8 [H, W, 3].
torch::Tensor ToRgb8(const torch::Tensor& chw) {
  return (chw * 255).round().clamp(0, 255).to(torch::kUInt8).permute({1, 2, 0}).contiguous();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void PutBigEndian32(std::string* b, size_t pos, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[pos + i] = static_cast<char>(v >> (24 - 8 * i));
}
void PutBigEndian16(std::string* b, size_t pos, uint32_t v) {
  (*b)[pos] = static_cast<char>(v >> 8);
  (*b)[pos + 1] = static_cast<char>(v);
}

// CRC-32 as PNG chunks use it (ISO 3309, reflected 0xEDB88320).
uint32_t Crc32(absl::string_view data) {
  uint32_t crc = 0xFFFFFFFF;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320 & (0 - (crc & 1)));
  }
  return ~crc;
}

// Offset of the first SOF0 marker of a JPEG written by OpenCV (baseline), found by
// walking the segments.
size_t FindSof0(const std::string& jpeg) {
  size_t pos = 2;
  while (pos + 4 <= jpeg.size()) {
    const unsigned char marker = jpeg[pos + 1];
    if (marker == 0xC0) return pos;
    pos += 2 + (static_cast<unsigned char>(jpeg[pos + 2]) << 8 |
                static_cast<unsigned char>(jpeg[pos + 3]));
  }
  ADD_FAILURE() << "no SOF0";
  return 0;
}

TEST(ImageIoTest, PngRoundTripIsExact) {
  torch::manual_seed(1);
  const torch::Tensor rgb8 = RandomRgb8(37, 53);
  auto png = EncodeRgb8(rgb8, EncodeFormat::kPng);
  ASSERT_TRUE(png.ok()) << png.status();

  auto header = ReadImageHeader(*png);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->format, "png");
  EXPECT_EQ(header->width, 53);
  EXPECT_EQ(header->height, 37);

  auto decoded = DecodeRgbImage(*png, DecodeLimits{});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->sizes(), (std::vector<int64_t>{3, 37, 53}));
  EXPECT_EQ(decoded->scalar_type(), torch::kFloat32);
  EXPECT_GE(decoded->min().item<float>(), 0.0f);
  EXPECT_LE(decoded->max().item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(ToRgb8(*decoded), rgb8));
}

TEST(ImageIoTest, JpegRoundTripIsClose) {
  const torch::Tensor rgb8 = GradientRgb8(48, 64);
  auto jpeg = EncodeRgb8(rgb8, EncodeFormat::kJpeg, 95);
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();

  auto header = ReadImageHeader(*jpeg);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->format, "jpeg");
  EXPECT_EQ(header->width, 64);
  EXPECT_EQ(header->height, 48);

  auto decoded = DecodeRgbImage(*jpeg, DecodeLimits{});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->sizes(), (std::vector<int64_t>{3, 48, 64}));
  const torch::Tensor diff =
      (ToRgb8(*decoded).to(torch::kFloat32) - rgb8.to(torch::kFloat32)).abs();
  EXPECT_LT(diff.mean().item<float>(), 2.0f);
  EXPECT_LT(diff.max().item<float>(), 16.0f);
}

// A progressive JPEG of a real photo (OpenCV/libjpeg's default progressive script), then
// the same file with one of its scans repeated until it has 400: the "scan bomb" shape (a
// small file whose decoding makes one pass over the whole image per scan). The scans are
// counted from the markers, before anything is decoded.
TEST(ImageIoTest, JpegScanBombIsRefusedBeforeDecoding) {
  if (!std::filesystem::exists(kChelsea)) GTEST_SKIP() << kChelsea << " missing (python3-skimage)";
  cv::Mat photo = cv::imread(kChelsea, cv::IMREAD_COLOR);
  ASSERT_FALSE(photo.empty());
  std::vector<uchar> buf;
  ASSERT_TRUE(cv::imencode(".jpg", photo, buf, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  const std::string progressive(buf.begin(), buf.end());
  const JpegLayout layout = ScanJpegLayout(progressive);
  EXPECT_TRUE(layout.end_of_image);
  EXPECT_GT(layout.scans, 1);
  EXPECT_LE(layout.scans, 12);
  auto ok = DecodeRgbImage(progressive, DecodeLimits{});
  ASSERT_TRUE(ok.ok()) << ok.status();
  // The last scan: from its SOS marker to the EOI at the end.
  const size_t eoi = progressive.size() - 2;
  ASSERT_EQ(static_cast<uint8_t>(progressive[eoi + 1]), 0xD9);
  const size_t last_sos = progressive.rfind("\xFF\xDA", eoi);
  ASSERT_NE(last_sos, std::string::npos);
  const std::string scan = progressive.substr(last_sos, eoi - last_sos);
  std::string bomb = progressive.substr(0, eoi);
  while (ScanJpegLayout(bomb + "\xFF\xD9").scans < 400) bomb += scan;
  bomb += "\xFF\xD9";
  EXPECT_EQ(ScanJpegLayout(bomb).scans, 400);
  EXPECT_LT(bomb.size(), progressive.size() + 400 * scan.size());
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(bomb, DecodeLimits{}).status(), "image",
                                {"400 scans", "at most 100"}));
  // The count is what refuses it (the stream itself is whole): the limit is configurable.
  EXPECT_TRUE(ScanJpegLayout(bomb).end_of_image);
  DecodeLimits tighter;
  tighter.max_jpeg_scans = 399;
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(bomb, tighter).status(), "image",
                                {"400 scans", "at most 399"}));
}

TEST(ImageIoTest, JpegQualityControlsSize) {
  torch::manual_seed(2);
  const torch::Tensor rgb8 = RandomRgb8(64, 64);
  auto low = EncodeRgb8(rgb8, EncodeFormat::kJpeg, 10);
  auto high = EncodeRgb8(rgb8, EncodeFormat::kJpeg, 100);
  ASSERT_TRUE(low.ok() && high.ok());
  EXPECT_LT(low->size(), high->size());
}

TEST(ImageIoTest, EncodeMatchesWriteRgb8ImageConvention) {
  // One red pixel: RGB order in the tensor must survive OpenCV's BGR.
  torch::Tensor rgb8 = torch::zeros({1, 2, 3}, torch::kUInt8);
  rgb8[0][0][0] = 255;
  rgb8[0][1][2] = 255;
  auto png = EncodeRgb8(rgb8, EncodeFormat::kPng);
  ASSERT_TRUE(png.ok()) << png.status();
  cv::Mat bgr = cv::imdecode(std::vector<uchar>(png->begin(), png->end()), cv::IMREAD_COLOR);
  ASSERT_EQ(bgr.cols, 2);
  EXPECT_EQ(bgr.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 255));
  EXPECT_EQ(bgr.at<cv::Vec3b>(0, 1), cv::Vec3b(255, 0, 0));
}

TEST(ImageIoTest, BmpDecodes) {
  cv::Mat bgr(21, 30, CV_8UC3);
  cv::randu(bgr, 0, 256);
  const std::string bmp = CvEncode(bgr, ".bmp");

  auto header = ReadImageHeader(bmp, "upload");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->format, "bmp");
  EXPECT_EQ(header->width, 30);
  EXPECT_EQ(header->height, 21);

  auto decoded = DecodeRgbImage(bmp, DecodeLimits{}, "upload");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const torch::Tensor rgb8 = ToRgb8(*decoded);
  ASSERT_EQ(rgb8.sizes(), (std::vector<int64_t>{21, 30, 3}));
  for (int y : {0, 10, 20}) {
    for (int x : {0, 17, 29}) {
      const cv::Vec3b p = bgr.at<cv::Vec3b>(y, x);
      EXPECT_EQ(rgb8[y][x][0].item<int>(), p[2]);
      EXPECT_EQ(rgb8[y][x][1].item<int>(), p[1]);
      EXPECT_EQ(rgb8[y][x][2].item<int>(), p[0]);
    }
  }
}

TEST(ImageIoTest, BmpNegativeHeightIsTopDown) {
  cv::Mat bgr(4, 5, CV_8UC3);
  cv::randu(bgr, 0, 256);
  std::string bmp = CvEncode(bgr, ".bmp");
  ASSERT_EQ(bmp.substr(14, 4), std::string("\x28\0\0\0", 4));  // BITMAPINFOHEADER
  // Same rows, now declared top-down: the image comes out upside down.
  const int32_t top_down = -4;
  for (int i = 0; i < 4; ++i)
    bmp[22 + i] = static_cast<char>(static_cast<uint32_t>(top_down) >> (8 * i));

  auto header = ReadImageHeader(bmp);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 5);
  EXPECT_EQ(header->height, 4);
  auto decoded = DecodeRgbImage(bmp, DecodeLimits{});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const torch::Tensor rgb8 = ToRgb8(*decoded);
  for (int y = 0; y < 4; ++y) {
    EXPECT_EQ(rgb8[y][2][0].item<int>(), bgr.at<cv::Vec3b>(3 - y, 2)[2]) << "row " << y;
  }
}

TEST(ImageIoTest, RealPhotoHeadersMatchOpenCv) {
  for (const char* path : {kChelsea, kCoffee}) {
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " missing (python3-skimage)";
    SCOPED_TRACE(path);
    const std::string bytes = ReadFile(path);
    const cv::Mat reference = cv::imread(path, cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(reference.empty());

    auto header = ReadImageHeader(bytes, "photo");
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->format, "png");
    EXPECT_EQ(header->width, reference.cols);
    EXPECT_EQ(header->height, reference.rows);

    auto decoded = DecodeRgbImage(bytes, DecodeLimits{}, "photo");
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    auto from_file = ReadRgbImage(path);
    ASSERT_TRUE(from_file.ok()) << from_file.status();
    EXPECT_TRUE(torch::equal(*decoded, *from_file));

    // The same photo as a JPEG: header and decode agree too.
    auto jpeg = EncodeRgb8(ToRgb8(*decoded), EncodeFormat::kJpeg);
    ASSERT_TRUE(jpeg.ok()) << jpeg.status();
    auto jpeg_header = ReadImageHeader(*jpeg);
    ASSERT_TRUE(jpeg_header.ok()) << jpeg_header.status();
    EXPECT_EQ(jpeg_header->width, reference.cols);
    EXPECT_EQ(jpeg_header->height, reference.rows);
  }
}

TEST(ImageIoTest, GrayAndRgbaPngsBecomeThreeChannels) {
  cv::Mat gray(6, 7, CV_8UC1);
  cv::randu(gray, 0, 256);
  auto from_gray = DecodeRgbImage(CvEncode(gray, ".png"), DecodeLimits{});
  ASSERT_TRUE(from_gray.ok()) << from_gray.status();
  ASSERT_EQ(from_gray->sizes(), (std::vector<int64_t>{3, 6, 7}));
  const torch::Tensor g8 = ToRgb8(*from_gray);
  EXPECT_EQ(g8[3][4][0].item<int>(), gray.at<uchar>(3, 4));
  EXPECT_TRUE(torch::equal(g8.select(2, 0), g8.select(2, 1)));
  EXPECT_TRUE(torch::equal(g8.select(2, 0), g8.select(2, 2)));

  cv::Mat bgra(5, 4, CV_8UC4, cv::Scalar(10, 20, 30, 0));  // fully transparent
  auto from_rgba = DecodeRgbImage(CvEncode(bgra, ".png"), DecodeLimits{});
  ASSERT_TRUE(from_rgba.ok()) << from_rgba.status();
  ASSERT_EQ(from_rgba->sizes(), (std::vector<int64_t>{3, 5, 4}));
  const torch::Tensor a8 = ToRgb8(*from_rgba);
  EXPECT_EQ(a8[0][0][0].item<int>(), 30);  // alpha dropped, colour kept
  EXPECT_EQ(a8[0][0][1].item<int>(), 20);
  EXPECT_EQ(a8[0][0][2].item<int>(), 10);
}

TEST(ImageIoTest, SixteenBitPngIsScaled) {
  cv::Mat bgr16(3, 3, CV_16UC3, cv::Scalar(0, 32768, 65535));
  auto decoded = DecodeRgbImage(CvEncode(bgr16, ".png"), DecodeLimits{});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FLOAT_EQ((*decoded)[0][1][1].item<float>(), 1.0f);
  EXPECT_NEAR((*decoded)[1][1][1].item<float>(), 32768.0f / 65535, 1e-6);
  EXPECT_FLOAT_EQ((*decoded)[2][1][1].item<float>(), 0.0f);
}

TEST(ImageIoTest, JpegExifRotationIsAppliedAndAccepted) {
  const std::string plain = *EncodeRgb8(GradientRgb8(40, 60), EncodeFormat::kJpeg);
  // APP1 "Exif": little-endian TIFF, one IFD entry Orientation (0x0112) = 6 (rotate 90 CW).
  const std::string exif("Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0",
                         32);
  std::string app1("\xFF\xE1\0\0", 4);
  PutBigEndian16(&app1, 2, exif.size() + 2);
  const std::string rotated = plain.substr(0, 2) + app1 + exif + plain.substr(2);

  auto header = ReadImageHeader(rotated);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 60);
  EXPECT_EQ(header->height, 40);
  auto decoded = DecodeRgbImage(rotated, DecodeLimits{});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->sizes(), (std::vector<int64_t>{3, 60, 40}));
}

TEST(ImageIoTest, JpegWithTrailingBytesAfterEndOfImageDecodes) {
  const std::string jpeg = *EncodeRgb8(GradientRgb8(16, 16), EncodeFormat::kJpeg);
  auto decoded = DecodeRgbImage(jpeg + "trailing junk \xFF\xD8", DecodeLimits{});
  EXPECT_TRUE(decoded.ok()) << decoded.status();
}

TEST(ImageIoTest, ProgressiveAndRestartJpegsDecode) {
  cv::Mat bgr(40, 56, CV_8UC3);
  cv::randu(bgr, 0, 256);
  struct Case {
    std::vector<int> params;
    std::string marker;  // proof that the encoder did what the case is about
  };
  // Progressive: SOF2 and several scans; restart interval: RST0.. inside the entropy data.
  for (const Case& c : {Case{{cv::IMWRITE_JPEG_PROGRESSIVE, 1}, "\xFF\xC2"},
                        Case{{cv::IMWRITE_JPEG_RST_INTERVAL, 1}, "\xFF\xD0"}}) {
    const std::string jpeg = CvEncode(bgr, ".jpg", c.params);
    ASSERT_TRUE(absl::StrContains(jpeg, c.marker));
    auto header = ReadImageHeader(jpeg);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->width, 56);
    EXPECT_EQ(header->height, 40);
    auto decoded = DecodeRgbImage(jpeg, DecodeLimits{});
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->sizes(), (std::vector<int64_t>{3, 40, 56}));
    EXPECT_TRUE(IsInvalidArgument(
        DecodeRgbImage(jpeg.substr(0, jpeg.size() * 3 / 4), DecodeLimits{}).status(), "image",
        {"truncated or corrupt JPEG data"}));
  }
}

TEST(ImageIoTest, PixelLimitIsInclusive) {
  const std::string png = *EncodeRgb8(RandomRgb8(10, 20), EncodeFormat::kPng);
  EXPECT_TRUE(DecodeRgbImage(png, DecodeLimits{1 << 20, 200}).ok());
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(png, DecodeLimits{1 << 20, 199}).status(), "image",
                                {"20x10", "200 pixels", "199"}));
}

// ---- Errors ----

TEST(ImageIoErrorTest, Empty) {
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage("", DecodeLimits{}, "upload").status(), "upload",
                                {"empty"}));
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader("", "upload").status(), "upload", {"empty"}));
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage("", DecodeLimits{}).status(), "image", {"empty"}));
}

TEST(ImageIoErrorTest, TooManyBytes) {
  const std::string png = *EncodeRgb8(RandomRgb8(16, 16), EncodeFormat::kPng);
  ASSERT_GT(png.size(), 100u);
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(png, DecodeLimits{100, 1000}, "upload").status(),
                                "upload", {std::to_string(png.size()), "limit of 100 bytes"}));
  // The byte limit is checked before the format: junk over the limit says "bytes".
  EXPECT_TRUE(IsInvalidArgument(
      DecodeRgbImage(std::string(200, 'x'), DecodeLimits{100, 1000}, "upload").status(), "upload",
      {"200 bytes"}));
}

TEST(ImageIoErrorTest, UnknownFormat) {
  const std::string gif = "GIF89a\x10\0\x10\0\x80\0\0";
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(gif, DecodeLimits{}, "upload").status(), "upload",
                                {"GIF", "PNG, JPEG, BMP"}));
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(gif, "upload").status(), "upload", {"GIF"}));

  std::string webp("RIFF\0\0\0\0WEBPVP8 ", 16);
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(webp, "upload").status(), "upload", {"WebP"}));

  torch::manual_seed(3);
  const torch::Tensor noise = torch::randint(0, 256, {64}, torch::kUInt8);
  std::string random(reinterpret_cast<const char*>(noise.data_ptr<uint8_t>()), 64);
  random[0] = 'Z';  // cannot start a PNG, JPEG or BMP signature
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(random, DecodeLimits{}, "upload").status(), "upload",
                                {"unknown image format", "PNG, JPEG, BMP"}));
}

TEST(ImageIoErrorTest, TruncatedPngHeader) {
  const std::string png = *EncodeRgb8(RandomRgb8(8, 8), EncodeFormat::kPng);
  for (size_t n : {4, 8, 20, 28}) {
    SCOPED_TRACE(n);
    EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(png.substr(0, n), "upload").status(), "upload",
                                  {"truncated PNG header"}));
    EXPECT_TRUE(
        IsInvalidArgument(DecodeRgbImage(png.substr(0, n), DecodeLimits{}, "upload").status(),
                          "upload", {"truncated PNG header"}));
  }
  // 29 bytes hold the whole IHDR (its CRC is not read).
  EXPECT_TRUE(ReadImageHeader(png.substr(0, 29)).ok());
}

TEST(ImageIoErrorTest, TruncatedPngData) {
  const std::string png = *EncodeRgb8(RandomRgb8(32, 32), EncodeFormat::kPng);
  EXPECT_TRUE(IsInvalidArgument(
      DecodeRgbImage(png.substr(0, png.size() / 2), DecodeLimits{}, "upload").status(), "upload",
      {"cannot decode the png image"}));
}

TEST(ImageIoErrorTest, CorruptPngHeader) {
  std::string png = *EncodeRgb8(RandomRgb8(8, 8), EncodeFormat::kPng);
  std::string not_ihdr = png;
  not_ihdr.replace(12, 4, "IDAT");
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(not_ihdr, "upload").status(), "upload",
                                {"corrupt PNG header", "IHDR"}));
  std::string zero_width = png;
  PutBigEndian32(&zero_width, 16, 0);
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(zero_width, "upload").status(), "upload",
                                {"invalid size 0x8"}));
}

TEST(ImageIoErrorTest, TruncatedJpeg) {
  torch::manual_seed(4);
  const std::string jpeg = *EncodeRgb8(RandomRgb8(64, 64), EncodeFormat::kJpeg);
  const size_t sof = FindSof0(jpeg);
  // Cut inside the entropy-coded data: the header is fine, libjpeg alone would pad with gray.
  for (double fraction : {0.5, 0.9}) {
    const std::string cut = jpeg.substr(0, static_cast<size_t>(jpeg.size() * fraction));
    ASSERT_GT(cut.size(), sof + 20);
    SCOPED_TRACE(cut.size());
    EXPECT_TRUE(ReadImageHeader(cut).ok());
    EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(cut, DecodeLimits{}, "upload").status(), "upload",
                                  {"truncated or corrupt JPEG data"}));
  }
  // Without the last byte (half of EOI).
  EXPECT_TRUE(IsInvalidArgument(
      DecodeRgbImage(jpeg.substr(0, jpeg.size() - 1), DecodeLimits{}, "upload").status(), "upload",
      {"JPEG"}));
  // Cut before or inside the frame header: a header error.
  for (size_t n : std::initializer_list<size_t>{2, 3, 20, sof + 5}) {
    SCOPED_TRACE(n);
    EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(jpeg.substr(0, n), "upload").status(), "upload",
                                  {"truncated JPEG header"}));
  }
}

TEST(ImageIoErrorTest, JpegWithoutFrameHeader) {
  // SOI, then SOS before any SOF.
  const std::string jpeg("\xFF\xD8\xFF\xDA\x00\x02\xFF\xD9", 8);
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(jpeg, "upload").status(), "upload",
                                {"corrupt JPEG header", "0xDA"}));
}

TEST(ImageIoErrorTest, HugePngIsRejectedBeforeDecoding) {
  std::string png = *EncodeRgb8(RandomRgb8(8, 8), EncodeFormat::kPng);
  PutBigEndian32(&png, 16, 100000);
  PutBigEndian32(&png, 20, 100000);
  PutBigEndian32(&png, 29, Crc32(absl::string_view(png).substr(12, 17)));  // "IHDR" + data

  auto header = ReadImageHeader(png, "upload");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 100000);
  EXPECT_EQ(header->height, 100000);
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(png, DecodeLimits{}, "upload").status(), "upload",
                                {"100000x100000", "10000000000 pixels", "50000000"}));
}

TEST(ImageIoErrorTest, HugeJpegIsRejectedBeforeDecoding) {
  std::string jpeg = *EncodeRgb8(RandomRgb8(8, 8), EncodeFormat::kJpeg);
  const size_t sof = FindSof0(jpeg);
  PutBigEndian16(&jpeg, sof + 5, 60000);  // height
  PutBigEndian16(&jpeg, sof + 7, 50000);  // width

  auto header = ReadImageHeader(jpeg, "upload");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 50000);
  EXPECT_EQ(header->height, 60000);
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(jpeg, DecodeLimits{}, "upload").status(), "upload",
                                {"50000x60000", "3000000000 pixels"}));

  // The same lie within the pixel limit: libjpeg sizes its output from the SOF alone and
  // pads what the 8x8 scan leaves (with a warning), which is why the pixel check has to
  // come first.
  PutBigEndian16(&jpeg, sof + 5, 100);
  PutBigEndian16(&jpeg, sof + 7, 100);
  auto decoded = DecodeRgbImage(jpeg, DecodeLimits{}, "upload");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->sizes(), (std::vector<int64_t>{3, 100, 100}));
}

TEST(ImageIoErrorTest, CorruptBmpHeader) {
  cv::Mat bgr(4, 5, CV_8UC3, cv::Scalar(1, 2, 3));
  const std::string bmp = CvEncode(bgr, ".bmp");
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(bmp.substr(0, 30), "upload").status(), "upload",
                                {"truncated BMP header"}));
  std::string odd_size = bmp;
  odd_size[14] = 20;  // an info header size no decoder knows
  EXPECT_TRUE(IsInvalidArgument(ReadImageHeader(odd_size, "upload").status(), "upload",
                                {"corrupt BMP header", "20"}));
  std::string zero_height = bmp;
  for (int i = 0; i < 4; ++i) zero_height[22 + i] = 0;
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(zero_height, DecodeLimits{}, "upload").status(),
                                "upload", {"invalid size 5x0"}));
  std::string huge = bmp;
  for (int i = 0; i < 4; ++i) huge[18 + i] = huge[22 + i] = 0;
  huge[20] = huge[24] = 0x01;  // 65536 x 65536
  EXPECT_TRUE(IsInvalidArgument(DecodeRgbImage(huge, DecodeLimits{}, "upload").status(), "upload",
                                {"65536x65536", "pixels"}));
}

TEST(ImageIoErrorTest, EncodeRejectsBadInput) {
  const auto kU8 = torch::TensorOptions().dtype(torch::kUInt8);
  for (const torch::Tensor& bad :
       {torch::zeros({3, 8, 8}, kU8), torch::zeros({8, 8}, kU8), torch::zeros({8, 8, 4}, kU8),
        torch::zeros({8, 8, 3}, torch::kFloat32), torch::zeros({0, 8, 3}, kU8), torch::Tensor()}) {
    for (EncodeFormat format : {EncodeFormat::kPng, EncodeFormat::kJpeg}) {
      EXPECT_TRUE(IsInvalidArgument(EncodeRgb8(bad, format).status(), "EncodeRgb8",
                                    {"expected uint8 [H, W, 3]"}));
    }
  }
  const torch::Tensor good = torch::zeros({8, 8, 3}, kU8);
  for (int quality : {0, 101, -5}) {
    EXPECT_TRUE(IsInvalidArgument(EncodeRgb8(good, EncodeFormat::kJpeg, quality).status(),
                                  "EncodeRgb8", {"jpeg_quality", std::to_string(quality)}));
  }
  EXPECT_TRUE(EncodeRgb8(good, EncodeFormat::kPng, 0).ok());  // quality is JPEG-only
  // Non-contiguous input is fine.
  EXPECT_TRUE(EncodeRgb8(torch::zeros({3, 8, 8}, kU8).permute({1, 2, 0}), EncodeFormat::kPng).ok());
}

}  // namespace
}  // namespace i2s
