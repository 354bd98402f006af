// The one walk over kernel bytes done in native code: does a sock_diag
// datagram end the dump answering `seq`, belong to another (stale) dump, or
// carry the kernel's error? Pure (no syscalls, no alignment assumed) so that
// native/fuzz/netlink_scan_fuzz.cc can fuzz it with libFuzzer.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <linux/netlink.h>

namespace chrono {

struct DumpScan {
  bool done = false;   // NLMSG_DONE, or an ACK
  bool stale = false;  // a message of another sequence number: drop the datagram
  int error = 0;       // errno of an NLMSG_ERROR, 0 if none
};

inline DumpScan ScanDumpDatagram(const uint8_t* buf, size_t len, uint32_t seq) {
  DumpScan r;
  size_t off = 0;
  while (len - off >= sizeof(nlmsghdr)) {
    nlmsghdr h;
    std::memcpy(&h, buf + off, sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > len - off) break;  // NLMSG_OK
    if (h.nlmsg_seq != seq) {
      r.stale = true;
      break;
    }
    if (h.nlmsg_type == NLMSG_DONE) r.done = true;
    if (h.nlmsg_type == NLMSG_ERROR) {
      if (h.nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
        int e;
        std::memcpy(&e, buf + off + NLMSG_HDRLEN, sizeof e);
        if (e != 0) {
          // The kernel sends -errno; anything else is malformed (and -INT_MIN overflows).
          r.error = e < 0 && e > -4096 ? -e : EPROTO;
          return r;
        }
      }
      r.done = true;  // an ACK ends the exchange too
    }
    size_t step = NLMSG_ALIGN(h.nlmsg_len);
    if (step >= len - off) break;
    off += step;
  }
  return r;
}

}  // namespace chrono
