// Loaded with LD_PRELOAD by the signal tests (tests/integration): starts threads before
// the program's main, with every signal unblocked, as the pthread build of OpenBLAS does
// from its load-time constructor. A program that relies on masking signals in main and
// taking them with sigwait dies of SIGINT/SIGTERM's default action when the kernel
// delivers the signal to one of these; one that catches them with handlers does not.
// The threads are named "i2s-early" so a test can check they exist and block nothing.

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

namespace {

constexpr int kThreads = 4;

void* Idle(void* unused) {
  (void)unused;
  for (;;) pause();  // returns after each handled signal
  return nullptr;
}

__attribute__((constructor)) void StartEarlyThreads() {
  sigset_t none, old;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, &old);  // the new threads inherit "nothing blocked"
  for (int i = 0; i < kThreads; ++i) {
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, Idle, nullptr) == 0) pthread_setname_np(thread, "i2s-early");
    pthread_attr_destroy(&attr);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace
