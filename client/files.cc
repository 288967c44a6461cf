#include "client/files.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace i2s::client::cli {

namespace fs = std::filesystem;

std::string Extension(const std::string& path) {
  std::string ext = fs::path(path).extension();
  absl::AsciiStrToLower(&ext);
  return ext;
}

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

}  // namespace i2s::client::cli
