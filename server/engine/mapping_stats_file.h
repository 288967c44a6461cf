// The mapping statistics behind an embedding's mean-w start and the StyleGAN2 projector's
// sigma_w (Embedder::MeanW / SigmaW: the mapping network over 10,000 seeded z, about 0.3 s
// on 2 CPU cores) kept in a folder, one small text file per generator fingerprint, device
// type and sample count, so a later process reads them instead of computing them again.
// The fingerprint is that of the bytes loaded, so a file never applies to other weights.
#ifndef I2S_SERVER_ENGINE_MAPPING_STATS_FILE_H_
#define I2S_SERVER_ENGINE_MAPPING_STATS_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "server/engine/generator.h"

namespace i2s {

// The file of `generator`'s statistics over `samples` z in `dir`.
std::string MappingStatsPath(const std::string& dir, const Generator& generator, int samples);

// Makes Embedder::MeanW / SigmaW of (generator, samples) available without the mapping
// pass where `dir` has them: reads the file if it is there and valid for this generator
// (fingerprint, device type, sample count, latent size, finite values); otherwise computes
// them and writes the file (atomically: a temporary file renamed over it, the folder
// created if missing). A failure to write is returned, with the statistics computed and
// usable all the same; a missing or invalid file is not an error.
absl::Status LoadOrSaveMappingStats(const std::string& dir, Generator& generator, int samples);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_MAPPING_STATS_FILE_H_
