// The defaults of the API, each written once: the engine's EmbedOptions starts from them,
// the request checks and the server apply them to fields left unset (or at 0 where the
// proto says "0 = X"), and i2s_client's help text is built from them. The proto's
// comments state the same values in words; tests/defaults_test.cc reads i2s.proto and
// i2s_client's help and checks that both agree with these constants.
#ifndef I2S_COMMON_DEFAULTS_H_
#define I2S_COMMON_DEFAULTS_H_

namespace i2s::defaults {

// EmbedOptions, schedule IMAGE2STYLEGAN (proto: "[value]").
inline constexpr int kSteps = 1000;         // W+ phase steps (the reference: 1500, the paper: 5000)
inline constexpr double kLr = 0.01;         // Adam, as in the paper and the reference
inline constexpr double kWMse = 1;          // pixel MSE weight
inline constexpr double kWPerceptual = 1;   // VGG16 perceptual weight
inline constexpr double kWLpips = 0;        // LPIPS weight
inline constexpr double kTargetPsnrDb = 0;  // 0 = no PSNR stop
inline constexpr int kPlateauWindow = 0;    // 0 = no plateau stop
inline constexpr int kNoiseSteps = 0;       // Image2StyleGAN++ noise phase: off
inline constexpr double kNoiseLr = 0.1;     // noise phase learning rate
// Images are bilinearly downsampled to this size for VGG (and LPIPS); the reference uses
// 256 for 1024 images.
inline constexpr int kPerceptualResolution = 256;
// The plateau stop: "improved" means by more than this, relative, over the window.
inline constexpr double kPlateauRelEps = 1e-4;
// LatentInit MEAN_W: the mean of the mapping network over this many seeded z, for a file
// without its own mean w (NVIDIA's projector uses 10,000).
inline constexpr int kMeanWSamples = 10000;
// LatentInit UNIFORM: U(-kUniformRange, kUniformRange).
inline constexpr double kUniformRange = 1;

// Schedule STYLEGAN2_PROJECTOR: NVIDIA projector.py's recipe (W, LPIPS only).
inline constexpr int kProjectorSteps = 1000;
inline constexpr double kProjectorLr = 0.1;
inline constexpr double kProjectorWMse = 0;
inline constexpr double kProjectorWPerceptual = 0;
inline constexpr double kProjectorWLpips = 1;
inline constexpr double kLrRampup = 0.05;        // fraction of the steps
inline constexpr double kLrRampdown = 0.25;      // fraction of the steps
inline constexpr double kWNoise = 0.05;          // x the mapping's spread (sigma_w)
inline constexpr double kWNoiseRamp = 0.75;      // fraction of the steps
inline constexpr double kNoiseRegularize = 1e5;  // the noise maps' regulariser weight

// Listings: ListLatentsRequest / ListJobsRequest.page_size (0 = kPageSize).
inline constexpr int kPageSize = 50;
inline constexpr int kMaxPageSize = 1000;

// RenderOptions.jpeg_quality (0 = kJpegQuality).
inline constexpr int kJpegQuality = 90;

// MorphRequest.frames (0 = kMorphFrames).
inline constexpr int kMorphFrames = 16;

// AlignOptions.min_confidence (0 = kMinConfidence): the face detector's score below which
// a face counts as none.
inline constexpr double kMinConfidence = 0.5;
// PasteOptions.feather (0 = kPasteFeather): the mask's soft edge, a fraction of the
// aligned side.
inline constexpr double kPasteFeather = 0.08;
// PasteBackRequest.faces: at most this many.
inline constexpr int kMaxPasteFaces = 16;
// LocalBlendRequest.feather when unset: the resolution divided by this (32 px at 1024), at
// least 1.
inline constexpr int kLocalBlendFeatherDivisor = 32;
// Semantic directions: steps (and conditions) of one ApplyDirections, |alpha| (in units of
// sigma), and latents on each side of a ComputeDirection.
inline constexpr int kMaxDirectionSteps = 64;
inline constexpr double kMaxDirectionAlpha = 100;
inline constexpr int kMaxDirectionLatents = 1000;

// AlignFaceResponse.faces: at most this many faces of one photo, largest first.
inline constexpr int kMaxFaces = 32;

}  // namespace i2s::defaults

#endif  // I2S_COMMON_DEFAULTS_H_
