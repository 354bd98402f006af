// Capability dropping for the whole process (agent/cli/privileges.ts).
//
// Linux credentials are per thread: capset(2), prctl(PR_CAPBSET_DROP),
// PR_SET_NO_NEW_PRIVS and the ambient set change only the calling thread, and
// a Node process has many (V8 platform workers, libuv threadpool threads that
// read /proc for owner lookup, Node's SIGUSR1 watcher, attach's drainer). A
// new thread inherits its creator's credentials. So the change is made in
// every thread the way glibc's setxid and libcap's psx do it: a signal handler
// that makes it, sent to each thread with tgkill; the caller makes it for
// itself, waits for every thread's acknowledgement (bounded), lists
// /proc/self/task again for threads created meanwhile, and repeats until the
// list is stable.
//
// The signal is 32, the kernel's first realtime signal. Any other would not
// reach every thread: Node's SignalInspector thread blocks every signal that
// glibc lets it block (sigfillset), which is all but 32 and 33; glibc keeps
// those two for itself and strips them from every pthread_sigmask. 33 always
// carries glibc's setxid handler; 32 carries one only after pthread_cancel or
// a SIGEV_THREAD timer, neither of which Node, V8, libuv or this addon uses
// (checked here: 32 must still be SIG_DFL). glibc's sigaction refuses both, so
// rt_sigaction is called raw, with the sigreturn trampoline of a handler that
// glibc installed. The old disposition is restored afterwards.
//
// The handler makes raw syscalls only (async-signal-safe) and saves errno.
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <linux/capability.h>
#include <linux/prctl.h>
#include <string>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#include "common.h"

namespace chrono {
namespace {

constexpr int kSignal = 32;                    // the kernel's SIGRTMIN (glibc: SIGCANCEL, unused by Node)
constexpr unsigned long kSaRestorer = 0x04000000;  // SA_RESTORER (x86, arm64 uapi)
constexpr int kMaxResults = 4096;              // threads acknowledged per call
constexpr int kAckTimeoutMs = 1000;            // per round of signals
constexpr int kMaxRounds = 20;                 // rounds until /proc/self/task is stable

// Where a thread's change failed (0: it did not).
enum Stage { kOk = 0, kCapget, kAmbient, kBounding, kCapset, kNoNewPrivs };
const char* const kStageNames[] = {"ok", "capget", "ambient", "bounding", "capset", "no_new_privs"};

// The kernel's struct sigaction (x86-64 and arm64 share this layout).
struct KernelSigaction {
  void (*handler)(int, siginfo_t*, void*);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

long RawSigaction(int sig, const KernelSigaction* act, KernelSigaction* old) {
  return syscall(SYS_rt_sigaction, sig, act, old, sizeof(uint64_t));
}

// Written by the caller before the handler is installed; read-only meanwhile.
struct Plan {
  uint32_t keep[2];
  int last_cap;
  pid_t pid;
};
Plan g_plan{};
std::atomic<bool> g_active{false};

// One slot per acknowledgement; tid is stored last (release), so a nonzero
// tid means stage and err are there.
struct Result {
  std::atomic<int> tid;
  std::atomic<int> stage;
  std::atomic<int> err;
};
Result g_results[kMaxResults];
std::atomic<int> g_next{0};

long Prctl(long option, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0) {
  return syscall(SYS_prctl, option, a2, a3, a4, a5);
}

// The change, in the calling thread: ambient set cleared, every capability
// not kept dropped from the bounding set (only those still in it: the drop
// itself needs CAP_SETPCAP), effective = permitted = kept (and held),
// inheritable = none, no_new_privs. Every step is tried; the first failure is
// reported. Raw syscalls only.
void Apply(int* stage, int* err) {
  *stage = kOk;
  *err = 0;
  auto fail = [&](Stage s) {
    if (*stage == kOk) {
      *stage = s;
      *err = errno;
    }
  };
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
  if (syscall(SYS_capget, &hdr, data) != 0) {
    fail(kCapget);
    return;
  }
  uint32_t keep[2] = {g_plan.keep[0] & data[0].permitted, g_plan.keep[1] & data[1].permitted};
  if (Prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) != 0 && errno != EINVAL) fail(kAmbient);  // EINVAL: before 4.3
  for (int cap = 0; cap <= g_plan.last_cap; cap++) {
    if ((keep[cap / 32] >> (cap % 32)) & 1) continue;
    if (Prctl(PR_CAPBSET_READ, cap) == 1 && Prctl(PR_CAPBSET_DROP, cap) != 0) fail(kBounding);
  }
  for (int i = 0; i < 2; i++) {
    data[i].effective = keep[i];
    data[i].permitted = keep[i];
    data[i].inheritable = 0;
  }
  hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  if (syscall(SYS_capset, &hdr, data) != 0) fail(kCapset);
  if (Prctl(PR_SET_NO_NEW_PRIVS, 1) != 0) fail(kNoNewPrivs);
}

void Record(int tid, int stage, int err) {
  int i = g_next.fetch_add(1);
  if (i >= kMaxResults) return;  // counted in g_next; the caller fails the call
  g_results[i].stage.store(stage, std::memory_order_relaxed);
  g_results[i].err.store(err, std::memory_order_relaxed);
  g_results[i].tid.store(tid, std::memory_order_release);
}

void OnSignal(int, siginfo_t* info, void*) {
  int saved = errno;
  // Only our own tgkill during a call: anything else sending 32 is ignored.
  if (g_active.load(std::memory_order_acquire) && info->si_code == SI_TKILL && info->si_pid == g_plan.pid) {
    int stage, err;
    Apply(&stage, &err);
    Record(static_cast<int>(syscall(SYS_gettid)), stage, err);
  }
  errno = saved;
}

bool Acked(int tid) {
  int n = std::min(g_next.load(std::memory_order_acquire), kMaxResults);
  for (int i = 0; i < n; i++) {
    if (g_results[i].tid.load(std::memory_order_acquire) == tid) return true;
  }
  return false;
}

bool Alive(pid_t pid, int tid) { return !(syscall(SYS_tgkill, pid, tid, 0) != 0 && errno == ESRCH); }

std::vector<int> ListTasks(int* err) {
  std::vector<int> tids;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) {
    *err = errno;
    return tids;
  }
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long t = std::strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0' && t > 0) tids.push_back(static_cast<int>(t));
  }
  closedir(d);
  *err = 0;
  return tids;
}

std::string ThreadName(int tid) {
  std::string path = "/proc/self/task/" + std::to_string(tid) + "/comm";
  char buf[64] = {0};
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return "?";
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\0')) n--;
  return std::string(buf, n);
}

// The sigreturn trampoline glibc put on the handlers it installed (x86-64
// requires one; arm64 does without, the kernel then uses the vDSO's).
bool FindRestorer(KernelSigaction* act) {
  for (int sig = 1; sig <= 64; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    KernelSigaction k{};
    if (RawSigaction(sig, nullptr, &k) == 0 && (k.flags & kSaRestorer) != 0 && k.restorer != nullptr) {
      act->flags |= kSaRestorer;
      act->restorer = k.restorer;
      return true;
    }
  }
#if defined(__x86_64__) || defined(__i386__)
  return false;
#else
  return true;
#endif
}

uint64_t KeepMask(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 1 && info[0].IsBigInt()) {
    bool lossless = true;
    return info[0].As<Napi::BigInt>().Uint64Value(&lossless);
  }
  if (info.Length() >= 1 && info[0].IsArray()) {
    Napi::Array a = info[0].As<Napi::Array>();
    uint64_t mask = 0;
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, "capability numbers must be numbers");
      int32_t cap = v.As<Napi::Number>().Int32Value();
      if (cap < 0 || cap > 63) throw Napi::RangeError::New(env, "capability numbers are from 0 to 63");
      mask |= uint64_t{1} << cap;
    }
    return mask;
  }
  throw Napi::TypeError::New(env, "dropCapabilities(keep): keep is a bigint mask or an array of capability numbers");
}

// dropCapabilities(keep: bigint | number[]) -> { signal, rounds, threads: [{ tid, self, stage, code, errno }] }
// Applies the change to every thread of the process. Per-thread failures are
// returned (stage !== 'ok'); a call that cannot reach every thread throws.
Napi::Value DropCapabilities(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t keep = KeepMask(info);
  if (g_active.load()) throw Napi::Error::New(env, "dropCapabilities: already running");

  int last_cap = 0;
  while (last_cap < 63 && Prctl(PR_CAPBSET_READ, last_cap + 1) >= 0) last_cap++;

  KernelSigaction old{};
  if (RawSigaction(kSignal, nullptr, &old) != 0) throw ErrnoError(env, "rt_sigaction", errno);
  if (old.handler != nullptr) {
    throw Napi::Error::New(env, "signal 32 already has a handler in this process (pthread_cancel or a SIGEV_THREAD timer?); capabilities can only be changed in the calling thread");
  }
  KernelSigaction act{};
  act.handler = OnSignal;
  act.flags = SA_SIGINFO | SA_RESTART;
  act.mask = 0;
  if (!FindRestorer(&act)) throw Napi::Error::New(env, "no signal handler installed by the C library to borrow a sigreturn trampoline from");

  g_plan.keep[0] = static_cast<uint32_t>(keep);
  g_plan.keep[1] = static_cast<uint32_t>(keep >> 32);
  g_plan.last_cap = last_cap;
  g_plan.pid = getpid();
  for (auto& r : g_results) r.tid.store(0, std::memory_order_relaxed);
  g_next.store(0);
  g_active.store(true, std::memory_order_release);
  if (RawSigaction(kSignal, &act, nullptr) != 0) {
    int e = errno;
    g_active.store(false);
    throw ErrnoError(env, "rt_sigaction", e);
  }

  const int self = static_cast<int>(syscall(SYS_gettid));
  {
    int stage, err;
    Apply(&stage, &err);
    Record(self, stage, err);
  }

  std::vector<int> sent;
  std::string failure;
  int rounds = 0;
  bool stable = false;
  while (!stable && rounds < kMaxRounds && failure.empty()) {
    rounds++;
    int lerr = 0;
    std::vector<int> tids = ListTasks(&lerr);
    if (lerr != 0) {
      failure = std::string("cannot list /proc/self/task: ") + uv_err_name(-lerr);
      break;
    }
    std::vector<int> fresh;
    for (int t : tids) {
      if (t == self) continue;
      bool known = false;
      for (int s : sent) known = known || s == t;
      if (!known) fresh.push_back(t);
    }
    stable = fresh.empty();
    for (int t : fresh) {
      if (syscall(SYS_tgkill, g_plan.pid, t, kSignal) == 0) {
        sent.push_back(t);
      } else if (errno != ESRCH) {
        failure = std::string("tgkill(") + std::to_string(t) + "): " + uv_err_name(-errno);
        break;
      }
    }
    // Wait until every signalled thread has answered or exited.
    timespec start{};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
      std::vector<int> waiting;
      for (int t : sent) {
        if (!Acked(t) && Alive(g_plan.pid, t)) waiting.push_back(t);
      }
      if (waiting.empty()) break;
      timespec now{};
      clock_gettime(CLOCK_MONOTONIC, &now);
      long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
      if (ms >= kAckTimeoutMs) {
        failure = "no answer within " + std::to_string(kAckTimeoutMs) + " ms from thread";
        failure += waiting.size() > 1 ? "s" : "";
        for (int t : waiting) failure += " " + std::to_string(t) + " (" + ThreadName(t) + ")";
        failure += " (signal 32 blocked?)";
        break;
      }
      timespec nap{0, 1000000};
      nanosleep(&nap, nullptr);
    }
  }
  if (failure.empty() && !stable) failure = "threads kept appearing for " + std::to_string(kMaxRounds) + " rounds";
  if (failure.empty() && g_next.load() > kMaxResults) failure = "more than " + std::to_string(kMaxResults) + " threads";

  g_active.store(false, std::memory_order_release);
  // A thread that never answered may still take the signal: then the handler
  // stays (it does nothing while inactive) rather than SIG_DFL, whose action
  // for signal 32 is to terminate the process.
  bool all_answered = true;
  for (int t : sent) all_answered = all_answered && (Acked(t) || !Alive(g_plan.pid, t));
  if (all_answered) RawSigaction(kSignal, &old, nullptr);
  if (!failure.empty()) throw Napi::Error::New(env, "dropCapabilities: " + failure);

  Napi::Object out = Napi::Object::New(env);
  out.Set("signal", Napi::Number::New(env, kSignal));
  out.Set("rounds", Napi::Number::New(env, rounds));
  Napi::Array threads = Napi::Array::New(env);
  int n = std::min(g_next.load(), kMaxResults);
  for (int i = 0; i < n; i++) {
    int tid = g_results[i].tid.load(std::memory_order_acquire);
    if (tid == 0) continue;
    int stage = g_results[i].stage.load(std::memory_order_relaxed);
    int err = g_results[i].err.load(std::memory_order_relaxed);
    Napi::Object t = Napi::Object::New(env);
    t.Set("tid", Napi::Number::New(env, tid));
    t.Set("self", Napi::Boolean::New(env, tid == self));
    t.Set("stage", Napi::String::New(env, kStageNames[stage]));
    if (err != 0) {
      t.Set("code", Napi::String::New(env, uv_err_name(-err)));
      t.Set("errno", Napi::Number::New(env, -err));
    }
    threads.Set(threads.Length(), t);
  }
  out.Set("threads", threads);
  return out;
}

}  // namespace

void InitCaps(Napi::Env env, Napi::Object exports) {
  exports.Set("dropCapabilities", Napi::Function::New(env, DropCapabilities));
}

}  // namespace chrono
