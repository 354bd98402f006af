/* The records the trace program (trace.bpf.c) hands to user space through
 * its ring buffer, and the per-socket state user space reads for stalls.
 * Shared by the BPF side, the loader (native/trace.cc) and the decoder
 * (agent/parse/trace_event.ts): fixed-width types only, explicit padding. */
#ifndef TCP_CHRONO_TRACE_H
#define TCP_CHRONO_TRACE_H

/* Chunk boundaries (const volatile chunk_mode). */
#define TRACE_CHUNKS_RESPONSE 0 /* writes between two increases of bytes_received */
#define TRACE_CHUNKS_WRITE 1    /* each sendmsg/sendfile hand-over */
#define TRACE_CHUNKS_IDLE 2     /* writes separated by less than idle_ns of sender idleness */

/* Record kinds. */
#define TRACE_EV_ACKED 1  /* every byte of the chunk written so far is acknowledged */
#define TRACE_EV_CLOSED 2 /* the socket closed with the chunk not all acknowledged */
#define TRACE_EV_SUPERSEDED 3 /* two later chunks began before its last byte was acknowledged: given up */

#define TRACE_MAX_PORT_RANGES 8

/* Counters (index into the per-CPU array `counters`). */
#define TRACE_C_SOCKETS 0     /* connections switched on */
#define TRACE_C_WRITES 1      /* hand-overs seen on switched-on connections */
#define TRACE_C_CHUNKS 2      /* chunks begun */
#define TRACE_C_RECORDS 3     /* records handed to the ring buffer */
#define TRACE_C_RINGBUF_LOST 4 /* records lost: the ring buffer was full */
#define TRACE_C_MAP_FULL 5    /* connections not followed: the socket map was full */
#define TRACE_C_ENABLE_FAILED 6 /* bpf_setsockopt / enable_tx_tstamp refused */
#define TRACE_C_UNSAMPLED 7   /* chunks skipped by --sample */
#define TRACE_C_SUPERSEDED 8  /* chunks given up: two later ones began before its ACK */
#define TRACE_C_EXISTING 9    /* connections open before the program, switched on by tcp_chrono_adopt (also in SOCKETS) */
#define TRACE_C_N 10

/* One chunk: its writes, and its end as the kernel saw it. */
struct trace_chunk {
	__u64 chunk;          /* sequence number on the connection (0, 1, ...) */
	__u64 first_write_ns; /* bpf_ktime_get_ns() of the first hand-over */
	__u64 last_write_ns;
	__u64 sched_ns;       /* SCHED of the last byte written (0: not yet) */
	__u64 ack_ns;         /* ACK of the last byte written (0: not yet) */
	__u32 start_key;      /* TCP sequence number of the byte before the chunk */
	__u32 last_key;       /* ... of its last byte written */
	__u32 writes;
	__u32 pid;
	/* at the first hand-over: chronographs (microseconds), buffer, window */
	__u64 busy0_us, rwnd0_us, sndbuf0_us;
	__u32 retrans0, sndbuf0, cwnd0, mss0;
	/* at the ACK of the last byte (or at the report, for a chunk not acked) */
	__u64 busy1_us, rwnd1_us, sndbuf1_us;
	__u32 retrans1, cwnd1, mss1, srtt1_us;
	__u32 rate_delivered1, rate_interval1_us, sndbuf1, wmem_queued1;
	__u8 sampled;
	__u8 pad[7];
	char comm[16];
};

struct trace_conn {
	__u64 cookie;
	__u64 rcv_mark;   /* bytes_received when the open chunk began */
	__u32 end_key;    /* key of the last byte written on the connection */
	__u16 lport, rport;
	__u16 family;
	__u8 has_prev;
	/* Open before the program was attached (followed from tcp_chrono_adopt):
	 * its close comes from tcp_chrono_closed, not from the STATE callback. */
	__u8 existing;
	__u8 pad0[4];
	__u8 laddr[16], raddr[16];
	struct trace_chunk cur;  /* the open chunk */
	struct trace_chunk prev; /* the one before, while its last byte is unacknowledged */
};

struct trace_event {
	__u32 kind;
	__u16 lport, rport;
	__u16 family;
	__u16 pad0;
	__u32 pad1;
	__u64 cookie;
	__u64 now_ns;
	__u8 laddr[16], raddr[16];
	struct trace_chunk c;
};

#endif
