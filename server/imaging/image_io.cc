#include "server/imaging/image_io.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace i2s {

torch::Tensor GeneratorOutputToRgb8(const torch::Tensor& image) {
  return ((image.detach().to(torch::kCPU, torch::kFloat32) + 1) / 2 * 255)
      .round()
      .clamp(0, 255)
      .to(torch::kUInt8)
      .permute({1, 2, 0})
      .contiguous();
}

torch::Tensor UnitImageToRgb8(const torch::Tensor& image) {
  // One channel at a time into the HWC bytes, so a photo-sized image costs one float
  // plane on the way, not a chain of whole float copies (docs/SECURITY.md, Limits). The
  // values are those of round(clamp(x * 255, 0, 255)).
  const torch::Tensor chw = image.detach().to(torch::kCPU, torch::kFloat32);
  torch::Tensor hwc = torch::empty({chw.size(1), chw.size(2), chw.size(0)}, torch::kUInt8);
  for (int64_t c = 0; c < chw.size(0); ++c) {
    hwc.select(2, c).copy_((chw[c] * 255).round_().clamp_(0, 255));
  }
  return hwc;
}

namespace {

// [C, H, W] float tensor <-> cv::Mat of C float channels (HWC).
cv::Mat ToMat(const torch::Tensor& chw) {
  // Straight into the Mat's own buffer (one copy of the image, not three).
  cv::Mat m(static_cast<int>(chw.size(1)), static_cast<int>(chw.size(2)),
            CV_32FC(static_cast<int>(chw.size(0))));
  torch::Tensor hwc = torch::from_blob(m.data, {m.rows, m.cols, m.channels()}, torch::kFloat32);
  hwc.copy_(chw.permute({1, 2, 0}));
  return m;
}

torch::Tensor FromMat(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  return torch::from_blob(c.data, {c.rows, c.cols, c.channels()}, torch::kFloat32)
      .permute({2, 0, 1})
      .contiguous()
      .clone();
}

// A decoded cv::Mat of any depth -> CV_32F with 8- and 16-bit samples scaled to [0, 1].
cv::Mat ToUnitFloat(const cv::Mat& m) {
  const double scale = m.depth() == CV_16U ? 1.0 / 65535 : m.depth() == CV_8U ? 1.0 / 255 : 1.0;
  cv::Mat f;
  m.convertTo(f, CV_32F, scale);
  return f;
}

// A decoded 3-channel BGR cv::Mat (any depth) -> float RGB [3, H, W] in [0, 1].
torch::Tensor BgrToRgbTensor(const cv::Mat& bgr) {
  if (bgr.depth() == CV_8U) {
    // Photos: straight from the 8-bit samples into the one float image, channel by
    // channel, so the peak is the decoded image (3 bytes a pixel) and this one (12), not
    // four float copies on the way (docs/SECURITY.md, Limits). The same arithmetic as
    // convertTo's: each sample times the float 1/255, then clamped.
    const torch::Tensor hwc =
        torch::from_blob(bgr.data, {bgr.rows, bgr.cols, 3},
                         {static_cast<int64_t>(bgr.step[0]), 3, 1}, torch::kUInt8);
    torch::Tensor out = torch::empty({3, bgr.rows, bgr.cols}, torch::kFloat32);
    for (int c = 0; c < 3; ++c) out[c].copy_(hwc.select(2, 2 - c));
    return out.mul_(static_cast<float>(1.0 / 255)).clamp_(0, 1);
  }
  cv::Mat rgb;
  cv::cvtColor(ToUnitFloat(bgr), rgb, cv::COLOR_BGR2RGB);
  return FromMat(rgb).clamp(0, 1);
}

// uint8 RGB [H, W, 3] tensor -> a BGR cv::Mat that owns its pixels. `who` starts the
// error message.
absl::StatusOr<cv::Mat> Rgb8ToBgrMat(const torch::Tensor& rgb8, absl::string_view who) {
  if (!rgb8.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": expected uint8 [H, W, 3], got none"));
  }
  if (rgb8.dim() != 3 || rgb8.size(2) != 3 || rgb8.scalar_type() != torch::kUInt8 ||
      rgb8.size(0) < 1 || rgb8.size(1) < 1 || rgb8.size(0) > INT_MAX || rgb8.size(1) > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": expected uint8 [H, W, 3], got ",
                                                   c10::toString(rgb8.scalar_type()), " [",
                                                   absl::StrJoin(rgb8.sizes(), ", "), "]"));
  }
  try {
    torch::Tensor c = rgb8.to(torch::kCPU).contiguous();
    cv::Mat rgb(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC3,
                c.data_ptr<uint8_t>());
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);  // a new buffer: `c` may go away
    return bgr;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(who, ": ", e.what()));
  }
}

absl::StatusOr<cv::Mat> Decode(const std::string& path, int flags) {
  cv::Mat m;
  try {
    m = cv::imread(path, flags);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  if (m.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read or decode the image (missing file or unknown format)"));
  }
  return m;
}

}  // namespace

absl::StatusOr<torch::Tensor> ReadRgbImage(const std::string& path) {
  ASSIGN_OR_RETURN(cv::Mat bgr, Decode(path, cv::IMREAD_COLOR | cv::IMREAD_ANYDEPTH));
  return BgrToRgbTensor(bgr);
}

absl::StatusOr<torch::Tensor> ReadMaskImage(const std::string& path) {
  ASSIGN_OR_RETURN(cv::Mat gray, Decode(path, cv::IMREAD_GRAYSCALE | cv::IMREAD_ANYDEPTH));
  return FromMat(ToUnitFloat(gray)).clamp(0, 1);
}

absl::StatusOr<torch::Tensor> FitToSquare(const torch::Tensor& image, int size, FitMode mode) {
  if (image.dim() != 3 || image.size(1) < 1 || image.size(2) < 1 || size < 1) {
    return absl::InvalidArgumentError("FitToSquare: expected [C, H, W] and a positive size");
  }
  try {
    cv::Mat m = ToMat(image.to(torch::kCPU, torch::kFloat32));
    const int h = m.rows, w = m.cols;
    if (mode == FitMode::kCenterCrop) {
      const int side = std::min(h, w);
      m = m(cv::Rect((w - side) / 2, (h - side) / 2, side, side)).clone();
    } else {
      const int side = std::max(h, w);
      cv::copyMakeBorder(m, m, (side - h) / 2, side - h - (side - h) / 2, (side - w) / 2,
                         side - w - (side - w) / 2, cv::BORDER_REPLICATE);
    }
    cv::Mat out;
    cv::resize(m, out, cv::Size(size, size), 0, 0,
               m.rows > size ? cv::INTER_AREA : cv::INTER_CUBIC);
    return FromMat(out).clamp(0, 1);
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("FitToSquare: ", e.what()));
  }
}

absl::Status WriteRgb8Image(const std::string& path, const torch::Tensor& rgb8) {
  ASSIGN_OR_RETURN(cv::Mat bgr, Rgb8ToBgrMat(rgb8, "WriteRgb8Image"));
  try {
    if (!cv::imwrite(path, bgr)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": cannot write image (unknown extension or unwritable path)"));
    }
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

namespace {

// DecodeRgbImage's checks and decoding: the decoded BGR image (8 or 16 bits a sample).
absl::StatusOr<cv::Mat> DecodeChecked(absl::string_view bytes, const DecodeLimits& limits,
                                      const std::string& field) {
  ASSIGN_OR_RETURN(const ImageHeader header, CheckImageLimits(bytes, limits, field));
  if (header.format == "jpeg") {
    const JpegLayout layout = ScanJpegLayout(bytes);
    if (!layout.end_of_image) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": truncated or corrupt JPEG data (no end-of-image marker in ",
                       bytes.size(), " bytes)"));
    }
    if (layout.scans > limits.max_jpeg_scans) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": JPEG with ", layout.scans, " scans; at most ", limits.max_jpeg_scans,
          " are accepted (each scan of a progressive JPEG is a pass over the whole image)"));
    }
  }

  cv::Mat decoded;
  try {
    // imdecode only reads the buffer; the Mat header just points at `bytes`.
    const cv::Mat encoded(1, static_cast<int>(bytes.size()), CV_8U,
                          const_cast<char*>(bytes.data()));
    decoded = cv::imdecode(encoded, cv::IMREAD_COLOR | cv::IMREAD_ANYDEPTH);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": cannot decode the ", header.format, " image: ", e.what()));
  }
  if (decoded.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": cannot decode the ", header.format,
                                                   " image (corrupt or truncated data)"));
  }
  const bool same = decoded.cols == header.width && decoded.rows == header.height;
  const bool transposed = decoded.cols == header.height && decoded.rows == header.width;
  if (!same && !transposed) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": decoded a ", decoded.cols, "x",
                                                   decoded.rows, " image but the header says ",
                                                   header.width, "x", header.height));
  }
  return decoded;
}

}  // namespace

absl::StatusOr<torch::Tensor> DecodeRgbImage(absl::string_view bytes, const DecodeLimits& limits,
                                             const std::string& field) {
  ASSIGN_OR_RETURN(cv::Mat decoded, DecodeChecked(bytes, limits, field));
  try {
    return BgrToRgbTensor(decoded);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(field, ": converting the decoded image: ", e.what()));
  }
}

absl::StatusOr<torch::Tensor> DecodeRgb8Image(absl::string_view bytes, const DecodeLimits& limits,
                                              const std::string& field) {
  ASSIGN_OR_RETURN(cv::Mat decoded, DecodeChecked(bytes, limits, field));
  try {
    if (decoded.depth() != CV_8U) decoded.convertTo(decoded, CV_8U, 1.0 / 257);
    torch::Tensor rgb = torch::empty({decoded.rows, decoded.cols, 3}, torch::kUInt8);
    cv::Mat out(decoded.rows, decoded.cols, CV_8UC3, rgb.data_ptr<uint8_t>());
    cv::cvtColor(decoded, out, cv::COLOR_BGR2RGB);
    return rgb;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(field, ": converting the decoded image: ", e.what()));
  }
}

absl::StatusOr<std::string> EncodeRgb8(const torch::Tensor& rgb8, EncodeFormat format,
                                       int jpeg_quality) {
  if (format == EncodeFormat::kJpeg && (jpeg_quality < 1 || jpeg_quality > 100)) {
    return absl::InvalidArgumentError(
        absl::StrCat("EncodeRgb8: jpeg_quality must be in [1, 100], got ", jpeg_quality));
  }
  ASSIGN_OR_RETURN(cv::Mat bgr, Rgb8ToBgrMat(rgb8, "EncodeRgb8"));
  const bool jpeg = format == EncodeFormat::kJpeg;
  std::vector<int> params;
  if (jpeg) params = {cv::IMWRITE_JPEG_QUALITY, jpeg_quality};
  std::vector<uchar> encoded;
  bool ok = false;
  try {
    ok = cv::imencode(jpeg ? ".jpg" : ".png", bgr, encoded, params);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("EncodeRgb8: ", e.what()));
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("EncodeRgb8: cannot encode a ", bgr.cols, "x",
                                                   bgr.rows, jpeg ? " JPEG" : " PNG",
                                                   " (too large for the format?)"));
  }
  return std::string(encoded.begin(), encoded.end());
}

}  // namespace i2s
