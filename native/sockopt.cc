// Socket options and clocks: getsockopt(TCP_INFO) as raw bytes, SO_TIMESTAMPING
// get/set, CLOCK_REALTIME in nanoseconds.
#include <cerrno>
#include <ctime>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "common.h"

namespace chrono {
namespace {

// Larger than any struct tcp_info so far (280 bytes on 6.18): the kernel
// copies min(len, its size) and reports the length, which we honour.
constexpr socklen_t kTcpInfoMax = 512;

Napi::Value TcpInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  uint8_t buf[kTcpInfoMax];
  socklen_t len = sizeof(buf);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, buf, &len) != 0) throw ErrnoError(env, "getsockopt(TCP_INFO)", errno);
  return Napi::Buffer<uint8_t>::Copy(env, buf, len);
}

Napi::Value SetTimestamping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, "flags must be a number");
  int flags = static_cast<int>(info[1].As<Napi::Number>().Uint32Value());
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &flags, sizeof(flags)) != 0) {
    throw ErrnoError(env, "setsockopt(SO_TIMESTAMPING)", errno);
  }
  return env.Undefined();
}

// Returns the socket's SO_TIMESTAMPING flags (0 when off): an application
// that set them itself owns its error queue and must be left alone.
Napi::Value GetTimestamping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  // Newer kernels return struct so_timestamping {flags, bind_phc}; the flags come first.
  int val[2] = {0, 0};
  socklen_t len = sizeof(val);
  if (getsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, val, &len) != 0) {
    throw ErrnoError(env, "getsockopt(SO_TIMESTAMPING)", errno);
  }
  return Napi::Number::New(env, static_cast<uint32_t>(val[0]));
}

Napi::Value GetSockoptInt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int level = static_cast<int>(NumberArg(info, 1, "level"));
  int name = static_cast<int>(NumberArg(info, 2, "option name"));
  int val = 0;
  socklen_t len = sizeof(val);
  if (getsockopt(fd, level, name, &val, &len) != 0) throw ErrnoError(env, "getsockopt", errno);
  return Napi::Number::New(env, val);
}

Napi::Value SetSockoptInt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  int level = static_cast<int>(NumberArg(info, 1, "level"));
  int name = static_cast<int>(NumberArg(info, 2, "option name"));
  int val = static_cast<int>(NumberArg(info, 3, "value"));
  if (setsockopt(fd, level, name, &val, sizeof(val)) != 0) throw ErrnoError(env, "setsockopt", errno);
  return env.Undefined();
}

Napi::Value RealtimeNs(const Napi::CallbackInfo& info) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return Napi::BigInt::New(info.Env(), static_cast<int64_t>(static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec));
}

}  // namespace

void InitSockopt(Napi::Env env, Napi::Object exports) {
  exports.Set("tcpInfo", Napi::Function::New(env, TcpInfo));
  exports.Set("setTimestamping", Napi::Function::New(env, SetTimestamping));
  exports.Set("getTimestamping", Napi::Function::New(env, GetTimestamping));
  exports.Set("getSockoptInt", Napi::Function::New(env, GetSockoptInt));
  exports.Set("setSockoptInt", Napi::Function::New(env, SetSockoptInt));
  exports.Set("realtimeNs", Napi::Function::New(env, RealtimeNs));
}

}  // namespace chrono
