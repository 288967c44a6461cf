// Moved to common/signals.h (shared with the client). This forwarding header stays only
// until server/main.cc includes common/signals.h; then it goes.
#ifndef I2S_SERVER_BASE_SIGNALS_H_
#define I2S_SERVER_BASE_SIGNALS_H_

#include "common/signals.h"

#endif  // I2S_SERVER_BASE_SIGNALS_H_
