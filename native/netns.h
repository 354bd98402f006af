// Making a file descriptor inside another network namespace without moving
// the process there (diag.cc's sock_diag sockets, trace.cc's iterator passes).
#pragma once
#include <errno.h>
#include <sched.h>

#include <system_error>
#include <thread>

namespace chrono {

// A socket keeps the network namespace it was created in, and so does a
// /proc/thread-self/net file opened there, and an iter/tcp reader created
// there (it walks the sockets of that namespace). make() (an fd, or -1 with errno
// set) runs in the network namespace of ns_fd (an open /run/netns/NAME or
// /proc/PID/ns/net) in a short-lived thread that enters it with setns and
// ends: no other thread's namespace ever changes. ns_fd < 0: in this thread,
// its own namespace. Returns the fd, or -1 with *err and *syscall (setns
// needs CAP_SYS_ADMIN: EPERM without it).
template <typename Make>
inline int InNetns(int ns_fd, Make make, const char* what, int* err, const char** syscall) {
  *syscall = what;
  if (ns_fd < 0) {
    int fd = make();
    if (fd < 0) *err = errno;
    return fd;
  }
  int fd = -1;
  int e = 0;
  const char* failed = what;
  try {
    std::thread t([&] {
      if (setns(ns_fd, CLONE_NEWNET) != 0) {
        e = errno;
        failed = "setns(CLONE_NEWNET)";
        return;
      }
      fd = make();
      if (fd < 0) e = errno;
    });
    t.join();
  } catch (const std::system_error& x) {
    *err = x.code().value() != 0 ? x.code().value() : EAGAIN;
    *syscall = "pthread_create";
    return -1;
  }
  if (fd < 0) {
    *err = e;
    *syscall = failed;
  }
  return fd;
}

}  // namespace chrono
