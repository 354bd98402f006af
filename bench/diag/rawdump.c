// The floor for one poll: a minimal sock_diag dump of all TCP sockets
// (IPv4 then IPv6) with the same request as the agent (same states, same
// INET_DIAG_INFO | CONG | SKMEMINFO extensions), reading and counting the
// messages but decoding nothing.
// Usage: rawdump ITERATIONS  ->  "sockets=N median_ms=X min_ms=Y cpu_ms=Z"
// (cpu: median user+system CPU time of one poll, less sensitive to a busy machine)
//        rawdump ITERATIONS [-4] NETNS_PATH...  (bench/diag/netns.mjs): one
// socket made inside each network namespace (setns, then back), and one
// iteration dumps them all in turn, as watch --netns polls; -4: IPv4 only
// (what the agent dumps where sockstat shows no TCPv6 socket).
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// established, fin-wait-1/2, close-wait, last-ack, closing, listen (as the agent)
#define STATES ((1u << 1) | (1u << 4) | (1u << 5) | (1u << 8) | (1u << 9) | (1u << 11) | (1u << 10))
#define EXT ((1u << (INET_DIAG_INFO - 1)) | (1u << (INET_DIAG_CONG - 1)) | (1u << (INET_DIAG_SKMEMINFO - 1)))

static char buf[64 * 1024];

static long dump(int fd, int family, unsigned seq) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
  } msg;
  memset(&msg, 0, sizeof(msg));
  msg.nlh.nlmsg_len = sizeof(msg);
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.nlh.nlmsg_seq = seq;
  msg.req.sdiag_family = family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_ext = EXT;
  msg.req.idiag_states = STATES;
  if (send(fd, &msg, sizeof(msg), 0) < 0) return -1;
  long n = 0;
  for (;;) {
    ssize_t len = recv(fd, buf, sizeof(buf), 0);
    if (len < 0) return -1;
    int left = (int)len;
    for (struct nlmsghdr* h = (struct nlmsghdr*)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return n;
      if (h->nlmsg_type == NLMSG_ERROR) return -1;
      n++;
    }
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double cpu_ms(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 5;
  if (iters < 1 || iters > 1000) iters = 5;
  int v4only = 0, first = 2;
  if (argc > 2 && strcmp(argv[2], "-4") == 0) v4only = 1, first = 3;
  int nfds = argc > first ? argc - first : 1;
  int* fds = calloc(nfds, sizeof(int));
  if (argc > first) {
    int own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    for (int i = 0; i < nfds; i++) {
      int ns = open(argv[first + i], O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
        perror(argv[first + i]);
        return 1;
      }
      close(ns);
      fds[i] = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
      if (fds[i] < 0) {
        perror("socket");
        return 1;
      }
    }
    if (own < 0 || setns(own, CLONE_NEWNET) < 0) {
      perror("setns back");
      return 1;
    }
    close(own);
  } else {
    fds[0] = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fds[0] < 0) {
      perror("socket");
      return 1;
    }
  }
  double* t = calloc(iters, sizeof(double));
  double* c = calloc(iters, sizeof(double));
  long sockets = 0;
  unsigned seq = 0;
  for (int i = 0; i < iters; i++) {
    double t0 = now_ms(), c0 = cpu_ms();
    long total = 0;
    for (int k = 0; k < nfds; k++) {
      long a = dump(fds[k], AF_INET, ++seq), b = v4only ? 0 : dump(fds[k], AF_INET6, ++seq);
      if (a < 0 || b < 0) {
        perror("dump");
        return 1;
      }
      total += a + b;
    }
    t[i] = now_ms() - t0;
    c[i] = cpu_ms() - c0;
    sockets = total;
  }
  qsort(t, iters, sizeof(double), cmp);
  qsort(c, iters, sizeof(double), cmp);
  printf("sockets=%ld median_ms=%.3f min_ms=%.3f cpu_ms=%.3f\n", sockets, t[iters / 2], t[0], c[iters / 2]);
  return 0;
}
