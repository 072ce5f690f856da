/**
 * Extent tree nodes (Documentation/filesystems/ext4/ifork.rst; fs/ext4/ext4_extents.h). A node
 * is a 12-byte header, then eh_max entries of 12 bytes: indexes (ei_*) when eh_depth > 0, leaf
 * extents (ee_*) at depth 0. Tree blocks end with a 4-byte tail holding crc32c. ee_len above
 * 32768 marks an unwritten extent: only eeActualLen()/isUnwritten() read ee_len, so no caller can
 * forget the mask (the survey found two readers that did). validateExtentNode() is the kernel's
 * __ext4_ext_check: magic, depth, counts, ordering and bounds, before anything trusts a node.
 */
import { defineStruct, u16, u32 } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc, hex } from '../util/errors.js';
import { assert } from '../util/assert.js';

export const EXT4_EXT_MAGIC = 0xf30a;
/** Longest initialized extent, and longest unwritten extent. */
export const EXT_INIT_MAX_LEN = 32768;
export const EXT_UNWRITTEN_MAX_LEN = 32767;
/** The kernel never builds deeper trees (EXT4_MAX_EXTENT_DEPTH). */
export const EXT4_MAX_EXTENT_DEPTH = 5;
export const EXT_ENTRY_SIZE = 12;

export const ExtentHeader = defineStruct('ext4_extent_header', 12, {
  eh_magic: u16(0x0),
  eh_entries: u16(0x2),
  eh_max: u16(0x4),
  eh_depth: u16(0x6),
  eh_generation: u32(0x8),
});
export const ExtentIdx = defineStruct('ext4_extent_idx', 12, {
  ei_block: u32(0x0),
  ei_leaf_lo: u32(0x4),
  ei_leaf_hi: u16(0x8),
  ei_unused: u16(0xa),
});
export const Extent = defineStruct('ext4_extent', 12, {
  ee_block: u32(0x0),
  ee_len: u16(0x4),
  ee_start_hi: u16(0x6),
  ee_start_lo: u32(0x8),
});
export const ExtentTail = defineStruct('ext4_extent_tail', 4, { et_checksum: u32(0x0) });

export type ExtentHeaderView = InstanceType<typeof ExtentHeader>;
export type ExtentIdxView = InstanceType<typeof ExtentIdx>;
export type ExtentView = InstanceType<typeof Extent>;

/** Length in blocks, with the unwritten bit masked off (ext4_ext_get_actual_len). */
export function eeActualLen(e: ExtentView): number {
  return e.ee_len <= EXT_INIT_MAX_LEN ? e.ee_len : e.ee_len - EXT_INIT_MAX_LEN;
}
/** True for an unwritten (preallocated, reads as zeros) extent. */
export function isUnwritten(e: ExtentView): boolean {
  return e.ee_len > EXT_INIT_MAX_LEN;
}
/** Sets length and state together (the only writer of ee_len). */
export function setExtentLen(e: ExtentView, len: number, unwritten: boolean): void {
  assert(len > 0, 'extent length must be positive');
  assert(len <= (unwritten ? EXT_UNWRITTEN_MAX_LEN : EXT_INIT_MAX_LEN), () => `extent length ${len} too long`);
  e.ee_len = unwritten ? len + EXT_INIT_MAX_LEN : len;
}
/** Physical start block (48 bits). */
export function eePblk(e: ExtentView): number {
  return e.ee_start_hi * 0x1_0000_0000 + e.ee_start_lo;
}
export function setEePblk(e: ExtentView, p: number): void {
  e.ee_start_lo = p >>> 0;
  e.ee_start_hi = Math.floor(p / 0x1_0000_0000);
}
/** Physical block of the child node (48 bits). */
export function eiLeaf(i: ExtentIdxView): number {
  return i.ei_leaf_hi * 0x1_0000_0000 + i.ei_leaf_lo;
}
export function setEiLeaf(i: ExtentIdxView, p: number): void {
  i.ei_leaf_lo = p >>> 0;
  i.ei_leaf_hi = Math.floor(p / 0x1_0000_0000);
}

/** Most entries that fit in a node of `nodeBytes` (60 for the inode root, else the block). */
export function extentNodeCapacity(nodeBytes: number, inInode: boolean): number {
  return Math.floor((nodeBytes - 12 - (inInode ? 0 : 4)) / EXT_ENTRY_SIZE);
}

/** One parsed entry of a node: a leaf extent or an index, in plain numbers. */
export interface ExtentLeafEntry {
  lblk: number;
  len: number;
  pblk: number;
  unwritten: boolean;
}
export interface ExtentIndexEntry {
  lblk: number;
  child: number;
}

/** Where a node came from, for error messages and checks. */
export interface NodeCtx {
  ino: number;
  /** Physical block of the node, or undefined for the root in i_block. */
  block: number | undefined;
  /** The depth the parent expects (the root's own eh_depth for the root). */
  expectDepth: number;
  /** Total blocks of the filesystem (extents must stay inside). */
  blocksCount: number;
  /** First block that may hold data (s_first_data_block). */
  firstDataBlock: number;
}

/**
 * Validates and parses one node held in `node` (60 bytes for the root, a whole block otherwise).
 * Throws Corrupt naming the inode, block and bad value.
 */
export function parseExtentNode(
  node: Uint8Array, ctx: NodeCtx,
): { depth: number; leaves: ExtentLeafEntry[]; indexes: ExtentIndexEntry[] } {
  const where = ctx.block === undefined ? { ino: ctx.ino } : { ino: ctx.ino, block: ctx.block };
  const bad = (detail: string): never => {
    throw new Corrupt(ctx.block === undefined ? 'extent header (inode root)' : 'extent header', detail, where);
  };
  const h = new ExtentHeader(node, 0);
  if (h.eh_magic !== EXT4_EXT_MAGIC) bad(`magic 0x${hex(h.eh_magic)}`);
  if (h.eh_depth > EXT4_MAX_EXTENT_DEPTH) bad(`depth ${h.eh_depth} > ${EXT4_MAX_EXTENT_DEPTH}`);
  if (h.eh_depth !== ctx.expectDepth) bad(`depth ${h.eh_depth}, expected ${ctx.expectDepth}`);
  const cap = extentNodeCapacity(node.length, ctx.block === undefined);
  if (h.eh_max === 0 || h.eh_max > cap) bad(`eh_max ${h.eh_max} (capacity ${cap})`);
  if (h.eh_entries > h.eh_max) bad(`eh_entries ${h.eh_entries} > eh_max ${h.eh_max}`);
  const leaves: ExtentLeafEntry[] = [];
  const indexes: ExtentIndexEntry[] = [];
  let prevEnd = -1;
  for (let i = 0; i < h.eh_entries; i++) {
    const off = 12 + i * EXT_ENTRY_SIZE;
    if (h.eh_depth === 0) {
      const e = new Extent(node, off);
      const len = eeActualLen(e);
      const p = eePblk(e);
      if (len === 0) bad(`extent ${i} has length 0`);
      if (e.ee_block <= prevEnd) bad(`extent ${i} at lblk ${e.ee_block} overlaps or is out of order`);
      if (p < ctx.firstDataBlock || p + len > ctx.blocksCount) {
        bad(`extent ${i} pblk ${p} len ${len} outside the filesystem (${ctx.blocksCount} blocks)`);
      }
      if (e.ee_block + len > 0x1_0000_0000) bad(`extent ${i} lblk ${e.ee_block} len ${len} past 2^32`);
      prevEnd = e.ee_block + len - 1;
      leaves.push({ lblk: e.ee_block, len, pblk: p, unwritten: isUnwritten(e) });
    } else {
      const ix = new ExtentIdx(node, off);
      const p = eiLeaf(ix);
      if (ix.ei_block <= prevEnd) bad(`index ${i} at lblk ${ix.ei_block} out of order`);
      if (p < ctx.firstDataBlock || p >= ctx.blocksCount) bad(`index ${i} child block ${p} outside the filesystem`);
      prevEnd = ix.ei_block;
      indexes.push({ lblk: ix.ei_block, child: p });
    }
  }
  return { depth: h.eh_depth, leaves, indexes };
}

/** Offset of the tail checksum in a tree block with eh_max entries. */
export function extentTailOffset(ehMax: number): number {
  return 12 + ehMax * EXT_ENTRY_SIZE;
}

/** crc32c of a tree block up to its tail (ext4_extent_block_csum). */
export function computeExtentBlockCsum(block: Uint8Array, inodeSeed: number): number {
  const h = new ExtentHeader(block, 0);
  return crc32cRaw(inodeSeed, block.subarray(0, extentTailOffset(h.eh_max)));
}

/** Verifies a tree block's tail checksum (call after parseExtentNode validated eh_max). */
export function verifyExtentBlockCsum(block: Uint8Array, inodeSeed: number, ino: number, blockNr: number): void {
  const h = new ExtentHeader(block, 0);
  const off = extentTailOffset(h.eh_max);
  if (off + 4 > block.length) throw new Corrupt('extent block', `no room for the tail (eh_max ${h.eh_max})`, { ino, block: blockNr });
  const stored = new ExtentTail(block, off).et_checksum;
  const computed = computeExtentBlockCsum(block, inodeSeed);
  if (stored !== computed) throw new BadCrc('extent block', stored, computed, { ino, block: blockNr });
}

export function setExtentBlockCsum(block: Uint8Array, inodeSeed: number): void {
  const h = new ExtentHeader(block, 0);
  new ExtentTail(block, extentTailOffset(h.eh_max)).et_checksum = computeExtentBlockCsum(block, inodeSeed);
}

/** Entries in the root node kept in i_block (60 bytes): 4 (ext4_ext_space_root). */
export const EXT4_EXT_ROOT_MAX = extentNodeCapacity(60, true);

/** One entry of a node in plain numbers: a leaf extent (depth 0) or an index (depth > 0). */
export type ExtentEntry = ExtentLeafEntry | ExtentIndexEntry;

/** Byte offset of entry `i` in a node (the header comes first). */
function entryOffset(i: number): number {
  return ExtentHeader.SIZE + i * EXT_ENTRY_SIZE;
}

/**
 * A writable view of one extent-tree node (the inode root or a tree block): its header and its
 * array of 12-byte entries, each starting with its first logical block (ee_block and ei_block
 * are both at offset 0). The extent-tree writer edits nodes only through this class, so no byte
 * offset leaves format/. Methods assert their index ranges: a bad index is a bug in the writer,
 * never bad input (input is checked by parseExtentNode before a node is trusted).
 */
export class ExtentNode {
  readonly hdr: ExtentHeaderView;
  constructor(readonly bytes: Uint8Array) {
    this.hdr = new ExtentHeader(bytes, 0);
  }

  /** Writes an empty node: magic, no entries, `max` slots at `depth`; zeroes slots and tail. */
  init(max: number, depth: number): void {
    assert(max >= 1 && entryOffset(max) <= this.bytes.length,
      () => `extent node eh_max ${max} in ${this.bytes.length} bytes`);
    assert(depth >= 0 && depth <= EXT4_MAX_EXTENT_DEPTH, () => `extent node depth ${depth}`);
    this.bytes.fill(0);
    this.hdr.eh_magic = EXT4_EXT_MAGIC;
    this.hdr.eh_entries = 0;
    this.hdr.eh_max = max;
    this.hdr.eh_depth = depth;
    this.hdr.eh_generation = 0;
  }

  get entries(): number { return this.hdr.eh_entries; }
  set entries(n: number) {
    assert(n >= 0 && n <= this.hdr.eh_max, () => `eh_entries ${n} outside 0..${this.hdr.eh_max}`);
    this.hdr.eh_entries = n;
  }
  get max(): number { return this.hdr.eh_max; }
  get depth(): number { return this.hdr.eh_depth; }
  set depth(d: number) {
    assert(d >= 0 && d <= EXT4_MAX_EXTENT_DEPTH, () => `eh_depth ${d}`);
    this.hdr.eh_depth = d;
  }
  get isFull(): boolean { return this.hdr.eh_entries >= this.hdr.eh_max; }

  private checkSlot(i: number): void {
    assert(Number.isInteger(i) && i >= 0 && i < this.hdr.eh_max,
      () => `extent entry ${i} outside 0..${this.hdr.eh_max - 1}`);
  }

  /** First logical block of entry `i` (ee_block or ei_block). */
  key(i: number): number {
    this.checkSlot(i);
    return new Extent(this.bytes, entryOffset(i)).ee_block;
  }
  setKey(i: number, lblk: number): void {
    this.checkSlot(i);
    if (this.depth === 0) new Extent(this.bytes, entryOffset(i)).ee_block = lblk;
    else new ExtentIdx(this.bytes, entryOffset(i)).ei_block = lblk;
  }

  leaf(i: number): ExtentLeafEntry {
    this.checkSlot(i);
    assert(this.depth === 0, 'leaf entry read from an index node');
    const e = new Extent(this.bytes, entryOffset(i));
    return { lblk: e.ee_block, len: eeActualLen(e), pblk: eePblk(e), unwritten: isUnwritten(e) };
  }
  setLeaf(i: number, x: ExtentLeafEntry): void {
    this.checkSlot(i);
    assert(this.depth === 0, 'leaf entry written into an index node');
    const e = new Extent(this.bytes, entryOffset(i));
    e.ee_block = x.lblk;
    setExtentLen(e, x.len, x.unwritten);
    setEePblk(e, x.pblk);
  }

  index(i: number): ExtentIndexEntry {
    this.checkSlot(i);
    assert(this.depth > 0, 'index entry read from a leaf');
    const ix = new ExtentIdx(this.bytes, entryOffset(i));
    return { lblk: ix.ei_block, child: eiLeaf(ix) };
  }
  setIndex(i: number, x: ExtentIndexEntry): void {
    this.checkSlot(i);
    assert(this.depth > 0, 'index entry written into a leaf');
    const ix = new ExtentIdx(this.bytes, entryOffset(i));
    ix.ei_block = x.lblk;
    setEiLeaf(ix, x.child);
    ix.ei_unused = 0;
  }

  /** Writes entry `i` as a leaf extent or an index, whichever this node holds. */
  setEntry(i: number, x: ExtentEntry): void {
    if ('child' in x) this.setIndex(i, x);
    else this.setLeaf(i, x);
  }

  /**
   * Moves entries [from, eh_entries) so that they start at `to` (to > from opens a gap, to <
   * from closes one), adjusts eh_entries by to - from, and zeroes the slots left past the end.
   */
  shiftTail(from: number, to: number): void {
    const n = this.hdr.eh_entries;
    assert(from >= 0 && from <= n && to >= 0, () => `shiftTail(${from}, ${to}) with ${n} entries`);
    const newN = n + (to - from);
    assert(newN <= this.hdr.eh_max, () => `shiftTail(${from}, ${to}): ${newN} entries > eh_max ${this.hdr.eh_max}`);
    this.bytes.copyWithin(entryOffset(to), entryOffset(from), entryOffset(n));
    if (newN < n) this.bytes.fill(0, entryOffset(newN), entryOffset(n));
    this.hdr.eh_entries = newN;
  }

  /** Copies `count` raw entries from `src` (starting at `srcAt`) into slots [at, at+count). */
  copyFrom(src: ExtentNode, srcAt: number, at: number, count: number): void {
    assert(src.depth === this.depth, () => `copying entries between depths ${src.depth} and ${this.depth}`);
    assert(srcAt >= 0 && srcAt + count <= src.entries, () => `copyFrom source ${srcAt}+${count} of ${src.entries}`);
    assert(at >= 0 && at + count <= this.hdr.eh_max,
      () => `copyFrom target ${at}+${count} of eh_max ${this.hdr.eh_max}`);
    this.bytes.set(src.bytes.subarray(entryOffset(srcAt), entryOffset(srcAt + count)), entryOffset(at));
  }
}

/** The checksum stored in a tree block's tail (after eh_max entries). */
export function extentTailChecksum(block: Uint8Array): number {
  const h = new ExtentHeader(block, 0);
  return new ExtentTail(block, extentTailOffset(h.eh_max)).et_checksum;
}

/** What one node says about a logical block (extentNodeLookup). */
export type ExtentNodeHit =
  | { kind: 'index'; child: number; lblk: number; /** key of the next index, or undefined */ nextLblk: number | undefined }
  | { kind: 'leaf'; lblk: number; len: number; pblk: number; unwritten: boolean }
  | { kind: 'hole'; /** first lblk of the next extent in this node, or undefined */ nextLblk: number | undefined };

/**
 * Binary search of one node that parseExtentNode has already validated (ext4_ext_binsearch /
 * ext4_ext_binsearch_idx): the index entry whose subtree holds `lblk`, or the extent that
 * contains it, or the hole it falls in. Reads the fields in place with one DataView, so a point
 * lookup in a 340-entry node costs a few reads rather than 340 views.
 */
export function extentNodeLookup(node: Uint8Array, lblk: number): ExtentNodeHit {
  const dv = new DataView(node.buffer, node.byteOffset, node.byteLength);
  const entries = dv.getUint16(2, true);
  const depth = dv.getUint16(6, true);
  const key = (i: number): number => dv.getUint32(12 + i * EXT_ENTRY_SIZE, true);
  // The last entry whose key is <= lblk.
  let lo = 0;
  let hi = entries - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (key(mid) <= lblk) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  const next = found + 1 < entries ? key(found + 1) : undefined;
  if (depth > 0) {
    // Below the first index key nothing maps (the first subtree starts there); take entry 0.
    const i = Math.max(0, found);
    const off = 12 + i * EXT_ENTRY_SIZE;
    const child = dv.getUint32(off + 4, true) + dv.getUint16(off + 8, true) * 0x1_0000_0000;
    return { kind: 'index', child, lblk: key(i), nextLblk: i + 1 < entries ? key(i + 1) : undefined };
  }
  if (found >= 0) {
    const off = 12 + found * EXT_ENTRY_SIZE;
    const raw = dv.getUint16(off + 4, true);
    const unwritten = raw > EXT_INIT_MAX_LEN;
    const len = unwritten ? raw - EXT_INIT_MAX_LEN : raw;
    const start = key(found);
    if (lblk < start + len) {
      const pblk = dv.getUint16(off + 6, true) * 0x1_0000_0000 + dv.getUint32(off + 8, true);
      return { kind: 'leaf', lblk: start, len, pblk, unwritten };
    }
  }
  return { kind: 'hole', nextLblk: next };
}
