/**
 * Birth and death of inodes (fs/ext4/ialloc.c __ext4_new_inode, inode.c ext4_evict_inode and
 * ext4_truncate): a new inode's record is built whole in memory and written once; an evicted
 * inode gives back its data blocks, its extent-tree or indirect blocks and its xattr block, gets
 * its dtime, and its bit is cleared last, so a crash in between leaks blocks (e2fsck frees them)
 * but never leaves a free inode that owns blocks.
 */
import type { Ext4Super } from '../super.js';
import { InodeInfo, writeInode, addInodeBlocks } from './inode.js';
import { iadd, iforget } from './icache.js';
import { dcacheDropDir } from '../dir/dcache.js';
import { listIndirectBlocks } from './block-map.js';
import { MAX_LBLK } from './file-map.js';
import { ExtentTree } from '../extents/extent-tree.js';
import { getBalloc } from '../alloc/balloc.js';
import { allocInode, freeInode } from '../alloc/ialloc.js';
import { releaseXattrBlock } from '../xattr/xattr-write.js';
import {
  Inode, INODE_VIEW_SIZE, EXT4_GOOD_OLD_INODE_SIZE, setInodeUid, setInodeGid, setInodeTime,
  setInodeSizeBytes, inodeCsumSeed, fileTypeOfMode, EXT4_EXTENTS_FL, EXT4_INLINE_DATA_FL, S_IFMT,
  type Timespec,
} from '../../format/inode.js';
import { crc32cRaw } from '../../util/crc.js';
import { assert } from '../../util/assert.js';
import { PosixError } from '../../util/errors.js';

/** What a new inode starts with. */
export interface NewInodeSpec {
  parentIno: number;
  /** Full i_mode: type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Extent-mapped (files, directories, slow symlinks on an `extent` filesystem). */
  extents: boolean;
}

/**
 * Per-mount generation state: a deterministic counter (reproducible builds stay byte-identical),
 * the CRC state after the UUID and one scratch buffer, so a new inode costs one 8-byte CRC.
 */
interface Generations {
  n: number;
  uuidCrc: number;
  bytes: Uint8Array;
  view: DataView;
}
const generations = new WeakMap<Ext4Super, Generations>();

function nextGeneration(s: Ext4Super, ino: number): number {
  let g = generations.get(s);
  if (g === undefined) {
    const bytes = new Uint8Array(8);
    g = { n: 0, uuidCrc: crc32cRaw(0xffffffff, s.sb.s_uuid), bytes, view: new DataView(bytes.buffer) };
    generations.set(s, g);
  }
  g.n++;
  g.view.setUint32(0, ino, true);
  g.view.setUint32(4, g.n, true);
  return crc32cRaw(g.uuidCrc, g.bytes);
}

/** Allocates and writes a new inode (link count 1; the caller links it and sets 2 for dirs). */
export async function newInode(s: Ext4Super, spec: NewInodeSpec): Promise<InodeInfo> {
  assert(fileTypeOfMode(spec.mode) !== undefined, () => `newInode: mode 0o${spec.mode.toString(8)}`);
  const isDir = (spec.mode & S_IFMT) === 0o040000;
  const ino = await allocInode(s, { parentIno: spec.parentIno, isDir });
  const record = new Uint8Array(Math.max(s.inodeSize, INODE_VIEW_SIZE));
  const v = new Inode(record, 0);
  v.i_mode = spec.mode;
  setInodeUid(v, spec.uid);
  setInodeGid(v, spec.gid);
  v.i_links_count = 1;
  if (s.inodeSize > EXT4_GOOD_OLD_INODE_SIZE) {
    const want = s.sb.s_want_extra_isize || 32;
    v.i_extra_isize = Math.min(want, s.inodeSize - EXT4_GOOD_OLD_INODE_SIZE) & ~3;
  }
  v.i_generation = nextGeneration(s, ino);
  const now = s.now();
  for (const w of ['atime', 'mtime', 'ctime', 'crtime'] as const) setInodeTime(v, w, now, s.inodeSize);
  const seed = s.features.metadataCsum ? inodeCsumSeed(s.csumSeed, ino, v.i_generation) : 0;
  const info = new InodeInfo(ino, record, v, seed, s.inodeSize, s.features.largeDir);
  if (spec.extents && s.features.extents) ExtentTree.initRoot(info);
  await writeInode(s, info);
  iadd(s, info);
  return info;
}

/** Sets a/m/c times to now, as an operation that changes content does (mtime+ctime) or only ctime. */
export function touch(s: Ext4Super, info: InodeInfo, which: readonly ('atime' | 'mtime' | 'ctime')[], t: Timespec = s.now()): void {
  for (const w of which) setInodeTime(info.view, w, t, s.inodeSize);
}

/**
 * Frees every block of `info` from logical block `fromLblk` on (ext4_truncate's block part) and
 * returns how many data blocks went. Extent-mapped: the tree removes the range and frees its
 * own emptied nodes. Block-mapped (ext2/3): only a full release (fromLblk 0) is supported.
 */
export async function freeBlocksFrom(s: Ext4Super, info: InodeInfo, fromLblk: number): Promise<number> {
  const balloc = getBalloc(s);
  if (info.hasInlineData) {
    throw new PosixError('EOPNOTSUPP', 'truncate', undefined, `inode ${info.ino} has inline data; ext4ts does not change inline-data files yet`);
  }
  if (info.hasExtents) {
    const tree = new ExtentTree(s, info, balloc);
    const runs = await tree.remove(fromLblk, MAX_LBLK - fromLblk);
    let n = 0;
    for (const r of runs) {
      await balloc.freeBlocks(r.pblk, r.len);
      addInodeBlocks(s, info, -r.len);
      n += r.len;
    }
    await writeInode(s, info);
    return n;
  }
  if (isBlockMapped(info)) {
    if (fromLblk !== 0) {
      throw new PosixError('EOPNOTSUPP', 'truncate', undefined, `inode ${info.ino} is block-mapped (ext2/3); ext4ts frees such files only whole`);
    }
    const sizeBlocks = Math.ceil(info.size / s.blockSize);
    const { data, meta } = await listIndirectBlocks(s, info, Math.max(sizeBlocks, 12));
    let n = 0;
    for (const m of data) {
      if (m.kind !== 'mapped') continue;
      await balloc.freeBlocks(m.pblk, m.len);
      addInodeBlocks(s, info, -m.len);
      n += m.len;
    }
    for (const b of meta) {
      await balloc.freeBlocks(b, 1);
      addInodeBlocks(s, info, -1);
    }
    info.view.i_block.fill(0);
    await writeInode(s, info);
    return n;
  }
  return 0;
}

/** Files, directories and slow symlinks without EXTENTS_FL map blocks through i_block. */
function isBlockMapped(info: InodeInfo): boolean {
  if (info.hasExtents || info.hasInlineData) return false;
  if (info.type === 'file' || info.type === 'dir') return true;
  if (info.type === 'symlink') return info.view.i_blocks_lo !== 0 || info.view.l_i_blocks_high !== 0;
  return false;
}

/**
 * Releases an inode whose last link went and that nobody has open (ext4_evict_inode): blocks,
 * xattr block, then dtime and the bitmap bit.
 */
export async function evictInode(s: Ext4Super, info: InodeInfo): Promise<void> {
  assert(info.linksCount === 0, () => `evict inode ${info.ino} with ${info.linksCount} links`);
  const isDir = info.type === 'dir';
  if (!(info.type === 'symlink' && !isBlockMapped(info) && !info.hasExtents)) await freeBlocksFrom(s, info, 0);
  else info.view.i_block.fill(0);
  if (info.fileAcl !== 0) await releaseXattrBlock(s, info, getBalloc(s));
  setInodeSizeBytes(info.view, 0);
  info.view.i_flags = (info.view.i_flags & ~EXT4_INLINE_DATA_FL) >>> 0;
  if (info.hasExtents) ExtentTree.initRoot(info);
  const now = s.now();
  info.view.i_dtime = now.sec >>> 0;
  await writeInode(s, info);
  await freeInode(s, info.ino, isDir);
  if (isDir) dcacheDropDir(s, info.ino);
  iforget(s, info.ino);
}

export { EXT4_EXTENTS_FL };
