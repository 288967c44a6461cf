// Each default of the API is written once, in common/defaults.h. This test reads what the
// proto's comments state (proto/i2s/v1/i2s.proto), asks the request checks what they
// apply, and reads i2s_client's help, and checks all three against the constants: a
// default changed in one place and not the others fails here.
#include "common/defaults.h"

#include <gtest/gtest.h>
#include <stdio.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/api/request_check.h"

#ifndef I2S_PROTO_FILE
#error "I2S_PROTO_FILE: the path of proto/i2s/v1/i2s.proto"
#endif
#ifndef I2S_CLIENT
#error "I2S_CLIENT: the path of the i2s_client binary"
#endif

namespace i2s {
namespace {

std::string ReadProto() {
  std::ifstream in(I2S_PROTO_FILE);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_FALSE(text.str().empty()) << "cannot read " << I2S_PROTO_FILE;
  return text.str();
}

// The body of `message name { ... }` (messages in i2s.proto do not nest braces deeper
// than one level inside EmbedOptions, and the ones read here not at all).
std::string MessageBody(const std::string& proto, const std::string& name) {
  const std::string head = absl::StrCat("message ", name, " {");
  const size_t start = proto.find(head);
  if (start == std::string::npos) {
    ADD_FAILURE() << "no message " << name << " in the proto";
    return "";
  }
  const size_t end = proto.find("\n}", start);
  return proto.substr(start + head.size(), end - start - head.size());
}

// A number as the proto's comments write it ("10,000", "1e5", "0.01").
double Number(const std::string& text) {
  const std::string digits = absl::StrReplaceAll(text, {{",", ""}});
  char* end = nullptr;
  const double value = std::strtod(digits.c_str(), &end);
  EXPECT_TRUE(end != digits.c_str() && *end == '\0') << "not a number: '" << text << "'";
  return value;
}

// The first capture of `pattern` in `text` as a number; a failure when it does not match.
double Captured(const std::string& text, const std::string& pattern) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(pattern))) {
    ADD_FAILURE() << "no match for /" << pattern << "/";
    return -1;
  }
  return Number(m[1]);
}

// For each field of a message body, the comment that documents it: the lines of comment
// just above it (after the previous field) and the comment on its own line.
std::map<std::string, std::string> FieldComments(const std::string& body) {
  std::map<std::string, std::string> out;
  static const std::regex kField(
      R"(^\s*(?:(?:optional|repeated)\s+)?[\w.]+(?:<[^>]*>)?\s+(\w+)\s*=\s*\d+;\s*(?://(.*))?$)");
  static const std::regex kComment(R"(^\s*//(.*)$)");
  std::string above;
  std::istringstream lines(body);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_match(line, m, kField)) {
      out[m[1]] = absl::StrCat(above, " ", m[2].str());
      above.clear();
    } else if (std::regex_match(line, m, kComment)) {
      absl::StrAppend(&above, " ", m[1].str());
    }
  }
  return out;
}

// The optional fields of a message (those that take a default when unset).
std::vector<std::string> OptionalFields(const std::string& body) {
  std::vector<std::string> out;
  static const std::regex kOptional(R"(optional\s+\w+\s+(\w+)\s*=)");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), kOptional);
       it != std::sregex_iterator(); ++it) {
    out.push_back((*it)[1]);
  }
  return out;
}

TEST(DefaultsTest, EmbedOptionsCommentsStateTheConstants) {
  const std::string body = MessageBody(ReadProto(), "EmbedOptions");
  // Every optional field of EmbedOptions has its default here: a new one must be added to
  // common/defaults.h and to this list.
  const std::map<std::string, double> expected = {
      {"steps", defaults::kSteps},
      {"lr", defaults::kLr},
      {"w_mse", defaults::kWMse},
      {"w_perceptual", defaults::kWPerceptual},
      {"target_psnr_db", defaults::kTargetPsnrDb},
      {"plateau_window", defaults::kPlateauWindow},
      {"noise_steps", defaults::kNoiseSteps},
      {"noise_lr", defaults::kNoiseLr},
      {"perceptual_resolution", defaults::kPerceptualResolution},
      {"w_lpips", defaults::kWLpips},
      {"lr_rampup", defaults::kLrRampup},
      {"lr_rampdown", defaults::kLrRampdown},
      {"w_noise", defaults::kWNoise},
      {"w_noise_ramp", defaults::kWNoiseRamp},
      {"noise_regularize", defaults::kNoiseRegularize},
  };
  const std::map<std::string, std::string> comments = FieldComments(body);
  const std::vector<std::string> fields = OptionalFields(body);
  EXPECT_EQ(fields.size(), expected.size());
  for (const std::string& field : fields) {
    SCOPED_TRACE(field);
    auto want = expected.find(field);
    ASSERT_NE(want, expected.end())
        << "EmbedOptions." << field << " has no constant in common/defaults.h";
    // "[1000]", "[0.01]", "[0 = off]", "[0; 1 for STYLEGAN2_PROJECTOR]", "[1e5]".
    EXPECT_EQ(Captured(comments.at(field), R"(\[([-0-9.e,]+)[\];= ])"), want->second);
  }
  EXPECT_EQ(
      Captured(comments.at("w_lpips"), R"(\[[-0-9.e]+; ([-0-9.e]+) for STYLEGAN2_PROJECTOR\])"),
      defaults::kProjectorWLpips);
  // "STYLEGAN2_PROJECTOR changes the defaults ... space W, steps 1000, lr 0.1, w_mse 0, ..."
  const std::string& schedule = comments.at("schedule");
  EXPECT_EQ(Captured(schedule, R"(steps ([-0-9.e]+))"), defaults::kProjectorSteps);
  EXPECT_EQ(Captured(schedule, R"(lr ([-0-9.e]+))"), defaults::kProjectorLr);
  EXPECT_EQ(Captured(schedule, R"(w_mse ([-0-9.e]+))"), defaults::kProjectorWMse);
  EXPECT_EQ(Captured(schedule, R"(w_perceptual ([-0-9.e]+))"), defaults::kProjectorWPerceptual);
  EXPECT_EQ(Captured(schedule, R"(w_lpips ([-0-9.e]+))"), defaults::kProjectorWLpips);
  EXPECT_EQ(Captured(comments.at("plateau_window"), R"(improved < ([-0-9.e]+) relative)"),
            defaults::kPlateauRelEps);
}

TEST(DefaultsTest, OtherCommentsStateTheConstants) {
  const std::string proto = ReadProto();
  EXPECT_EQ(Captured(proto, R"(MEAN_W = 1;\s*// the mean of the mapping network over ([0-9,]+))"),
            defaults::kMeanWSamples);
  EXPECT_EQ(Captured(proto, R"(UNIFORM = 3;\s*// U\(-([0-9.]+), )"), defaults::kUniformRange);
  for (const char* message : {"ListLatentsRequest", "ListJobsRequest"}) {
    SCOPED_TRACE(message);
    const std::string comment = FieldComments(MessageBody(proto, message))["page_size"];
    EXPECT_EQ(Captured(comment, R"(1\.\.([0-9]+);)"), defaults::kMaxPageSize);
    EXPECT_EQ(Captured(comment, R"(0 = ([0-9]+))"), defaults::kPageSize);
  }
  EXPECT_EQ(Captured(FieldComments(MessageBody(proto, "RenderOptions"))["jpeg_quality"],
                     R"(0 = ([0-9]+))"),
            defaults::kJpegQuality);
  EXPECT_EQ(
      Captured(FieldComments(MessageBody(proto, "MorphRequest"))["frames"], R"(0 = ([0-9]+))"),
      defaults::kMorphFrames);
  EXPECT_EQ(Captured(FieldComments(MessageBody(proto, "AlignOptions"))["min_confidence"],
                     R"(\[0 = ([0-9.]+)\])"),
            defaults::kMinConfidence);
}

TEST(DefaultsTest, RequestChecksApplyTheConstants) {
  constexpr int kMaxSteps = 100000;
  // Unset steps count as the default against the limit on steps + noise_steps.
  for (const v1::EmbedSchedule schedule : {v1::IMAGE2STYLEGAN, v1::STYLEGAN2_PROJECTOR}) {
    const int steps =
        schedule == v1::STYLEGAN2_PROJECTOR ? defaults::kProjectorSteps : defaults::kSteps;
    v1::EmbedOptions o;
    o.set_schedule(schedule);
    o.set_noise_steps(kMaxSteps - steps);
    EXPECT_TRUE(CheckEmbedOptions(o, kMaxSteps).ok()) << v1::EmbedSchedule_Name(schedule);
    o.set_noise_steps(kMaxSteps - steps + 1);
    EXPECT_FALSE(CheckEmbedOptions(o, kMaxSteps).ok()) << v1::EmbedSchedule_Name(schedule);
  }
  auto page = PageOf(0, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->page_size, defaults::kPageSize);
  EXPECT_TRUE(PageOf(defaults::kMaxPageSize, "").ok());
  const absl::Status too_big = PageOf(defaults::kMaxPageSize + 1, "").status();
  EXPECT_NE(too_big.message().find(absl::StrCat("0 = ", defaults::kPageSize)), std::string::npos)
      << too_big;
  v1::RenderOptions render;
  render.set_jpeg_quality(101);
  const absl::Status quality = CheckRenderOptions(render, "render");
  EXPECT_NE(quality.message().find(absl::StrCat("0 = ", defaults::kJpegQuality)), std::string::npos)
      << quality;
  // Frames 0 are the default: allowed while the default is within the limit.
  v1::MorphRequest morph;
  morph.mutable_a()->set_latent_id("lat_a");
  morph.mutable_b()->set_latent_id("lat_b");
  RequestLimits limits;
  limits.max_morph_frames = defaults::kMorphFrames;
  EXPECT_TRUE(CheckMorphRequest(morph, limits).ok());
  limits.max_morph_frames = defaults::kMorphFrames - 1;
  const absl::Status frames = CheckMorphRequest(morph, limits);
  EXPECT_NE(frames.message().find(absl::StrCat("0 = ", defaults::kMorphFrames)), std::string::npos)
      << frames;
  v1::AlignOptions align;
  align.set_min_confidence(2);
  const absl::Status confidence = CheckAlignOptions(align, v1::CENTER_CROP);
  EXPECT_NE(confidence.message().find(absl::StrCat("the default, ", defaults::kMinConfidence)),
            std::string::npos)
      << confidence;
}

// `i2s_client ARGS --help`, its standard output.
std::string ClientHelp(const std::string& args) {
  const std::string command = absl::StrCat("'", I2S_CLIENT, "' ", args, " --help 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << command;
  if (pipe == nullptr) return "";
  std::string out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  pclose(pipe);
  EXPECT_FALSE(out.empty()) << command;
  return out;
}

// The help's line for `flag` (and the lines that continue its description).
std::string FlagHelp(const std::string& help, const std::string& flag) {
  const std::regex start(absl::StrCat(R"(^\s+(-\w,)?)", flag, R"(\b)"));
  std::istringstream lines(help);
  std::string found;
  for (std::string line; std::getline(lines, line);) {
    if (!found.empty()) {
      // A continuation is indented further than an option and starts no new option.
      if (std::regex_search(line, std::regex(R"(^\s{10,}[^\s-])"))) {
        absl::StrAppend(&found, " ", line);
        continue;
      }
      break;
    }
    if (std::regex_search(line, start)) found = line;
  }
  EXPECT_FALSE(found.empty()) << "no " << flag << " in\n" << help;
  return found;
}

TEST(DefaultsTest, ClientHelpStatesTheConstants) {
  const std::string embed = ClientHelp("embed");
  const std::string number = R"(([-0-9.e+]+))";
  EXPECT_EQ(Captured(FlagHelp(embed, "--steps"), "default " + number), defaults::kSteps);
  EXPECT_EQ(Captured(FlagHelp(embed, "--lr"), "default " + number), defaults::kLr);
  EXPECT_EQ(Captured(FlagHelp(embed, "--w-mse"), "default " + number), defaults::kWMse);
  EXPECT_EQ(Captured(FlagHelp(embed, "--w-perceptual"), "default " + number),
            defaults::kWPerceptual);
  EXPECT_EQ(Captured(FlagHelp(embed, "--w-lpips"), "default " + number), defaults::kWLpips);
  EXPECT_EQ(Captured(FlagHelp(embed, "--w-lpips"), ", " + number + " with stylegan2-projector"),
            defaults::kProjectorWLpips);
  EXPECT_EQ(Captured(FlagHelp(embed, "--schedule"), "lr " + number), defaults::kProjectorLr);
  EXPECT_EQ(Captured(FlagHelp(embed, "--noise-steps"), "default " + number), defaults::kNoiseSteps);
  EXPECT_EQ(Captured(FlagHelp(embed, "--noise-lr"), "default " + number), defaults::kNoiseLr);
  EXPECT_EQ(Captured(FlagHelp(embed, "--perceptual-resolution"), "default " + number),
            defaults::kPerceptualResolution);
  EXPECT_EQ(Captured(FlagHelp(embed, "--plateau"), "< " + number + " relative"),
            defaults::kPlateauRelEps);
  EXPECT_EQ(Captured(FlagHelp(embed, "--min-confidence"), "default " + number),
            defaults::kMinConfidence);
  EXPECT_EQ(Captured(FlagHelp(ClientHelp("synth"), "--jpeg-quality"), "default " + number),
            defaults::kJpegQuality);
  EXPECT_EQ(Captured(FlagHelp(ClientHelp("morph"), "--frames"), "=" + number),
            defaults::kMorphFrames);
}

}  // namespace
}  // namespace i2s
