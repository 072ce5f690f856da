/**
 * Reading inodes from the inode tables (fs/ext4/inode.c: __ext4_get_inode_loc, ext4_iget).
 * An inode is loaded into an `InodeInfo`: a private copy of its record (padded to the view size),
 * its decoded fields, and its checksum seed, after the checks the kernel makes in ext4_iget.
 */
import type { Ext4Super } from '../super.js';
import type { MetaBuffer } from '../../cache/buffer-cache.js';
import {
  Inode, type InodeView, INODE_VIEW_SIZE, verifyInodeCsum, validateExtraIsize, inodeSizeBytes,
  inodeUid, inodeGid, inodeTime, inodeFileAcl, inodeBlocks512, fileTypeOfMode, type FileType,
  type Timespec, inodeCsumSeed, inodeCsumPieces, inodeCsumHiFits, setInodeCsumFromPieces,
  EXT4_EXTENTS_FL, EXT4_INLINE_DATA_FL, EXT4_INDEX_FL,
  EXT4_GOOD_OLD_INODE_SIZE, S_IFMT, EXT4_HUGE_FILE_FL,
} from '../../format/inode.js';
import { EXT4_ROOT_INO } from '../../format/superblock.js';
import { Corrupt, PosixError } from '../../util/errors.js';
import { isZero } from '../../util/bytes.js';
import { assert } from '../../util/assert.js';

/** See InodeInfo.writeState. */
export interface InodeWriteState {
  block: number;
  offset: number;
  /** The record's s_inode_size bytes (a view of `record`). */
  rec: Uint8Array;
  /** The checksum's pieces of `rec` (whether i_checksum_hi is in them depends on i_extra_isize). */
  pieces: Uint8Array[];
}

/** An inode as loaded from disk, decoded once. */
export class InodeInfo {
  constructor(
    readonly ino: number,
    /** A copy of the on-disk record (s_inode_size bytes, padded to the view size). */
    readonly record: Uint8Array,
    readonly view: InodeView,
    /** Seed for this inode's metadata checksums (extent blocks, dir blocks). */
    readonly csumSeed: number,
    readonly inodeSize: number,
    private readonly largeDir: boolean,
  ) {
    this.referenced = false;
    this.writeState = undefined;
    this.checkedExtentRoot = undefined;
    if (fileTypeOfMode(view.i_mode) === undefined) {
      throw new Corrupt('inode', `invalid file type in i_mode 0o${view.i_mode.toString(8)}`, { ino });
    }
  }
  /** Used since the in-core inode cache last scanned it (I_REFERENCED; see icache.ts). */
  referenced: boolean;
  /**
   * writeInode's cache: where the record goes and its checksum pieces, fixed for the life of the
   * in-core inode (i_extra_isize, which places i_checksum_hi, is set before an InodeInfo exists).
   */
  writeState: InodeWriteState | undefined;
  /** A copy of i_block as an extent lookup last validated it (see extent-lookup.ts). */
  checkedExtentRoot: Uint8Array | undefined;
  /** Size in bytes (live: the write path changes the record). */
  get size(): number { return inodeSizeBytes(this.view, this.largeDir); }
  get type(): FileType {
    // OK to assert: the constructor checked i_mode, and writers only store valid modes.
    return fileTypeOfMode(this.view.i_mode) as FileType;
  }
  get mode(): number { return this.view.i_mode; }
  /** Permission and special bits without the type. */
  get perm(): number { return this.view.i_mode & ~S_IFMT & 0xffff; }
  get flags(): number { return this.view.i_flags; }
  get linksCount(): number { return this.view.i_links_count; }
  get uid(): number { return inodeUid(this.view); }
  get gid(): number { return inodeGid(this.view); }
  get generation(): number { return this.view.i_generation; }
  get fileAcl(): number { return inodeFileAcl(this.view); }
  get hasExtents(): boolean { return (this.view.i_flags & EXT4_EXTENTS_FL) !== 0; }
  get hasInlineData(): boolean { return (this.view.i_flags & EXT4_INLINE_DATA_FL) !== 0; }
  get isIndexedDir(): boolean { return this.type === 'dir' && (this.view.i_flags & EXT4_INDEX_FL) !== 0; }
  /** The 60 bytes of i_block (extent root, block map, fast symlink or inline data). */
  get iBlock(): Uint8Array { return this.view.i_block; }
  time(which: 'atime' | 'mtime' | 'ctime'): Timespec {
    // OK to assert non-undefined: only crtime can be missing (see inodeTime).
    return inodeTime(this.view, which, this.inodeSize) as Timespec;
  }
  get crtime(): Timespec | undefined { return inodeTime(this.view, 'crtime', this.inodeSize); }
  blocks512(hugeFile: boolean, blockSize: number): number {
    return inodeBlocks512(this.view, hugeFile, blockSize);
  }
  /** Bytes of the in-inode xattr area (after 128 + i_extra_isize), empty if none. */
  get ibodyXattrArea(): Uint8Array {
    if (this.inodeSize <= EXT4_GOOD_OLD_INODE_SIZE) return new Uint8Array(0);
    return this.record.subarray(EXT4_GOOD_OLD_INODE_SIZE + this.view.i_extra_isize, this.inodeSize);
  }
}

/** Where inode `ino` lives: its block and its byte offset in that block. */
export function inodeLocation(s: Ext4Super, ino: number): { group: number; block: number; offset: number } {
  const index = (ino - 1) % s.inodesPerGroup;
  const group = Math.floor((ino - 1) / s.inodesPerGroup);
  const byteInTable = index * s.inodeSize;
  const block = s.group(group).inodeTable + Math.floor(byteInTable / s.blockSize);
  return { group, block, offset: byteInTable % s.blockSize };
}

/**
 * Loads inode `ino` (ext4_iget): range check, read its record, verify extra_isize and the
 * checksum, refuse a deleted inode (links 0 with dtime, as the kernel's "deleted inode
 * referenced") and decode it. Throws Corrupt/BadCrc naming the inode and block.
 */
export async function readInode(s: Ext4Super, ino: number): Promise<InodeInfo> {
  if (!Number.isInteger(ino) || ino < 1 || ino > s.sb.s_inodes_count) {
    throw new Corrupt('inode number', `${ino} out of range 1..${s.sb.s_inodes_count}`);
  }
  if (ino !== EXT4_ROOT_INO && ino < 11 && ino !== 8) {
    // Reserved inodes other than root and the journal are never reached by a path.
    throw new Corrupt('inode number', `${ino} is reserved`);
  }
  const loc = inodeLocation(s, ino);
  const buf = await s.cache.bread(loc.block, 'inode table');
  const raw = buf.data.subarray(loc.offset, loc.offset + s.inodeSize);
  const record = new Uint8Array(Math.max(s.inodeSize, INODE_VIEW_SIZE));
  record.set(raw);
  const view = new Inode(record, 0);
  validateExtraIsize(view, ino, s.inodeSize);
  if (s.features.metadataCsum && !isZero(raw)) {
    verifyInodeCsum(view, record.subarray(0, s.inodeSize), ino, s.csumSeed, loc.block);
  }
  if (view.i_links_count === 0 && view.i_mode === 0) {
    throw new Corrupt('inode', 'is free (mode 0, no links) but referenced', { ino, block: loc.block });
  }
  const seed = s.features.metadataCsum ? inodeCsumSeed(s.csumSeed, ino, view.i_generation) : 0;
  const info = new InodeInfo(ino, record, view, seed, s.inodeSize, s.features.largeDir);
  if (info.size < 0 || !Number.isSafeInteger(info.size)) {
    throw new Corrupt('inode', `size ${info.size}`, { ino, block: loc.block });
  }
  if (info.hasInlineData && !s.features.inlineData) {
    throw new Corrupt('inode', 'has inline data but the filesystem lacks the inline_data feature', { ino });
  }
  return info;
}

/** Throws ENOTDIR unless `info` is a directory. */
export function requireDir(info: InodeInfo, path: string, syscall: string): void {
  if (info.type !== 'dir') throw new PosixError('ENOTDIR', syscall, path);
}

/**
 * Writes an in-core inode back into its inode-table block (ext4_mark_inode_dirty →
 * ext4_do_update_inode): the checksum is stamped over the record now and the block is marked
 * dirty, so later reads through the cache see the change at once.
 */
export function writeInode(s: Ext4Super, info: InodeInfo): Promise<void> | undefined {
  // Called several times per operation: the location and the record's views are kept on the
  // in-core inode, and a cached table block (nearly always) is written synchronously, with no
  // promise; only a block that must be read first returns one.
  let w = info.writeState;
  if (w === undefined) {
    const loc = inodeLocation(s, info.ino);
    const rec = info.record.subarray(0, s.inodeSize);
    w = { block: loc.block, offset: loc.offset, rec, pieces: inodeCsumPieces(rec, inodeCsumHiFits(info.view, s.inodeSize)) };
    info.writeState = w;
  }
  const buf = s.cache.peek(w.block);
  if (buf !== undefined) {
    stampInode(s, info, w, buf);
    return undefined;
  }
  const state = w;
  return s.cache.bread(w.block, 'inode table').then((b) => stampInode(s, info, state, b));
}

/** writeInode's second half: checksum the record and copy it into its table block. */
function stampInode(s: Ext4Super, info: InodeInfo, w: InodeWriteState, buf: MetaBuffer): void {
  if (s.features.metadataCsum) setInodeCsumFromPieces(info.view, w.pieces, info.csumSeed);
  buf.data.set(w.rec, w.offset);
  s.cache.markDirty(buf);
}

/**
 * Adds `deltaBlocks` filesystem blocks (may be negative) to i_blocks, which counts 512-byte
 * sectors (ext4_inode_blocks_set without HUGE_FILE_FL: 48 bits with huge_file, else 32).
 * The caller writes the inode.
 */
export function addInodeBlocks(s: Ext4Super, info: InodeInfo, deltaBlocks: number): void {
  const v = info.view;
  const cur = v.l_i_blocks_high * 0x1_0000_0000 + v.i_blocks_lo;
  assert((v.i_flags & EXT4_HUGE_FILE_FL) === 0, () => `inode ${info.ino}: HUGE_FILE_FL i_blocks accounting`);
  const next = cur + deltaBlocks * (s.blockSize / 512);
  // On-disk i_blocks smaller than what the inode owns is corruption, not our bug.
  if (next < 0) throw new Corrupt('inode', `i_blocks ${cur} is smaller than the ${-deltaBlocks} block(s) being freed`, { ino: info.ino });
  const limit = s.features.hugeFile ? 2 ** 48 : 2 ** 32;
  if (next >= limit) throw new PosixError('EFBIG', 'write', undefined, `inode ${info.ino}: i_blocks ${next} exceeds ${limit - 1}`);
  v.i_blocks_lo = next % 0x1_0000_0000;
  v.l_i_blocks_high = Math.floor(next / 0x1_0000_0000);
}
