// Errors whose message is for the operator, not the caller: a PostgreSQL store's message
// names its host, port, database and user (libpq's text), which a client must never see.
//
// Such a status carries a payload (WithPrivateDetail). Below the API layer it travels as
// any status (Annotate keeps payloads); the one absl -> gRPC conversion (api/status.h)
// and the job events' messages answer with PublicStatus instead: the same code and a
// generic sentence with an incident number, while the log gets the whole message under
// the same number (event "private_error"), so an operator can match a caller's report.
#ifndef I2S_SERVER_BASE_PRIVATE_DETAIL_H_
#define I2S_SERVER_BASE_PRIVATE_DETAIL_H_

#include "absl/status/status.h"

namespace i2s {

// `status` marked as holding private detail (OK stays OK).
absl::Status WithPrivateDetail(absl::Status status);
bool HasPrivateDetail(const absl::Status& status);

// For a marked status: logs its message and returns the same code with "the data store
// failed (incident N; the server's log has the details)". Others come back unchanged.
absl::Status PublicStatus(const absl::Status& status);

}  // namespace i2s

#endif  // I2S_SERVER_BASE_PRIVATE_DETAIL_H_
