// The loader of the trace mode's BPF program (native/bpf/trace.bpf.c, built
// into native/bpf/trace.skel.h by scripts/build-bpf.sh): load with the run's
// settings, attach to a cgroup through a BPF link (no pinning: the program is
// gone when this process exits, however it exits), and hand JavaScript the
// ring buffer's records and the maps as raw bytes (agent/parse/trace_event.ts
// decodes them). Compiled only where libbpf is found (binding.gyp).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

#include "bpf/trace.h"
#include "bpf/trace.skel.h"
#include "common.h"
#include "netns.h"

namespace chrono {
namespace {

struct Tracer {
  trace_bpf* skel = nullptr;
  ring_buffer* rb = nullptr;
  bpf_link* link = nullptr;
  bpf_link* adopt = nullptr;  // tcp_chrono_adopt's (iter/tcp): connections open before the attach
  bpf_link* closed = nullptr;  // tcp_chrono_closed's (a tracepoint): their closes, while any is followed
  int cgroup_fd = -1;
  std::vector<uint8_t>* sink = nullptr;  // set during Consume
  uint64_t malformed = 0;
  // traceWatch's one-shot watcher of the ring (its epoll fd) and whom it calls.
  uv_poll_t* poll = nullptr;
  Napi::FunctionReference on_ready;
  napi_env env = nullptr;
};

// libbpf prints to stderr by default; the agent reports errors itself.
std::string last_libbpf_message;
int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, args);
  last_libbpf_message = buf;
  while (!last_libbpf_message.empty() && (last_libbpf_message.back() == '\n')) last_libbpf_message.pop_back();
  return 0;
}

int OnEvent(void* ctx, void* data, size_t size) {
  Tracer* t = static_cast<Tracer*>(ctx);
  if (size != sizeof(trace_event)) {
    t->malformed++;
    return 0;
  }
  const uint8_t* p = static_cast<const uint8_t*>(data);
  t->sink->insert(t->sink->end(), p, p + size);
  return 0;
}

// Detaches one program (the kernel stops calling it); safe on a detached one.
void Detach(bpf_link** link) {
  if (*link != nullptr) bpf_link__destroy(*link);
  *link = nullptr;
}

// Frees everything the tracer holds: programs detached and unloaded, maps
// gone. Safe to call again (traceClose, then the finalizer).
void Release(Tracer* t) {
  StopPoll(&t->poll);  // before the ring (and its epoll fd) goes
  if (!t->on_ready.IsEmpty()) t->on_ready.Reset();
  if (t->rb != nullptr) ring_buffer__free(t->rb);
  t->rb = nullptr;
  Detach(&t->adopt);
  Detach(&t->closed);
  Detach(&t->link);
  if (t->skel != nullptr) trace_bpf__destroy(t->skel);
  t->skel = nullptr;
  if (t->cgroup_fd >= 0) close(t->cgroup_fd);
  t->cgroup_fd = -1;
}

void Finalize(Napi::Env, Tracer* t) {
  Release(t);
  delete t;
}

Tracer* TracerArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "argument 0 must be a tracer from traceOpen");
  Tracer* t = info[0].As<Napi::External<Tracer>>().Data();
  if (t->skel == nullptr) throw Napi::Error::New(info.Env(), "the tracer is closed");
  return t;
}

uint32_t U32(const Napi::Object& o, const char* key, uint32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

Napi::Error LibbpfError(Napi::Env env, const char* what, int err) {
  Napi::Error e = ErrnoError(env, what, err);
  if (!last_libbpf_message.empty()) e.Set("detail", Napi::String::New(env, last_libbpf_message));
  return e;
}

// The cgroup's id (its kernfs node id, what bpf_get_current_cgroup_id and
// the BPF side's kn->id give): the file handle of its directory, or its
// inode number where handles are not supported (the same on 64-bit).
uint64_t CgroupId(const std::string& path, int fd) {
  struct {
    struct file_handle fh;
    uint64_t id;
  } h;
  h.fh.handle_bytes = sizeof(uint64_t);
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), &h.fh, &mount_id, 0) == 0 && h.fh.handle_bytes == sizeof(uint64_t)) {
    uint64_t id;
    memcpy(&id, h.fh.f_handle, sizeof id);
    return id;
  }
  struct stat st;
  return fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

// Reads an iterator to its end: its program writes nothing, so this just
// runs it over every object. Returns 0 or -errno.
int ReadIter(int fd) {
  char buf[256];
  // EAGAIN: the kernel stops a read() after a million objects with no output; the next read goes on.
  for (int again = 0; again < 10000;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) return 0;
    if (n > 0) continue;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    again++;
  }
  return -EAGAIN;
}

// Creates a reader of link's iterator in the network namespace of ns_fd (<0:
// this one) and reads it to the end. Returns 0, or -errno with *syscall.
int RunIter(bpf_link* link, int ns_fd, const char** syscall) {
  if (link == nullptr) {
    *syscall = "bpf_iter_create";
    return -EBADF;
  }
  int err = 0;
  int fd = InNetns(ns_fd, [&] { return bpf_iter_create(bpf_link__fd(link)); }, "bpf_iter_create", &err, syscall);
  if (fd < 0) return -err;
  err = ReadIter(fd);
  close(fd);
  if (err != 0) *syscall = "read(bpf_iter)";
  return err;
}

// The verifier gives up with EAGAIN whenever a signal is pending, and takes
// long enough on this program that a profiler's SIGPROF (node --cpu-prof)
// arrives every time, beyond libbpf's five retries: this thread takes no
// signal until the load is over (they are delivered right after).
int LoadWithSignalsBlocked(trace_bpf* skel) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int err = trace_bpf__load(skel);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return err;
}

// traceOpen(cgroupPath, {chunkMode, idleNs, sample, ports: [[from, to]…], tgid, maxSockets, ringBytes}) → tracer
Napi::Value TraceOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
    throw Napi::TypeError::New(env, "traceOpen(cgroupPath: string, options: object)");
  }
  std::string path = info[0].As<Napi::String>();
  Napi::Object o = info[1].As<Napi::Object>();
  libbpf_set_print(LibbpfPrint);
  last_libbpf_message.clear();

  Tracer* t = new Tracer();
  // Every failure from here on frees what was made so far before it throws
  // (the error is built first, so it still sees errno).
  auto fail = [&](const Napi::Error& e) {
    Finalize(env, t);
    return e;
  };
  t->cgroup_fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (t->cgroup_fd < 0) throw fail(ErrnoError(env, "open cgroup", errno));
  t->skel = trace_bpf__open();
  if (t->skel == nullptr) throw fail(LibbpfError(env, "bpf_object__open", errno));
  auto* ro = t->skel->rodata;
  ro->chunk_mode = U32(o, "chunkMode", TRACE_CHUNKS_RESPONSE);
  Napi::Value idle = o.Get("idleNs");
  ro->idle_ns = idle.IsNumber() ? static_cast<uint64_t>(idle.As<Napi::Number>().Int64Value()) : 0;
  ro->sample_every = std::max<uint32_t>(1, U32(o, "sample", 1));
  ro->only_tgid = U32(o, "tgid", 0);
  ro->traced_cgroup = CgroupId(path, t->cgroup_fd);
  Napi::Value ports = o.Get("ports");
  if (ports.IsArray()) {
    Napi::Array a = ports.As<Napi::Array>();
    uint32_t n = std::min<uint32_t>(a.Length(), TRACE_MAX_PORT_RANGES);
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value r = a.Get(i);
      Napi::Array pair = r.IsArray() ? r.As<Napi::Array>() : Napi::Array();
      // (Checked here: a non-number would throw from Uint32Value past fail().)
      if (pair.IsEmpty() || pair.Length() != 2 || !pair.Get(0u).IsNumber() || !pair.Get(1u).IsNumber()) {
        throw fail(Napi::TypeError::New(env, "ports must be [from, to] pairs"));
      }
      ro->port_from[i] = static_cast<uint16_t>(pair.Get(0u).As<Napi::Number>().Uint32Value());
      ro->port_to[i] = static_cast<uint16_t>(pair.Get(1u).As<Napi::Number>().Uint32Value());
    }
    ro->n_port_ranges = n;
  }
  int err = bpf_map__set_max_entries(t->skel->maps.conns, std::max<uint32_t>(16, U32(o, "maxSockets", 65536)));
  if (err == 0) err = bpf_map__set_max_entries(t->skel->maps.events, U32(o, "ringBytes", 1u << 22));
  if (err == 0) err = LoadWithSignalsBlocked(t->skel);
  if (err != 0) throw fail(LibbpfError(env, "bpf_object__load", -err));
  t->link = bpf_program__attach_cgroup(t->skel->progs.tcp_chrono_trace, t->cgroup_fd);
  if (t->link == nullptr) throw fail(LibbpfError(env, "bpf_link_create", errno));
  t->rb = ring_buffer__new(bpf_map__fd(t->skel->maps.events), OnEvent, t, nullptr);
  if (t->rb == nullptr) throw fail(LibbpfError(env, "ring_buffer__new", errno));
  // For connections established before the attach: their closes are
  // watched from now on, before traceAdopt follows them.
  t->closed = bpf_program__attach(t->skel->progs.tcp_chrono_closed);
  if (t->closed == nullptr) throw fail(LibbpfError(env, "bpf_link_create (tp_btf/inet_sock_set_state)", errno));
  t->adopt = bpf_program__attach_iter(t->skel->progs.tcp_chrono_adopt, nullptr);
  if (t->adopt == nullptr) throw fail(LibbpfError(env, "bpf_link_create (iter/tcp)", errno));
  return Napi::External<Tracer>::New(env, t, Finalize);
}

// traceConsume(tracer) → Buffer of whole trace_event structs (or null): everything in the ring now.
Napi::Value TraceConsume(const Napi::CallbackInfo& info) {
  Tracer* t = TracerArg(info);
  std::vector<uint8_t> out;
  t->sink = &out;
  int n = ring_buffer__consume(t->rb);
  t->sink = nullptr;
  if (n < 0) throw ErrnoError(info.Env(), "ring_buffer__consume", -n);
  return BufferOrNull(info.Env(), out);
}

// The ring has records: called once per traceWatch (the watcher stops
// itself; readiness is level-triggered, and JavaScript drains before it
// re-arms).
void OnRingReady(uv_poll_t* handle, int status, int) {
  Tracer* t = static_cast<Tracer*>(handle->data);
  uv_poll_stop(handle);
  if (t->skel == nullptr || t->on_ready.IsEmpty()) return;
  Napi::Env env(t->env);
  Napi::HandleScope scope(env);
  try {
    // status < 0: the ring's epoll fd failed (never seen); JavaScript then
    // reads on a timer instead of re-arming.
    t->on_ready.MakeCallback(env.Global(), {Napi::Number::New(env, status < 0 ? status : 0)});
  } catch (const Napi::Error&) {
    // agent/cli/trace.ts catches everything; a throw must not reach the loop.
  }
}

// traceWatch(tracer, onReady): calls onReady(status) once, as soon as the
// ring has a record (at once if it has one now). The BPF side submits with
// the kernel's adaptive wake-up: the first record after the reader caught up
// wakes it, so an idle agent sleeps instead of polling the ring. The tracer
// holds onReady (and what it holds) until traceClose.
Napi::Value TraceWatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tracer* t = TracerArg(info);
  if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "argument 1 must be a function");
  t->on_ready.Reset(info[1].As<Napi::Function>(), 1);
  t->env = env;
  int rc = t->poll == nullptr ? StartPoll(env, ring_buffer__epoll_fd(t->rb), t, OnRingReady, &t->poll)
                              : uv_poll_start(t->poll, UV_READABLE, OnRingReady);
  if (rc != 0) throw ErrnoError(env, "uv_poll_start", -rc);
  return env.Undefined();
}

// traceAdopt(tracer, nsFd): follows the connections of a network namespace
// (nsFd an open namespace file, -1: this process's) established before the
// attach. Entering another namespace needs CAP_SYS_ADMIN (EPERM).
Napi::Value TraceAdopt(const Napi::CallbackInfo& info) {
  Tracer* t = TracerArg(info);
  int ns_fd = static_cast<int>(NumberArg(info, 1, "nsFd"));
  const char* syscall = "";
  int err = RunIter(t->adopt, ns_fd, &syscall);
  if (err != 0) throw ErrnoError(info.Env(), syscall, -err);
  return info.Env().Undefined();
}

// traceAdoptionOver(tracer): no adopted connection is left: the iterator and
// the close tracepoint are detached (nothing on the host calls them now).
Napi::Value TraceAdoptionOver(const Napi::CallbackInfo& info) {
  Tracer* t = TracerArg(info);
  Detach(&t->adopt);
  Detach(&t->closed);
  return info.Env().Undefined();
}

// traceCounters(tracer) → number[TRACE_C_N] summed over CPUs, then the loader's malformed count.
Napi::Value TraceCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Tracer* t = TracerArg(info);
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) throw ErrnoError(env, "libbpf_num_possible_cpus", -ncpu);
  std::vector<uint64_t> per(ncpu);
  Napi::Array out = Napi::Array::New(env, TRACE_C_N + 1);
  int fd = bpf_map__fd(t->skel->maps.counters);
  for (uint32_t i = 0; i < TRACE_C_N; i++) {
    uint64_t sum = 0;
    if (bpf_map_lookup_elem(fd, &i, per.data()) == 0) {
      for (int c = 0; c < ncpu; c++) sum += per[c];
    }
    out.Set(i, Napi::Number::New(env, static_cast<double>(sum)));
  }
  out.Set(static_cast<uint32_t>(TRACE_C_N), Napi::Number::New(env, static_cast<double>(t->malformed)));
  return out;
}

// traceConns(tracer) → Buffer of whole trace_conn structs: every followed connection now.
Napi::Value TraceConns(const Napi::CallbackInfo& info) {
  Tracer* t = TracerArg(info);
  int fd = bpf_map__fd(t->skel->maps.conns);
  std::vector<uint8_t> out;
  uint64_t key = 0, next = 0;
  uint64_t* prev = nullptr;
  trace_conn c;
  // A key deleted meanwhile makes get_next_key start over: bounded by the map size.
  uint32_t budget = bpf_map__max_entries(t->skel->maps.conns) * 2;
  while (budget-- > 0 && bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (bpf_map_lookup_elem(fd, &next, &c) == 0) {
      const uint8_t* p = reinterpret_cast<const uint8_t*>(&c);
      out.insert(out.end(), p, p + sizeof c);
    }
    key = next;
    prev = &key;
  }
  return BufferOrNull(info.Env(), out);
}

// traceClose(tracer): detaches and unloads now (the finalizer would, later).
Napi::Value TraceClose(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), "argument 0 must be a tracer from traceOpen");
  Release(info[0].As<Napi::External<Tracer>>().Data());
  return info.Env().Undefined();
}

}  // namespace

// Where each field sits, for the decoder's test (agent/parse/trace_event.ts
// writes the same offsets by hand: this proves they match the compiler's).
Napi::Value TraceLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#define F(s, f) o.Set(#s "." #f, Napi::Number::New(env, offsetof(s, f)))
  F(trace_event, kind); F(trace_event, lport); F(trace_event, rport); F(trace_event, family); F(trace_event, cookie);
  F(trace_event, now_ns); F(trace_event, laddr); F(trace_event, raddr); F(trace_event, c);
  F(trace_chunk, chunk); F(trace_chunk, first_write_ns); F(trace_chunk, last_write_ns); F(trace_chunk, sched_ns); F(trace_chunk, ack_ns);
  F(trace_chunk, start_key); F(trace_chunk, last_key); F(trace_chunk, writes); F(trace_chunk, pid);
  F(trace_chunk, busy0_us); F(trace_chunk, rwnd0_us); F(trace_chunk, sndbuf0_us); F(trace_chunk, retrans0); F(trace_chunk, sndbuf0); F(trace_chunk, cwnd0); F(trace_chunk, mss0);
  F(trace_chunk, busy1_us); F(trace_chunk, rwnd1_us); F(trace_chunk, sndbuf1_us); F(trace_chunk, retrans1); F(trace_chunk, cwnd1); F(trace_chunk, mss1); F(trace_chunk, srtt1_us);
  F(trace_chunk, rate_delivered1); F(trace_chunk, rate_interval1_us); F(trace_chunk, sndbuf1); F(trace_chunk, wmem_queued1); F(trace_chunk, sampled); F(trace_chunk, comm);
  F(trace_conn, cookie); F(trace_conn, rcv_mark); F(trace_conn, end_key); F(trace_conn, lport); F(trace_conn, rport); F(trace_conn, family); F(trace_conn, has_prev); F(trace_conn, existing);
  F(trace_conn, laddr); F(trace_conn, raddr); F(trace_conn, cur); F(trace_conn, prev);
#undef F
  o.Set("trace_event.size", Napi::Number::New(env, sizeof(trace_event)));
  o.Set("trace_chunk.size", Napi::Number::New(env, sizeof(trace_chunk)));
  o.Set("trace_conn.size", Napi::Number::New(env, sizeof(trace_conn)));
  return o;
}

void InitTrace(Napi::Env env, Napi::Object exports) {
  exports.Set("traceLayout", Napi::Function::New(env, TraceLayout));
  exports.Set("traceOpen", Napi::Function::New(env, TraceOpen));
  exports.Set("traceConsume", Napi::Function::New(env, TraceConsume));
  exports.Set("traceWatch", Napi::Function::New(env, TraceWatch));
  exports.Set("traceCounters", Napi::Function::New(env, TraceCounters));
  exports.Set("traceConns", Napi::Function::New(env, TraceConns));
  exports.Set("traceAdopt", Napi::Function::New(env, TraceAdopt));
  exports.Set("traceAdoptionOver", Napi::Function::New(env, TraceAdoptionOver));
  exports.Set("traceClose", Napi::Function::New(env, TraceClose));
}

}  // namespace chrono
