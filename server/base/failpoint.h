// Crash points for the fault tests: with the environment variable I2S_FAILPOINT=NAME, the
// process kills itself with SIGKILL when it reaches the point NAME, as `kill -9` would at
// exactly that instant. Unset (always, in production) a point costs one comparison of a
// pointer with null. Read once, at the first point reached.
//
// Points (grep "Failpoint(" for where they sit):
//   store.claim.before_commit  a request ID and its record written, not yet committed
//   store.claim.after_commit   both committed, the caller not yet answered
#ifndef I2S_SERVER_BASE_FAILPOINT_H_
#define I2S_SERVER_BASE_FAILPOINT_H_

namespace i2s {

void Failpoint(const char* name);

}  // namespace i2s

#endif  // I2S_SERVER_BASE_FAILPOINT_H_
