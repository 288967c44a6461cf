// New stored latents that are not an embedding's result: an edit's result (StyleMix,
// ExpressionTransfer with store_result) and an imported file (latent_file.h). Each gets a new ID
// and the caller's tenant; a request_id makes the call idempotent (AIP-155: the key is written in
// the transaction of the latent, and a repeat returns the first result).
#ifndef I2S_SERVER_LATENTS_NEW_LATENT_H_
#define I2S_SERVER_LATENTS_NEW_LATENT_H_

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/jobs/model_registry.h"
#include "server/latents/render.h"
#include "server/store/store.h"

namespace i2s {

// The request a latent is stored for: its method (RequestScope), request_id ("" for
// none) and the hash of the whole request (a repeat must hash the same).
struct RequestKey {
  std::string method;
  std::string request_id;
  std::string request_hash;
};

// Stores `record` under a new ID for `tenant`, created now, and returns it without values
// or noise maps. With a request_id seen before for the same request, stores nothing and
// returns the first result instead (also without values).
absl::StatusOr<LatentRecord> StoreNewLatent(Store* store, const std::string& tenant,
                                            const RequestKey& key, LatentRecord record);

// An edit's result w [L, D] as a record of `model`, with the noise of its first input
// (the latent it was applied to) and that input's alignment, so the result pastes back
// into the same photo. `params_json` describes the edit (a JSON object of its parameters;
// "alignment" is added to it).
LatentRecord EditResult(const ModelInfo& model, const torch::Tensor& w, const LatentInput& first,
                        std::string source, std::vector<std::string> parents,
                        std::string params_json, std::map<std::string, std::string> labels);

}  // namespace i2s

#endif  // I2S_SERVER_LATENTS_NEW_LATENT_H_
