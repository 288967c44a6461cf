// Output of frame sequences for i2s_client: an animated-GIF encoder of our own (a
// global median-cut palette, LZW per GIF89a) and a writer that picks video, GIF or a
// directory of PNGs from the output path.
#ifndef I2S_CLIENT_MEDIA_H_
#define I2S_CLIENT_MEDIA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace i2s::client {

// An 8-bit RGB frame, row-major, height*width*3 bytes.
struct RgbFrame {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;
};

// Encodes frames as an animated GIF89a that loops forever, each frame shown for
// 1/fps seconds (rounded to centiseconds, at least 2: browsers slow down shorter
// delays). One global 256-colour palette is chosen by median cut over (a sample of)
// the pixels of all frames; each pixel takes the palette colour nearest to the centre
// of its 5-bit-per-channel cell. InvalidArgument for no frames, frames of differing or
// invalid sizes (at most 65535 per side) or a non-positive fps.
absl::StatusOr<std::string> EncodeGif(const std::vector<RgbFrame>& frames, double fps);

enum class SequenceKind { kVideo, kGif, kDirectory };

// ".mp4", ".avi", ".mkv", ".mov" -> kVideo; ".gif" -> kGif (case-insensitive); anything
// else, a path ending in '/' and an existing directory -> kDirectory.
SequenceKind SequenceKindForPath(const std::string& path);

// Writes frames to `path` as SequenceKindForPath says: a video through OpenCV's FFmpeg
// backend (.mp4: H.264 'avc1', else 'mp4v'; .avi: 'MJPG'; others: 'mp4v'), a GIF by
// EncodeGif, or a directory (created if missing) of frame_000.png, frame_001.png, ...
// (at least 3 digits; frame files left from a longer earlier run stay). The FFmpeg
// writer drops the last column/row of odd-sized frames (4:2:0 video wants even
// sizes); GIF and PNG keep every pixel. Video and GIF go to a temporary file beside
// `path` (missing parent directories are created) that is renamed into place, so a
// failed write leaves nothing half-written. AlreadyExists when the file, or any frame
// file the directory would get, exists and !overwrite; InvalidArgument for an empty
// path and as for EncodeGif (fps is not checked for a directory).
absl::Status WriteFrameSequence(const std::vector<RgbFrame>& frames, const std::string& path,
                                double fps, bool overwrite);

}  // namespace i2s::client

#endif  // I2S_CLIENT_MEDIA_H_
