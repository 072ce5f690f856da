/**
 * Hash-tree directory index blocks (Documentation/filesystems/ext4/directory.rst "Hash Tree
 * Directories"; fs/ext4/namei.c: dx_root, dx_node, dx_probe, ext4_dx_csum). Block 0 of an
 * indexed directory is dx_root: fake '.' and '..' entries, dx_root_info, then a count/limit
 * pair overlaying the first dx_entry's hash. Interior blocks (dx_node) start with a fake empty
 * entry spanning the block. With metadata_csum a dx_tail follows the `limit` entries.
 * parse*() make dx_probe's checks (info length, levels, limit, count) plus ordering, so the
 * lookup that follows can trust the entries.
 */
import { defineStruct, u8, u16, u32 } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc } from '../util/errors.js';
import { DirEntry2, recLenFromDisk, type DirParseCtx } from './dirent.js';
import { DX_HASH_LEGACY, DX_HASH_TEA, DX_HASH_SIPHASH } from './dirhash.js';

export const DxRootInfo = defineStruct('dx_root_info', 8, {
  reserved_zero: u32(0x0),
  hash_version: u8(0x4),
  info_length: u8(0x5),
  indirect_levels: u8(0x6),
  unused_flags: u8(0x7),
});
export const DxCountLimit = defineStruct('dx_countlimit', 4, { limit: u16(0x0), count: u16(0x2) });
export const DxEntryView = defineStruct('dx_entry', 8, { hash: u32(0x0), block: u32(0x4) });
export const DxTail = defineStruct('dx_tail', 8, { dt_reserved: u32(0x0), dt_checksum: u32(0x4) });

/** Offsets inside dx_root: '.' (12 bytes), '..' (12 bytes), info (8 bytes), then entries. */
const ROOT_DOTDOT_OFF = 12;
const ROOT_INFO_OFF = 24;
export const DX_ROOT_ENTRIES_OFF = 32;
/** dx_node: a fake 8-byte entry, then entries. */
export const DX_NODE_ENTRIES_OFF = 8;
const DX_TAIL_SIZE = 8;

export interface DxEntry {
  hash: number;
  /** Logical block of the child inside the directory. */
  block: number;
}

export interface DxParseCtx extends DirParseCtx {
  /** Verify the dx_tail checksum (needs csumSeed). */
  verifyCsum?: boolean;
  /** large_dir allows three levels instead of two. */
  largeDir?: boolean;
}

/** dx_root_limit / dx_node_limit: entries that fit, minus the tail with metadata_csum. */
export function dxLimit(blockSize: number, entriesOff: number, csum: boolean): number {
  return Math.floor((blockSize - entriesOff - (csum ? DX_TAIL_SIZE : 0)) / 8);
}

/** crc32c per ext4_dx_csum: entries up to count, then the tail's reserved word. */
export function computeDxCsum(block: Uint8Array, entriesOff: number, seed: number): number {
  const cl = new DxCountLimit(block, entriesOff);
  const tailOff = entriesOff + cl.limit * 8;
  let c = crc32cRaw(seed, block.subarray(0, entriesOff + cl.count * 8));
  c = crc32cRaw(c, block.subarray(tailOff, tailOff + 4));
  return c;
}

export function setDxCsum(block: Uint8Array, entriesOff: number, seed: number): void {
  const cl = new DxCountLimit(block, entriesOff);
  new DxTail(block, entriesOff + cl.limit * 8).dt_checksum = computeDxCsum(block, entriesOff, seed);
}

function where(ctx: DxParseCtx) {
  return { block: ctx.blockNr, ino: ctx.ino };
}

/** Reads and checks the count/limit and entries at `off`. */
function parseEntries(block: Uint8Array, off: number, ctx: DxParseCtx, what: string): DxEntry[] {
  const csum = ctx.csumSeed !== undefined;
  const cl = new DxCountLimit(block, off);
  const limit = dxLimit(block.length, off, csum);
  if (cl.limit !== limit) throw new Corrupt(what, `limit ${cl.limit}, expected ${limit}`, where(ctx));
  if (cl.count === 0 || cl.count > cl.limit) throw new Corrupt(what, `count ${cl.count} (limit ${cl.limit})`, where(ctx));
  if (csum && ctx.verifyCsum) {
    const tail = new DxTail(block, off + cl.limit * 8);
    const computed = computeDxCsum(block, off, ctx.csumSeed ?? 0);
    if (tail.dt_checksum !== computed) throw new BadCrc(what, tail.dt_checksum, computed, where(ctx));
  }
  const entries: DxEntry[] = [];
  for (let i = 0; i < cl.count; i++) {
    const e = new DxEntryView(block, off + i * 8);
    const hash = i === 0 ? 0 : e.hash;
    const prev = entries[i - 1];
    if (prev !== undefined && hash < prev.hash) throw new Corrupt(what, `entry ${i} hash 0x${hash.toString(16)} below the previous one`, where(ctx));
    entries.push({ hash, block: e.block });
  }
  return entries;
}

/** A fake entry of dx_root ('.' or '..'), shaped like a directory entry. */
export interface DxDotEntry {
  name: Uint8Array;
  ino: number;
  fileType: number;
}

/** Parses block 0 of an indexed directory. */
export function parseDxRoot(block: Uint8Array, ctx: DxParseCtx): {
  dot: DxDotEntry; dotdot: DxDotEntry; hashVersion: number; indirectLevels: number; entries: DxEntry[];
} {
  const dot = new DirEntry2(block, 0);
  const dotdot = new DirEntry2(block, ROOT_DOTDOT_OFF);
  const nameAt = (off: number, len: number): Uint8Array => block.subarray(off + 8, off + 8 + len);
  if (dot.name_len !== 1 || block[8] !== 0x2e || recLenFromDisk(dot.rec_len, block.length) !== 12) {
    throw new Corrupt('dx_root', "first entry is not '.' with rec_len 12", where(ctx));
  }
  if (dotdot.name_len !== 2 || block[20] !== 0x2e || block[21] !== 0x2e) {
    throw new Corrupt('dx_root', "second entry is not '..'", where(ctx));
  }
  const info = new DxRootInfo(block, ROOT_INFO_OFF);
  if (info.info_length !== 8) throw new Corrupt('dx_root', `info_length ${info.info_length}`, where(ctx));
  const maxLevels = ctx.largeDir ? 3 : 2;
  if (info.indirect_levels >= maxLevels) throw new Corrupt('dx_root', `indirect_levels ${info.indirect_levels} (max ${maxLevels - 1})`, where(ctx));
  if (info.unused_flags & 1) throw new Corrupt('dx_root', `unimplemented hash flags 0x${info.unused_flags.toString(16)}`, where(ctx));
  const hv = info.hash_version;
  if (hv < DX_HASH_LEGACY || (hv > DX_HASH_TEA && hv !== DX_HASH_SIPHASH)) throw new Corrupt('dx_root', `hash_version ${hv}`, where(ctx));
  const ft = (d: InstanceType<typeof DirEntry2>): number => (ctx.hasFiletype ? d.file_type : 0);
  return {
    dot: { name: nameAt(0, 1), ino: dot.inode, fileType: ft(dot) },
    dotdot: { name: nameAt(ROOT_DOTDOT_OFF, 2), ino: dotdot.inode, fileType: ft(dotdot) },
    hashVersion: hv,
    indirectLevels: info.indirect_levels,
    entries: parseEntries(block, DX_ROOT_ENTRIES_OFF, ctx, 'dx_root'),
  };
}

/** Parses an interior index block. */
export function parseDxNode(block: Uint8Array, ctx: DxParseCtx): { entries: DxEntry[] } {
  const fake = new DirEntry2(block, 0);
  if (fake.inode !== 0 || recLenFromDisk(fake.rec_len, block.length) !== block.length) {
    throw new Corrupt('dx_node', `fake entry has inode ${fake.inode} rec_len ${fake.rec_len}`, where(ctx));
  }
  return { entries: parseEntries(block, DX_NODE_ENTRIES_OFF, ctx, 'dx_node') };
}
