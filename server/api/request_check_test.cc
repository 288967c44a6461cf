#include "server/api/request_check.h"

#include <limits>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace i2s {
namespace {

const RequestLimits kLimits{2000, 100};

// InvalidArgument whose message starts with "<field>: ".
void ExpectField(const absl::Status& s, const std::string& field) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StartsWith(s.message(), field + ": ")) << s;
}

v1::EmbedRequest GoodEmbed() {
  v1::EmbedRequest r;
  r.set_image("bytes are checked later");
  r.mutable_options()->set_steps(100);
  r.set_request_id("req-1");
  (*r.mutable_labels())["owner"] = "ana";
  return r;
}

TEST(RequestCheckTest, EmbedDefaultsAndGoodRequestPass) {
  EXPECT_TRUE(CheckEmbedRequest(GoodEmbed(), kLimits).ok());
  v1::EmbedRequest bare;  // every option unset: the engine's defaults (1000 steps)
  EXPECT_TRUE(CheckEmbedRequest(bare, kLimits).ok());
  // ... unless the defaults exceed the server's limit.
  ExpectField(CheckEmbedRequest(bare, RequestLimits{500, 100}), "options.steps");
}

TEST(RequestCheckTest, EmbedOptionRanges) {
  const auto with = [](auto set) {
    v1::EmbedRequest r = GoodEmbed();
    set(*r.mutable_options());
    return CheckEmbedRequest(r, kLimits);
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  ExpectField(with([](v1::EmbedOptions& o) { o.set_steps(-1); }), "options.steps");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_steps(2001); }), "options.steps");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_steps(0); }), "options.steps");
  EXPECT_TRUE(with([](v1::EmbedOptions& o) {
                o.set_steps(0);
                o.set_noise_steps(10);
              }).ok());
  ExpectField(with([](v1::EmbedOptions& o) { o.set_noise_steps(1950); }), "options.steps");
  ExpectField(with([nan](v1::EmbedOptions& o) { o.set_lr(nan); }), "options.lr");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_lr(0); }), "options.lr");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_noise_lr(11); }), "options.noise_lr");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_w_mse(-1); }), "options.w_mse");
  ExpectField(with([](v1::EmbedOptions& o) {
                o.set_w_mse(0);
                o.set_w_perceptual(0);
              }),
              "options.w_mse");
  EXPECT_TRUE(with([](v1::EmbedOptions& o) { o.set_w_perceptual(0); }).ok());
  ExpectField(with([](v1::EmbedOptions& o) { o.set_target_psnr_db(101); }),
              "options.target_psnr_db");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_plateau_window(-2); }),
              "options.plateau_window");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_perceptual_resolution(4); }),
              "options.perceptual_resolution");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_space(static_cast<v1::LatentSpace>(77)); }),
              "options.space");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_init(static_cast<v1::LatentInit>(77)); }),
              "options.init");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_init(v1::FROM_LATENT); }),
              "options.init_latent_id");
  ExpectField(with([](v1::EmbedOptions& o) { o.set_init_latent_id("lat_1"); }),
              "options.init_latent_id");
  EXPECT_TRUE(with([](v1::EmbedOptions& o) {
                o.set_init(v1::FROM_LATENT);
                o.set_init_latent_id("lat_1");
              }).ok());
}

TEST(RequestCheckTest, EmbedRequestFields) {
  v1::EmbedRequest r = GoodEmbed();
  r.set_request_id(std::string(129, 'x'));
  ExpectField(CheckEmbedRequest(r, kLimits), "request_id");
  r = GoodEmbed();
  (*r.mutable_labels())[""] = "v";
  ExpectField(CheckEmbedRequest(r, kLimits), "labels");
  r = GoodEmbed();
  (*r.mutable_labels())["k"] = std::string(257, 'v');
  ExpectField(CheckEmbedRequest(r, kLimits), "labels[k]");
  r = GoodEmbed();
  for (int i = 0; i < 65; ++i) (*r.mutable_labels())["k" + std::to_string(i)] = "";
  ExpectField(CheckEmbedRequest(r, kLimits), "labels");
  r = GoodEmbed();
  r.set_preview_every(-1);
  ExpectField(CheckEmbedRequest(r, kLimits), "preview_every");
  r = GoodEmbed();
  r.set_return_aligned_image(true);
  ExpectField(CheckEmbedRequest(r, kLimits), "return_aligned_image");
  r.mutable_align()->set_mode(v1::AlignOptions::AUTO);
  EXPECT_TRUE(CheckEmbedRequest(r, kLimits).ok());
  r.set_resize(static_cast<v1::ResizeMode>(9));
  ExpectField(CheckEmbedRequest(r, kLimits), "resize");
}

TEST(RequestCheckTest, NoiseMode) {
  v1::SynthesizeRequest r;
  r.mutable_latent()->set_latent_id("lat_0123456789abcdef");
  r.mutable_render()->set_noise_mode(v1::NOISE_CONSTANT);
  EXPECT_TRUE(CheckSynthesizeRequest(r).ok());
  r.mutable_render()->set_noise_mode(static_cast<v1::NoiseMode>(42));
  ExpectField(CheckSynthesizeRequest(r), "render.noise_mode");
}

TEST(RequestCheckTest, WatchJob) {
  v1::WatchJobRequest r;
  ExpectField(CheckWatchJobRequest(r), "job_id");
  r.set_job_id("job_0123456789abcdef");
  EXPECT_TRUE(CheckWatchJobRequest(r).ok());
  r.set_after_sequence(41);
  EXPECT_TRUE(CheckWatchJobRequest(r).ok());
  r.set_after_sequence(-1);
  ExpectField(CheckWatchJobRequest(r), "after_sequence");
}

TEST(RequestCheckTest, AlignOptions) {
  v1::AlignOptions a;
  EXPECT_TRUE(CheckAlignOptions(a, v1::CENTER_CROP).ok());
  a.add_landmarks()->set_x(3);
  ExpectField(CheckAlignOptions(a, v1::CENTER_CROP), "align.landmarks");
  a.set_mode(v1::AlignOptions::LANDMARKS);
  EXPECT_TRUE(CheckAlignOptions(a, v1::CENTER_CROP).ok());
  a.mutable_landmarks(0)->set_y(std::numeric_limits<float>::infinity());
  ExpectField(CheckAlignOptions(a, v1::CENTER_CROP), "align.landmarks[0]");
  a.clear_landmarks();
  a.set_min_confidence(1.5);
  ExpectField(CheckAlignOptions(a, v1::CENTER_CROP), "align.min_confidence");
  a.set_min_confidence(0.5);
  a.set_on_no_face(static_cast<v1::AlignOptions::NoFace>(5));
  ExpectField(CheckAlignOptions(a, v1::CENTER_CROP), "align.on_no_face");
  a.set_on_no_face(v1::AlignOptions::RESIZE);
  a.set_mode(static_cast<v1::AlignOptions::Mode>(8));
  ExpectField(CheckAlignOptions(a, v1::CENTER_CROP), "align.mode");
}

TEST(RequestCheckTest, LatentRefsAndEdits) {
  v1::SynthesizeRequest s;
  ExpectField(CheckSynthesizeRequest(s), "latent");
  s.mutable_latent()->set_latent_id("");
  ExpectField(CheckSynthesizeRequest(s), "latent.latent_id");
  s.mutable_latent()->mutable_values()->add_values(std::numeric_limits<float>::quiet_NaN());
  ExpectField(CheckSynthesizeRequest(s), "latent.values.values");
  s.mutable_latent()->set_latent_id("lat_1");
  EXPECT_TRUE(CheckSynthesizeRequest(s).ok());
  s.mutable_render()->set_jpeg_quality(101);
  ExpectField(CheckSynthesizeRequest(s), "render.jpeg_quality");

  v1::MorphRequest m;
  m.mutable_a()->set_latent_id("lat_a");
  m.mutable_b()->set_latent_id("lat_b");
  EXPECT_TRUE(CheckMorphRequest(m, kLimits).ok());  // 0 frames = 16
  m.set_frames(1);
  ExpectField(CheckMorphRequest(m, kLimits), "frames");
  m.set_frames(101);
  ExpectField(CheckMorphRequest(m, kLimits), "frames");
  m.set_frames(100);
  m.clear_b();
  ExpectField(CheckMorphRequest(m, kLimits), "b");

  v1::StyleMixRequest x;
  x.mutable_content()->set_latent_id("a");
  x.mutable_style()->set_latent_id("b");
  x.set_crossover(-1);
  ExpectField(CheckStyleMixRequest(x), "crossover");
  x.set_crossover(3);
  EXPECT_TRUE(CheckStyleMixRequest(x).ok());

  v1::ExpressionTransferRequest e;
  e.mutable_target()->set_latent_id("t");
  e.mutable_neutral()->set_latent_id("n");
  e.mutable_expression()->set_latent_id("e");
  e.set_strength(std::numeric_limits<double>::infinity());
  ExpectField(CheckExpressionTransferRequest(e), "strength");
  e.set_strength(-2);
  e.set_first_layer(4);
  e.set_last_layer(3);
  ExpectField(CheckExpressionTransferRequest(e), "last_layer");
  e.set_last_layer(4);
  EXPECT_TRUE(CheckExpressionTransferRequest(e).ok());
  e.set_first_layer(-1);
  ExpectField(CheckExpressionTransferRequest(e), "first_layer");
}

TEST(RequestCheckTest, ImportAlignFaceAndListings) {
  v1::ImportLatentRequest i;
  ExpectField(CheckImportLatentRequest(i), "npy");
  i.set_npy("x");
  EXPECT_TRUE(CheckImportLatentRequest(i).ok());

  v1::AlignFaceRequest f;
  ExpectField(CheckAlignFaceRequest(f), "align.mode");
  f.mutable_align()->set_mode(v1::AlignOptions::AUTO);
  EXPECT_TRUE(CheckAlignFaceRequest(f).ok());
  f.set_size(7);
  ExpectField(CheckAlignFaceRequest(f), "size");
  f.set_size(1025);
  ExpectField(CheckAlignFaceRequest(f), "size");

  v1::ListJobsRequest j;
  j.set_page_size(1001);
  ExpectField(CheckListJobsRequest(j), "page_size");
  j.set_page_size(0);
  j.add_states(v1::SUCCEEDED);
  EXPECT_TRUE(CheckListJobsRequest(j).ok());
  j.add_states(static_cast<v1::JobState>(6));
  ExpectField(CheckListJobsRequest(j), "states");
  auto page = PageOf(0, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->page_size, 50);
  v1::ListLatentsRequest l;
  l.set_page_size(-1);
  ExpectField(CheckListLatentsRequest(l), "page_size");
}

TEST(RequestCheckTest, PasteBackAndPasteInto) {
  v1::PasteBackRequest r;
  ExpectField(CheckPasteBackRequest(r), "photo");
  r.set_photo("bytes");
  ExpectField(CheckPasteBackRequest(r), "faces");
  r.add_faces()->mutable_latent()->set_latent_id("lat_1");
  EXPECT_TRUE(CheckPasteBackRequest(r).ok());
  r.mutable_faces(0)->add_transform(1);
  ExpectField(CheckPasteBackRequest(r), "faces[0].transform");
  r.mutable_faces(0)->clear_transform();
  auto with = [&](auto set) {
    v1::PasteBackRequest copy = r;
    set(*copy.mutable_options());
    return CheckPasteBackRequest(copy);
  };
  ExpectField(with([](v1::PasteOptions& o) { o.set_feather(0.7); }), "options.feather");
  ExpectField(with([](v1::PasteOptions& o) { o.set_feather(0.1), o.set_hard_edge(true); }),
              "options.feather");
  ExpectField(with([](v1::PasteOptions& o) { o.set_format(v1::RAW_FLOAT32); }), "options.format");
  ExpectField(with([](v1::PasteOptions& o) { o.set_jpeg_quality(101); }), "options.jpeg_quality");
  ExpectField(
      with([](v1::PasteOptions& o) { o.set_blend(static_cast<v1::PasteOptions::Blend>(7)); }),
      "options.blend");
  EXPECT_TRUE(
      with([](v1::PasteOptions& o) { o.set_format(v1::JPEG), o.set_hard_edge(true); }).ok());
  // paste_into of the render RPCs: the same checks under its own name.
  v1::SynthesizeRequest s;
  s.mutable_latent()->set_latent_id("lat_1");
  s.mutable_paste_into();
  ExpectField(CheckSynthesizeRequest(s), "paste_into.photo");
  s.mutable_paste_into()->set_photo("bytes");
  EXPECT_TRUE(CheckSynthesizeRequest(s).ok());
  s.mutable_paste_into()->mutable_options()->set_region(static_cast<v1::PasteOptions::Region>(9));
  ExpectField(CheckSynthesizeRequest(s), "paste_into.options.region");
}

TEST(RequestCheckTest, MaskFrameAndLocalBlend) {
  v1::EmbedRequest e = GoodEmbed();
  e.set_mask_frame(v1::MASK_FRAME_ALIGNED);
  EXPECT_TRUE(CheckEmbedRequest(e, kLimits).ok());
  e.set_mask_frame(static_cast<v1::MaskFrame>(9));
  ExpectField(CheckEmbedRequest(e, kLimits), "mask_frame");

  v1::LocalBlendRequest b;
  b.mutable_base()->set_latent_id("lat_a");
  b.mutable_source()->set_latent_id("lat_b");
  b.set_mask("png bytes are checked later");
  EXPECT_TRUE(CheckLocalBlendRequest(b).ok());
  v1::LocalBlendRequest bad = b;
  bad.clear_mask();
  ExpectField(CheckLocalBlendRequest(bad), "mask");
  bad = b;
  bad.set_start_layer(-1);
  ExpectField(CheckLocalBlendRequest(bad), "start_layer");
  bad = b;
  bad.set_feather(-2);
  ExpectField(CheckLocalBlendRequest(bad), "feather");
  bad = b;
  bad.clear_source();
  ExpectField(CheckLocalBlendRequest(bad), "source");
}

TEST(RequestCheckTest, Directions) {
  EXPECT_TRUE(CheckDirectionName("smile_pc0.v-2", "name").ok());
  ExpectField(CheckDirectionName("", "name"), "name");
  ExpectField(CheckDirectionName("a b", "name"), "name");
  ExpectField(CheckDirectionName(std::string(65, 'x'), "name"), "name");

  v1::ApplyDirectionsRequest a;
  a.mutable_latent()->set_latent_id("lat_a");
  auto* step = a.add_steps();
  step->set_name("smile");
  step->set_alpha(-100);
  a.set_first_layer(2);
  a.set_last_layer(2);
  a.add_condition_on("age");
  EXPECT_TRUE(CheckApplyDirectionsRequest(a).ok());
  v1::ApplyDirectionsRequest bad = a;
  bad.mutable_steps(0)->set_alpha(std::numeric_limits<double>::quiet_NaN());
  ExpectField(CheckApplyDirectionsRequest(bad), "steps[0].alpha");
  bad = a;
  bad.mutable_steps(0)->set_alpha(100.5);
  ExpectField(CheckApplyDirectionsRequest(bad), "steps[0].alpha");
  bad = a;
  bad.clear_steps();
  ExpectField(CheckApplyDirectionsRequest(bad), "steps");
  bad = a;
  bad.set_last_layer(1);
  ExpectField(CheckApplyDirectionsRequest(bad), "last_layer");
  bad = a;
  bad.add_condition_on("no good");
  ExpectField(CheckApplyDirectionsRequest(bad), "condition_on[1]");

  v1::DirectionFramesRequest f;
  f.mutable_latent()->set_latent_id("lat_a");
  f.set_direction("smile");
  for (int i = 0; i < 100; ++i) f.add_alphas(i - 50);
  EXPECT_TRUE(CheckDirectionFramesRequest(f, kLimits).ok());
  f.add_alphas(0);  // 101 frames, the limit is 100
  ExpectField(CheckDirectionFramesRequest(f, kLimits), "alphas");

  v1::ComputeDirectionRequest c;
  c.set_name("expr");
  c.add_to_latents()->set_latent_id("lat_b");
  ExpectField(CheckComputeDirectionRequest(c), "from_latents");
  c.add_from_latents();  // neither an ID nor values
  ExpectField(CheckComputeDirectionRequest(c), "from_latents[0]");

  v1::ImportDirectionRequest i;
  i.set_name("smile");
  ExpectField(CheckImportDirectionRequest(i), "file");
  i.set_file("npy bytes");
  i.add_components(-1);
  ExpectField(CheckImportDirectionRequest(i), "components[0]");
}

}  // namespace
}  // namespace i2s
