/**
 * The bytes of a new filesystem's metadata, built from a Layout: the superblock and its
 * backups, the group descriptor table, bitmaps, the reserved inodes, the root directory and
 * lost+found blocks, the journal superblock and extent tree block. What each holds follows
 * mke2fs 1.47 (misc/mke2fs.c, lib/ext2fs/initialize.c, alloc_stats.c, mkjournal.c, closefs.c)
 * so that, with the same UUID, hash seed and time, the metadata equals mkfs.ext4's byte for
 * byte (s_kbytes_written and the superblock checksums aside).
 *
 * Invariants: every checksum is computed last, over the finished bytes; inodes 1 and 3..10
 * carry i_extra_isize 0 like mke2fs's (they are written through the 128-byte inode struct) yet a
 * valid (16-bit) checksum, because e2fsck checks reserved inodes too.
 */
import {
  SuperBlock, type SuperBlockView, SUPERBLOCK_SIZE, EXT4_SUPER_MAGIC, EXT4_VALID_FS, EXT2_FLAGS_SIGNED_HASH,
  EXT4_CRC32C_CHKSUM, EXT4_DYNAMIC_REV, EXT4_GOOD_OLD_FIRST_INO, EXT4_JOURNAL_INO, EXT4_ROOT_INO,
  setBlocksCount, setRBlocksCount, setFreeBlocksCount, setSuperblockCsum, setSbTime, EXT4_ERRORS_CONTINUE,
  EXT4_OS_LINUX, EXT4_DEFM_ACL, EXT4_DEFM_XATTR_USER, EXT3_JNL_BACKUP_BLOCKS, jnlBlocksBackup,
} from '../../format/superblock.js';
import {
  GroupDesc, type GdCsumKind, setGroupDescCsum, bitmapCsum, EXT4_BG_BLOCK_UNINIT, EXT4_BG_INODE_UNINIT,
  EXT4_BG_INODE_ZEROED,
} from '../../format/group-desc.js';
import {
  Inode, type InodeView, INODE_VIEW_SIZE, EXT4_GOOD_OLD_INODE_SIZE, S_IFDIR, S_IFREG, EXT4_EXTENTS_FL,
  setInodeCsum, setInodeTime, setInodeSizeBytes, setInodeUid, setInodeGid, inodeCsumSeed, type Timespec,
} from '../../format/inode.js';
import {
  ExtentNode, ExtentHeader, EXT4_EXT_ROOT_MAX, EXT_ENTRY_SIZE, setExtentBlockCsum, extentNodeCapacity,
} from '../../format/extent.js';
import {
  initDirBlock, writeDirEntry, setDirBlockCsum, dirTailOffset, initDirTail, dirEntryMinRecLen, EXT4_FT_DIR,
  EXT4_FT_UNKNOWN,
} from '../../format/dirent.js';
import { JournalSuperblock, JBD2_MAGIC_NUMBER, JBD2_SUPERBLOCK_V2 } from '../../format/jbd2.js';
import { DX_HASH_HALF_MD4 } from '../../format/dirhash.js';
import { encodeUtf8 } from '../../util/bytes.js';
import { assert } from '../../util/assert.js';
import { type Layout, type ExtentRun, groupHasSuper } from './layout.js';
import { featureBits, type MkfsFeatures } from './options.js';

/** Everything the builders need besides the layout. */
export interface BuildParams {
  features: MkfsFeatures;
  uuid: Uint8Array;
  hashSeed: Uint8Array;
  label: Uint8Array;
  /** The one timestamp of the whole mkfs (mke2fs's fs->now). */
  now: Timespec;
  rootUid: number;
  rootGid: number;
  /** Inode tables are known to read as zeros (EXT4_BG_INODE_ZEROED). */
  itableZeroed: boolean;
  /** crc32c(~0, uuid): the seed of every metadata checksum. */
  csumSeed: number;
}

/** The group descriptor checksum kind for these features. */
export function gdCsumOf(p: BuildParams): GdCsumKind {
  if (p.features.metadata_csum) return { kind: 'crc32c', seed: p.csumSeed };
  if (p.features.gdt_csum) return { kind: 'crc16', uuid: p.uuid };
  return { kind: 'none' };
}

/** True when groups may be left uninitialised (uninit_bg or metadata_csum). */
export function hasGroupCsum(p: BuildParams): boolean {
  return p.features.metadata_csum || p.features.gdt_csum;
}

/** Blocks of group 0's inode table that hold the reserved inodes 1..11. */
export function reservedItableBlocks(l: Layout): number {
  return Math.ceil((EXT4_GOOD_OLD_FIRST_INO * l.geo.inodeSize) / l.geo.blockSize);
}

/** Free inodes: all but the 11 reserved ones (1..10 and lost+found). */
function freeInodes(l: Layout, g: number): number {
  return g === 0 ? l.geo.inodesPerGroup - EXT4_GOOD_OLD_FIRST_INO : l.geo.inodesPerGroup;
}

/**
 * eh_max of a tree block as libext2fs sets it: (blocksize - header) / entry size, without
 * reserving the tail (the result is the same as the kernel's for 1, 2 and 4 KiB blocks).
 */
function extentBlockMaxEntries(blockSize: number): number {
  const max = extentNodeCapacity(blockSize, false);
  assert(max === Math.floor((blockSize - ExtentHeader.SIZE) / EXT_ENTRY_SIZE), 'tree block capacity differs from libext2fs');
  return max;
}

/**
 * The primary superblock (s_block_group_nr 0), without its checksum: mkfs fills in
 * s_kbytes_written and checksums each copy when it writes it (superblockCopy).
 */
export function buildSuperblock(l: Layout, p: BuildParams, journalIBlock: Uint8Array | undefined): Uint8Array {
  const g = l.geo;
  const bytes = new Uint8Array(SUPERBLOCK_SIZE);
  const sb = new SuperBlock(bytes, 0);
  const bits = featureBits(p.features);
  sb.s_feature_compat = bits.compat;
  sb.s_feature_incompat = bits.incompat;
  sb.s_feature_ro_compat = bits.roCompat;
  sb.s_inodes_count = g.inodesCount;
  setBlocksCount(sb, g.blocksCount);
  setRBlocksCount(sb, g.rBlocksCount);
  let free = 0;
  for (let i = 0; i < g.groupCount; i++) free += l.freeBlocks[i]!;
  setFreeBlocksCount(sb, free);
  sb.s_free_inodes_count = g.inodesCount - EXT4_GOOD_OLD_FIRST_INO;
  sb.s_first_data_block = g.firstDataBlock;
  sb.s_log_block_size = Math.log2(g.blockSize) - 10;
  sb.s_log_cluster_size = sb.s_log_block_size;
  sb.s_blocks_per_group = g.blocksPerGroup;
  sb.s_clusters_per_group = g.blocksPerGroup;
  sb.s_inodes_per_group = g.inodesPerGroup;
  const sec = Math.max(0, p.now.sec);
  setSbTime(sb, 'wtime', sec);
  setSbTime(sb, 'mkfs_time', sec);
  setSbTime(sb, 'lastcheck', sec);
  sb.s_max_mnt_count = 0xffff; // -1: no mount-count-based checks (enable_periodic_fsck = 0)
  sb.s_magic = EXT4_SUPER_MAGIC;
  sb.s_state = EXT4_VALID_FS;
  sb.s_errors = EXT4_ERRORS_CONTINUE;
  sb.s_creator_os = EXT4_OS_LINUX;
  sb.s_rev_level = EXT4_DYNAMIC_REV;
  sb.s_first_ino = EXT4_GOOD_OLD_FIRST_INO;
  sb.s_inode_size = g.inodeSize;
  sb.s_uuid = p.uuid;
  sb.s_volume_name = p.label;
  sb.s_hash_seed = p.hashSeed;
  sb.s_def_hash_version = DX_HASH_HALF_MD4;
  sb.s_desc_size = p.features['64bit'] ? g.descSize : 0;
  sb.s_default_mount_opts = EXT4_DEFM_XATTR_USER | EXT4_DEFM_ACL;
  if (g.inodeSize >= INODE_VIEW_SIZE) {
    sb.s_min_extra_isize = INODE_VIEW_SIZE - EXT4_GOOD_OLD_INODE_SIZE;
    sb.s_want_extra_isize = INODE_VIEW_SIZE - EXT4_GOOD_OLD_INODE_SIZE;
  }
  // mke2fs on x86 (char is signed) hashes directory names as signed chars.
  sb.s_flags = EXT2_FLAGS_SIGNED_HASH;
  sb.s_log_groups_per_flex = g.logGroupsPerFlex;
  sb.s_overhead_clusters = l.overheadBlocks;
  if (p.features.metadata_csum) sb.s_checksum_type = EXT4_CRC32C_CHKSUM;
  if (p.features.metadata_csum_seed) sb.s_checksum_seed = p.csumSeed;
  if (journalIBlock !== undefined) {
    sb.s_journal_inum = EXT4_JOURNAL_INO;
    sb.s_jnl_backup_type = EXT3_JNL_BACKUP_BLOCKS;
    sb.s_jnl_blocks = jnlBlocksBackup(journalIBlock, journalBytes(l));
  }
  return bytes;
}

/**
 * A copy of the superblock for group `group` (s_block_group_nr), with its checksum. Backups say
 * "not clean" (s_state without VALID_FS), as ext2fs_flush() writes them: only the primary
 * vouches for the filesystem's state.
 */
export function superblockCopy(primary: Uint8Array, group: number, kbytesWritten: number): Uint8Array {
  const bytes = primary.slice();
  const sb: SuperBlockView = new SuperBlock(bytes, 0);
  sb.s_block_group_nr = group & 0xffff;
  if (group !== 0) sb.s_state &= ~EXT4_VALID_FS;
  sb.s_kbytes_written = kbytesWritten;
  setSuperblockCsum(sb);
  return bytes;
}

/** The journal's size in bytes. */
function journalBytes(l: Layout): number {
  return l.journal.reduce((n, r) => n + r.len, 0) * l.geo.blockSize;
}

/**
 * The group descriptor table (descBlocks blocks), every descriptor checksummed. `bitmapSums`
 * gives the bitmap checksums of the groups whose bitmaps are written (metadata_csum only).
 */
export function buildGdt(l: Layout, p: BuildParams, bitmapSums: (g: number) => { block: number; inode: number }): Uint8Array {
  const g = l.geo;
  const table = new Uint8Array(g.descBlocks * g.blockSize);
  const csum = gdCsumOf(p);
  const uninit = hasGroupCsum(p);
  for (let i = 0; i < g.groupCount; i++) {
    const gd = new GroupDesc(table, i * g.descSize, g.descSize);
    gd.blockBitmap = l.blockBitmap[i]!;
    gd.inodeBitmap = l.inodeBitmap[i]!;
    gd.inodeTable = l.inodeTable[i]!;
    gd.freeBlocksCount = l.freeBlocks[i]!;
    gd.freeInodesCount = freeInodes(l, i);
    gd.usedDirsCount = i === 0 ? 2 : 0;
    let flags = 0;
    if (uninit && i !== 0) flags |= EXT4_BG_INODE_UNINIT;
    if (l.blockUninit[i] === 1) flags |= EXT4_BG_BLOCK_UNINIT;
    if (p.itableZeroed) flags |= EXT4_BG_INODE_ZEROED;
    gd.flags = flags;
    if (uninit) gd.itableUnused = freeInodes(l, i);
    if (p.features.metadata_csum) {
      const s = bitmapSums(i);
      gd.blockBitmapCsum = s.block;
      gd.inodeBitmapCsum = s.inode;
    }
    setGroupDescCsum(gd, i, csum);
  }
  return table;
}

/** True when group g's block bitmap is written (its group is initialised). */
export function writesBlockBitmap(l: Layout, g: number): boolean {
  return l.blockUninit[g] !== 1;
}
/** True when group g's inode bitmap is written (group 0, or every group without group checksums). */
export function writesInodeBitmap(p: BuildParams, g: number): boolean {
  return g === 0 || !hasGroupCsum(p);
}

/** Sets bits [from, to) of a bitmap. */
function setBits(bm: Uint8Array, from: number, to: number): void {
  let i = from;
  for (; i < to && (i & 7) !== 0; i++) bm[i >>> 3]! |= 1 << (i & 7);
  for (; i + 8 <= to; i += 8) bm[i >>> 3] = 0xff;
  for (; i < to; i++) bm[i >>> 3]! |= 1 << (i & 7);
}

/** Group g's block bitmap: used blocks, plus the padding past the group's end (set, as the kernel wants). */
export function buildBlockBitmap(l: Layout, g: number): Uint8Array {
  const geo = l.geo;
  const bm = new Uint8Array(geo.blockSize);
  const first = geo.firstDataBlock + g * geo.blocksPerGroup;
  const end = Math.min(first + geo.blocksPerGroup, geo.blocksCount);
  for (const r of l.space.runsIn(first, end)) setBits(bm, r.start - first, r.end - first);
  setBits(bm, end - first, geo.blockSize * 8);
  return bm;
}

/** Group g's inode bitmap: inodes 1..11 in group 0, then the padding past inodes_per_group. */
export function buildInodeBitmap(l: Layout, g: number): Uint8Array {
  const bm = new Uint8Array(l.geo.blockSize);
  if (g === 0) setBits(bm, 0, EXT4_GOOD_OLD_FIRST_INO);
  setBits(bm, l.geo.inodesPerGroup, l.geo.blockSize * 8);
  return bm;
}

/** crc32c of a block bitmap (over blocks_per_group bits) and an inode bitmap (inodes_per_group bits). */
export function bitmapChecksums(l: Layout, p: BuildParams, block: Uint8Array | undefined, inode: Uint8Array | undefined): { block: number; inode: number } {
  return {
    block: block === undefined ? 0 : bitmapCsum(p.csumSeed, block, l.geo.blocksPerGroup),
    inode: inode === undefined ? 0 : bitmapCsum(p.csumSeed, inode, l.geo.inodesPerGroup),
  };
}

/** Writes a leaf node (the inode root or a tree block) with `runs` as initialized extents. */
function writeLeaf(bytes: Uint8Array, max: number, runs: readonly ExtentRun[]): ExtentNode {
  const node = new ExtentNode(bytes);
  node.init(max, 0);
  runs.forEach((r, i) => node.setLeaf(i, { lblk: r.lblk, len: r.len, pblk: r.pblk, unwritten: false }));
  node.entries = runs.length;
  return node;
}

/** Contiguous runs of a list of blocks mapped from logical block 0. */
function runsOf(blocks: readonly number[]): ExtentRun[] {
  const runs: ExtentRun[] = [];
  blocks.forEach((b, lblk) => {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.pblk + last.len === b) last.len++;
    else runs.push({ lblk, pblk: b, len: 1 });
  });
  return runs;
}

/** A scratch record for one inode: big enough for the 160-byte view even with 128-byte inodes. */
function newRecord(inodeSize: number): { rec: Uint8Array; view: InodeView; buf: Uint8Array } {
  const buf = new Uint8Array(Math.max(inodeSize, INODE_VIEW_SIZE));
  return { buf, rec: buf.subarray(0, inodeSize), view: new Inode(buf, 0) };
}

/** Common fields of the inodes mkfs creates (ext2fs_write_new_inode): times, extra size, flags. */
function initInode(view: InodeView, p: BuildParams, inodeSize: number, mode: number, links: number): void {
  view.i_mode = mode;
  view.i_links_count = links;
  if (inodeSize > EXT4_GOOD_OLD_INODE_SIZE) view.i_extra_isize = INODE_VIEW_SIZE - EXT4_GOOD_OLD_INODE_SIZE;
  for (const t of ['atime', 'ctime', 'mtime', 'crtime'] as const) setInodeTime(view, t, p.now, inodeSize);
}

/** Sets size and i_blocks (512-byte units) from a block count. */
function setBlocks(view: InodeView, sizeBytes: number, blocks: number, blockSize: number): void {
  setInodeSizeBytes(view, sizeBytes);
  view.i_blocks_lo = (blocks * blockSize) / 512;
  assert(view.i_blocks_lo * 512 === blocks * blockSize, 'i_blocks overflow');
}

/** The directory inodes: root (2) and lost+found (11). */
function dirInode(l: Layout, p: BuildParams, ino: number, blocks: readonly number[]): Uint8Array {
  const { rec, view } = newRecord(l.geo.inodeSize);
  const root = ino === EXT4_ROOT_INO;
  initInode(view, p, l.geo.inodeSize, S_IFDIR | (root ? 0o755 : 0o700), root ? 3 : 2);
  if (root) {
    setInodeUid(view, p.rootUid);
    setInodeGid(view, p.rootGid);
  }
  setBlocks(view, blocks.length * l.geo.blockSize, blocks.length, l.geo.blockSize);
  view.i_flags = EXT4_EXTENTS_FL;
  const runs = runsOf(blocks);
  assert(runs.length <= EXT4_EXT_ROOT_MAX, 'directory extents do not fit in the inode');
  writeLeaf(view.i_block, EXT4_EXT_ROOT_MAX, runs);
  return finishInode(rec, view, p, ino);
}

/** The journal inode (8): a regular file, mode 0600, mapped by its extents (and tree block). */
export function journalInode(l: Layout, p: BuildParams): { rec: Uint8Array; iBlock: Uint8Array } {
  const { rec, view } = newRecord(l.geo.inodeSize);
  initInode(view, p, l.geo.inodeSize, S_IFREG | 0o600, 1);
  const data = l.journal.reduce((n, r) => n + r.len, 0);
  setBlocks(view, data * l.geo.blockSize, data + (l.journalTreeBlock === undefined ? 0 : 1), l.geo.blockSize);
  view.i_flags = EXT4_EXTENTS_FL;
  if (l.journalTreeBlock === undefined) {
    writeLeaf(view.i_block, EXT4_EXT_ROOT_MAX, l.journal);
  } else {
    // extent_node_split() copies the root's four extents into the tree block and turns the
    // root into one index, leaving extents 1..3 behind as stale bytes past eh_entries. They are
    // never read; we keep them so the inode (and s_jnl_blocks) equal mke2fs's.
    const root = writeLeaf(view.i_block, EXT4_EXT_ROOT_MAX, l.journal.slice(0, EXT4_EXT_ROOT_MAX));
    root.entries = 1;
    root.depth = 1;
    root.setIndex(0, { lblk: 0, child: l.journalTreeBlock });
  }
  const iBlock = view.i_block.slice();
  return { rec: finishInode(rec, view, p, EXT4_JOURNAL_INO), iBlock };
}

/** The journal's extent tree block (a leaf holding every extent), with its tail checksum. */
export function journalTreeBlock(l: Layout, p: BuildParams): Uint8Array {
  const block = new Uint8Array(l.geo.blockSize);
  writeLeaf(block, extentBlockMaxEntries(l.geo.blockSize), l.journal);
  if (p.features.metadata_csum) setExtentBlockCsum(block, inodeCsumSeed(p.csumSeed, EXT4_JOURNAL_INO, 0));
  return block;
}

/** Stamps the checksum (metadata_csum) and returns the record. */
function finishInode(rec: Uint8Array, view: InodeView, p: BuildParams, ino: number): Uint8Array {
  if (p.features.metadata_csum) setInodeCsum(view, rec, ino, p.csumSeed);
  return rec.slice();
}

/**
 * The first blocks of group 0's inode table, holding inodes 1..11: the bad-blocks inode (times
 * only), root, the reserved 3..10 (zero, checksummed), the journal inode and lost+found.
 */
export function buildReservedInodes(l: Layout, p: BuildParams, journalRec: Uint8Array | undefined): Uint8Array {
  const isz = l.geo.inodeSize;
  const out = new Uint8Array(reservedItableBlocks(l) * l.geo.blockSize);
  for (let ino = 1; ino <= EXT4_GOOD_OLD_FIRST_INO; ino++) {
    let rec: Uint8Array;
    if (ino === EXT4_ROOT_INO) rec = dirInode(l, p, ino, [l.rootBlock]);
    else if (ino === EXT4_GOOD_OLD_FIRST_INO) rec = dirInode(l, p, ino, l.lostFoundBlocks);
    else if (ino === EXT4_JOURNAL_INO && journalRec !== undefined) rec = journalRec;
    else {
      const r = newRecord(isz);
      // The bad-blocks inode gets times (create_bad_block_inode); 3..10 stay zero.
      if (ino === 1) for (const t of ['atime', 'ctime', 'mtime'] as const) setInodeTime(r.view, t, p.now, isz);
      rec = finishInode(r.rec, r.view, p, ino);
    }
    out.set(rec, (ino - 1) * isz);
  }
  return out;
}

/** A directory block with the given entries; the last one's rec_len runs to the end (or the tail). */
function dirBlock(bs: number, p: BuildParams, ino: number, entries: { ino: number; name: string; ft: number }[]): Uint8Array {
  const csum = p.features.metadata_csum;
  const block = new Uint8Array(bs);
  initDirBlock(block, csum);
  const end = csum ? dirTailOffset(bs) : bs;
  let off = 0;
  entries.forEach((e, i) => {
    const name = encodeUtf8(e.name);
    const recLen = i === entries.length - 1 ? end - off : dirEntryMinRecLen(name.length);
    writeDirEntry(block, off, { ino: e.ino, recLen, name, fileType: p.features.filetype ? e.ft : EXT4_FT_UNKNOWN }, bs);
    off += recLen;
  });
  if (csum) {
    initDirTail(block);
    setDirBlockCsum(inodeCsumSeed(p.csumSeed, ino, 0), block);
  }
  return block;
}

/** The root directory's block: '.', '..' and 'lost+found'. */
export function rootDirBlock(l: Layout, p: BuildParams): Uint8Array {
  return dirBlock(l.geo.blockSize, p, EXT4_ROOT_INO, [
    { ino: EXT4_ROOT_INO, name: '.', ft: EXT4_FT_DIR },
    { ino: EXT4_ROOT_INO, name: '..', ft: EXT4_FT_DIR },
    { ino: EXT4_GOOD_OLD_FIRST_INO, name: 'lost+found', ft: EXT4_FT_DIR },
  ]);
}

/** Lost+found's blocks: '.' and '..' in the first, empty blocks (with tails) after it. */
export function lostFoundBlock(l: Layout, p: BuildParams, index: number): Uint8Array {
  const bs = l.geo.blockSize;
  if (index === 0) {
    return dirBlock(bs, p, EXT4_GOOD_OLD_FIRST_INO, [
      { ino: EXT4_GOOD_OLD_FIRST_INO, name: '.', ft: EXT4_FT_DIR },
      { ino: EXT4_ROOT_INO, name: '..', ft: EXT4_FT_DIR },
    ]);
  }
  const block = new Uint8Array(bs);
  initDirBlock(block, p.features.metadata_csum);
  if (p.features.metadata_csum) setDirBlockCsum(inodeCsumSeed(p.csumSeed, EXT4_GOOD_OLD_FIRST_INO, 0), block);
  return block;
}

/**
 * The journal superblock block as ext2fs_create_journal_superblock2() makes it: v2, s_first 1,
 * s_sequence 1, one user, the filesystem's UUID, no features (the kernel turns on 64bit and
 * checksums at the first mount, as it does for mke2fs's journals), the rest of the journal zero.
 */
export function journalSuperblock(l: Layout, p: BuildParams): Uint8Array {
  const block = new Uint8Array(l.geo.blockSize);
  const j = new JournalSuperblock(block, 0);
  j.h_magic = JBD2_MAGIC_NUMBER;
  j.h_blocktype = JBD2_SUPERBLOCK_V2;
  j.s_blocksize = l.geo.blockSize;
  j.s_maxlen = l.journal.reduce((n, r) => n + r.len, 0);
  j.s_first = 1;
  j.s_sequence = 1;
  j.s_nr_users = 1;
  j.s_uuid = p.uuid;
  return block;
}

/** The groups whose superblock copy is written, with its block (exported for the summary). */
export function backupGroups(l: Layout): number[] {
  const out: number[] = [];
  for (let g = 1; g < l.geo.groupCount; g++) if (groupHasSuper(g, l.geo.sparseSuper)) out.push(g);
  return out;
}
