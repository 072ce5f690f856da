/**
 * Directory writes, linear and htree (fs/ext4/namei.c: ext4_add_entry, add_dirent_to_buf,
 * ext4_find_dest_de, make_indexed_dir, dx_probe, ext4_dx_add_entry, do_split, dx_make_map,
 * dx_insert_block, ext4_delete_entry, ext4_setent, ext4_init_new_dir, ext4_empty_dir,
 * ext4_htree_next_block; Documentation/filesystems/ext4/directory.rst).
 *
 * The directory's blocks come from the caller through DirBlocks (the extent tree and the block
 * allocator behind them live above this module's concerns). The kernel's placement rules are
 * kept, so the kernel and e2fsck see the directories they would have made themselves:
 * - Linear directories take a new entry in the first block with room (an unused entry large
 *   enough, or the slack after a live one), else in a new block. A directory that has exactly
 *   one block, which is full, becomes an htree directory when the filesystem has dir_index
 *   (make_indexed_dir): block 0 turns into dx_root ('.', '..' spanning, dx_root_info with
 *   s_def_hash_version, 0 indirect levels) and its entries move to two new leaves split by
 *   hash. Larger linear directories (made without dir_index) stay linear.
 * - Htree inserts descend the index by the name's hash (dx_probe). A full leaf is split at
 *   half its size by hash (do_split); when equal hashes straddle the split, the new index
 *   entry gets the continuation bit (hash | 1). A full index node is split into a new node,
 *   and a full root moves its entries into a new node, adding a level: at most 2 levels
 *   (root + 1), 3 with large_dir, then ENOSPC ("directory index full"), as the kernel says.
 * - Deleting merges the entry into the one before it in its block, or, first in its block,
 *   marks it unused (inode 0). Leaves are never merged and directories never shrink.
 *
 * Invariants: every block changed here parses with the read-side parsers (parseDirBlock,
 * parseDxRoot, parseDxNode) right after the change, asserted always (a failure is an Ext4Bug);
 * with setDirWriteDebug(s, true) the whole directory is verified (verifyDir) after every
 * operation. Checksums (dirent tail crc32c, dx_tail) are stamped by the buffer finalizers, once
 * per sync. Blocks appended for a split are appended before anything changes, so ENOSPC from
 * the allocator leaves a consistent directory. Operations on one directory must not overlap
 * (the caller holds the directory, as the kernel's i_rwsem does). `dir` must be the InodeInfo
 * that `blocks.append()` updates, since the conversion to htree writes it (EXT4_INDEX_FL).
 * Directory times (i_mtime/i_ctime) and link counts are the caller's. Where the kernel differs:
 * a damaged index is reported as Corrupt (the kernel, without metadata_csum, clears
 * EXT4_INDEX_FL and falls back to a linear scan), and a leaf too fragmented to split (fewer
 * than two live entries, which ext4 never leaves) is repacked instead of split.
 */
import type { Ext4Super } from '../super.js';
import { dcacheGet, dcacheSet, dcacheDelete, dcacheKnownAbsent } from './dcache.js';
import { type InodeInfo, writeInode } from '../inode/inode.js';
import type { MetaBuffer } from '../../cache/buffer-cache.js';
import {
  parseDirBlock, checkDirArea, hasDirTail, findDirSlot, findDestDirEntry, DIR_NAME_EXISTS, insertDirEntry, deleteDirEntry, buildDirLeaf, initDirBlock,
  initDirDotBlock, setDirBlockCsum, setDirEntryIno, setDirEntryFileType, dirEntryMinRecLen,
  dirTailOffset, EXT4_NAME_LEN, EXT4_FT_MAX, type DirEntryRaw, type DirEntryInput, type DirParseCtx,
} from '../../format/dirent.js';
import {
  parseDxRoot, parseDxNode, initDxRoot, initDxNode, setDxEntries, setDxCsum, dxRootLimit,
  dxNodeLimit, looksLikeDxNode, setDxRootIndirectLevels, setDxRootDotDotIno, DX_ROOT_ENTRIES_OFF,
  DX_NODE_ENTRIES_OFF, DX_BLOCK_MASK, EXT4_HTREE_LEVEL, EXT4_HTREE_LEVEL_COMPAT, type DxEntry, type DxRoot,
} from '../../format/htree.js';
import { ext4fsDirhash, hashVersionFor, DX_HASH_LEGACY, DX_HASH_HALF_MD4, DX_HASH_TEA } from '../../format/dirhash.js';
import { EXT4_INDEX_FL } from '../../format/inode.js';
import { Corrupt, PosixError } from '../../util/errors.js';
import { assert, Ext4Bug } from '../../util/assert.js';
import { bytesEqual, decodeName } from '../../util/bytes.js';
import { verifyDir } from './dir-check.js';

/** The blocks of one directory, supplied by the caller (extent tree + allocator behind it). */
export interface DirBlocks {
  /** Blocks the directory has (i_size / blockSize). */
  count(): number;
  /** Existing block `lblk` through the buffer cache (s.cache.bread). */
  get(lblk: number): Promise<MetaBuffer>;
  /**
   * Appends a new zeroed block at lblk = count(): allocates, maps it, grows i_size, writes the
   * inode. Returns the cached buffer (s.cache.getblk). May throw ENOSPC.
   */
  append(): Promise<MetaBuffer>;
}

/** What one operation needs, computed once. */
interface Op {
  s: Ext4Super;
  dir: InodeInfo;
  blocks: DirBlocks;
  /** Block size in bytes. */
  bs: number;
  /** metadata_csum: leaves have a dirent tail, index blocks a dx_tail. */
  csum: boolean;
  /** The directory's checksum seed (dir.csumSeed). */
  seed: number;
  hasFiletype: boolean;
  /** is_dx(): EXT4_INDEX_FL set and the filesystem has dir_index. */
  dx: boolean;
}

/** A leaf block as read: its buffer and its live entries (names are views into the buffer). */
interface Leaf {
  lblk: number;
  buf: MetaBuffer;
  entries: DirEntryRaw[];
}

/** One level of a dx_probe path (struct dx_frame), decoded. */
interface Frame {
  lblk: number;
  buf: MetaBuffer;
  /** DX_ROOT_ENTRIES_OFF for the root, DX_NODE_ENTRIES_OFF for a node. */
  off: number;
  /** Entries the block can hold (dx_countlimit.limit). */
  limit: number;
  /** The entries in use; entry 0's hash is implicit (0). */
  entries: DxEntry[];
  /** Index of the entry the probed hash falls under. */
  at: number;
}

/** The name hash of a directory (dx_hash_info): the version to compute and the function. */
interface Hasher {
  /** dx_root_info.hash_version as stored (0..2). */
  rootVersion: number;
  hash(name: Uint8Array): number;
}

/** A dx_probe result: the path from the root to the leaf's parent, and the name's hash. */
interface Probe {
  frames: Frame[];
  hash: number;
  hasher: Hasher;
}

/** An entry of a leaf being split (struct dx_map_entry plus the entry itself). */
interface MapEntry extends DirEntryInput {
  hash: number;
  /** rec_len of the entry in the block being split (dx_make_map's size). */
  size: number;
  /** Position in the block, to keep the physical order of the entries that stay. */
  order: number;
}

const debugMounts = new WeakMap<Ext4Super, boolean>();

/** Turns the whole-directory verification after every operation on or off (tests turn it on). */
export function setDirWriteDebug(s: Ext4Super, on: boolean): void {
  debugMounts.set(s, on);
}

/** The per-operation context; asserts the directory is one this module writes. */
function opOf(s: Ext4Super, dir: InodeInfo, blocks: DirBlocks): Op {
  assert(dir.type === 'dir', () => `inode ${dir.ino} is not a directory`);
  assert(!dir.hasInlineData, () => `inode ${dir.ino}: inline directories are not written here`);
  return {
    s, dir, blocks, bs: s.blockSize, csum: s.features.metadataCsum, seed: dir.csumSeed,
    hasFiletype: s.features.filetype, dx: dir.isIndexedDir && s.features.dirIndex,
  };
}

/** Asserts a name a caller may store: 1..255 bytes, no '/' or NUL, not '.' or '..'. */
function checkName(name: Uint8Array): void {
  assert(name.length >= 1 && name.length <= EXT4_NAME_LEN, () => `directory entry name of ${name.length} bytes`);
  assert(!name.includes(0x2f) && !name.includes(0), () => `directory entry name "${decodeName(name)}" holds '/' or NUL`);
  assert(!isDot(name) && !isDotDot(name), 'directory entry name "." or ".." from a caller');
}

/** The names '.' and '..'. */
function isDot(name: Uint8Array): boolean {
  return name.length === 1 && name[0] === 0x2e;
}
function isDotDot(name: Uint8Array): boolean {
  return name.length === 2 && name[0] === 0x2e && name[1] === 0x2e;
}

/** Asserts an inode number an entry may name: 1..s_inodes_count. */
function checkIno(s: Ext4Super, ino: number): void {
  assert(Number.isInteger(ino) && ino >= 1 && ino <= s.sb.s_inodes_count, () => `inode number ${ino} for a directory entry`);
}

/** The file type stored for an entry: the caller's with `filetype`, else 0 (EXT4_FT_UNKNOWN). */
function storedFileType(op: Op, fileType: number): number {
  assert(Number.isInteger(fileType) && fileType >= 0 && fileType < EXT4_FT_MAX, () => `file type ${fileType}`);
  return op.hasFiletype ? fileType : 0;
}

// ---------------------------------------------------------------------------------------------
// Blocks: reading, dirtying with their checksum finalizer, and the after-change parse check.
// ---------------------------------------------------------------------------------------------

/** The read-side parse context for a block of this directory (entry inodes range-checked too). */
function parseCtx(op: Op, buf: MetaBuffer): DirParseCtx {
  return {
    blockNr: buf.blockNr, ino: op.dir.ino, hasFiletype: op.hasFiletype, inodesCount: op.s.sb.s_inodes_count,
    ...(op.csum ? { csumSeed: op.seed } : {}),
  };
}

/** Block `lblk`, after checking it exists (an index pointing past the end is corruption). */
async function getBlock(op: Op, lblk: number): Promise<MetaBuffer> {
  const n = op.blocks.count();
  if (!Number.isInteger(lblk) || lblk < 0 || lblk >= n) {
    throw new Corrupt('directory', `block ${lblk} requested, the directory has ${n}`, { ino: op.dir.ino });
  }
  return op.blocks.get(lblk);
}

/** Reads a leaf and checks it (checksum too, unless the buffer was verified before). */
async function readLeaf(op: Op, lblk: number): Promise<Leaf> {
  const buf = await getBlock(op, lblk);
  const entries = parseDirBlock(buf.data, { ...parseCtx(op, buf), skipCsum: buf.verified });
  buf.verified = true;
  return { lblk, buf, entries };
}

/** The entries of a leaf we just wrote (structure checked, checksum not yet stamped). */
function reparseLeaf(op: Op, buf: MetaBuffer, lblk: number): Leaf {
  return { lblk, buf, entries: parseDirBlock(buf.data, { ...parseCtx(op, buf), skipCsum: true }) };
}

/** The entry area of a leaf: the block minus its checksum tail. */
function areaOf(op: Op, data: Uint8Array): Uint8Array {
  return op.csum ? data.subarray(0, dirTailOffset(op.bs)) : data;
}

/** Runs a read-side parser over a block we changed; a failure is our bug, not bad input. */
function assertParses(what: string, buf: MetaBuffer, parse: () => unknown): void {
  try {
    parse();
  } catch (e) {
    if (e instanceof Corrupt) throw new Ext4Bug(`${what} at block ${buf.blockNr} does not parse after a change: ${e.message}`);
    throw e;
  }
}

/** Marks a changed leaf dirty; its tail checksum is stamped at sync (ext4_handle_dirty_dirblock). */
function dirtyLeaf(op: Op, buf: MetaBuffer): void {
  const seed = op.seed;
  op.s.cache.markDirty(buf, op.csum ? (d: Uint8Array) => setDirBlockCsum(seed, d) : undefined);
  assertParses('directory leaf', buf, () => {
    if (op.csum) assert(hasDirTail(buf.data), 'directory leaf lost its checksum tail');
    checkDirArea(areaOf(op, buf.data), parseCtx(op, buf), op.bs);
  });
}

/** Stores a frame's entries and marks its block dirty (ext4_handle_dirty_dx_node). */
function writeFrame(op: Op, f: Frame): void {
  setDxEntries(f.buf.data, f.off, f.entries);
  const seed = op.seed;
  const off = f.off;
  op.s.cache.markDirty(f.buf, op.csum ? (d: Uint8Array) => setDxCsum(d, off, seed) : undefined);
  const ctx = { ...parseCtx(op, f.buf), verifyCsum: false, largeDir: op.s.features.largeDir };
  assertParses(f.lblk === 0 ? 'dx_root' : 'dx_node', f.buf, () => (f.lblk === 0 ? parseDxRoot(f.buf.data, ctx) : parseDxNode(f.buf.data, ctx)));
}

/**
 * ext4_append: a new block at the end of the directory. Nothing else changes, so a caller that
 * appends before touching anything leaves the directory as it was when this throws ENOSPC.
 * The buffer must be formatted by the caller before its next await.
 */
async function appendBlock(op: Op): Promise<{ lblk: number; buf: MetaBuffer }> {
  const lblk = op.blocks.count();
  // Without large_dir a directory's size is i_size_lo only (ext4_isize); index entries keep 28 bits.
  const maxBlocks = op.s.features.largeDir ? DX_BLOCK_MASK + 1 : Math.min(DX_BLOCK_MASK + 1, Math.floor(0xffffffff / op.bs));
  if (lblk + 1 > maxBlocks) {
    throw new PosixError('ENOSPC', 'link', undefined, `directory inode ${op.dir.ino} reached its size limit (${lblk} blocks)`);
  }
  const buf = await op.blocks.append();
  assert(op.blocks.count() === lblk + 1, () => `DirBlocks.append: count ${op.blocks.count()} after appending at ${lblk}`);
  assert(buf.data.length === op.bs, 'DirBlocks.append: buffer of the wrong size');
  return { lblk, buf };
}

/** Appends a block and formats it as an empty leaf (the tail of ext4_add_entry). */
async function appendLeaf(op: Op): Promise<Leaf> {
  const b = await appendBlock(op);
  initDirBlock(b.buf.data, op.csum);
  dirtyLeaf(op, b.buf);
  return { lblk: b.lblk, buf: b.buf, entries: [] };
}

// ---------------------------------------------------------------------------------------------
// Hashing and the index path (dx_probe, ext4_htree_next_block).
// ---------------------------------------------------------------------------------------------

/** The name hash of a directory whose dx_root stores `rootVersion` (dx_probe's hinfo setup). */
function hasherFor(op: Op, rootVersion: number): Hasher {
  const version = hashVersionFor(rootVersion, op.s.features.unsignedHash);
  const seed = op.s.hashSeed;
  return { rootVersion, hash: (name) => ext4fsDirhash(name, version, seed).hash };
}

/** s_def_hash_version, which make_indexed_dir stores in a new dx_root. */
function defaultHashVersion(op: Op): number {
  const v = op.s.sb.s_def_hash_version;
  if (v !== DX_HASH_LEGACY && v !== DX_HASH_HALF_MD4 && v !== DX_HASH_TEA) {
    throw new Corrupt('superblock', `s_def_hash_version ${v} is not legacy, half_md4 or tea`);
  }
  return v;
}

/** Index of the last entry whose hash is <= `hash` (dx_probe's binary search). */
function probeAt(entries: readonly DxEntry[], hash: number): number {
  let lo = 1;
  let hi = entries.length - 1;
  let at = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    // OK to index: 1 <= mid < entries.length.
    if (entries[mid]!.hash <= hash) {
      at = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return at;
}

/** The child block a frame's `at` entry names, checked against the size and the path (cycles). */
function childOf(op: Op, f: Frame, path: readonly Frame[]): number {
  // OK to index: `at` always lies inside `entries` (probeAt, and every writer keeps it so).
  const b = f.entries[f.at]!.block;
  const where = { ino: op.dir.ino, block: f.buf.blockNr };
  if (b === 0 || b >= op.blocks.count()) throw new Corrupt('htree index', `entry points at block ${b} (directory has ${op.blocks.count()})`, where);
  if (path.some((p) => p.lblk === b)) throw new Corrupt('htree index', `tree cycle through block ${b}`, where);
  return b;
}

/** Reads dx_root and checks it (dx_probe's root checks, checksum unless verified before). */
async function readRoot(op: Op): Promise<{ buf: MetaBuffer; root: DxRoot }> {
  const buf = await getBlock(op, 0);
  const root = parseDxRoot(buf.data, { ...parseCtx(op, buf), verifyCsum: !buf.verified, largeDir: op.s.features.largeDir });
  buf.verified = true;
  return { buf, root };
}

/** Reads an index node at `lblk` into a frame positioned for `hash`. */
async function readNodeFrame(op: Op, lblk: number, hash: number): Promise<Frame> {
  const buf = await getBlock(op, lblk);
  const node = parseDxNode(buf.data, { ...parseCtx(op, buf), verifyCsum: !buf.verified });
  buf.verified = true;
  return { lblk, buf, off: DX_NODE_ENTRIES_OFF, limit: node.limit, entries: node.entries, at: probeAt(node.entries, hash) };
}

/** dx_probe: the path from dx_root down to the index block that points at `name`'s leaf. */
async function dxProbe(op: Op, name: Uint8Array): Promise<Probe> {
  const { buf, root } = await readRoot(op);
  const hasher = hasherFor(op, root.hashVersion);
  const hash = hasher.hash(name);
  const frames: Frame[] = [{ lblk: 0, buf, off: DX_ROOT_ENTRIES_OFF, limit: root.limit, entries: root.entries, at: probeAt(root.entries, hash) }];
  for (let level = 0; level < root.indirectLevels; level++) {
    // OK: frames is never empty.
    const top = frames[frames.length - 1]!;
    frames.push(await readNodeFrame(op, childOf(op, top, frames), hash));
  }
  return { frames, hash, hasher };
}

/**
 * ext4_htree_next_block: moves the path to the next leaf in hash order (climbing while a frame
 * is exhausted, then down again). Returns the hash that starts the new leaf, or undefined at
 * the end of the index.
 */
async function htreeNextBlock(op: Op, frames: Frame[]): Promise<number | undefined> {
  let i = frames.length - 1;
  // OK to index: 0 <= i < frames.length inside the loop.
  while (i >= 0 && frames[i]!.at + 1 >= frames[i]!.entries.length) i--;
  if (i < 0) return undefined;
  const f = frames[i]!;
  f.at++;
  const hash = f.entries[f.at]!.hash;
  for (let j = i + 1; j < frames.length; j++) {
    const next = await readNodeFrame(op, childOf(op, frames[j - 1]!, frames.slice(0, j)), 0);
    next.at = 0;
    frames[j] = next;
  }
  return hash;
}

// ---------------------------------------------------------------------------------------------
// Finding an entry.
// ---------------------------------------------------------------------------------------------

interface Found {
  leaf: Leaf;
  entry: DirEntryRaw;
}

/** ext4_find_entry for names other than '.' and '..': linear scan, or through the index. */
async function locate(op: Op, name: Uint8Array): Promise<Found | undefined> {
  const n = op.blocks.count();
  if (!op.dx) {
    for (let lblk = 0; lblk < n; lblk++) {
      const leaf = await readLeaf(op, lblk);
      const entry = leaf.entries.find((e) => bytesEqual(e.nameBytes, name));
      if (entry !== undefined) return { leaf, entry };
    }
    return undefined;
  }
  const p = await dxProbe(op, name);
  // Leaves visited are bounded by the directory's blocks: a crafted index cannot loop.
  for (let visits = 0; visits <= n; visits++) {
    // OK: frames is never empty.
    const leaf = await readLeaf(op, childOf(op, p.frames[p.frames.length - 1]!, p.frames));
    const entry = leaf.entries.find((e) => bytesEqual(e.nameBytes, name));
    if (entry !== undefined) return { leaf, entry };
    const next = await htreeNextBlock(op, p.frames);
    if (next === undefined || (next & ~1) >>> 0 !== p.hash) return undefined;
  }
  throw new Corrupt('htree index', 'lookup visited more leaves than the directory has blocks', { ino: op.dir.ino });
}

/** Finds `name` ('.' and '..' included); through the htree index when the directory has one. */
export async function findEntry(
  s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, name: Uint8Array,
): Promise<{ ino: number; fileType: number } | undefined> {
  const op = opOf(s, dir, blocks);
  if (op.dx && (isDot(name) || isDotDot(name))) {
    const { root } = await readRoot(op);
    const d = isDot(name) ? root.dot : root.dotdot;
    return { ino: d.ino, fileType: d.fileType };
  }
  const hit = dcacheGet(s, dir.ino, name);
  if (hit !== undefined) return hit;
  if (dcacheKnownAbsent(s, dir.ino, name)) return undefined;
  const f = await locate(op, name);
  if (f === undefined) return undefined;
  dcacheSet(s, dir.ino, name, f.entry.ino, f.entry.fileType);
  return { ino: f.entry.ino, fileType: f.entry.fileType };
}

// ---------------------------------------------------------------------------------------------
// Adding an entry.
// ---------------------------------------------------------------------------------------------

/**
 * add_dirent_to_buf without a given slot: EEXIST when the name is in this leaf, false when no
 * slot fits (ext4_find_dest_de), else the entry is written (ext4_insert_dentry).
 */
function addToLeaf(op: Op, leaf: Leaf, e: DirEntryInput): boolean {
  if (leaf.entries.some((x) => bytesEqual(x.nameBytes, e.name))) {
    throw new PosixError('EEXIST', 'link', undefined, `"${decodeName(e.name)}" exists in directory inode ${op.dir.ino}`);
  }
  const area = areaOf(op, leaf.buf.data);
  const off = findDirSlot(area, dirEntryMinRecLen(e.name.length), op.bs);
  if (off < 0) return false;
  insertDirEntry(area, off, e, op.bs);
  dirtyLeaf(op, leaf.buf);
  return true;
}

/**
 * Adds the entry `name` → `ino` to a directory (ext4_add_entry). The caller has checked the
 * name is absent; EEXIST is still raised when the scan meets it. ENOSPC when no block can be
 * appended or the htree index is full.
 */
export async function addEntry(
  s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, name: Uint8Array, ino: number, fileType: number,
): Promise<void> {
  await addEntryUncached(s, dir, blocks, name, ino, fileType);
  dcacheSet(s, dir.ino, name, ino, s.features.filetype ? fileType : 0);
}

async function addEntryUncached(
  s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, name: Uint8Array, ino: number, fileType: number,
): Promise<void> {
  const op = opOf(s, dir, blocks);
  checkName(name);
  checkIno(s, ino);
  const e: DirEntryInput = { ino, name: name.slice(), fileType: storedFileType(op, fileType) };
  if (op.dx) await dxAddEntry(op, e);
  else await addLinear(op, e);
  await debugCheck(op);
}

/** The linear part of ext4_add_entry: first block with room, conversion to htree, or a new block. */
async function addLinear(op: Op, e: DirEntryInput): Promise<void> {
  const n = op.blocks.count();
  if (n === 0) throw new Corrupt('directory', 'has no blocks', { ino: op.dir.ino });
  for (let lblk = 0; lblk < n; lblk++) {
    // A block verified before (and re-checked after each of our changes) needs no parse: one
    // pass over its raw entries finds the name or a slot, as the kernel's ext4_find_dest_de.
    const buf = await getBlock(op, lblk);
    if (buf.verified) {
      const area = areaOf(op, buf.data);
      const off = findDestDirEntry(area, e.name, dirEntryMinRecLen(e.name.length), op.bs);
      if (off === DIR_NAME_EXISTS) throw new PosixError('EEXIST', 'link', undefined, `"${decodeName(e.name)}" exists in directory inode ${op.dir.ino}`);
      if (off >= 0) {
        insertDirEntry(area, off, e, op.bs);
        dirtyLeaf(op, buf);
        return;
      }
      // Full: a one-block directory becomes indexed below, which needs the parsed entries.
      if (!(n === 1 && op.s.features.dirIndex)) continue;
    }
    const leaf = await readLeaf(op, lblk);
    if (addToLeaf(op, leaf, e)) return;
    if (n === 1 && op.s.features.dirIndex) {
      await makeIndexedDir(op, leaf, e);
      return;
    }
  }
  const leaf = await appendLeaf(op);
  assert(addToLeaf(op, leaf, e), 'an empty leaf must take any entry');
}

/** The '.' and '..' entries that start block 0 of a linear directory (Corrupt otherwise). */
function dotsOf(op: Op, leaf: Leaf): { dot: DirEntryRaw; dotdot: DirEntryRaw } {
  const [dot, dotdot] = leaf.entries;
  if (dot === undefined || dot.offset !== 0 || !isDot(dot.nameBytes) || dotdot === undefined || !isDotDot(dotdot.nameBytes)) {
    throw new Corrupt('directory', "block 0 does not start with '.' and '..'", { ino: op.dir.ino, block: leaf.buf.blockNr });
  }
  return { dot, dotdot };
}

/**
 * dx_make_map: the live entries of a leaf with their hashes and sizes (names copied, since the
 * leaf is rebuilt in place). An entry whose file_type no writer may store is refused as Corrupt
 * rather than copied.
 */
function makeMap(op: Op, leaf: Leaf, entries: readonly DirEntryRaw[], hasher: Hasher, sizeOf: (e: DirEntryRaw) => number): MapEntry[] {
  return entries.map((x, order) => {
    if (x.fileType >= EXT4_FT_MAX) {
      throw new Corrupt('directory entry', `file_type ${x.fileType}`, { ino: op.dir.ino, block: leaf.buf.blockNr, offset: x.offset });
    }
    return { ino: x.ino, name: x.nameBytes.slice(), fileType: x.fileType, hash: hasher.hash(x.nameBytes), size: sizeOf(x), order };
  });
}

/** Where do_split cuts a leaf: the entries that stay, those that move, and the new index hash. */
interface Split {
  /** Entries that stay, in their physical order (dx_pack_dirents). */
  lower: MapEntry[];
  /** Entries that move to the new block, in hash order (dx_move_dirents). */
  upper: MapEntry[];
  /** The lowest hash that moved. */
  hash2: number;
  /** An entry with hash2 stays behind: the index entry gets the continuation bit. */
  continued: boolean;
}

/**
 * do_split's cut: sort by hash, move entries from the top while less than half the block has
 * moved ("neither split block is over half full"); when that never stops early, cut at half
 * the count. Needs at least two entries.
 */
function chooseSplit(map: readonly MapEntry[], bs: number): Split {
  const sorted = [...map].sort((a, b) => a.hash - b.hash || a.order - b.order);
  const count = sorted.length;
  assert(count >= 2, () => `splitting a leaf of ${count} entries`);
  let size = 0;
  let move = 0;
  let i = count - 1;
  for (; i >= 0; i--) {
    // OK to index: 0 <= i < count.
    const sz = sorted[i]!.size;
    if (size + Math.floor(sz / 2) > Math.floor(bs / 2)) break;
    size += sz;
    move++;
  }
  const split = i > 0 ? count - move : Math.floor(count / 2);
  assert(split >= 1 && split < count, () => `leaf split at ${split} of ${count}`);
  // OK to index: 1 <= split < count.
  const hash2 = sorted[split]!.hash;
  const continued = sorted[split - 1]!.hash === hash2;
  const lower = sorted.slice(0, split).sort((a, b) => a.order - b.order);
  return { lower, upper: sorted.slice(split), hash2, continued };
}

/** The index hash of the block that starts at a split: hash2, | 1 when continued. */
function splitIndexHash(sp: Split): number {
  return (sp.hash2 | (sp.continued ? 1 : 0)) >>> 0;
}

/**
 * make_indexed_dir: block 0 of a one-block directory is full. Its entries after '..' go to two
 * new leaves split by hash (the kernel copies them to block 1 and runs do_split, which moves
 * the upper half to block 2), block 0 becomes dx_root pointing at both, the inode gets
 * EXT4_INDEX_FL, and the new entry goes to the leaf its hash selects. Both leaves are appended
 * (as empty leaves) before block 0 changes, so ENOSPC leaves a valid linear directory.
 */
async function makeIndexedDir(op: Op, leaf0: Leaf, e: DirEntryInput): Promise<void> {
  const { dot, dotdot } = dotsOf(op, leaf0);
  const rootVersion = defaultHashVersion(op);
  const hasher = hasherFor(op, rootVersion);
  const start = dotdot.offset + dotdot.recLen;
  const areaEnd = areaOf(op, leaf0.buf.data).length;
  // In block 1 the last entry's rec_len runs to the end: `start` bytes longer than in block 0.
  const moved = leaf0.entries.filter((x) => x.offset >= start);
  const map = makeMap(op, leaf0, moved, hasher, (x) => (x.offset + x.recLen === areaEnd ? x.recLen + start : x.recLen));
  if (map.length < 2) {
    // Only unused slots too small for the name: pack the block instead (never made by ext4).
    const dots: DirEntryInput[] = [dot, dotdot].map((x) => ({ ino: x.ino, name: x.nameBytes.slice(), fileType: x.fileType }));
    repackAndAdd(op, leaf0, [...dots, ...map], e);
    return;
  }
  const b1 = await appendLeaf(op);
  const b2 = await appendLeaf(op);
  const sp = chooseSplit(map, op.bs);
  buildDirLeaf(b1.buf.data, sp.lower, op.csum);
  buildDirLeaf(b2.buf.data, sp.upper, op.csum);
  initDxRoot(leaf0.buf.data, {
    dirIno: dot.ino, parentIno: dotdot.ino, hashVersion: rootVersion, indirectLevels: 0, csum: op.csum, hasFiletype: op.hasFiletype,
  });
  const root: Frame = {
    lblk: 0, buf: leaf0.buf, off: DX_ROOT_ENTRIES_OFF, limit: dxRootLimit(op.bs, op.csum),
    entries: [{ hash: 0, block: b1.lblk }, { hash: splitIndexHash(sp), block: b2.lblk }], at: 0,
  };
  writeFrame(op, root);
  dirtyLeaf(op, b1.buf);
  dirtyLeaf(op, b2.buf);
  op.dir.view.i_flags = (op.dir.view.i_flags | EXT4_INDEX_FL) >>> 0;
  op.dx = true;
  const target = hasher.hash(e.name) >= sp.hash2 ? b2 : b1;
  assert(addToLeaf(op, reparseLeaf(op, target.buf, target.lblk), e), 'a half-empty leaf must take any entry');
  await writeInode(op.s, op.dir);
}

/** Rewrites a fragmented leaf packed (same entries, same order), then adds the entry. */
function repackAndAdd(op: Op, leaf: Leaf, entries: readonly DirEntryInput[], e: DirEntryInput): void {
  buildDirLeaf(leaf.buf.data, entries, op.csum);
  dirtyLeaf(op, leaf.buf);
  assert(addToLeaf(op, reparseLeaf(op, leaf.buf, leaf.lblk), e), 'a packed leaf with one entry must take any entry');
}

/**
 * ext4_dx_add_entry: probe to the leaf; if it is full, make room in the index first when the
 * leaf's parent is full (split the lowest full ancestor whose parent has room, or add a level
 * when every index block up to the root is full), then split the leaf. Splitting an index
 * block above the leaf's parent, or adding a level, changes the path: probe again (the
 * kernel's restart). Each round either finishes or removes a full index block from the path,
 * so the loop is bounded by the number of levels.
 */
async function dxAddEntry(op: Op, e: DirEntryInput): Promise<void> {
  const maxLevels = op.s.features.largeDir ? EXT4_HTREE_LEVEL : EXT4_HTREE_LEVEL_COMPAT;
  for (let round = 0; round <= 2 * EXT4_HTREE_LEVEL; round++) {
    const p = await dxProbe(op, e.name);
    const frames = p.frames;
    const k0 = frames.length - 1;
    // OK to index: k0 is the last frame.
    const leaf = await readLeaf(op, childOf(op, frames[k0]!, frames));
    if (addToLeaf(op, leaf, e)) return;
    if (frames[k0]!.entries.length === frames[k0]!.limit) {
      let k = k0;
      while (k > 0 && frames[k - 1]!.entries.length === frames[k - 1]!.limit) k--;
      if (k === 0 && frames.length === maxLevels) {
        const hint = op.s.features.largeDir ? '' : ' (large_dir is off)';
        throw new PosixError('ENOSPC', 'link', undefined, `directory inode ${op.dir.ino} index full at ${frames.length} levels${hint}`);
      }
      const nb = await appendBlock(op);
      if (k === 0) {
        addIndexLevel(op, frames[0]!, nb);
        continue;
      }
      splitIndexNode(op, frames, k, nb);
      if (k !== k0) continue;
    }
    // OK: frames[k0] is the leaf's parent (possibly replaced by the new half of a split).
    await doSplit(op, frames[k0]!, leaf, e, p);
    return;
  }
  throw new Ext4Bug(`ext4_dx_add_entry for directory inode ${op.dir.ino} did not settle`);
}

/**
 * The add-level half of ext4_dx_add_entry: the full root's entries move to a new index node
 * (`nb`), the root keeps one entry pointing at it, and indirect_levels grows by one.
 */
function addIndexLevel(op: Op, root: Frame, nb: { lblk: number; buf: MetaBuffer }): void {
  initDxNode(nb.buf.data, op.csum);
  const child: Frame = { lblk: nb.lblk, buf: nb.buf, off: DX_NODE_ENTRIES_OFF, limit: dxNodeLimit(op.bs, op.csum), entries: root.entries, at: root.at };
  assert(child.entries.length <= child.limit, 'the root holds fewer entries than a node');
  const levels = parseDxRoot(root.buf.data, { ...parseCtx(op, root.buf), verifyCsum: false, largeDir: op.s.features.largeDir }).indirectLevels;
  root.entries = [{ hash: 0, block: nb.lblk }];
  root.at = 0;
  setDxRootIndirectLevels(root.buf.data, levels + 1);
  writeFrame(op, child);
  writeFrame(op, root);
}

/**
 * The split-index half of ext4_dx_add_entry: the full node frames[k] keeps its lower half and
 * the new node `nb` takes the upper half; the parent gets an entry for `nb` right after the
 * old node's. The path follows the half that holds its `at`.
 */
function splitIndexNode(op: Op, frames: Frame[], k: number, nb: { lblk: number; buf: MetaBuffer }): void {
  // OK to index: 1 <= k < frames.length.
  const f = frames[k]!;
  const parent = frames[k - 1]!;
  const icount1 = f.entries.length >> 1;
  const hash2 = f.entries[icount1]!.hash;
  initDxNode(nb.buf.data, op.csum);
  const upper: Frame = {
    lblk: nb.lblk, buf: nb.buf, off: DX_NODE_ENTRIES_OFF, limit: dxNodeLimit(op.bs, op.csum),
    entries: f.entries.slice(icount1).map((x, i) => (i === 0 ? { hash: 0, block: x.block } : x)), at: 0,
  };
  f.entries = f.entries.slice(0, icount1);
  assert(parent.entries.length < parent.limit, 'splitting an index node under a full parent');
  parent.entries.splice(parent.at + 1, 0, { hash: hash2, block: nb.lblk });
  if (f.at >= icount1) {
    upper.at = f.at - icount1;
    frames[k] = upper;
    parent.at++;
  }
  writeFrame(op, upper);
  writeFrame(op, f);
  writeFrame(op, parent);
}

/**
 * do_split: the leaf is full and its parent `frame` has room. A new block is appended first;
 * the leaf keeps the lower half by hash (packed, physical order), the new block gets the upper
 * half (hash order), the parent gets (hash2 | continued) for the new block right after the
 * leaf's entry (dx_insert_block), and the new entry goes to the half its hash selects.
 */
async function doSplit(op: Op, frame: Frame, leaf: Leaf, e: DirEntryInput, p: Probe): Promise<void> {
  assert(frame.entries.length < frame.limit, 'do_split under a full index block');
  const map = makeMap(op, leaf, leaf.entries, p.hasher, (x) => x.recLen);
  if (map.length < 2) {
    repackAndAdd(op, leaf, map, e);
    return;
  }
  const nb = await appendBlock(op);
  const sp = chooseSplit(map, op.bs);
  buildDirLeaf(leaf.buf.data, sp.lower, op.csum);
  buildDirLeaf(nb.buf.data, sp.upper, op.csum);
  dirtyLeaf(op, leaf.buf);
  dirtyLeaf(op, nb.buf);
  frame.entries.splice(frame.at + 1, 0, { hash: splitIndexHash(sp), block: nb.lblk });
  writeFrame(op, frame);
  const target = p.hash >= sp.hash2 ? reparseLeaf(op, nb.buf, nb.lblk) : reparseLeaf(op, leaf.buf, leaf.lblk);
  assert(addToLeaf(op, target, e), 'a leaf split in half must take any entry');
}

// ---------------------------------------------------------------------------------------------
// Removing and retargeting entries.
// ---------------------------------------------------------------------------------------------

/**
 * Removes `name` (ext4_delete_entry) and returns the inode it named; ENOENT when absent.
 * Htree leaves are not merged and the directory keeps its blocks, as in the kernel.
 */
export async function removeEntry(s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, name: Uint8Array): Promise<number> {
  const ino = await removeEntryUncached(s, dir, blocks, name);
  dcacheDelete(s, dir.ino, name);
  return ino;
}

async function removeEntryUncached(s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, name: Uint8Array): Promise<number> {
  const op = opOf(s, dir, blocks);
  checkName(name);
  const f = await locate(op, name);
  if (f === undefined) throw new PosixError('ENOENT', 'unlink', undefined, `"${decodeName(name)}" is not in directory inode ${dir.ino}`);
  deleteDirEntry(areaOf(op, f.leaf.buf.data), f.entry.offset, op.bs);
  dirtyLeaf(op, f.leaf.buf);
  await debugCheck(op);
  return f.entry.ino;
}

/**
 * Points the existing entry `name` at another inode (ext4_setent, rename onto an existing
 * name) and returns the inode it named before; ENOENT when absent.
 */
export async function replaceEntryIno(
  s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, name: Uint8Array, ino: number, fileType: number,
): Promise<number> {
  const old = await replaceEntryInoUncached(s, dir, blocks, name, ino, fileType);
  dcacheSet(s, dir.ino, name, ino, s.features.filetype ? fileType : 0);
  return old;
}

async function replaceEntryInoUncached(
  s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, name: Uint8Array, ino: number, fileType: number,
): Promise<number> {
  const op = opOf(s, dir, blocks);
  checkName(name);
  checkIno(s, ino);
  const ft = storedFileType(op, fileType);
  const f = await locate(op, name);
  if (f === undefined) throw new PosixError('ENOENT', 'rename', undefined, `"${decodeName(name)}" is not in directory inode ${dir.ino}`);
  setDirEntryIno(f.leaf.buf.data, f.entry.offset, ino);
  setDirEntryFileType(f.leaf.buf.data, f.entry.offset, ft);
  dirtyLeaf(op, f.leaf.buf);
  await debugCheck(op);
  return f.entry.ino;
}

// ---------------------------------------------------------------------------------------------
// '.' and '..', emptiness.
// ---------------------------------------------------------------------------------------------

/**
 * Formats block 0 of a new directory (ext4_init_new_dir): '.' → dirIno, '..' → parentIno
 * spanning the block, and the checksum tail with metadata_csum (stamped with `csumSeed`, the
 * new directory's inode seed, at sync). `buf` is the block DirBlocks.append() returned.
 */
export function initDirBlock0(s: Ext4Super, dirIno: number, csumSeed: number, parentIno: number, buf: MetaBuffer): void {
  checkIno(s, dirIno);
  checkIno(s, parentIno);
  const csum = s.features.metadataCsum;
  initDirDotBlock(buf.data, dirIno, parentIno, s.features.filetype, csum);
  s.cache.markDirty(buf, csum ? (d: Uint8Array) => setDirBlockCsum(csumSeed, d) : undefined);
  const ctx: DirParseCtx = { blockNr: buf.blockNr, ino: dirIno, hasFiletype: s.features.filetype, skipCsum: true, ...(csum ? { csumSeed } : {}) };
  assertParses('directory block 0', buf, () => parseDirBlock(buf.data, ctx));
}

/** Points '..' at `parentIno` (ext4_rename of a directory), in a linear block 0 or in dx_root. */
export async function setDotDot(s: Ext4Super, dir: InodeInfo, blocks: DirBlocks, parentIno: number): Promise<void> {
  const op = opOf(s, dir, blocks);
  checkIno(s, parentIno);
  if (op.dx) {
    const { buf, root } = await readRoot(op);
    setDxRootDotDotIno(buf.data, parentIno);
    // Re-store the entries: writeFrame marks the root dirty with its dx_tail finalizer.
    writeFrame(op, { lblk: 0, buf, off: DX_ROOT_ENTRIES_OFF, limit: root.limit, entries: root.entries, at: 0 });
  } else {
    const leaf = await readLeaf(op, 0);
    setDirEntryIno(leaf.buf.data, dotsOf(op, leaf).dotdot.offset, parentIno);
    dirtyLeaf(op, leaf.buf);
  }
  await debugCheck(op);
}

/**
 * ext4_empty_dir: true when the directory holds nothing but '.' and '..'. Every block is read:
 * dx_root and index nodes (an unused entry spanning the block, is_dx_block) hold no names.
 */
export async function isEmptyDir(s: Ext4Super, dir: InodeInfo, blocks: DirBlocks): Promise<boolean> {
  const op = opOf(s, dir, blocks);
  const n = blocks.count();
  if (n === 0) throw new Corrupt('directory', 'has no blocks', { ino: dir.ino });
  for (let lblk = 0; lblk < n; lblk++) {
    if (op.dx && lblk === 0) {
      await readRoot(op);
      continue;
    }
    if (op.dx && looksLikeDxNode((await getBlock(op, lblk)).data)) continue;
    const leaf = await readLeaf(op, lblk);
    let names = leaf.entries.length;
    if (!op.dx && lblk === 0) {
      dotsOf(op, leaf);
      names -= 2;
    }
    if (names > 0) return false;
  }
  return true;
}

/** With setDirWriteDebug on: the whole directory must verify after each operation. */
async function debugCheck(op: Op): Promise<void> {
  if (debugMounts.get(op.s) !== true) return;
  try {
    await verifyDir(op.s, op.dir, op.blocks);
  } catch (e) {
    if (e instanceof Corrupt) throw new Ext4Bug(`directory inode ${op.dir.ino} fails verification after a change: ${e.message}`);
    throw e;
  }
}
