/**
 * Extended attributes (Documentation/filesystems/ext4/attributes.rst; fs/ext4/xattr.h). They
 * live after i_extra_isize in the inode (a 4-byte magic, then entries whose value offsets count
 * from the first entry) and in one block named by i_file_acl (a 32-byte header, entries, values
 * packed at the end, offsets from the block start). Every entry and value is bounds-checked
 * against its area before it is read (ext4_xattr_check_entries).
 */
import { defineStruct, u8, u16, u32 } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc, Incompatible } from '../util/errors.js';
import { decodeName } from '../util/bytes.js';

export const EXT4_XATTR_MAGIC = 0xea020000;
export const XattrHeader = defineStruct('ext4_xattr_header', 32, {
  h_magic: u32(0x0),
  h_refcount: u32(0x4),
  h_blocks: u32(0x8),
  h_hash: u32(0xc),
  h_checksum: u32(0x10),
  h_reserved: u32(0x14),
});
export const XattrIbodyHeader = defineStruct('ext4_xattr_ibody_header', 4, { h_magic: u32(0x0) });
export const XattrEntryView = defineStruct('ext4_xattr_entry', 16, {
  e_name_len: u8(0x0),
  e_name_index: u8(0x1),
  e_value_offs: u16(0x2),
  e_value_inum: u32(0x4),
  e_value_size: u32(0x8),
  e_hash: u32(0xc),
});
const ENTRY_HEADER = 16;

/** e_name_index → prefix (fs/ext4/xattr.c: ext4_xattr_handler_map). */
export const XATTR_PREFIXES: Readonly<Record<number, string>> = {
  1: 'user.', 2: 'system.posix_acl_access', 3: 'system.posix_acl_default', 4: 'trusted.',
  6: 'security.', 7: 'system.', 8: 'system.richacl',
};

export interface XattrEntry {
  /** Full name with prefix, e.g. "user.comment". */
  name: string;
  nameIndex: number;
  /** The name bytes after the prefix. */
  nameBytes: Uint8Array;
  value: Uint8Array;
  hash: number;
}

export interface XattrCtx {
  ino: number;
  blockNr?: number;
  /** Filesystem checksum seed (s_csum_seed); present iff metadata_csum, for blocks. */
  csumSeed?: number;
}

/** EXT4_XATTR_LEN: an entry's size, 4-byte aligned. */
export function xattrEntryLen(nameLen: number): number {
  return (ENTRY_HEADER + nameLen + 3) & ~3;
}

/**
 * Walks the entries of an area. `entries` is where the first entry starts, `valueBase` what
 * e_value_offs counts from, `end` the area's end. Values must lie in [valueBase, end).
 */
function parseEntries(area: Uint8Array, entriesOff: number, valueBase: number, ctx: XattrCtx, what: string): XattrEntry[] {
  const out: XattrEntry[] = [];
  const w = ctx.blockNr !== undefined ? { ino: ctx.ino, block: ctx.blockNr } : { ino: ctx.ino };
  let off = entriesOff;
  // Entries are at least 16 bytes: their count is bounded by the area size.
  while (true) {
    if (off + 4 > area.length) throw new Corrupt(what, `entry list runs off the end at offset ${off}`, w);
    if (area[off] === 0 && area[off + 1] === 0 && area[off + 2] === 0 && area[off + 3] === 0) break;
    if (off + ENTRY_HEADER > area.length) throw new Corrupt(what, `entry at offset ${off} crosses the end`, w);
    const e = new XattrEntryView(area, off);
    const next = off + xattrEntryLen(e.e_name_len);
    if (next > area.length) throw new Corrupt(what, `entry name at offset ${off} crosses the end`, w);
    if (e.e_value_inum !== 0) throw new Incompatible(`xattr values in separate inodes (ea_inode) are not supported (inode ${ctx.ino})`, ['ea_inode']);
    const vstart = valueBase + e.e_value_offs;
    const vend = vstart + e.e_value_size;
    if (e.e_value_size > 0 && (vstart < valueBase || vend > area.length)) {
      throw new Corrupt(what, `value of entry at offset ${off} (offs ${e.e_value_offs}, size ${e.e_value_size}) outside the area`, w);
    }
    const prefix = XATTR_PREFIXES[e.e_name_index];
    if (prefix === undefined) throw new Corrupt(what, `unknown name index ${e.e_name_index}`, w);
    const nameBytes = area.subarray(off + ENTRY_HEADER, off + ENTRY_HEADER + e.e_name_len);
    out.push({
      name: prefix + decodeName(nameBytes), nameIndex: e.e_name_index, nameBytes,
      value: e.e_value_size > 0 ? area.subarray(vstart, vend) : new Uint8Array(0), hash: e.e_hash,
    });
    off = next;
  }
  return out;
}

/** Parses the in-inode area (the bytes after 128 + i_extra_isize). No magic → no xattrs. */
export function parseXattrIbody(area: Uint8Array, ctx: XattrCtx): XattrEntry[] {
  if (area.length < 4 || new XattrIbodyHeader(area, 0).h_magic !== EXT4_XATTR_MAGIC) return [];
  return parseEntries(area, 4, 4, ctx, 'in-inode xattrs');
}

/** crc32c of an xattr block (ext4_xattr_block_csum): block number, then block, csum as 0. */
export function computeXattrBlockCsum(block: Uint8Array, blockNr: number, seed: number): number {
  const nr = new Uint8Array(8);
  const dv = new DataView(nr.buffer);
  dv.setUint32(0, blockNr >>> 0, true);
  dv.setUint32(4, Math.floor(blockNr / 0x1_0000_0000), true);
  const copy = block.slice();
  new XattrHeader(copy, 0).h_checksum = 0;
  return crc32cRaw(crc32cRaw(seed, nr), copy);
}

export function setXattrBlockCsum(block: Uint8Array, blockNr: number, seed: number): void {
  new XattrHeader(block, 0).h_checksum = computeXattrBlockCsum(block, blockNr, seed);
}

/** Parses and verifies an xattr block. */
export function parseXattrBlock(block: Uint8Array, ctx: XattrCtx): XattrEntry[] {
  const h = new XattrHeader(block, 0);
  const w = { ino: ctx.ino, ...(ctx.blockNr !== undefined ? { block: ctx.blockNr } : {}) };
  if (h.h_magic !== EXT4_XATTR_MAGIC) throw new Corrupt('xattr block', `magic 0x${h.h_magic.toString(16)}`, w);
  if (h.h_blocks !== 1) throw new Corrupt('xattr block', `h_blocks ${h.h_blocks}`, w);
  if (ctx.csumSeed !== undefined && ctx.blockNr !== undefined) {
    const computed = computeXattrBlockCsum(block, ctx.blockNr, ctx.csumSeed);
    if (computed !== h.h_checksum) throw new BadCrc('xattr block', h.h_checksum, computed, w);
  }
  return parseEntries(block, 32, 0, ctx, 'xattr block');
}
