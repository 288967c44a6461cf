// Moved to common/status_macros.h (shared with the client). This forwarding header stays
// only until the last server files that include it (server/jobs, server/store) include
// common/status_macros.h; then it goes.
#ifndef I2S_SERVER_BASE_STATUS_MACROS_H_
#define I2S_SERVER_BASE_STATUS_MACROS_H_

#include "common/status_macros.h"

#endif  // I2S_SERVER_BASE_STATUS_MACROS_H_
