// sock_diag (inet_diag) dumps and the TCP destroy feed.
#include "common.h"

namespace chrono {

void InitDiag(Napi::Env, Napi::Object) {}

}  // namespace chrono
