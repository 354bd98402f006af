// SPDX-License-Identifier: GPL-2.0
/* tcp-chronograph trace: per-chunk delivery records for every TCP connection
 * of a cgroup, from BPF TX timestamping (Linux 6.15+), aggregated here so
 * that user space gets about one record per chunk, not one per packet.
 *
 * Per connection (a hash map keyed by socket cookie, so user space can scan
 * it for stalled chunks; entries are deleted when the socket closes):
 *  - ESTABLISHED: the connection is followed if its local port is watched;
 *    TX timestamping and the state callback are switched on for it.
 *  - TSTAMP_SENDMSG (the writer's context, once per sendmsg/sendfile):
 *    a new chunk begins where --chunks says (an increase of bytes_received
 *    for responses); this hand-over's SCHED and ACK are asked for, and its
 *    key (the TCP sequence number of its last byte) is the chunk's end so far.
 *  - TSTAMP_SCHED / TSTAMP_ACK: when the key reaches the chunk's end so far,
 *    the SCHED time is kept / an ACKED record goes out with the chunk's
 *    chronograph deltas (read from tcp_sock as tcp_get_info does).
 *  - STATE (to CLOSE): a chunk not all acknowledged goes out as CLOSED; the
 *    entry is deleted.
 * Connections already open when the program is attached are never called at
 * ESTABLISHED: the loader runs tcp_chrono_adopt (iter/tcp) once in every
 * network namespace right after attaching, and it follows them as
 * ESTABLISHED would (their TSTAMP callbacks then come from their next write).
 * It cannot switch the STATE callback on for them (no
 * bpf_sock_ops_cb_flags_set outside sockops, and the TSTAMP callbacks run
 * unlocked), so tcp_chrono_closed, on the inet_sock_set_state tracepoint,
 * closes them as STATE would. The loader attaches it before the adoption
 * and detaches it once the last adopted connection is gone: meanwhile it
 * costs one early return per TCP state change on the host.
 * Settings are const volatile (set before load): the verifier prunes what a
 * run does not use. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "kernel.h"
#include "trace.h"

char LICENSE[] SEC("license") = "GPL";

/* Not in the uapi headers of older distributions (values from Linux 6.15). */
#define OP_ACTIVE_ESTABLISHED 4
#define OP_PASSIVE_ESTABLISHED 5
#define OP_STATE 10
#define OP_TSTAMP_SCHED 16
#define OP_TSTAMP_ACK 19
#define OP_TSTAMP_SENDMSG 20
#define OPT_SK_BPF_CB_FLAGS 1009
#define OPT_SK_BPF_CB_TX_TIMESTAMPING 1
#define FLAG_STATE_CB 4
#define TCP_STATE_ESTABLISHED 1
#define TCP_STATE_CLOSE 7
#define MAX_CGROUP_LEVEL 32
#define SOL_SOCKET_ 1
#define AF_INET_ 2
#define AF_INET6_ 10
#define EEXIST_ 17

const volatile __u32 chunk_mode = TRACE_CHUNKS_RESPONSE;
const volatile __u64 idle_ns = 0;
const volatile __u32 sample_every = 1;
const volatile __u32 n_port_ranges = 0; /* 0: every port */
const volatile __u16 port_from[TRACE_MAX_PORT_RANGES] = {};
const volatile __u16 port_to[TRACE_MAX_PORT_RANGES] = {};
const volatile __u32 only_tgid = 0; /* 0: every process */
/* The cgroup the program is attached to (its id): the iterator follows only
 * sockets of its subtree, as the cgroup attachment does. 0: every socket. */
const volatile __u64 traced_cgroup = 0;


extern unsigned int CONFIG_HZ __kconfig;
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
extern int bpf_sock_ops_enable_tx_tstamp(struct bpf_sock_ops_kern *skops, __u64 flags) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by the loader (--max-sockets) */
	__type(key, __u64);
	__type(value, struct trace_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by the loader */
} events SEC(".maps");

/* A new connection's entry is built here (it is larger than the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace_conn);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TRACE_C_N);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &i);
	if (v)
		*v += 1;
}

static __always_inline int port_watched(__u32 port)
{
	if (n_port_ranges == 0)
		return 1;
#pragma unroll
	for (int i = 0; i < TRACE_MAX_PORT_RANGES; i++) {
		if (i < n_port_ranges && port >= port_from[i] && port <= port_to[i])
			return 1;
	}
	return 0;
}

/* The chronographs as tcp_get_info() reports them, microseconds. */
struct chrono {
	__u64 busy, rwnd, sndbuf;
};

static __always_inline void read_chrono(struct bpf_sock_ops *skops, struct chrono *c)
{
	struct bpf_sock *sk = skops->sk;
	struct tcp_sock *tp;
	__u64 stat[3];
	__u32 type, start, now;
	__u64 us_per_jiffy = 1000000 / CONFIG_HZ;

	c->busy = c->rwnd = c->sndbuf = 0;
	if (!sk)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	stat[0] = tp->chrono_stat[0];
	stat[1] = tp->chrono_stat[1];
	stat[2] = tp->chrono_stat[2];
	type = tp->chrono_type;
	start = tp->chrono_start;
	now = (__u32)bpf_jiffies64();
	if (type == 1)
		stat[0] += (__u32)(now - start);
	else if (type == 2)
		stat[1] += (__u32)(now - start);
	else if (type == 3)
		stat[2] += (__u32)(now - start);
	c->busy = (stat[0] + stat[1] + stat[2]) * us_per_jiffy;
	c->rwnd = stat[1] * us_per_jiffy;
	c->sndbuf = stat[2] * us_per_jiffy;
}

static __always_inline struct tcp_sock *tcp_of(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	return sk ? bpf_skc_to_tcp_sock(sk) : 0;
}

/* Bytes received on the connection. Read from tcp_sock: the TSTAMP callbacks
 * run without the socket lock, so the context's tcp_sock fields read 0 there. */
static __always_inline __u64 received(struct bpf_sock_ops *skops)
{
	struct tcp_sock *tp = tcp_of(skops);

	return tp ? tp->bytes_received : 0;
}

/* The key (TCP sequence number) of the last byte queued on the socket:
 * at TSTAMP_SENDMSG, the last byte of this hand-over (what the kernel puts
 * in its tskey). */
static __always_inline __u32 queued_key(struct bpf_sock_ops *skops)
{
	struct tcp_sock *tp = tcp_of(skops);

	return tp ? tp->write_seq - 1 : 0;
}

/* The key of the skb a TSTAMP callback is about: the last byte of the
 * hand-over its timestamps were asked for. */
static __always_inline __u32 skb_key(struct bpf_sock_ops *skops)
{
	struct bpf_sock_ops_kern *k = bpf_cast_to_kern_ctx(skops);
	struct sk_buff *skb = k->skb;
	struct skb_shared_info *sh;

	if (!skb)
		return 0;
	sh = bpf_rdonly_cast(skb->head + skb->end, bpf_core_type_id_kernel(struct skb_shared_info));
	return sh->tskey;
}

/* The state of the chunk's end: chronographs, window, buffer, rate. */
static __always_inline void snapshot_end(struct bpf_sock_ops *skops, struct trace_chunk *c)
{
	struct chrono ch;
	struct tcp_sock *tp = tcp_of(skops);

	read_chrono(skops, &ch);
	c->busy1_us = ch.busy;
	c->rwnd1_us = ch.rwnd;
	c->sndbuf1_us = ch.sndbuf;
	if (tp) {
		c->retrans1 = tp->total_retrans;
		c->cwnd1 = tp->snd_cwnd;
		c->mss1 = tp->mss_cache;
		c->srtt1_us = tp->srtt_us >> 3;
		c->rate_delivered1 = tp->rate_delivered;
		c->rate_interval1_us = tp->rate_interval_us;
		/* tcp_sock begins with its struct sock */
		c->sndbuf1 = ((struct sock *)tp)->sk_sndbuf;
		c->wmem_queued1 = ((struct sock *)tp)->sk_wmem_queued;
	}
}

static __always_inline void follow(struct bpf_sock_ops *skops)
{
	__u32 zero = 0;
	struct trace_conn *cp;
	__u64 cookie;
	int on = OPT_SK_BPF_CB_TX_TIMESTAMPING;

	if (!port_watched(skops->local_port))
		return;
	cp = bpf_map_lookup_elem(&scratch, &zero);
	if (!cp)
		return;
	__builtin_memset(cp, 0, sizeof(*cp));
#define c (*cp)
	cookie = bpf_get_socket_cookie(skops);
	c.cookie = cookie;
	c.lport = skops->local_port;
	c.rport = bpf_ntohs(skops->remote_port >> 16);
	c.family = skops->family;
	if (skops->family == AF_INET_) {
		__u32 l = skops->local_ip4, r = skops->remote_ip4;
		__builtin_memcpy(c.laddr, &l, 4);
		__builtin_memcpy(c.raddr, &r, 4);
	} else {
		/* One 4-byte context read each: the verifier refuses wider ones,
		 * which the compiler would otherwise merge them into. */
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u32 l = skops->local_ip6[i];
			barrier_var(l);
			__u32 r = skops->remote_ip6[i];
			barrier_var(r);
			__builtin_memcpy(c.laddr + 4 * i, &l, 4);
			__builtin_memcpy(c.raddr + 4 * i, &r, 4);
		}
	}
	c.rcv_mark = received(skops);
	c.end_key = queued_key(skops);
	c.cur.chunk = (__u64)-1; /* the first hand-over begins chunk 0 */
#undef c
	/* BPF_ANY: an entry the iterator made for the socket a moment ago is
	 * replaced by this one (with the STATE callback, it is not `existing`). */
	if (bpf_map_update_elem(&conns, &cookie, cp, BPF_ANY)) {
		count(TRACE_C_MAP_FULL);
		return;
	}
	if (bpf_setsockopt(skops, SOL_SOCKET_, OPT_SK_BPF_CB_FLAGS, &on, sizeof(on))) {
		count(TRACE_C_ENABLE_FAILED);
		bpf_map_delete_elem(&conns, &cookie);
		return;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | FLAG_STATE_CB);
	count(TRACE_C_SOCKETS);
}

static __always_inline void emit(struct trace_conn *conn, struct trace_chunk *c, __u32 kind, __u64 now)
{
	struct trace_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(TRACE_C_RINGBUF_LOST);
		return;
	}
	e->kind = kind;
	e->lport = conn->lport;
	e->rport = conn->rport;
	e->family = conn->family;
	e->pad0 = 0;
	e->pad1 = 0;
	e->cookie = conn->cookie;
	e->now_ns = now;
	__builtin_memcpy(e->laddr, conn->laddr, 16);
	__builtin_memcpy(e->raddr, conn->raddr, 16);
	__builtin_memcpy(&e->c, c, sizeof(*c));
	bpf_ringbuf_submit(e, 0);
	count(TRACE_C_RECORDS);
}

static __always_inline void begin_chunk(struct bpf_sock_ops *skops, struct trace_conn *conn, __u64 now, __u32 tgid)
{
	struct trace_chunk *c = &conn->cur;
	struct chrono ch;
	struct tcp_sock *tp = tcp_of(skops);
	__u64 next = c->chunk + 1;

	if (next != 0 && c->sampled) {
		if (c->ack_ns != 0) {
			/* Every byte of it acknowledged: it is complete. */
			emit(conn, c, TRACE_EV_ACKED, now);
		} else {
			/* Its end is in flight: it waits in prev for its ACK; the one
			 * waiting there already is given up (pipelined requests). */
			if (conn->has_prev) {
				snapshot_end(skops, &conn->prev);
				emit(conn, &conn->prev, TRACE_EV_SUPERSEDED, now);
				count(TRACE_C_SUPERSEDED);
			}
			__builtin_memcpy(&conn->prev, c, sizeof(*c));
			conn->has_prev = 1;
		}
	}
	__builtin_memset(c, 0, sizeof(*c));
	c->chunk = next;
	conn->rcv_mark = received(skops);
	c->first_write_ns = now;
	c->start_key = conn->end_key;
	c->sampled = sample_every <= 1 || (next % sample_every) == 0;
	if (!c->sampled) {
		count(TRACE_C_UNSAMPLED);
		return;
	}
	read_chrono(skops, &ch);
	c->busy0_us = ch.busy;
	c->rwnd0_us = ch.rwnd;
	c->sndbuf0_us = ch.sndbuf;
	if (tp) {
		c->retrans0 = tp->total_retrans;
		c->cwnd0 = tp->snd_cwnd;
		c->mss0 = tp->mss_cache;
		c->sndbuf0 = ((struct sock *)tp)->sk_sndbuf;
	}
	c->pid = tgid;
	bpf_get_current_comm(c->comm, sizeof(c->comm));
	count(TRACE_C_CHUNKS);
}

static __always_inline void on_sendmsg(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct trace_conn *conn = bpf_map_lookup_elem(&conns, &cookie);
	struct trace_chunk *c;
	__u64 now = bpf_ktime_get_ns();
	__u32 tgid, key;
	int begin;

	if (!conn)
		return;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (only_tgid != 0 && tgid != only_tgid)
		return;
	count(TRACE_C_WRITES);
	c = &conn->cur;
	key = queued_key(skops);
	if (c->chunk == (__u64)-1 || chunk_mode == TRACE_CHUNKS_WRITE)
		begin = 1;
	else if (chunk_mode == TRACE_CHUNKS_IDLE)
		/* everything written was acknowledged, and nothing since for idle_ns */
		begin = c->ack_ns != 0 && now - c->ack_ns > idle_ns;
	else
		begin = received(skops) != conn->rcv_mark;
	if (begin)
		begin_chunk(skops, conn, now, tgid);
	conn->end_key = key;
	c->last_write_ns = now;
	c->last_key = key;
	c->writes += 1;
	c->sched_ns = 0;
	c->ack_ns = 0;
	if (c->sampled && bpf_sock_ops_enable_tx_tstamp(bpf_cast_to_kern_ctx(skops), 0))
		count(TRACE_C_ENABLE_FAILED);
}

/* Keys wrap: a key is at or past `end` when their signed difference is >= 0. */
#define AT_OR_PAST(key, end) ((__s32)((key) - (end)) >= 0)

static __always_inline void on_tstamp(struct bpf_sock_ops *skops, int ack)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct trace_conn *conn = bpf_map_lookup_elem(&conns, &cookie);
	__u64 now;
	__u32 key;

	if (!conn)
		return;
	key = skb_key(skops);
	now = bpf_ktime_get_ns();
	if (conn->has_prev && AT_OR_PAST(key, conn->prev.last_key)) {
		if (!ack) {
			if (conn->prev.sched_ns == 0)
				conn->prev.sched_ns = now;
		} else {
			conn->prev.ack_ns = now;
			snapshot_end(skops, &conn->prev);
			emit(conn, &conn->prev, TRACE_EV_ACKED, now);
			conn->has_prev = 0;
		}
	}
	if (conn->cur.sampled && conn->cur.writes > 0 && AT_OR_PAST(key, conn->cur.last_key)) {
		if (!ack) {
			conn->cur.sched_ns = now;
		} else {
			conn->cur.ack_ns = now;
			snapshot_end(skops, &conn->cur);
		}
	}
}

/* The connection is closing: its chunks go out (the one in flight as CLOSED;
 * the open one as ACKED if all acknowledged, else CLOSED), the entry goes.
 * skops is 0 for an adopted connection (tcp_chrono_closed): no end snapshot then. */
static __always_inline void finish(struct bpf_sock_ops *skops, struct trace_conn *conn, __u64 *cookie)
{
	__u64 now = bpf_ktime_get_ns();

	if (conn->has_prev) {
		if (skops)
			snapshot_end(skops, &conn->prev);
		emit(conn, &conn->prev, TRACE_EV_CLOSED, now);
	}
	if (conn->cur.chunk != (__u64)-1 && conn->cur.sampled && conn->cur.writes > 0) {
		if (conn->cur.ack_ns != 0) {
			emit(conn, &conn->cur, TRACE_EV_ACKED, now);
		} else {
			if (skops)
				snapshot_end(skops, &conn->cur);
			emit(conn, &conn->cur, TRACE_EV_CLOSED, now);
		}
	}
	bpf_map_delete_elem(&conns, cookie);
}

static __always_inline void on_state(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct trace_conn *conn;

	if (skops->args[1] != TCP_STATE_CLOSE)
		return;
	cookie = bpf_get_socket_cookie(skops);
	conn = bpf_map_lookup_elem(&conns, &cookie);
	if (!conn)
		return;
	finish(skops, conn, &cookie);
}

SEC("sockops")
int tcp_chrono_trace(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case OP_PASSIVE_ESTABLISHED:
	case OP_ACTIVE_ESTABLISHED:
		follow(skops);
		break;
	case OP_TSTAMP_SENDMSG:
		on_sendmsg(skops);
		break;
	case OP_TSTAMP_SCHED:
		on_tstamp(skops, 0);
		break;
	case OP_TSTAMP_ACK:
		on_tstamp(skops, 1);
		break;
	case OP_STATE:
		on_state(skops);
		break;
	}
	return 1;
}

/* Whether the socket's cgroup is the traced one or below it. */
static __always_inline int in_traced_cgroup(struct sock *sk)
{
	struct cgroup *cg, *a;
	__u64 ancestors;
	int level;

	if (traced_cgroup == 0)
		return 1;
	cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	if (!cg)
		return 0;
	level = BPF_CORE_READ(cg, level);
	ancestors = (__u64)cg + bpf_core_field_offset(struct cgroup, ancestors);
	for (int i = 0; i < MAX_CGROUP_LEVEL; i++) {
		if (i > level)
			break;
		a = 0;
		bpf_probe_read_kernel(&a, sizeof(a), (void *)(ancestors + i * sizeof(a)));
		if (a && BPF_CORE_READ(a, kn, id) == traced_cgroup)
			return 1;
	}
	return 0;
}

/* follow() for a connection established before the program was attached. */
static __always_inline void adopt(struct sock_common *skc, struct tcp_sock *tp, __u64 cookie)
{
	__u32 zero = 0;
	struct trace_conn *cp;
	int on = OPT_SK_BPF_CB_TX_TIMESTAMPING;
	__u16 family = BPF_CORE_READ(skc, skc_family);
	long err;

	if (BPF_CORE_READ(skc, skc_state) != TCP_STATE_ESTABLISHED)
		return;
	if (family != AF_INET_ && family != AF_INET6_)
		return;
	if (!port_watched(BPF_CORE_READ(skc, skc_num)))
		return;
	if (!in_traced_cgroup((struct sock *)tp))
		return;
	cp = bpf_map_lookup_elem(&scratch, &zero);
	if (!cp)
		return;
	__builtin_memset(cp, 0, sizeof(*cp));
	cp->cookie = cookie;
	cp->lport = BPF_CORE_READ(skc, skc_num);
	cp->rport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	cp->family = family;
	if (family == AF_INET_) {
		__u32 l = BPF_CORE_READ(skc, skc_rcv_saddr), r = BPF_CORE_READ(skc, skc_daddr);
		__builtin_memcpy(cp->laddr, &l, 4);
		__builtin_memcpy(cp->raddr, &r, 4);
	} else {
		BPF_CORE_READ_INTO(&cp->laddr, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&cp->raddr, skc, skc_v6_daddr);
	}
	cp->rcv_mark = tp->bytes_received;
	cp->end_key = tp->write_seq - 1;
	cp->cur.chunk = (__u64)-1;
	cp->existing = 1;
	/* BPF_NOEXIST: a socket the sockops program follows already stays its. */
	err = bpf_map_update_elem(&conns, &cookie, cp, BPF_NOEXIST);
	if (err) {
		if (err != -EEXIST_)
			count(TRACE_C_MAP_FULL);
		return;
	}
	if (bpf_setsockopt(tp, SOL_SOCKET_, OPT_SK_BPF_CB_FLAGS, &on, sizeof(on))) {
		count(TRACE_C_ENABLE_FAILED);
		bpf_map_delete_elem(&conns, &cookie);
		return;
	}
	count(TRACE_C_SOCKETS);
	count(TRACE_C_EXISTING);
}

/* One pass over the TCP sockets of the reader's network namespace (the
 * loader reads it to its end, once per namespace, right after attaching):
 * follows the connections established before the attach. One the sockops
 * program already follows stays its. */
SEC("iter/tcp")
int tcp_chrono_adopt(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	__u64 cookie;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	cookie = bpf_get_socket_cookie(tp);
	if (bpf_map_lookup_elem(&conns, &cookie))
		return 0;
	adopt(skc, tp, cookie);
	return 0;
}

/* A connection adopt() followed is closing (tcp_set_state to CLOSE, where
 * the STATE callback would come): its chunks go out, its entry goes. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_chrono_closed, const struct sock *sk, int oldstate, int newstate)
{
	struct trace_conn *conn;
	__u64 cookie;

	if (newstate != TCP_STATE_CLOSE)
		return 0;
	cookie = bpf_get_socket_cookie((void *)sk);
	conn = bpf_map_lookup_elem(&conns, &cookie);
	if (conn && conn->existing)
		finish(0, conn, &cookie);
	return 0;
}
