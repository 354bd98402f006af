// Shared helpers for the shim: Node-shaped errors from errno values.
#pragma once
#include <napi.h>
#include <uv.h>

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

void InitErrqueue(Napi::Env env, Napi::Object exports);
void InitSockopt(Napi::Env env, Napi::Object exports);
void InitDiag(Napi::Env env, Napi::Object exports);
void InitAttach(Napi::Env env, Napi::Object exports);

}  // namespace chrono
