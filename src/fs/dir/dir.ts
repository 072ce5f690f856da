/**
 * Directory reading (fs/ext4/dir.c, namei.c, inline.c): iteration over linear, htree-indexed
 * and inline directories, and name lookup that uses the htree index (dx_probe + the
 * hash-collision continuation of ext4_htree_next_block) instead of a scan. Index blocks of an
 * htree directory carry a dx_tail, not a dirent tail, so iteration recognises and skips them the
 * way __ext4_read_dirblock's is_dx_block does. A hole in a directory is corruption.
 */
import type { Ext4Super } from '../super.js';
import { dcacheGet, dcacheSet, dcacheKnownAbsent } from './dcache.js';
import type { InodeInfo } from '../inode/inode.js';
import { FileMap } from '../inode/file-map.js';
import { inlineBytes } from '../inode/inline.js';
import { parseDirBlock, parseDirArea, type DirEntryRaw } from '../../format/dirent.js';
import { parseDxRoot, parseDxNode, type DxEntry } from '../../format/htree.js';
import { ext4fsDirhash } from '../../format/dirhash.js';
import { Corrupt } from '../../util/errors.js';
import { bytesEqual } from '../../util/bytes.js';

/** One directory entry as the API sees it. */
export interface DirEntry {
  name: Uint8Array;
  ino: number;
  /** EXT4_FT_* from the entry (0 when the filesystem lacks `filetype`). */
  fileType: number;
}

/** Blocks of a directory: i_size / block size, bounded by the 32-bit logical block space. */
function dirBlocks(s: Ext4Super, info: InodeInfo): number {
  if (info.size % s.blockSize !== 0) {
    throw new Corrupt('directory', `size ${info.size} is not a multiple of the block size`, { ino: info.ino });
  }
  return info.size / s.blockSize;
}

/** Reads logical block `lblk` of a directory through the cache; a hole is corruption. */
async function dirBlock(s: Ext4Super, fmap: FileMap, lblk: number): Promise<{ data: Uint8Array; pblk: number; verified: boolean; setVerified(): void }> {
  const m = await fmap.map(lblk, 1);
  if (m.kind !== 'mapped') {
    throw new Corrupt('directory', `logical block ${lblk} is a ${m.kind === 'hole' ? 'hole' : 'unwritten extent'}`, { ino: fmap.info.ino });
  }
  const buf = await s.cache.bread(m.pblk, 'directory block');
  return { data: buf.data, pblk: m.pblk, verified: buf.verified, setVerified: () => { buf.verified = true; } };
}

/** True when block `lblk` of an indexed directory is an index node (is_dx_block). */
function isDxBlock(s: Ext4Super, data: Uint8Array, lblk: number, indexed: boolean): boolean {
  if (!indexed) return false;
  if (lblk === 0) return true;
  const dv = new DataView(data.buffer, data.byteOffset, 8);
  const recLen = dv.getUint16(4, true);
  return dv.getUint32(0, true) === 0 && (recLen === s.blockSize || (s.blockSize === 65536 && recLen === 0));
}

function parseCtx(s: Ext4Super, info: InodeInfo, pblk: number) {
  return {
    blockNr: pblk, ino: info.ino, hasFiletype: s.features.filetype,
    ...(s.features.metadataCsum ? { csumSeed: info.csumSeed } : {}),
  };
}

/** Yields every live entry of a directory, '.' and '..' included. */
export async function* iterateDir(s: Ext4Super, info: InodeInfo): AsyncGenerator<DirEntry> {
  if (info.hasInlineData) {
    yield* inlineEntries(info);
    return;
  }
  const fmap = new FileMap(s, info);
  const n = dirBlocks(s, info);
  const indexed = info.isIndexedDir && s.features.dirIndex;
  for (let lblk = 0; lblk < n; lblk++) {
    const b = await dirBlock(s, fmap, lblk);
    if (isDxBlock(s, b.data, lblk, indexed)) {
      if (lblk === 0) {
        // The root holds the real '.' and '..' entries in front of the index.
        const root = parseDxRoot(b.data, { ...parseCtx(s, info, b.pblk), verifyCsum: !b.verified, largeDir: s.features.largeDir });
        yield root.dot;
        yield root.dotdot;
        b.setVerified();
      }
      continue;
    }
    const entries = parseDirBlock(b.data, b.verified ? { ...parseCtx(s, info, b.pblk), skipCsum: true } : parseCtx(s, info, b.pblk));
    b.setVerified();
    for (const e of entries) yield toEntry(e);
  }
}

function toEntry(e: DirEntryRaw): DirEntry {
  return { name: e.nameBytes, ino: e.ino, fileType: e.fileType };
}

/** Entries of an inline directory: '.', '..' (the 4-byte parent), then the two areas. */
function* inlineEntries(info: InodeInfo): Generator<DirEntry> {
  const bytes = inlineBytes(info);
  if (bytes.length < 4) throw new Corrupt('inline directory', `size ${bytes.length} < 4`, { ino: info.ino });
  const parent = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  yield { name: new Uint8Array([0x2e]), ino: info.ino, fileType: 2 };
  yield { name: new Uint8Array([0x2e, 0x2e]), ino: parent, fileType: 2 };
  const ctx = { ino: info.ino, hasFiletype: true, blockNr: 0 };
  for (const e of parseDirArea(bytes.subarray(4, Math.min(60, bytes.length)), ctx)) yield toEntry(e);
  if (bytes.length > 60) for (const e of parseDirArea(bytes.subarray(60), ctx)) yield toEntry(e);
}

/** Finds `name` in a directory; uses the htree index when the directory has one. */
export async function lookup(s: Ext4Super, info: InodeInfo, name: Uint8Array): Promise<DirEntry | undefined> {
  const hit = dcacheGet(s, info.ino, name);
  if (hit !== undefined) return { name, ino: hit.ino, fileType: hit.fileType };
  if (dcacheKnownAbsent(s, info.ino, name)) return undefined;
  const e = await lookupUncached(s, info, name);
  if (e !== undefined) dcacheSet(s, info.ino, name, e.ino, e.fileType);
  return e;
}

async function lookupUncached(s: Ext4Super, info: InodeInfo, name: Uint8Array): Promise<DirEntry | undefined> {
  if (info.isIndexedDir && s.features.dirIndex && !info.hasInlineData) return dxLookup(s, info, name);
  for await (const e of iterateDir(s, info)) if (bytesEqual(e.name, name)) return e;
  return undefined;
}

interface Frame {
  entries: readonly DxEntry[];
  at: number;
}

/** Index of the last entry whose hash is <= `hash` (entry 0 covers everything below). */
function probe(entries: readonly DxEntry[], hash: number): number {
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

/** The kernel's hash version for a directory: root's version, +3 when s_flags says unsigned. */
function hashVersionOf(s: Ext4Super, rootVersion: number): number {
  return rootVersion <= 2 && s.features.unsignedHash ? rootVersion + 3 : rootVersion;
}

/**
 * ext4_dx_find_entry: hash the name, descend from dx_root through up to indirect_levels index
 * nodes to a leaf block, scan it; while the next leaf starts with the same hash (collision bit
 * set), scan that one too.
 */
async function dxLookup(s: Ext4Super, info: InodeInfo, name: Uint8Array): Promise<DirEntry | undefined> {
  const fmap = new FileMap(s, info);
  const nblocks = dirBlocks(s, info);
  const rootB = await dirBlock(s, fmap, 0);
  const root = parseDxRoot(rootB.data, { ...parseCtx(s, info, rootB.pblk), verifyCsum: !rootB.verified, largeDir: s.features.largeDir });
  rootB.setVerified();
  if (name.length === 1 && name[0] === 0x2e) return root.dot;
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return root.dotdot;
  const { hash } = ext4fsDirhash(name, hashVersionOf(s, root.hashVersion), s.hashSeed);
  const frames: Frame[] = [{ entries: root.entries, at: probe(root.entries, hash) }];
  const checkBlock = (b: number): number => {
    if (b >= nblocks) throw new Corrupt('htree index', `points at block ${b} past the directory end (${nblocks})`, { ino: info.ino });
    return b;
  };
  for (let level = 0; level < root.indirectLevels; level++) {
    // OK: frames is non-empty and its last frame's `at` is a valid index.
    const top = frames[frames.length - 1]!;
    const nb = await dirBlock(s, fmap, checkBlock(top.entries[top.at]!.block));
    const node = parseDxNode(nb.data, { ...parseCtx(s, info, nb.pblk), verifyCsum: !nb.verified });
    nb.setVerified();
    frames.push({ entries: node.entries, at: probe(node.entries, hash) });
  }
  // Leaf blocks visited are bounded by the directory's blocks, so a crafted index cannot loop.
  for (let visits = 0; visits <= nblocks; visits++) {
    const leaf = frames[frames.length - 1]!;
    const lb = await dirBlock(s, fmap, checkBlock(leaf.entries[leaf.at]!.block));
    const entries = parseDirBlock(lb.data, lb.verified ? { ...parseCtx(s, info, lb.pblk), skipCsum: true } : parseCtx(s, info, lb.pblk));
    lb.setVerified();
    for (const e of entries) if (bytesEqual(e.nameBytes, name)) return toEntry(e);
    const next = await nextLeaf(s, fmap, info, frames, checkBlock);
    if (next === undefined || (next & ~1) >>> 0 !== hash) return undefined;
  }
  throw new Corrupt('htree index', 'lookup visited more leaves than the directory has blocks', { ino: info.ino });
}

/**
 * ext4_htree_next_block: advance the deepest frame to its next entry, climbing up (and then
 * down again) when a frame is exhausted. Returns the hash that starts the new leaf, or
 * undefined at the end of the index.
 */
async function nextLeaf(
  s: Ext4Super, fmap: FileMap, info: InodeInfo, frames: Frame[], checkBlock: (b: number) => number,
): Promise<number | undefined> {
  let i = frames.length - 1;
  while (i >= 0 && frames[i]!.at + 1 >= frames[i]!.entries.length) i--;
  if (i < 0) return undefined;
  const f = frames[i]!;
  f.at++;
  const hash = f.entries[f.at]!.hash;
  for (let j = i + 1; j < frames.length; j++) {
    const parent = frames[j - 1]!;
    const nb = await dirBlock(s, fmap, checkBlock(parent.entries[parent.at]!.block));
    const node = parseDxNode(nb.data, { ...parseCtx(s, info, nb.pblk), verifyCsum: !nb.verified });
    nb.setVerified();
    frames[j] = { entries: node.entries, at: 0 };
  }
  return hash;
}
