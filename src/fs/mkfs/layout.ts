/**
 * Where everything of a new filesystem goes, computed without I/O: the geometry of
 * ext2fs_initialize() (lib/ext2fs/initialize.c), the group tables of
 * ext2fs_allocate_group_table() with flex_bg packing (lib/ext2fs/alloc_tables.c), then the
 * blocks of the root directory, lost+found and the journal in the order mke2fs allocates them
 * (misc/mke2fs.c main(), lib/ext2fs/mkjournal.c, lib/ext2fs/fallocate.c). Reproducing
 * libext2fs's choices block for block lets tests compare our images with mkfs.ext4's byte for
 * byte; the kernel and e2fsck only need the result to be self-consistent.
 *
 * Invariants: the UsedSpace holds exactly the blocks in use when the layout is done; every
 * group's free count is its size minus its used blocks; a group keeps BLOCK_UNINIT only when
 * the kernel's ext4_init_block_bitmap() would rebuild its bitmap exactly (nothing of other
 * groups and no data inside, and it is not the last group).
 */
import { assert } from '../../util/assert.js';
import { Incompatible, PosixError } from '../../util/errors.js';
import { EXT_INIT_MAX_LEN, extentNodeCapacity } from '../../format/extent.js';
import {
  EXT4_GOOD_OLD_FIRST_INO, EXT4_MIN_DESC_SIZE, EXT4_MIN_DESC_SIZE_64BIT, EXT4_DEFAULT_LOG_GROUPS_PER_FLEX,
} from '../../format/superblock.js';
import { UsedSpace } from './space.js';

/** The numbers ext2fs_initialize() settles on. */
export interface Geometry {
  blockSize: number;
  /** Blocks in the filesystem (the last group may have been dropped). */
  blocksCount: number;
  /** 1 with 1 KiB blocks (block 0 is the boot block), else 0. */
  firstDataBlock: number;
  blocksPerGroup: number;
  groupCount: number;
  /** Group descriptor size in bytes (64 with 64bit, else 32). */
  descSize: number;
  /** Blocks of the group descriptor table. */
  descBlocks: number;
  inodeSize: number;
  inodesPerGroup: number;
  /** Inode table blocks per group. */
  inodeTableBlocks: number;
  inodesCount: number;
  /** Blocks reserved for root (s_r_blocks_count). */
  rBlocksCount: number;
  /** log2 of groups per flex group, 0 without flex_bg. */
  logGroupsPerFlex: number;
  sparseSuper: boolean;
}

/** What computeGeometry needs (mke2fs's PRS() has resolved these). */
export interface GeometryInput {
  blockSize: number;
  /** Blocks the device offers, before the last group is possibly dropped. */
  blocksCount: number;
  /** s_inodes_count asked for: -N, or blocks * blockSize / inode ratio. */
  inodesWanted: number;
  inodeSize: number;
  /** s_r_blocks_count for the blocks the device offers. */
  rBlocksCount: number;
  is64bit: boolean;
  flexBg: boolean;
  sparseSuper: boolean;
}

const MAX_U32 = 0xffff_ffff;

/** ext4_bg_has_super with sparse_super: groups 0, 1 and powers of 3, 5 and 7. */
export function groupHasSuper(g: number, sparseSuper: boolean): boolean {
  if (g <= 1 || !sparseSuper) return true;
  if (g % 2 === 0) return false;
  for (const base of [3, 5, 7]) {
    let p = base;
    while (p < g) p *= base;
    if (p === g) return true;
  }
  return false;
}

/**
 * ext2fs_initialize()'s geometry: groups, inodes per group rounded to fill whole inode-table
 * blocks (and a multiple of 8), and the last group dropped when it cannot hold its own
 * metadata plus 50 blocks. Throws PosixError EINVAL when the filesystem is too small or has
 * too many inodes.
 */
export function computeGeometry(input: GeometryInput): Geometry {
  const bs = input.blockSize;
  const fdb = bs === 1024 ? 1 : 0;
  const descSize = input.is64bit ? EXT4_MIN_DESC_SIZE_64BIT : EXT4_MIN_DESC_SIZE;
  const inodesPerBlock = bs / input.inodeSize;
  let bpg = Math.min(bs * 8, 65528);
  let blocks = input.blocksCount;
  let rBlocks = input.rBlocksCount;
  for (;;) {
    const groups = Math.ceil((blocks - fdb) / bpg);
    if (groups <= 0 || blocks <= fdb) throw tooSmall(input);
    const descBlocks = Math.ceil(groups / (bs / descSize));
    const inodes = Math.max(input.inodesWanted, EXT4_GOOD_OLD_FIRST_INO + 1);
    let ipg = Math.ceil(inodes / groups);
    if (ipg > bs * 8) {
      if (bpg < 256) throw new PosixError('EINVAL', 'mkfs', undefined, `too many inodes (${inodes}) for this filesystem`);
      // Try again with slightly smaller groups (more of them), as ext2fs_initialize does.
      bpg -= 8;
      blocks = input.blocksCount;
      rBlocks = input.rBlocksCount;
      continue;
    }
    ipg = Math.min(ipg, 65536 - inodesPerBlock);
    let itb: number;
    for (;;) {
      itb = Math.ceil((ipg * input.inodeSize) / bs);
      let filled = Math.floor((itb * bs) / input.inodeSize);
      filled = Math.max(filled, 8) & ~7;
      itb = Math.ceil((filled * input.inodeSize) / bs);
      if (filled * groups > MAX_U32) {
        ipg--;
        continue;
      }
      ipg = filled;
      break;
    }
    if (descBlocks > Math.floor((bpg * 3) / 4)) {
      throw new Incompatible(`${groups} block groups need meta_bg, which ext4ts mkfs does not create`, ['meta_bg']);
    }
    if (3 + itb + descBlocks > bpg) throw new PosixError('EINVAL', 'mkfs', undefined, `too many inodes (${inodes}) for this filesystem`);
    let overhead = 2 + itb;
    if (groupHasSuper(groups - 1, input.sparseSuper)) overhead += 1 + descBlocks;
    const rem = (blocks - fdb) % bpg;
    if (groups === 1 && rem !== 0 && rem < overhead) throw tooSmall(input);
    if (rem !== 0 && rem < overhead + 50) {
      blocks -= rem;
      // Keep the reserved ratio of what was asked (ext2fs_initialize recomputes it this way).
      const ratio = (100.0 * input.rBlocksCount) / input.blocksCount;
      rBlocks = Math.floor((ratio * blocks) / 100.0);
      continue;
    }
    if (ipg < EXT4_GOOD_OLD_FIRST_INO) {
      throw new PosixError('EINVAL', 'mkfs', undefined,
        `${ipg} inodes per group cannot hold the ${EXT4_GOOD_OLD_FIRST_INO} reserved inodes; ask for more inodes (-N)`);
    }
    return {
      blockSize: bs, blocksCount: blocks, firstDataBlock: fdb, blocksPerGroup: bpg, groupCount: groups,
      descSize, descBlocks, inodeSize: input.inodeSize, inodesPerGroup: ipg, inodeTableBlocks: itb,
      inodesCount: ipg * groups, rBlocksCount: rBlocks, logGroupsPerFlex: input.flexBg ? EXT4_DEFAULT_LOG_GROUPS_PER_FLEX : 0,
      sparseSuper: input.sparseSuper,
    };
  }
}

function tooSmall(input: GeometryInput): PosixError {
  return new PosixError('EINVAL', 'mkfs', undefined,
    `a filesystem of ${input.blocksCount} blocks of ${input.blockSize} bytes is too small for ext4`);
}

/** A run of journal blocks mapped at a logical block. */
export interface ExtentRun {
  lblk: number;
  pblk: number;
  len: number;
}

/** Where each group's tables are, and what the groups hold. */
export interface Layout {
  geo: Geometry;
  /** Per group: block bitmap, inode bitmap and first inode-table block. */
  blockBitmap: Float64Array;
  inodeBitmap: Float64Array;
  inodeTable: Float64Array;
  /** Per group: free blocks. */
  freeBlocks: Uint32Array;
  /** Per group: true when the kernel can rebuild the block bitmap (BLOCK_UNINIT). */
  blockUninit: Uint8Array;
  /** Every block in use. */
  space: UsedSpace;
  /** s_overhead_clusters as mke2fs computes it: metadata + journal + s_first_data_block. */
  overheadBlocks: number;
  rootBlock: number;
  lostFoundBlocks: number[];
  /** The journal's extents (empty without a journal) and its extent tree block, if any. */
  journal: ExtentRun[];
  journalTreeBlock: number | undefined;
}

/** First block of group g. */
export function groupFirstBlock(geo: Geometry, g: number): number {
  return geo.firstDataBlock + g * geo.blocksPerGroup;
}
/** Last block of group g (the last group may be short). */
export function groupLastBlock(geo: Geometry, g: number): number {
  return Math.min(groupFirstBlock(geo, g) + geo.blocksPerGroup - 1, geo.blocksCount - 1);
}
/** The group that holds block b. */
export function groupOfBlock(geo: Geometry, b: number): number {
  return Math.floor((b - geo.firstDataBlock) / geo.blocksPerGroup);
}

/**
 * The groups holding superblock backups, and the blocks of the superblock + descriptor table
 * copy each one starts with (ext2fs_super_and_bgd_loc2 without meta_bg).
 */
export function superCopies(geo: Geometry): { group: number; block: number }[] {
  const out: { group: number; block: number }[] = [];
  for (let g = 0; g < geo.groupCount; g++) {
    if (!groupHasSuper(g, geo.sparseSuper)) continue;
    // Group 0's superblock is block 1 with 1 KiB blocks and block 0 (at byte 1024) otherwise.
    out.push({ group: g, block: g === 0 ? geo.firstDataBlock : groupFirstBlock(geo, g) });
  }
  return out;
}

/** State shared by the allocation steps. */
class Allocator {
  readonly space: UsedSpace;
  /** Groups that lose BLOCK_UNINIT (something not rebuilt by the kernel lies in them). */
  readonly touched = new Set<number>();
  constructor(readonly geo: Geometry) {
    this.space = new UsedSpace(geo.firstDataBlock, geo.blocksCount);
  }
  /** Marks [b, b+n) used; `touch` clears BLOCK_UNINIT of every group the run meets. */
  use(b: number, n: number, touch: boolean): void {
    this.space.mark(b, n);
    if (!touch) return;
    for (let g = groupOfBlock(this.geo, b); g <= groupOfBlock(this.geo, b + n - 1); g++) this.touched.add(g);
  }
  freeInGroup(g: number): number {
    const a = groupFirstBlock(this.geo, g);
    const b = groupLastBlock(this.geo, g) + 1;
    return b - a - this.space.usedIn(a, b);
  }
  fail(what: string): never {
    throw new PosixError('ENOSPC', 'mkfs', undefined, `no room for ${what}`);
  }
}

/** ext2fs_reserve_super_and_bgd for every group: superblock and descriptor table copies. */
function reserveSuperAndBgd(a: Allocator): void {
  const geo = a.geo;
  for (const c of superCopies(geo)) {
    const n = Math.min(1 + geo.descBlocks, geo.blocksCount - c.block);
    a.use(c.block, n, false);
  }
}

/**
 * flexbg_offset(): where the tables of `g` (elements of elemSize blocks) should start: right
 * after the previous group's if there is room within the next `size` blocks, else the first
 * run big enough for all remaining groups of the flex group, else any room.
 */
function flexbgOffset(a: Allocator, g: number, startBlk: number, remGrp: number, elemSize: number): number {
  const geo = a.geo;
  const flexSize = 1 << geo.logGroupsPerFlex;
  const size = Math.min(remGrp * elemSize, Math.floor(geo.blocksPerGroup / 4));
  if (startBlk !== 0 && startBlk < geo.blocksCount) {
    const r = a.space.getFreeBlocks(startBlk, startBlk + size, elemSize);
    if (r !== undefined) return r;
  }
  const first = groupFirstBlock(geo, flexSize * Math.floor(g / flexSize));
  const lastBlk = groupLastBlock(geo, Math.min(g | (flexSize - 1), geo.groupCount - 1));
  return a.space.getFreeBlocks(first, lastBlk, size) ??
    a.space.getFreeBlocks(first, lastBlk, elemSize) ??
    a.space.getFreeBlocks(0, lastBlk, elemSize) ?? 0;
}

/** ext2fs_allocate_group_table() for every group. */
function allocateGroupTables(a: Allocator, bb: Float64Array, ib: Float64Array, it: Float64Array): void {
  const geo = a.geo;
  const flex = geo.logGroupsPerFlex > 0;
  const flexSize = 1 << geo.logGroupsPerFlex;
  const itb = geo.inodeTableBlocks;
  for (let g = 0; g < geo.groupCount; g++) {
    const groupBlk = groupFirstBlock(geo, g);
    let lastBlk = groupLastBlock(geo, g);
    let start = groupBlk;
    let remGrps = 0;
    let tableOffset = 0;
    let lastGrp = g;
    if (flex) {
      lastGrp = Math.min(g | (flexSize - 1), geo.groupCount - 1);
      remGrps = lastGrp - g + 1;
      tableOffset = flexSize;
      let prev = 0;
      if (g % flexSize !== 0) prev = bb[g - 1]! + 1;
      else if (lastGrp === geo.groupCount - 1) {
        // The last flex group keeps its tables contiguous: offsets by its real group count.
        const t = lastGrp & (flexSize - 1);
        tableOffset = t === 0 ? flexSize : t + 1;
      }
      start = flexbgOffset(a, g, prev, remGrps, 1);
      lastBlk = groupLastBlock(geo, lastGrp);
    }
    const b1 = a.space.getFreeBlocks(start, lastBlk, 1) ?? a.space.getFreeBlocks(groupBlk, lastBlk, 1) ?? a.fail(`the block bitmap of group ${g}`);
    a.use(b1, 1, flex);
    bb[g] = b1;
    if (flex) {
      const prev = g % flexSize !== 0 ? ib[g - 1]! + 1 : b1 + tableOffset;
      start = flexbgOffset(a, g, prev, remGrps, 1);
    }
    const b2 = a.space.getFreeBlocks(start, lastBlk, 1) ?? a.space.getFreeBlocks(groupBlk, lastBlk, 1) ?? a.fail(`the inode bitmap of group ${g}`);
    a.use(b2, 1, flex);
    ib[g] = b2;
    let tableStart = groupBlk;
    if (flex) {
      const prev = g % flexSize !== 0 ? it[g - 1]! + itb : b2 + tableOffset;
      tableStart = flexbgOffset(a, g, prev, remGrps, itb);
    }
    const t = a.space.getFreeBlocks(tableStart, lastBlk, itb) ?? a.fail(`the inode table of group ${g}`);
    a.use(t, itb, flex);
    it[g] = t;
  }
}

/** get_midpoint_journal_block(): the first block of the group mke2fs starts the journal in. */
function journalGoal(a: Allocator): number {
  const geo = a.geo;
  const mid = Math.floor((geo.blocksCount - geo.firstDataBlock) / 2);
  let group = groupOfBlock(geo, mid);
  const logFlex = 1 << geo.logGroupsPerFlex;
  let start: number;
  if (geo.logGroupsPerFlex > 0 && group > logFlex) {
    group &= ~(logFlex - 1);
    while (group < geo.groupCount && a.freeInGroup(group) === 0) group++;
    if (group === geo.groupCount) group = 0;
    start = group;
  } else {
    start = group > 0 ? group - 1 : group;
  }
  const end = group + 1 < geo.groupCount ? group + 1 : group;
  let best = start;
  for (let i = start + 1; i <= end; i++) if (a.freeInGroup(i) > a.freeInGroup(best)) best = i;
  return groupFirstBlock(geo, best);
}

/**
 * ext2fs_fallocate() of the journal as write_journal_inode() calls it: free runs from the goal
 * on, each extent at most EXT_INIT_MAX_LEN blocks. When a fifth extent no longer fits in the
 * inode, extent_node_split() moves the extents into a tree block it tries to put just before
 * the first extent.
 */
function allocateJournal(a: Allocator, blocks: number): { runs: ExtentRun[]; tree: number | undefined } {
  const geo = a.geo;
  const runs: ExtentRun[] = [];
  let tree: number | undefined;
  let pblk = a.space.nextFree(journalGoal(a));
  if (pblk >= geo.blocksCount) pblk = geo.firstDataBlock;
  const inInode = extentNodeCapacity(60, true);
  const inLeaf = extentNodeCapacity(geo.blockSize, false);
  for (let lblk = 0; lblk < blocks; ) {
    const r = a.space.newRange(pblk, Math.min(blocks - lblk, EXT_INIT_MAX_LEN));
    a.use(r.start, r.len, true);
    runs.push({ lblk, pblk: r.start, len: r.len });
    if (runs.length === inInode + 1 && tree === undefined) {
      // OK to index: runs has inInode + 1 >= 1 entries.
      tree = a.space.newBlock(runs[0]!.pblk - 1);
      a.use(tree, 1, true);
    }
    if (runs.length > inLeaf) {
      throw new Incompatible(`the journal needs more than ${inLeaf} extents; the free space is too fragmented`);
    }
    lblk += r.len;
    pblk = r.start + r.len;
    if (pblk >= geo.blocksCount) pblk = geo.firstDataBlock;
  }
  return { runs, tree };
}

/** Lost+found's size as mke2fs makes it: 16 KiB, at least 2 blocks, at most 12 (direct) blocks. */
export function lostFoundBlockCount(blockSize: number): number {
  let n = 1;
  let size = 0;
  for (let i = 1; i < 12; i++) {
    size += blockSize;
    if (size >= 16 * 1024 && size >= 2 * blockSize) break;
    n++;
  }
  return n;
}

/**
 * Lays the filesystem out: group tables, then root directory and lost+found blocks, then the
 * journal (`journalBlocks` 0 for none), in mke2fs's order. Computes free counts and which
 * groups keep BLOCK_UNINIT (`csum`: the filesystem has group descriptor checksums).
 */
export function layOut(geo: Geometry, journalBlocks: number, csum: boolean): Layout {
  const a = new Allocator(geo);
  const n = geo.groupCount;
  const bb = new Float64Array(n);
  const ib = new Float64Array(n);
  const it = new Float64Array(n);
  reserveSuperAndBgd(a);
  allocateGroupTables(a, bb, ib, it);
  const metadataBlocks = a.space.usedCount;
  // Root and lost+found: ext2fs_mkdir() takes the first free block from the start of the inode's
  // flex group (group 0), and ext2fs_expand_dir() the first free block after the last one.
  const rootBlock = a.space.newBlock(geo.firstDataBlock);
  a.use(rootBlock, 1, true);
  const lostFoundBlocks: number[] = [];
  let goal = geo.firstDataBlock;
  for (let i = 0; i < lostFoundBlockCount(geo.blockSize); i++) {
    const b = a.space.newBlock(goal);
    a.use(b, 1, true);
    lostFoundBlocks.push(b);
    goal = b;
  }
  const j = journalBlocks > 0 ? allocateJournal(a, journalBlocks) : { runs: [], tree: undefined };
  const freeBlocks = new Uint32Array(n);
  const blockUninit = new Uint8Array(n);
  for (let g = 0; g < n; g++) {
    freeBlocks[g] = a.freeInGroup(g);
    blockUninit[g] = csum && g !== n - 1 && !a.touched.has(g) ? 1 : 0;
  }
  assert(a.space.usedCount === metadataBlocks + 1 + lostFoundBlocks.length + journalBlocks + (j.tree === undefined ? 0 : 1),
    'layout: used blocks do not add up');
  return {
    geo, blockBitmap: bb, inodeBitmap: ib, inodeTable: it, freeBlocks, blockUninit, space: a.space,
    overheadBlocks: metadataBlocks + journalBlocks + geo.firstDataBlock, rootBlock, lostFoundBlocks,
    journal: j.runs, journalTreeBlock: j.tree,
  };
}
