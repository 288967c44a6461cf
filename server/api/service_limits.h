// What the service allows one call, one tenant and the whole server (flags of i2s_server,
// reported by GetServerInfo).
#ifndef I2S_SERVER_API_SERVICE_LIMITS_H_
#define I2S_SERVER_API_SERVICE_LIMITS_H_

#include <algorithm>
#include <cstdint>

#include "server/api/connection_options.h"

namespace i2s {

struct ServiceLimits {
  int64_t max_message_bytes = 64 << 20;  // sent (renders, aligned images), and the cap below
  int64_t max_image_bytes = 32 << 20;
  // What a request may be: the largest (an Embed or AlignFace) is an image and its
  // options, under max_image_bytes + 1 MiB. Messages are read whole before a call's token
  // is checked, so this is also what a caller without a token can make the server hold
  // per call (docs/SECURITY.md, Connections).
  int64_t max_receive_message_bytes() const {
    return std::min(max_message_bytes, max_image_bytes + (int64_t{1} << 20));
  }
  int64_t max_image_pixels = 50'000'000;
  int max_steps = 100000;
  int max_morph_frames = 240;
  double heartbeat_seconds = 10;  // a quiet event stream gets a heartbeat this often
  // Admission, per tenant (one tenant, "", without authentication).
  double rate_limit = 200;       // calls per second per tenant; 0 = unlimited
  int rate_burst = 400;          // calls at once before the rate applies
  int max_streams = 1024;        // open Embed/WatchJob/Morph streams, all tenants
  int tenant_max_streams = 256;  // open streams of one tenant
  // Image decodes and alignments (Embed, AlignFace) run on a pool of this many threads,
  // off the gRPC threads: each holds the decoded photo and alignment buffers (the bound of
  // their memory: docs/SECURITY.md, Limits).
  int max_concurrent_images = 4;
  int image_queue_limit = 128;  // calls waiting for a pool thread (they hold no gRPC thread)
  int tenant_max_images = 32;   // of one tenant, waiting or running
  // A render or edit waits at most this long for a device (or until its call's deadline,
  // if sooner); then DEADLINE_EXCEEDED. Calls without a deadline get this one.
  double device_wait_seconds = 60;
  // Applied by main to the server builder; here so that ServerInfo reports them.
  ConnectionOptions connections;
};

}  // namespace i2s

#endif  // I2S_SERVER_API_SERVICE_LIMITS_H_
