// Attach mode: timestamping on another process's TCP sockets.
//
// pidfdOpen / pidfdGetfd duplicate a socket out of the target (Linux >= 5.6,
// PTRACE_MODE_ATTACH over the target, i.e. CAP_SYS_PTRACE or same user under
// ptrace_scope 0). The duplicate is the same socket: its SO_TIMESTAMPING and
// error queue are the target's.
//
// AttachDrainer: a dedicated thread that empties those error queues the moment
// the kernel signals them, so the target's own event loop (which sees the same
// EPOLLERR, level-triggered) wakes as little as possible. It does not pin the
// sockets: each socket's file is put in a private epoll set through a
// duplicate that is closed right away (epoll keeps watching an open file
// without holding a reference, and forgets it when the target's last fd to it
// closes). To drain, the thread takes a fresh duplicate of the target's fd,
// checks it is still the same socket (inode), empties the queue and closes it
// again. So a close() in the target still sends its FIN at once.
//
// Records reach JavaScript in batches through a thread-safe function, at most
// once per `batchMs` (or sooner when `batchBytes` are pending), never per
// record. Frames as native/errqueue.cc's (common.h), tagged with the socket's
// id (chosen by JavaScript) instead of an fd.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <mutex>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>
#include <linux/sockios.h>
#include <unordered_map>
#include <vector>

#include "common.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

namespace chrono {
namespace {

constexpr uint64_t kStopId = ~uint64_t{0};
constexpr uint64_t kPidfdId = ~uint64_t{0} - 1;

int PidfdOpen(int pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
int PidfdGetfd(int pidfd, int fd) { return static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0)); }

Napi::Value PidfdOpenJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "pid must be a number");
  int fd = PidfdOpen(info[0].As<Napi::Number>().Int32Value());
  if (fd < 0) throw ErrnoError(env, "pidfd_open", errno);
  return Napi::Number::New(env, fd);
}

// pidfdGetfd(pidfd, targetFd) -> a new fd (O_CLOEXEC) for the same open file.
Napi::Value PidfdGetfdJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pidfd = FdArg(info, 0);
  int target = FdArg(info, 1);
  int fd = PidfdGetfd(pidfd, target);
  if (fd < 0) throw ErrnoError(env, "pidfd_getfd", errno);
  return Napi::Number::New(env, fd);
}

// sockOutq(fd) -> bytes written but not yet acknowledged (SIOCOUTQ).
Napi::Value SockOutq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int v = 0;
  if (ioctl(fd, SIOCOUTQ, &v) != 0) throw ErrnoError(env, "ioctl(SIOCOUTQ)", errno);
  return Napi::Number::New(env, v);
}

struct Watched {
  int target_fd;
  uint64_t inode;
};

// Shared between the thread, the JS object and queued thread-safe calls.
struct State {
  std::mutex mu;
  int pidfd = -1;
  int epfd = -1;
  int stopfd = -1;
  std::unordered_map<uint32_t, Watched> watched;
  std::vector<uint8_t> pending;
  std::vector<uint32_t> gone;
  bool exited = false;
  bool exit_reported = false;
  bool posted = false;
  std::chrono::steady_clock::time_point pending_since;
  int batch_ms = 10;
  size_t batch_bytes = 256 * 1024;
  size_t max_pending = 32 * 1024 * 1024;
  std::atomic<bool> stop{false};
  // Statistics (under mu).
  uint64_t wakeups = 0, drains = 0, records = 0, dropped = 0, errors = 0, posts = 0, gone_total = 0;
  Napi::ThreadSafeFunction tsfn;
};

void CallJs(Napi::Env env, Napi::Function fn, State* s) {
  std::vector<uint8_t> frames;
  std::vector<uint32_t> gone;
  bool exited = false;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    frames.swap(s->pending);
    gone.swap(s->gone);
    if (s->exited && !s->exit_reported) {
      exited = true;
      s->exit_reported = true;
    }
    s->posted = false;
  }
  if (env == nullptr || fn.IsEmpty()) return;
  if (frames.empty() && gone.empty() && !exited) return;
  Napi::HandleScope scope(env);
  Napi::Value buf = frames.empty() ? env.Null() : Napi::Buffer<uint8_t>::Copy(env, frames.data(), frames.size()).As<Napi::Value>();
  Napi::Array g = Napi::Array::New(env, gone.size());
  for (size_t i = 0; i < gone.size(); i++) g.Set(static_cast<uint32_t>(i), Napi::Number::New(env, gone[i]));
  try {
    fn.Call({buf, g, Napi::Boolean::New(env, exited)});
  } catch (const Napi::Error&) {
    std::lock_guard<std::mutex> lock(s->mu);
    s->errors++;
  }
}

// Must hold s->mu. Posts one call to JS if something is due and none is queued.
void MaybePost(State* s, bool urgent) {
  if (s->posted) return;
  bool something = !s->pending.empty() || !s->gone.empty() || (s->exited && !s->exit_reported);
  if (!something) return;
  auto age = std::chrono::steady_clock::now() - s->pending_since;
  bool due = urgent || !s->gone.empty() || (s->exited && !s->exit_reported) || s->pending.size() >= s->batch_bytes ||
             age >= std::chrono::milliseconds(s->batch_ms);
  if (!due) return;
  if (s->tsfn.NonBlockingCall(s, CallJs) == napi_ok) {
    s->posted = true;
    s->posts++;
  }
}

void Loop(std::shared_ptr<State> s) {
  epoll_event evs[128];
  std::vector<uint8_t> local;
  while (!s->stop.load()) {
    int timeout = -1;
    {
      std::lock_guard<std::mutex> lock(s->mu);
      if (!s->posted && !s->pending.empty()) {
        auto age = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - s->pending_since).count();
        timeout = age >= s->batch_ms ? 0 : static_cast<int>(s->batch_ms - age);
      }
    }
    int n = epoll_wait(s->epfd, evs, 128, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::lock_guard<std::mutex> lock(s->mu);
      s->errors++;
      break;
    }
    if (n > 0) {
      std::lock_guard<std::mutex> lock(s->mu);
      s->wakeups++;
    }
    for (int i = 0; i < n && !s->stop.load(); i++) {
      uint64_t id = evs[i].data.u64;
      if (id == kStopId) continue;
      if (id == kPidfdId) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->pidfd, nullptr);
        std::lock_guard<std::mutex> lock(s->mu);
        s->exited = true;
        continue;
      }
      Watched w;
      {
        std::lock_guard<std::mutex> lock(s->mu);
        auto it = s->watched.find(static_cast<uint32_t>(id));
        if (it == s->watched.end()) continue;  // released: its file is no longer ours to drain
        w = it->second;
      }
      int dup = PidfdGetfd(s->pidfd, w.target_fd);
      struct stat st {};
      bool same = dup >= 0 && fstat(dup, &st) == 0 && static_cast<uint64_t>(st.st_ino) == w.inode;
      if (!same) {
        // The target closed the socket (its fd is gone or now another file):
        // the kernel dropped our epoll entry with the file, or will.
        if (dup >= 0) close(dup);
        std::lock_guard<std::mutex> lock(s->mu);
        if (s->watched.erase(static_cast<uint32_t>(id)) > 0) {
          s->gone.push_back(static_cast<uint32_t>(id));
          s->gone_total++;
        }
        continue;
      }
      local.clear();
      long got;
      bool keep;
      {
        std::lock_guard<std::mutex> lock(s->mu);
        keep = s->pending.size() < s->max_pending;
      }
      // Over the pending limit, records are only counted (and dropped).
      got = DrainErrqueueFrames(dup, static_cast<uint32_t>(id), keep ? &local : nullptr, 1 << 20);
      close(dup);
      std::lock_guard<std::mutex> lock(s->mu);
      s->drains++;
      if (got < 0) {
        s->errors++;
        continue;
      }
      s->records += static_cast<uint64_t>(got);
      if (!keep) {
        s->dropped += static_cast<uint64_t>(got);
        continue;
      }
      if (!local.empty()) {
        if (s->pending.empty()) s->pending_since = std::chrono::steady_clock::now();
        s->pending.insert(s->pending.end(), local.begin(), local.end());
      }
    }
    std::lock_guard<std::mutex> lock(s->mu);
    MaybePost(s.get(), false);
  }
}

class AttachDrainer : public Napi::ObjectWrap<AttachDrainer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "AttachDrainer",
                       {InstanceMethod("watch", &AttachDrainer::Watch), InstanceMethod("unwatch", &AttachDrainer::Unwatch),
                        InstanceMethod("take", &AttachDrainer::Take), InstanceMethod("close", &AttachDrainer::Close),
                        InstanceMethod("stats", &AttachDrainer::Stats)});
  }

  // new AttachDrainer(pidfd, onBatch(frames|null, goneIds, targetExited), batchMs?, batchBytes?, maxPendingBytes?)
  explicit AttachDrainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AttachDrainer>(info) {
    Napi::Env env = info.Env();
    int pidfd = FdArg(info, 0);
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
    state_ = std::make_shared<State>();
    State* s = state_.get();
    s->pidfd = pidfd;
    if (info.Length() > 2 && info[2].IsNumber()) s->batch_ms = std::max(0, info[2].As<Napi::Number>().Int32Value());
    if (info.Length() > 3 && info[3].IsNumber()) s->batch_bytes = static_cast<size_t>(info[3].As<Napi::Number>().Int64Value());
    if (info.Length() > 4 && info[4].IsNumber()) s->max_pending = static_cast<size_t>(info[4].As<Napi::Number>().Int64Value());
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) throw ErrnoError(env, "epoll_create1", errno);
    s->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stopfd < 0) {
      int e = errno;
      close(s->epfd);
      throw ErrnoError(env, "eventfd", e);
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kStopId;
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->stopfd, &ev);
    ev.data.u64 = kPidfdId;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, pidfd, &ev) != 0) {
      int e = errno;
      close(s->stopfd);
      close(s->epfd);
      throw ErrnoError(env, "epoll_ctl(pidfd)", e);
    }
    // The finalizer owns one reference to the state: queued calls stay valid.
    auto* keep = new std::shared_ptr<State>(state_);
    s->tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "tcp-chronograph attach drainer", 0, 1, keep,
                                            [](Napi::Env, std::shared_ptr<State>* p) { delete p; });
    s->tsfn.Unref(env);
    thread_ = std::thread(Loop, state_);
  }

  ~AttachDrainer() override { Shutdown(); }

 private:
  // watch(id, fd, targetFd, inode): puts the socket's file in the epoll set
  // (edge-triggered on errors) and drains what is already queued (returned as
  // frames, or null). The caller still owns fd and should close it soon.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    State* s = state_.get();
    if (!running_) throw Napi::Error::New(env, "drainer is closed");
    uint32_t id = static_cast<uint32_t>(NumberArg(info, 0, "socket id"));
    int fd = FdArg(info, 1);
    int target_fd = FdArg(info, 2);
    uint64_t inode = static_cast<uint64_t>(NumberArg(info, 3, "inode"));
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->watched[id] = Watched{target_fd, inode};
    }
    epoll_event ev{};
    ev.events = EPOLLET | EPOLLERR;
    ev.data.u64 = id;
    // EEXIST: this file was watched before through the same fd number (the
    // entry outlives our duplicate): point it at the new id.
    int rc = epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
    if (rc != 0 && errno == EEXIST) rc = epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
    if (rc != 0) {
      int e = errno;
      std::lock_guard<std::mutex> lock(s->mu);
      s->watched.erase(id);
      throw ErrnoError(env, "epoll_ctl(ADD)", e);
    }
    std::vector<uint8_t> out;
    long got = DrainErrqueueFrames(fd, id, &out, 1 << 20);
    if (got > 0) {
      std::lock_guard<std::mutex> lock(s->mu);
      s->records += static_cast<uint64_t>(got);
    }
    return BufferOrNull(env, out);
  }

  // unwatch(id): events for this socket are ignored from now on. (Its epoll
  // entry goes when the target closes the socket, or with the drainer.)
  Napi::Value Unwatch(const Napi::CallbackInfo& info) {
    State* s = state_.get();
    uint32_t id = static_cast<uint32_t>(NumberArg(info, 0, "socket id"));
    std::lock_guard<std::mutex> lock(s->mu);
    s->watched.erase(id);
    return info.Env().Undefined();
  }

  // take() -> frames pending for JS now (or null), without waiting for the batch timer.
  Napi::Value Take(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<uint8_t> frames;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      frames.swap(state_->pending);
    }
    return BufferOrNull(env, frames);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    State* s = state_.get();
    std::lock_guard<std::mutex> lock(s->mu);
    o.Set("wakeups", Napi::Number::New(env, static_cast<double>(s->wakeups)));
    o.Set("drains", Napi::Number::New(env, static_cast<double>(s->drains)));
    o.Set("records", Napi::Number::New(env, static_cast<double>(s->records)));
    o.Set("dropped", Napi::Number::New(env, static_cast<double>(s->dropped)));
    o.Set("errors", Napi::Number::New(env, static_cast<double>(s->errors)));
    o.Set("posts", Napi::Number::New(env, static_cast<double>(s->posts)));
    o.Set("gone", Napi::Number::New(env, static_cast<double>(s->gone_total)));
    o.Set("watched", Napi::Number::New(env, static_cast<double>(s->watched.size())));
    return o;
  }

  // Stops the thread and closes the epoll set (which forgets every socket).
  // Records still pending for JS can be taken with take() afterwards.
  void Shutdown() {
    if (!running_) return;
    running_ = false;
    State* s = state_.get();
    s->stop.store(true);
    uint64_t one = 1;
    if (write(s->stopfd, &one, sizeof(one)) < 0) {
      // eventfd write cannot fail with a nonzero counter below the max; the stop flag is set anyway
    }
    if (thread_.joinable()) thread_.join();
    close(s->stopfd);
    close(s->epfd);
    s->stopfd = s->epfd = -1;
    s->tsfn.Release();
  }

  std::shared_ptr<State> state_;
  std::thread thread_;
  bool running_ = true;
};

}  // namespace

void InitAttach(Napi::Env env, Napi::Object exports) {
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpenJs));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfdJs));
  exports.Set("sockOutq", Napi::Function::New(env, SockOutq));
  exports.Set("AttachDrainer", AttachDrainer::Define(env));
}

}  // namespace chrono
