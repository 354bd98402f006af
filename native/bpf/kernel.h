/* The few kernel structures trace.bpf.c reads, by name: CO-RE
 * (preserve_access_index) relocates each field to where the running kernel
 * has it, so the object needs no vmlinux.h (3 MB, and names that clash) and
 * runs on any kernel with BTF that has these fields (6.15+ for TX
 * timestamping). Only the fields used are declared. */
#ifndef TCP_CHRONO_KERNEL_H
#define TCP_CHRONO_KERNEL_H

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* The iterator's (iter/tcp) view: sock_common's addresses live in anonymous
 * unions in the kernel; CO-RE finds them by name. */
struct in6_addr___tc {
	__u8 a[16];
};

struct sock_common {
	__u32 skc_daddr;     /* network order */
	__u32 skc_rcv_saddr;
	__u16 skc_dport;     /* network order */
	__u16 skc_num;       /* host order */
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr___tc skc_v6_daddr;
	struct in6_addr___tc skc_v6_rcv_saddr;
};

struct kernfs_node {
	__u64 id; /* the cgroup id (what name_to_handle_at gives for its directory) */
};

struct cgroup {
	int level;             /* 0: the root */
	struct kernfs_node *kn;
	struct cgroup *ancestors[]; /* [0] the root ... [level] itself (6.0+) */
};

struct sock_cgroup_data {
	struct cgroup *cgroup; /* the cgroup-v2 cgroup of the socket's creator */
};

struct sock {
	int sk_sndbuf;
	int sk_wmem_queued;
	struct sock_cgroup_data sk_cgrp_data;
};

struct bpf_iter_meta {
	__u64 session_id;
};

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common; /* NULL: the pass is over */
};

struct tcp_sock {
	__u8 chrono_type;     /* 0 idle, 1 busy, 2 rwnd-limited, 3 sndbuf-limited */
	__u32 chrono_start;   /* jiffies (32 bits) when chrono_type last changed */
	__u32 chrono_stat[3]; /* jiffies in busy-only, rwnd-limited, sndbuf-limited */
	__u32 write_seq;      /* sequence number of the next byte to be queued */
	__u64 bytes_received;
	__u32 snd_cwnd;
	__u32 mss_cache;
	__u32 srtt_us;        /* smoothed RTT << 3, microseconds */
	__u32 total_retrans;
	__u32 rate_delivered;
	__u32 rate_interval_us;
};

struct sk_buff {
	unsigned char *head;
	unsigned int end; /* offset of skb_shared_info from head (64-bit kernels) */
};

struct skb_shared_info {
	__u32 tskey;
};

struct bpf_sock_ops_kern {
	struct sock *sk;
	struct sk_buff *skb;
};

#pragma clang attribute pop

#endif
