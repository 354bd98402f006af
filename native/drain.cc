// What the error-queue drainers (errqueue.cc, attach.cc) and the destroy feed
// (diag.cc) share: the recvmmsg(MSG_ERRQUEUE) loop that packs records into
// frames, and the libuv watcher plumbing. Declared in common.h.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/socket.h>

#include "common.h"

namespace chrono {
namespace {

constexpr size_t kControlLen = 1024;  // one record: ~48 ts + ~64 ee + 256 stats
constexpr unsigned kBurst = 32;       // records per recvmmsg

struct Frame {
  uint32_t tag, control_len, msg_flags, reserved;
};

}  // namespace

long DrainErrqueueFrames(int fd, uint32_t tag, std::vector<uint8_t>* out, long max_records) {
  static thread_local uint8_t control[kBurst][kControlLen];
  static thread_local uint8_t data[kBurst][64];
  mmsghdr msgs[kBurst];
  iovec iov[kBurst];
  long total = 0;
  while (total < max_records) {
    unsigned want = static_cast<unsigned>(std::min<long>(kBurst, max_records - total));
    for (unsigned i = 0; i < want; i++) {
      iov[i] = {data[i], sizeof(data[i])};
      std::memset(&msgs[i], 0, sizeof(mmsghdr));
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = control[i];
      msgs[i].msg_hdr.msg_controllen = kControlLen;
    }
    int n;
    do {
      n = recvmmsg(fd, msgs, want, MSG_ERRQUEUE | MSG_DONTWAIT, nullptr);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return total > 0 ? total : -errno;
    }
    if (out != nullptr) {
      for (int i = 0; i < n; i++) {
        const msghdr& h = msgs[i].msg_hdr;
        Frame f{tag, static_cast<uint32_t>(h.msg_controllen), static_cast<uint32_t>(h.msg_flags), 0};
        size_t padded = (h.msg_controllen + 7) & ~size_t{7};
        size_t at = out->size();
        out->resize(at + sizeof(Frame) + padded, 0);
        std::memcpy(out->data() + at, &f, sizeof(Frame));
        std::memcpy(out->data() + at + sizeof(Frame), h.msg_control, h.msg_controllen);
      }
    }
    total += n;
    if (static_cast<unsigned>(n) < want) break;  // queue empty
  }
  return total;
}

int StartPoll(Napi::Env env, int fd, void* data, uv_poll_cb on_readable, uv_poll_t** poll) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
  auto* p = new uv_poll_t;
  p->data = data;
  int rc = uv_poll_init(loop, p, fd);
  if (rc != 0) {
    delete p;  // never became a handle of the loop
    return rc;
  }
  rc = uv_poll_start(p, UV_READABLE, on_readable);
  if (rc != 0) {
    // The loop knows the handle now: it must be closed, and freed only once closed.
    uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    return rc;
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(p));
  *poll = p;
  return 0;
}

void StopPoll(uv_poll_t** poll) {
  if (*poll == nullptr) return;
  uv_poll_stop(*poll);
  uv_close(reinterpret_cast<uv_handle_t*>(*poll), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
  *poll = nullptr;
}

}  // namespace chrono
