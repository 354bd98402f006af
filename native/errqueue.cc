// Error-queue draining. Records are returned in batches of frames, one JS
// crossing per batch, tagged with the socket's fd (frame format and the drain
// loop: common.h, drain.cc).
//
// Drainer: a private epoll set of instrumented sockets (edge-triggered),
// watched by the host's libuv loop with uv_poll. libuv reports the socket's
// own EPOLLERR and our epoll fd in the same epoll_wait, so the queue is
// drained in the very loop turn the kernel signalled it and the host loop
// never spins on a non-empty error queue (docs/kernel-notes.md#the-error-queue-and-the-hosts-event-loop).
#include <cerrno>
#include <sys/epoll.h>
#include <unistd.h>
#include <vector>

#include "common.h"

namespace chrono {
namespace {

// Frames tagged with the fd itself (format in common.h).
long DrainFd(int fd, std::vector<uint8_t>& out, long max_records) {
  return DrainErrqueueFrames(fd, static_cast<uint32_t>(fd), &out, max_records);
}

// drainErrqueue(fd, maxRecords = 4096) -> Buffer | null
Napi::Value DrainErrqueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  long max = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : 4096;
  std::vector<uint8_t> out;
  long n = DrainFd(fd, out, max);
  if (n < 0) throw ErrnoError(env, "recvmsg(MSG_ERRQUEUE)", static_cast<int>(-n));
  return BufferOrNull(env, out);
}

class Drainer : public Napi::ObjectWrap<Drainer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Drainer",
                       {InstanceMethod("add", &Drainer::Add), InstanceMethod("remove", &Drainer::Remove),
                        InstanceMethod("close", &Drainer::Close), InstanceMethod("stats", &Drainer::Stats)});
  }

  explicit Drainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Drainer>(info), env_(info.Env()) {
    if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env_, "callback must be a function");
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) throw ErrnoError(env_, "epoll_create1", errno);
    int rc = StartPoll(env_, epfd_, this, OnReadable, &poll_);
    if (rc != 0) {
      close(epfd_);
      epfd_ = -1;
      throw ErrnoError(env_, "uv_poll_start", -rc);
    }
    // (Unref'd: the instrumented sockets keep the loop alive; this watcher must not.)
  }

  ~Drainer() override { Shutdown(); }

 private:
  Napi::Value Add(const Napi::CallbackInfo& info) {
    int fd = FdArg(info, 0);
    if (epfd_ < 0) throw Napi::Error::New(env_, "drainer is closed");
    epoll_event ev{};
    ev.events = EPOLLET | EPOLLERR;
    ev.data.fd = fd;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) throw ErrnoError(env_, "epoll_ctl(ADD)", errno);
    // Records queued before the edge was armed would never signal: take them now.
    std::vector<uint8_t> out;
    DrainFd(fd, out, 1 << 20);
    return BufferOrNull(env_, out);
  }

  // Stops watching fd and returns what is still queued (call after turning
  // timestamping off, so nothing arrives afterwards).
  Napi::Value Remove(const Napi::CallbackInfo& info) {
    int fd = FdArg(info, 0);
    if (epfd_ >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);  // ENOENT/EBADF: already gone
    std::vector<uint8_t> out;
    DrainFd(fd, out, 1 << 20);
    return BufferOrNull(env_, out);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("wakeups", Napi::Number::New(info.Env(), static_cast<double>(wakeups_)));
    o.Set("records", Napi::Number::New(info.Env(), static_cast<double>(records_)));
    o.Set("errors", Napi::Number::New(info.Env(), static_cast<double>(errors_)));
    return o;
  }

  void Shutdown() {
    StopPoll(&poll_);
    if (epfd_ >= 0) {
      close(epfd_);
      epfd_ = -1;
    }
  }

  static void OnReadable(uv_poll_t* handle, int status, int) {
    auto* self = static_cast<Drainer*>(handle->data);
    if (status < 0 || self->epfd_ < 0) return;
    self->wakeups_++;
    std::vector<uint8_t> out;
    epoll_event evs[256];
    int n;
    do {
      n = epoll_wait(self->epfd_, evs, 256, 0);
    } while (n < 0 && errno == EINTR);
    for (int i = 0; i < n; i++) {
      long got = DrainFd(evs[i].data.fd, out, 1 << 20);
      if (got < 0) self->errors_++;
      else self->records_ += static_cast<uint64_t>(got);
    }
    if (out.empty()) return;
    Napi::HandleScope scope(self->env_);
    try {
      Napi::Value buf = Napi::Buffer<uint8_t>::Copy(self->env_, out.data(), out.size());
      self->callback_.MakeCallback(self->env_.Global(), {buf});
    } catch (const Napi::Error&) {
      // The JS side never throws (agent/sources/errqueue.ts catches); if it
      // did, dropping the exception keeps the host process alive.
      self->errors_++;
    }
  }

  Napi::Env env_;
  Napi::FunctionReference callback_;
  int epfd_ = -1;
  uv_poll_t* poll_ = nullptr;
  uint64_t wakeups_ = 0, records_ = 0, errors_ = 0;
};

}  // namespace

void InitErrqueue(Napi::Env env, Napi::Object exports) {
  exports.Set("drainErrqueue", Napi::Function::New(env, DrainErrqueue));
  exports.Set("Drainer", Drainer::Define(env));
}

}  // namespace chrono
