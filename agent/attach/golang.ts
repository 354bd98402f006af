// Is an executable a Go program? Go's netpoller is edge-triggered and can fail
// a Read with "not pollable" when an event is a bare EPOLLERR
// (golang/go#59545), so attach refuses Go targets unless forced.
//
// Evidence, in order: an ELF section named `.go.buildinfo` (every Go binary
// since 1.13, kept by `-ldflags=-s -w`), a `runtime.buildVersion` symbol in
// .symtab, and, for binaries whose section headers were stripped, the build
// info magic "\xff Go buildinf:" anywhere in the file.
import { closeSync, openSync, readSync } from 'node:fs';

export interface GoEvidence {
  go: boolean;
  /** What gave it away (or why nothing could be said). */
  reason: string;
}

const BUILDINFO_MAGIC = Buffer.from('\xff Go buildinf:', 'latin1');
const SCAN_LIMIT = 512 * 1024 * 1024;

interface Section {
  name: string;
  type: number;
  offset: number;
  size: number;
  link: number;
}

/** Section headers of an ELF file read through `read(buf, offset)`. Returns undefined when not ELF. */
export function elfSections(read: (len: number, offset: number) => Buffer): Section[] | undefined {
  const id = read(64, 0);
  if (id.length < 52 || id.readUInt32BE(0) !== 0x7f454c46) return undefined;
  const is64 = id[4] === 2;
  const le = id[5] !== 2;
  const u16 = (b: Buffer, o: number): number => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (b: Buffer, o: number): number => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const u64 = (b: Buffer, o: number): number => Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
  const shoff = is64 ? u64(id, 0x28) : u32(id, 0x20);
  const shentsize = u16(id, is64 ? 0x3a : 0x2e);
  const shnum = u16(id, is64 ? 0x3c : 0x30);
  const shstrndx = u16(id, is64 ? 0x3e : 0x32);
  if (shoff === 0 || shnum === 0 || shentsize < (is64 ? 64 : 40) || shnum > 65_000) return [];
  const table = read(shentsize * shnum, shoff);
  if (table.length < shentsize * shnum) return [];
  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const o = i * shentsize;
    raw.push({
      nameOff: u32(table, o),
      type: u32(table, o + 4),
      offset: is64 ? u64(table, o + 0x18) : u32(table, o + 0x10),
      size: is64 ? u64(table, o + 0x20) : u32(table, o + 0x14),
      link: u32(table, o + (is64 ? 0x28 : 0x18)),
    });
  }
  const strtab = raw[shstrndx];
  const names = strtab === undefined ? Buffer.alloc(0) : read(Math.min(strtab.size, 1 << 20), strtab.offset);
  return raw.map((s) => {
    let end = s.nameOff;
    while (end < names.length && names[end] !== 0) end++;
    return { name: names.subarray(s.nameOff, end).toString('latin1'), type: s.type, offset: s.offset, size: s.size, link: s.link };
  });
}

/** Whether the file at `path` is a Go executable. Throws the fs error when it cannot be read. */
export function detectGo(path: string): GoEvidence {
  const fd = openSync(path, 'r');
  try {
    const read = (len: number, offset: number): Buffer => {
      const b = Buffer.alloc(len);
      const n = readSync(fd, b, 0, len, offset);
      return b.subarray(0, n);
    };
    const sections = elfSections(read);
    if (sections === undefined) return { go: false, reason: 'not an ELF file' };
    if (sections.some((s) => s.name === '.go.buildinfo')) return { go: true, reason: 'ELF section .go.buildinfo' };
    if (sections.some((s) => s.name === '.gopclntab' || s.name === '.note.go.buildid')) return { go: true, reason: 'ELF Go sections (.gopclntab/.note.go.buildid)' };
    const symtab = sections.find((s) => s.name === '.symtab');
    if (symtab !== undefined) {
      const strtab = sections[symtab.link];
      if (strtab !== undefined && strtab.size < 256 * 1024 * 1024 && read(strtab.size, strtab.offset).includes('\0runtime.buildVersion\0', 0, 'latin1')) {
        return { go: true, reason: 'symbol runtime.buildVersion' };
      }
    }
    if (sections.length > 0) return { go: false, reason: 'no Go build info section or symbol' };
    // Section headers stripped: look for the build info header itself.
    const chunk = 1 << 20;
    let carry = Buffer.alloc(0);
    for (let off = 0; off < SCAN_LIMIT; off += chunk) {
      const b = read(chunk, off);
      if (b.length === 0) break;
      const hay = Buffer.concat([carry, b]);
      if (hay.includes(BUILDINFO_MAGIC)) return { go: true, reason: 'Go build info header in the file' };
      carry = hay.subarray(Math.max(0, hay.length - BUILDINFO_MAGIC.length));
    }
    return { go: false, reason: 'no section headers and no Go build info header' };
  } finally {
    closeSync(fd);
  }
}
