// libFuzzer target for the only kernel-byte walk in native code
// (native/netlink_scan.h). Run: scripts/fuzz-native.sh [seconds].
// The first 4 bytes pick the sequence number so the fuzzer reaches both
// the matching and the stale paths; the invariants are checked here, memory
// safety by ASan/UBSan.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../netlink_scan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t seq;
  std::memcpy(&seq, data, 4);
  const chrono::DumpScan r = chrono::ScanDumpDatagram(data + 4, size - 4, seq);
  if (r.error < 0 || r.error >= 4096) std::abort();          // an errno, always
  if (r.error != 0 && r.stale) std::abort();                 // a stale datagram is dropped before its error is read
  return 0;
}
