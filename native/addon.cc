// tcp-chronograph native shim: syscalls only. Everything it returns is raw
// bytes or plain numbers; parsing lives in agent/parse/.
#include "common.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  chrono::InitErrqueue(env, exports);
  chrono::InitSockopt(env, exports);
  chrono::InitDiag(env, exports);
  chrono::InitAttach(env, exports);
  chrono::InitCaps(env, exports);
#ifdef TCP_CHRONO_TRACE
  chrono::InitTrace(env, exports);
#endif
  return exports;
}

NODE_API_MODULE(tcp_chronograph, Init)
