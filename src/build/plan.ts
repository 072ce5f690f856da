/**
 * Sizing an image for its content (when no SIZE is given): a count over the entries of the
 * blocks and inodes the content will take, then the filesystem's own overhead (group
 * descriptors, bitmaps, inode tables, journal, the root-reserved blocks) solved for by a short
 * fixed-point iteration. mkfs's real result is checked against the need afterwards (the builder
 * grows the image and makes it again if an estimate fell short), so this module only has to be
 * close and on the safe side, never exact.
 *
 * What the content takes, per entry, at block size B:
 * - regular files: ceil(allocated bytes / B) data blocks (allocated < size for sparse sources),
 *   plus extent-tree blocks once a file needs more than the 4 extents its inode holds;
 * - directories: their entries' rec_len (8 + name rounded up to 4 bytes) packed into blocks with
 *   a 12-byte checksum tail; past one block the directory is indexed (htree), whose leaves split
 *   half full, so twice the packed size plus the root;
 * - slow symlinks (targets over 59 bytes): one block;
 * - xattrs that do not fit in the inode's extra space: one block.
 */
import type { BuildEntry } from './source.js';

/** What the content needs, before any filesystem overhead. */
export interface ContentNeed {
  /** Blocks of data, directories, symlinks, extent trees and xattrs. */
  blocks: number;
  /** Inodes, the root included (the reserved inodes 1..10 and lost+found are not). */
  inodes: number;
  /** Bytes of file content that will be written (holes excluded). */
  dataBytes: number;
}

/** Longest extent a written block run can have (EXT_INIT_MAX_LEN). */
const EXTENT_MAX_BLOCKS = 32768;
/** Extents kept in the inode itself (i_block holds a header and four entries). */
const INODE_EXTENTS = 4;
/** Symlink targets up to this length live in the inode. */
const FAST_SYMLINK_MAX = 59;
/** Xattr bytes that fit in a 256-byte inode after i_extra_isize (32) and the 4-byte magic. */
const INODE_XATTR_BYTES = 256 - 128 - 32 - 4;

/** Blocks of one regular file: data plus extent-tree blocks. */
function fileBlocks(e: BuildEntry, bs: number): number {
  const data = Math.ceil(e.allocBytes / bs);
  if (data === 0) return 0;
  // Runs split at the extent limit and (conservatively) at every block group boundary.
  const extents = Math.ceil(data / EXTENT_MAX_BLOCKS) + Math.ceil(data / (8 * bs)) + (e.allocBytes < e.sizeBytes ? 16 : 0);
  const perIndexBlock = Math.floor((bs - 12) / 12);
  const treeBlocks = extents <= INODE_EXTENTS ? 0 : Math.ceil(extents / perIndexBlock) + 1;
  return data + treeBlocks;
}

/** Bytes an entry's name takes in its parent directory (ext4_dir_entry_2 rec_len). */
function recLen(path: string): number {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const nameBytes = new TextEncoder().encode(name).length;
  return 8 + Math.ceil(nameBytes / 4) * 4;
}

/** Blocks of every directory, from the names of its children. */
function dirBlocks(entries: readonly BuildEntry[], bs: number): number {
  const bytes = new Map<string, number>();
  for (const e of entries) {
    if (e.kind === 'dir') bytes.set(e.path, (bytes.get(e.path) ?? 0) + 24); // '.' and '..'
    if (e.path === '/') continue;
    const parent = e.path.slice(0, Math.max(1, e.path.lastIndexOf('/')));
    bytes.set(parent, (bytes.get(parent) ?? 0) + recLen(e.path));
  }
  let blocks = 0;
  const usable = bs - 12;
  for (const b of bytes.values()) {
    const packed = Math.ceil(b / usable);
    blocks += packed <= 1 ? 1 : 2 * packed + 1 + Math.ceil(packed / 500);
  }
  return blocks;
}

/** Xattr bytes of an entry as ext4 stores them (entry header, name, value, each rounded to 4). */
function xattrBytes(e: BuildEntry): number {
  let n = 0;
  for (const x of e.xattrs) n += 16 + Math.ceil(x.name.length / 4) * 4 + Math.ceil(x.value.length / 4) * 4;
  return n;
}

/** What the entries need at block size `bs`. */
export function contentNeed(entries: readonly BuildEntry[], bs: number): ContentNeed {
  let blocks = dirBlocks(entries, bs);
  let inodes = 0;
  let dataBytes = 0;
  for (const e of entries) {
    if (e.kind !== 'hardlink') inodes++;
    if (e.kind === 'file') {
      blocks += fileBlocks(e, bs);
      dataBytes += e.allocBytes;
    } else if (e.kind === 'symlink' && (e.target?.length ?? 0) > FAST_SYMLINK_MAX) blocks++;
    if (xattrBytes(e) > INODE_XATTR_BYTES) blocks++;
  }
  return { blocks, inodes, dataBytes };
}

/** The journal mkfs makes for a filesystem of `blocks` blocks (ext2fs_default_journal_size). */
function journalBlocks(blocks: number): number {
  if (blocks < 2048) return 0;
  if (blocks < 32768) return 1024;
  if (blocks < 256 * 1024) return 4096;
  if (blocks < 512 * 1024) return 8192;
  if (blocks < 4096 * 1024) return 16384;
  if (blocks < 8192 * 1024) return 32768;
  if (blocks < 16384 * 1024) return 65536;
  if (blocks < 32768 * 1024) return 131072;
  return 262144;
}

export interface SizeInput {
  need: ContentNeed;
  blockSize: number;
  inodeSize: number;
  /** Headroom on top of the content, in percent. */
  marginPercent: number;
  /** Percentage of blocks reserved for root (mkfs -m). */
  reservedPercent: number;
  /** Inodes to make; default the need plus the margin. */
  inodesCount?: number | undefined;
}

export interface SizePlan {
  sizeBytes: number;
  inodesCount: number;
  /** Free, unreserved blocks the image must offer after mkfs for the content and margin. */
  wantFreeBlocks: number;
  /** Free inodes it must offer. */
  wantFreeInodes: number;
}

/** Slack on top of the margin: small trees still get room for a few more files. */
const SLACK_BYTES = 2 << 20;

/**
 * The image size for the content (see the module comment): content plus margin plus slack as
 * free space, then the overhead of a filesystem that size, iterated until it settles.
 */
export function planSize(input: SizeInput): SizePlan {
  const { need, blockSize: bs, inodeSize } = input;
  const margin = 1 + input.marginPercent / 100;
  const wantFreeBlocks = Math.ceil(need.blocks * margin) + Math.ceil(SLACK_BYTES / bs);
  const inodesCount = input.inodesCount ?? Math.ceil(need.inodes * margin) + 16;
  const wantFreeInodes = need.inodes; // the root is made by mkfs, but so is lost+found
  const blocksPerGroup = 8 * bs;
  let total = wantFreeBlocks;
  for (let i = 0; i < 8; i++) {
    const groups = Math.ceil(total / blocksPerGroup);
    const descBlocks = Math.ceil((groups * 64) / bs);
    // Superblock and descriptor copies: group 0, 1 and the powers of 3, 5 and 7.
    const backups = 1 + Math.ceil(Math.log(Math.max(groups, 2)) / Math.log(3)) * 3;
    const itable = Math.ceil((inodesCount * inodeSize) / bs) + groups;
    const overhead = backups * (1 + descBlocks) + 2 * groups + itable + journalBlocks(total) + 16;
    const reserved = Math.ceil((total * input.reservedPercent) / 100);
    const next = wantFreeBlocks + overhead + reserved + 1;
    if (next <= total) break;
    total = next;
  }
  // Whole MiB, and at least what mkfs accepts with a journal (8 MiB).
  const mib = Math.max(8, Math.ceil((total * bs) / (1 << 20)));
  return { sizeBytes: mib * (1 << 20), inodesCount, wantFreeBlocks, wantFreeInodes };
}
