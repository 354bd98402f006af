// Shared helpers for the shim: Node-shaped errors from errno values, the
// error-queue drain loop and the libuv watcher plumbing (drain.cc).
#pragma once
#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <vector>

namespace chrono {

// Throws Error{code: "EINVAL", errno: -22, syscall} like Node's own errors;
// the TypeScript loader adds the human sentence (agent/native.ts).
inline Napi::Error ErrnoError(Napi::Env env, const char* syscall, int err) {
  const char* name = uv_err_name(-err);
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + " failed: " + name);
  e.Set("code", Napi::String::New(env, name));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

inline int FdArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a file descriptor");
  }
  int fd = info[i].As<Napi::Number>().Int32Value();
  if (fd < 0) throw Napi::TypeError::New(info.Env(), "file descriptor must be >= 0");
  return fd;
}

// A number argument (TypeError naming it otherwise): the one check every
// exported function makes on what JavaScript hands it.
inline double NumberArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string("argument ") + std::to_string(i) + " (" + what + ") must be a number");
  }
  return info[i].As<Napi::Number>().DoubleValue();
}

inline Napi::Value BufferOrNull(Napi::Env env, const std::vector<uint8_t>& bytes) {
  if (bytes.empty()) return env.Null();
  return Napi::Buffer<uint8_t>::Copy(env, bytes.data(), bytes.size());
}

// Empties fd's error queue (recvmmsg MSG_ERRQUEUE, EINTR retried), at most
// max_records, appending one frame per record to *out (only counting them
// when out is null):
//   u32 tag | u32 control_len | u32 msg_flags | u32 0 | control bytes | pad to 8
// The control bytes are the raw cmsg area of one record (agent/parse/errqueue.ts);
// tag is the fd (errqueue.cc) or a socket id chosen by JavaScript (attach.cc).
// Returns the records read, or -errno on a real error (EAGAIN is not one).
long DrainErrqueueFrames(int fd, uint32_t tag, std::vector<uint8_t>* out, long max_records);

// Calls on_readable(handle with ->data = data) from the host's libuv loop
// whenever fd is readable. The watcher never keeps the process alive (unref'd).
// Returns 0 with *poll set, or a negative libuv error (nothing left to free);
// throws when the env has no event loop.
int StartPoll(Napi::Env env, int fd, void* data, uv_poll_cb on_readable, uv_poll_t** poll);
// Stops and frees a StartPoll watcher (freed by libuv after the close); sets *poll to null.
void StopPoll(uv_poll_t** poll);

void InitErrqueue(Napi::Env env, Napi::Object exports);
void InitSockopt(Napi::Env env, Napi::Object exports);
void InitDiag(Napi::Env env, Napi::Object exports);
void InitAttach(Napi::Env env, Napi::Object exports);
void InitCaps(Napi::Env env, Napi::Object exports);
#ifdef TCP_CHRONO_TRACE
void InitTrace(Napi::Env env, Napi::Object exports);
#endif

}  // namespace chrono
