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
import { parentOf, type BuildEntry, type Xattr } from './source.js';

const UTF8 = new TextEncoder();

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
  const nameBytes = UTF8.encode(name).length;
  return 8 + Math.ceil(nameBytes / 4) * 4;
}

/** Blocks a directory whose entries take `bytes` (rec_lens, '.' and '..' included) needs. */
function dirBlocksOf(bytes: number, bs: number): number {
  const packed = Math.ceil(bytes / (bs - 12));
  return packed <= 1 ? 1 : 2 * packed + 1 + Math.ceil(packed / 500);
}

/** Xattr bytes as ext4 stores them (entry header, name, value, each rounded to 4). */
function xattrBytes(xattrs: readonly Xattr[]): number {
  let n = 0;
  for (const x of xattrs) n += 16 + Math.ceil(x.name.length / 4) * 4 + Math.ceil(x.value.length / 4) * 4;
  return n;
}

/** What the entries need at block size `bs` (NeedCounter over a list). */
export function contentNeed(entries: Iterable<BuildEntry>, bs: number): ContentNeed {
  const c = new NeedCounter(bs);
  for (const e of entries) c.add(e);
  return c.result();
}

/**
 * contentNeed one entry at a time, in creation order (parents first, each directory's subtree
 * right after it). Directories are summed on a stack of the open ones and counted when their
 * subtree ends, so the memory is the tree's depth, not its size.
 */
export class NeedCounter {
  private blocks = 0;
  private inodes = 0;
  private dataBytes = 0;
  /** Open directories, outermost first: path and the bytes of their entries so far. */
  private readonly dirs: { path: string; bytes: number }[] = [];

  constructor(readonly blockSize: number) {}

  add(e: BuildEntry): void {
    const bs = this.blockSize;
    if (e.path !== '/') {
      const parent = parentOf(e.path);
      // Close the directories whose subtree ended (creation order: the parent is open).
      while (this.dirs.length > 0 && this.dirs[this.dirs.length - 1]!.path !== parent) this.closeDir();
      const top = this.dirs[this.dirs.length - 1];
      if (top !== undefined) top.bytes += recLen(e.path);
    }
    if (e.kind === 'dir') this.dirs.push({ path: e.path, bytes: 24 }); // '.' and '..'
    if (e.kind !== 'hardlink') this.inodes++;
    if (e.kind === 'file') {
      this.blocks += fileBlocks(e, bs);
      this.dataBytes += e.allocBytes;
    } else if (e.kind === 'symlink' && (e.target?.length ?? 0) > FAST_SYMLINK_MAX) this.blocks++;
    this.addXattrs(e.xattrs);
  }

  /** An entry's xattrs (add() counts them; a source's late xattrs come through here alone). */
  addXattrs(xattrs: readonly Xattr[]): void {
    if (xattrBytes(xattrs) > INODE_XATTR_BYTES) this.blocks++;
  }

  private closeDir(): void {
    // OK to assert: callers check the stack is not empty.
    this.blocks += dirBlocksOf(this.dirs.pop()!.bytes, this.blockSize);
  }

  /** The need of every entry added (the open directories counted as they stand). */
  result(): ContentNeed {
    let blocks = this.blocks;
    for (const d of this.dirs) blocks += dirBlocksOf(d.bytes, this.blockSize);
    return { blocks, inodes: this.inodes, dataBytes: this.dataBytes };
  }
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
