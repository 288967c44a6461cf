#include "server/latents/new_latent.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/base/log.h"
#include "server/engine/torch_util.h"
#include "server/jobs/scheduler.h"

namespace i2s {

absl::StatusOr<LatentRecord> StoreNewLatent(Store* store, const std::string& tenant,
                                            const RequestKey& key, LatentRecord rec) {
  rec.id = NewRandomId("lat_");
  rec.tenant = tenant;
  rec.created_unix_ms = absl::ToUnixMillis(absl::Now());
  if (!key.request_id.empty()) {
    // The key and the latent in one transaction (never a key naming nothing).
    ASSIGN_OR_RETURN(std::string claimed, store->PutLatentWithClaim(
                                              rec, RequestClaim{RequestScope(key.method, tenant),
                                                                key.request_id, key.request_hash}));
    if (claimed != rec.id) return store->GetLatent(claimed, /*with_values=*/false);
  } else {
    RETURN_IF_ERROR(store->PutLatent(rec));
  }
  LogEvent("latent_stored")
      .Str("latent_id", rec.id)
      .Str("tenant", rec.tenant)
      .Str("source", rec.source)
      .Str("model", rec.model);
  rec.values.clear();
  rec.noise_npz.clear();
  return rec;
}

LatentRecord EditResult(const ModelInfo& model, const torch::Tensor& w, const LatentInput& first,
                        std::string source, std::vector<std::string> parents,
                        std::string params_json, std::map<std::string, std::string> labels) {
  LatentRecord rec;
  rec.model = model.name;
  rec.fingerprint = model.fingerprint;
  rec.num_layers = model.num_layers;
  rec.latent_size = model.latent_size;
  rec.values = TensorToFloatArray(w).values;
  rec.noise_npz = first.noise_npz;
  rec.noise_seed = first.noise_seed;
  rec.source = std::move(source);
  rec.parents = std::move(parents);
  rec.params_json = std::move(params_json);
  if (!first.alignment_json.empty()) {
    nlohmann::json params = nlohmann::json::parse(rec.params_json, nullptr, false);
    if (params.is_object()) {
      params["alignment"] = nlohmann::json::parse(first.alignment_json, nullptr, false);
      rec.params_json = params.dump();
    }
  }
  rec.labels = std::move(labels);
  return rec;
}

}  // namespace i2s
