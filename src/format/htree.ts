/**
 * Hash-tree directory index blocks (Documentation/filesystems/ext4/directory.rst, "Hash Tree
 * Directories"; fs/ext4/namei.c: struct dx_root, dx_node, dx_countlimit, dx_entry, dx_tail,
 * dx_probe(), get_dx_countlimit(), ext4_dx_csum()).
 *
 * Block 0 of an indexed directory is dx_root: a real '.' entry (rec_len 12), a '..' entry whose
 * rec_len (blocksize - 12) hides the rest of the block from linear readers, dx_root_info, then
 * the dx_entry array. Interior blocks (dx_node) start with a fake unused entry spanning the
 * block, then the array. The array's first slot holds dx_countlimit (limit, count) where the
 * first entry's hash would be: entry 0's hash is implicitly 0. With metadata_csum a dx_tail
 * follows the `limit` entries, which is why limit shrinks by one entry.
 *
 * Invariants: parseDxRoot/parseDxNode make dx_probe's checks (hash version, unused flags, levels,
 * limit equal to the computed value, 0 < count <= limit) plus get_dx_countlimit's shape checks
 * and e2fsck's hash ordering, so the lookup that follows can trust every count, hash and block.
 * Child block numbers are masked to 28 bits as dx_get_block() does; checking them against the
 * directory size (and against tree cycles) is the caller's job, since only it knows the size.
 */
import { defineStruct, u8, u16, u32 } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc, hex, type Where } from '../util/errors.js';
import { assert } from '../util/assert.js';
import {
  DirEntry2, DIRENT_HEADER, EXT4_FT_DIR, recLenFromDisk, recLenToDisk, dirEntryMinRecLen, type DirParseCtx,
} from './dirent.js';
import { DX_HASH_LEGACY, DX_HASH_HALF_MD4, DX_HASH_TEA, DX_HASH_SIPHASH } from './dirhash.js';

/** struct dx_root_info: follows the '.' and '..' entries of dx_root. */
export const DxRootInfo = defineStruct('dx_root_info', 8, {
  /** Always 0. */
  reserved_zero: u32(0x0),
  /** DX_HASH_* of the names (0, 1, 2, or 6 for casefolded+encrypted dirs). */
  hash_version: u8(0x4),
  /** Size of this structure: 8. */
  info_length: u8(0x5),
  /** Index levels below the root (0: the root points at leaves). */
  indirect_levels: u8(0x6),
  /** Flags; bit 0 (EXT2_HASH_FLAG_INCOMPAT) makes the kernel refuse the tree. */
  unused_flags: u8(0x7),
});
/** struct dx_countlimit: overlays the first dx_entry's hash. */
export const DxCountLimit = defineStruct('dx_countlimit', 4, {
  /** Entries that fit in the block (including entry 0). */
  limit: u16(0x0),
  /** Entries in use (including entry 0). */
  count: u16(0x2),
});
/** struct dx_entry: a hash and the logical directory block holding names from that hash on. */
export const DxEntryView = defineStruct('dx_entry', 8, {
  /** Lowest hash of the child (bit 0 set: continues a collision run from the previous child). */
  hash: u32(0x0),
  /** Logical block of the child in the directory (low 28 bits used). */
  block: u32(0x4),
});
/** struct dx_tail: the checksum after the `limit` entries, with metadata_csum. */
export const DxTail = defineStruct('dx_tail', 8, {
  dt_reserved: u32(0x0),
  /** ext4_dx_csum(): crc32c(inode seed, header + used entries, then this tail with 0 here). */
  dt_checksum: u32(0x4),
});

/** Offset of '..' in dx_root (after the 12-byte '.'). */
const ROOT_DOTDOT_OFF = dirEntryMinRecLen(1);
/** Offset of dx_root_info (after '.' and '..', 12 bytes each). */
const ROOT_INFO_OFF = ROOT_DOTDOT_OFF + dirEntryMinRecLen(2);
/** Offset of the dx_entry array (count/limit) in dx_root. */
export const DX_ROOT_ENTRIES_OFF = ROOT_INFO_OFF + DxRootInfo.SIZE;
/** Offset of the dx_entry array in dx_node (after the 8-byte fake entry). */
export const DX_NODE_ENTRIES_OFF = DIRENT_HEADER;
export const DX_ENTRY_SIZE = DxEntryView.SIZE;
export const DX_TAIL_SIZE = DxTail.SIZE;
/** Index levels (root included) without and with large_dir (EXT4_HTREE_LEVEL_COMPAT/_LEVEL). */
export const EXT4_HTREE_LEVEL_COMPAT = 2;
export const EXT4_HTREE_LEVEL = 3;
/** dx_get_block() keeps the low 28 bits ("future: high four bits for coalesce-on-delete"). */
export const DX_BLOCK_MASK = 0x0fffffff;
/** dx_root_info.unused_flags bit the kernel refuses. */
export const EXT2_HASH_FLAG_INCOMPAT = 0x1;

/** One index entry, decoded. */
export interface DxEntry {
  /** Lowest hash the child holds; 0 for entry 0. */
  hash: number;
  /** Logical block of the child inside the directory. */
  block: number;
}

export interface DxParseCtx extends DirParseCtx {
  /** false: the block was verified before; skip the checksum (csumSeed still sets the limit). */
  verifyCsum?: boolean;
  /** large_dir allows three index levels instead of two. */
  largeDir?: boolean;
}

/** A fake entry of dx_root ('.' or '..'), shaped like a directory entry. */
export interface DxDotEntry {
  name: Uint8Array;
  ino: number;
  fileType: number;
}

export interface DxRoot {
  dot: DxDotEntry;
  dotdot: DxDotEntry;
  /** dx_root_info.hash_version as stored (the unsigned variants come from s_flags). */
  hashVersion: number;
  indirectLevels: number;
  limit: number;
  entries: DxEntry[];
}

export interface DxNode {
  limit: number;
  entries: DxEntry[];
}

/** dx_root_limit()/dx_node_limit(): entries that fit after `entriesOff`, minus the tail with csum. */
export function dxLimit(blockSize: number, entriesOff: number, csum: boolean): number {
  return Math.floor((blockSize - entriesOff - (csum ? DX_TAIL_SIZE : 0)) / DX_ENTRY_SIZE);
}
export function dxRootLimit(blockSize: number, csum: boolean): number {
  return dxLimit(blockSize, DX_ROOT_ENTRIES_OFF, csum);
}
export function dxNodeLimit(blockSize: number, csum: boolean): number {
  return dxLimit(blockSize, DX_NODE_ENTRIES_OFF, csum);
}

/** Offset of the dx_tail: right after `limit` entries. */
function dxTailOffset(entriesOff: number, limit: number): number {
  return entriesOff + limit * DX_ENTRY_SIZE;
}

/**
 * ext4_dx_csum(): crc32c over the block up to the end of the used entries (count), then over
 * the dx_tail with dt_checksum taken as zero. The unused entries between count and limit are
 * not covered. The caller has checked that the tail lies inside the block.
 */
export function computeDxCsum(block: Uint8Array, entriesOff: number, seed: number): number {
  const cl = new DxCountLimit(block, entriesOff);
  const tailOff = dxTailOffset(entriesOff, cl.limit);
  assert(tailOff + DX_TAIL_SIZE <= block.length, () => `dx_tail at ${tailOff} outside the block`);
  assert(cl.count <= cl.limit, () => `dx count ${cl.count} > limit ${cl.limit}`);
  let c = crc32cRaw(seed, block.subarray(0, entriesOff + cl.count * DX_ENTRY_SIZE));
  c = crc32cRaw(c, block.subarray(tailOff, tailOff + DxTail.offsetOf('dt_checksum')));
  return crc32cRaw(c, ZERO_CSUM);
}
const ZERO_CSUM = new Uint8Array(4);

/** ext4_dx_csum_set(): stores the checksum in the block's dx_tail. */
export function setDxCsum(block: Uint8Array, entriesOff: number, seed: number): void {
  const cl = new DxCountLimit(block, entriesOff);
  new DxTail(block, dxTailOffset(entriesOff, cl.limit)).dt_checksum = computeDxCsum(block, entriesOff, seed);
}

/**
 * is_dx_block() for a block other than 0 of an indexed directory: a dx_node starts with an
 * unused entry whose rec_len spans the block. (An empty leaf looks the same; the kernel tells
 * them apart by where the block was reached from, and so must callers.)
 */
export function looksLikeDxNode(block: Uint8Array): boolean {
  const d = new DirEntry2(block, 0);
  return d.inode === 0 && recLenFromDisk(d.rec_len, block.length) === block.length;
}

function whereOf(ctx: DxParseCtx): Where {
  return { block: ctx.blockNr, ino: ctx.ino };
}

/** Reads and checks the count/limit, the checksum and the entries at `off`. */
function parseEntries(block: Uint8Array, off: number, ctx: DxParseCtx, what: string): { limit: number; entries: DxEntry[] } {
  const csum = ctx.csumSeed !== undefined;
  const cl = new DxCountLimit(block, off);
  const limit = dxLimit(block.length, off, csum);
  if (cl.limit !== limit) throw new Corrupt(what, `limit ${cl.limit} != computed limit ${limit}`, whereOf(ctx));
  if (cl.count === 0 || cl.count > cl.limit) throw new Corrupt(what, `count ${cl.count} beyond limit ${cl.limit}`, whereOf(ctx));
  if (ctx.csumSeed !== undefined && ctx.verifyCsum !== false && ctx.skipCsum !== true) {
    const tail = new DxTail(block, dxTailOffset(off, cl.limit));
    const computed = computeDxCsum(block, off, ctx.csumSeed);
    if (tail.dt_checksum !== computed) throw new BadCrc(what, tail.dt_checksum, computed, whereOf(ctx));
  }
  const entries: DxEntry[] = [];
  let prev = 0;
  // count <= limit <= blockSize / 8: the loop and the array are bounded by the block size.
  for (let i = 0; i < cl.count; i++) {
    const e = new DxEntryView(block, off + i * DX_ENTRY_SIZE);
    const hash = i === 0 ? 0 : e.hash;
    if (hash < prev) {
      throw new Corrupt(what, `entry ${i} hash 0x${hex(hash)} below entry ${i - 1} hash 0x${hex(prev)}`, whereOf(ctx));
    }
    prev = hash;
    entries.push({ hash, block: e.block & DX_BLOCK_MASK });
  }
  return { limit: cl.limit, entries };
}

/** Checks the '.' and '..' entries at the head of dx_root (get_dx_countlimit's shape checks). */
function checkRootDots(block: Uint8Array, ctx: DxParseCtx): void {
  const bs = block.length;
  const dot = new DirEntry2(block, 0);
  const dotLen = recLenFromDisk(dot.rec_len, bs);
  if (dot.name_len !== 1 || block[DIRENT_HEADER] !== 0x2e || dotLen !== ROOT_DOTDOT_OFF) {
    throw new Corrupt('dx_root', `first entry is not '.' with rec_len 12 (name_len ${dot.name_len}, rec_len ${dotLen})`, whereOf(ctx));
  }
  const dd = new DirEntry2(block, ROOT_DOTDOT_OFF);
  const ddLen = recLenFromDisk(dd.rec_len, bs);
  const n = ROOT_DOTDOT_OFF + DIRENT_HEADER;
  if (dd.name_len !== 2 || block[n] !== 0x2e || block[n + 1] !== 0x2e || ddLen !== bs - ROOT_DOTDOT_OFF) {
    throw new Corrupt(
      'dx_root',
      `second entry is not '..' with rec_len ${bs - ROOT_DOTDOT_OFF} (name_len ${dd.name_len}, rec_len ${ddLen})`,
      whereOf(ctx),
    );
  }
}

/** Checks dx_root_info as dx_probe and get_dx_countlimit do. */
function checkRootInfo(info: InstanceType<typeof DxRootInfo>, ctx: DxParseCtx): void {
  const bad = (detail: string): never => {
    throw new Corrupt('dx_root', detail, whereOf(ctx));
  };
  if (info.reserved_zero !== 0) bad(`reserved_zero 0x${hex(info.reserved_zero)}`);
  if (info.info_length !== DxRootInfo.SIZE) bad(`info_length ${info.info_length} != ${DxRootInfo.SIZE}`);
  const hv = info.hash_version;
  if (hv !== DX_HASH_LEGACY && hv !== DX_HASH_HALF_MD4 && hv !== DX_HASH_TEA && hv !== DX_HASH_SIPHASH) {
    bad(`unrecognised hash_version ${hv}`);
  }
  if ((info.unused_flags & EXT2_HASH_FLAG_INCOMPAT) !== 0) bad(`unimplemented hash flags 0x${hex(info.unused_flags)}`);
  const levels = ctx.largeDir === true ? EXT4_HTREE_LEVEL : EXT4_HTREE_LEVEL_COMPAT;
  if (info.indirect_levels >= levels) bad(`indirect_levels ${info.indirect_levels} exceeds ${levels - 1}`);
}

/**
 * Parses and checks block 0 of an indexed directory (dx_probe's root checks). With
 * ctx.csumSeed the limit leaves room for dx_tail and the checksum is verified unless
 * ctx.verifyCsum === false or ctx.skipCsum.
 */
export function parseDxRoot(block: Uint8Array, ctx: DxParseCtx): DxRoot {
  checkRootDots(block, ctx);
  const info = new DxRootInfo(block, ROOT_INFO_OFF);
  checkRootInfo(info, ctx);
  const { limit, entries } = parseEntries(block, DX_ROOT_ENTRIES_OFF, ctx, 'dx_root');
  const dot = new DirEntry2(block, 0);
  const dotdot = new DirEntry2(block, ROOT_DOTDOT_OFF);
  const ft = (d: InstanceType<typeof DirEntry2>): number => (ctx.hasFiletype ? d.file_type : 0);
  return {
    dot: { name: block.subarray(DIRENT_HEADER, DIRENT_HEADER + 1), ino: dot.inode, fileType: ft(dot) },
    dotdot: { name: block.subarray(ROOT_DOTDOT_OFF + DIRENT_HEADER, ROOT_DOTDOT_OFF + DIRENT_HEADER + 2), ino: dotdot.inode, fileType: ft(dotdot) },
    hashVersion: info.hash_version,
    indirectLevels: info.indirect_levels,
    limit,
    entries,
  };
}

/** Parses and checks an interior index block (dx_node). Checksum rules as parseDxRoot. */
export function parseDxNode(block: Uint8Array, ctx: DxParseCtx): DxNode {
  const fake = new DirEntry2(block, 0);
  const len = recLenFromDisk(fake.rec_len, block.length);
  if (fake.inode !== 0 || len !== block.length) {
    throw new Corrupt('dx_node', `fake entry has inode ${fake.inode} and rec_len ${len} (want 0 and ${block.length})`, whereOf(ctx));
  }
  return parseEntries(block, DX_NODE_ENTRIES_OFF, ctx, 'dx_node');
}

/** Arguments of initDxRoot. */
export interface DxRootInit {
  /** The directory's own inode ('.'). */
  dirIno: number;
  /** The parent's inode ('..'). */
  parentIno: number;
  /** DX_HASH_LEGACY, _HALF_MD4 or _TEA (s_def_hash_version). */
  hashVersion: number;
  indirectLevels: number;
  /** metadata_csum: leave room for the dx_tail. */
  csum: boolean;
  /** filetype feature: store EXT4_FT_DIR in the dot entries. */
  hasFiletype: boolean;
}

/**
 * Formats block 0 of an indexed directory as make_indexed_dir() leaves it: '.' (rec_len 12),
 * '..' (rec_len blocksize - 12), dx_root_info, count 0 and the computed limit. The caller then
 * stores entries with setDxEntries and the checksum with setDxCsum.
 */
export function initDxRoot(block: Uint8Array, r: DxRootInit): void {
  const bs = block.length;
  assert(r.indirectLevels >= 0 && r.indirectLevels < EXT4_HTREE_LEVEL, () => `indirect_levels ${r.indirectLevels}`);
  block.fill(0);
  const ft = r.hasFiletype ? EXT4_FT_DIR : 0;
  const dot = new DirEntry2(block, 0);
  dot.inode = r.dirIno;
  dot.rec_len = recLenToDisk(ROOT_DOTDOT_OFF, bs);
  dot.name_len = 1;
  dot.file_type = ft;
  block[DIRENT_HEADER] = 0x2e;
  const dd = new DirEntry2(block, ROOT_DOTDOT_OFF);
  dd.inode = r.parentIno;
  dd.rec_len = recLenToDisk(bs - ROOT_DOTDOT_OFF, bs);
  dd.name_len = 2;
  dd.file_type = ft;
  block[ROOT_DOTDOT_OFF + DIRENT_HEADER] = 0x2e;
  block[ROOT_DOTDOT_OFF + DIRENT_HEADER + 1] = 0x2e;
  const info = new DxRootInfo(block, ROOT_INFO_OFF);
  info.hash_version = r.hashVersion;
  info.info_length = DxRootInfo.SIZE;
  info.indirect_levels = r.indirectLevels;
  new DxCountLimit(block, DX_ROOT_ENTRIES_OFF).limit = dxRootLimit(bs, r.csum);
}

/** Formats an interior index block: the fake spanning entry, count 0 and the computed limit. */
export function initDxNode(block: Uint8Array, csum: boolean): void {
  const bs = block.length;
  block.fill(0);
  new DirEntry2(block, 0).rec_len = recLenToDisk(bs, bs);
  new DxCountLimit(block, DX_NODE_ENTRIES_OFF).limit = dxNodeLimit(bs, csum);
}

/**
 * Stores `entries` (entry 0's hash is not stored: its slot holds count/limit) and the count in
 * the array at `entriesOff` (DX_ROOT_ENTRIES_OFF or DX_NODE_ENTRIES_OFF). The limit must
 * already be set (initDxRoot/initDxNode); entries must be sorted by hash.
 */
export function setDxEntries(block: Uint8Array, entriesOff: number, entries: readonly DxEntry[]): void {
  const cl = new DxCountLimit(block, entriesOff);
  assert(entries.length >= 1 && entries.length <= cl.limit, () => `${entries.length} dx entries for limit ${cl.limit}`);
  let prev = 0;
  entries.forEach((e, i) => {
    assert(e.block >= 0 && e.block <= DX_BLOCK_MASK, () => `dx entry block ${e.block}`);
    const v = new DxEntryView(block, entriesOff + i * DX_ENTRY_SIZE);
    if (i > 0) {
      assert(e.hash >= prev, () => `dx entry ${i} hash 0x${hex(e.hash)} below the previous one`);
      v.hash = e.hash;
      prev = e.hash;
    }
    v.block = e.block;
  });
  // Zero the unused slots so stale entries never reach the disk.
  block.fill(0, entriesOff + entries.length * DX_ENTRY_SIZE, dxTailOffset(entriesOff, cl.limit));
  cl.count = entries.length;
}

/** Changes dx_root_info.indirect_levels (ext4_dx_add_entry adding an index level). */
export function setDxRootIndirectLevels(block: Uint8Array, levels: number): void {
  assert(Number.isInteger(levels) && levels >= 0 && levels < EXT4_HTREE_LEVEL, () => `indirect_levels ${levels}`);
  new DxRootInfo(block, ROOT_INFO_OFF).indirect_levels = levels;
}

/** Changes the inode of dx_root's '..' entry (rename of a directory to a new parent). */
export function setDxRootDotDotIno(block: Uint8Array, ino: number): void {
  new DirEntry2(block, ROOT_DOTDOT_OFF).inode = ino;
}
