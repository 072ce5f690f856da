/**
 * Directory entries (Documentation/filesystems/ext4/directory.rst; struct ext4_dir_entry_2 and
 * ext4_dir_entry_tail in fs/ext4/ext4.h). A directory block is a chain of entries whose rec_len
 * fields cover the block exactly; with metadata_csum the last 12 bytes are a fake entry holding
 * the block's crc32c. parseDirBlock() applies the kernel's ext4_check_dir_entry() to every entry
 * and verifies the tail, so no later code walks an entry that leaves its block.
 */
import { defineStruct, u8, u16, u32 } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc } from '../util/errors.js';
import { assert } from '../util/assert.js';

export const DirEntry2 = defineStruct('ext4_dir_entry_2', 8, {
  inode: u32(0x0),
  rec_len: u16(0x4),
  name_len: u8(0x6),
  file_type: u8(0x7),
});
export const DirEntryTail = defineStruct('ext4_dir_entry_tail', 12, {
  det_reserved_zero1: u32(0x0),
  det_rec_len: u16(0x4),
  det_reserved_zero2: u8(0x6),
  det_reserved_ft: u8(0x7),
  det_checksum: u32(0x8),
});

/** Bytes of the header before the name. */
export const DIRENT_HEADER = 8;
export const DIRENT_TAIL_SIZE = 12;
export const EXT4_NAME_LEN = 255;
/** file_type values. */
export const EXT4_FT_UNKNOWN = 0;
export const EXT4_FT_REG_FILE = 1;
export const EXT4_FT_DIR = 2;
export const EXT4_FT_CHRDEV = 3;
export const EXT4_FT_BLKDEV = 4;
export const EXT4_FT_FIFO = 5;
export const EXT4_FT_SOCK = 6;
export const EXT4_FT_SYMLINK = 7;
export const EXT4_FT_DIR_CSUM = 0xde;

/** A live entry of a directory block. */
export interface DirEntryRaw {
  ino: number;
  nameBytes: Uint8Array;
  fileType: number;
  /** Offset of the entry in its block or area. */
  offset: number;
  recLen: number;
}

/** Where a directory block came from, and how to check it. */
export interface DirParseCtx {
  blockNr: number;
  ino: number;
  hasFiletype: boolean;
  /** The directory inode's checksum seed; present iff metadata_csum (then a tail is required). */
  csumSeed?: number;
  /** The block was verified before (the cache remembers): skip the checksum. */
  skipCsum?: boolean;
  /** Highest valid inode number, to reject entries pointing past the inode tables. */
  inodesCount?: number;
}

/** EXT4_DIR_REC_LEN: the smallest rec_len that holds a name of `nameLen` bytes. */
export function dirEntryMinRecLen(nameLen: number): number {
  return (DIRENT_HEADER + nameLen + 3) & ~3;
}

/** ext4_rec_len_from_disk: 64 KiB blocks store 65536 as 0 or 65535. */
export function recLenFromDisk(dlen: number, blockSize: number): number {
  if (blockSize < 65536) return dlen;
  if (dlen === 65535 || dlen === 0) return blockSize;
  return (dlen & 65532) | ((dlen & 3) << 16);
}

export function recLenToDisk(len: number, blockSize: number): number {
  assert(len <= blockSize && len % 4 === 0, () => `rec_len ${len}`);
  if (blockSize < 65536) return len;
  if (len === blockSize) return blockSize === 65536 ? 65535 : 0;
  return (len & 65532) | ((len >>> 16) & 3);
}

/** True when the last 12 bytes of `block` are a well-formed checksum tail. */
export function hasDirTail(block: Uint8Array): boolean {
  const t = new DirEntryTail(block, block.length - DIRENT_TAIL_SIZE);
  return t.det_reserved_zero1 === 0 && t.det_rec_len === DIRENT_TAIL_SIZE && t.det_reserved_zero2 === 0 && t.det_reserved_ft === EXT4_FT_DIR_CSUM;
}

/** crc32c of a directory block before its tail (ext4_dirblock_csum). */
export function dirBlockCsum(seed: number, block: Uint8Array): number {
  return crc32cRaw(seed, block.subarray(0, block.length - DIRENT_TAIL_SIZE));
}

/** Writes a fresh tail into the last 12 bytes (ext4_initialize_dirent_tail). */
export function initDirTail(block: Uint8Array): void {
  block.fill(0, block.length - DIRENT_TAIL_SIZE);
  const t = new DirEntryTail(block, block.length - DIRENT_TAIL_SIZE);
  t.det_rec_len = DIRENT_TAIL_SIZE;
  t.det_reserved_ft = EXT4_FT_DIR_CSUM;
}

export function setDirBlockCsum(seed: number, block: Uint8Array): void {
  new DirEntryTail(block, block.length - DIRENT_TAIL_SIZE).det_checksum = dirBlockCsum(seed, block);
}

/** Writes one entry header and name at `offset` (the caller keeps the chain consistent). */
export function writeDirEntry(
  block: Uint8Array, offset: number, e: { ino: number; recLen: number; name: Uint8Array; fileType: number }, blockSize: number,
): void {
  assert(e.name.length <= EXT4_NAME_LEN, 'name too long');
  assert(e.recLen >= dirEntryMinRecLen(e.name.length), 'rec_len too small for the name');
  const d = new DirEntry2(block, offset);
  d.inode = e.ino;
  d.rec_len = recLenToDisk(e.recLen, blockSize);
  d.name_len = e.name.length;
  d.file_type = e.fileType;
  block.set(e.name, offset + DIRENT_HEADER);
}

/**
 * Parses a chain of entries covering `area` exactly (a whole block minus any tail, or an inline
 * data area). Applies ext4_check_dir_entry to every entry; returns the live ones.
 */
export function parseDirArea(area: Uint8Array, ctx: DirParseCtx, blockSize = area.length): DirEntryRaw[] {
  const out: DirEntryRaw[] = [];
  const where = (offset: number) => ({ block: ctx.blockNr, ino: ctx.ino, offset });
  let off = 0;
  while (off < area.length) {
    if (off + DIRENT_HEADER > area.length) throw new Corrupt('directory entry', `header crosses the end of the block`, where(off));
    const d = new DirEntry2(area, off);
    const recLen = recLenFromDisk(d.rec_len, blockSize);
    const nameLen = d.name_len;
    if (recLen < dirEntryMinRecLen(1)) throw new Corrupt('directory entry', `rec_len ${recLen} is smaller than minimal`, where(off));
    if (recLen % 4 !== 0) throw new Corrupt('directory entry', `rec_len ${recLen} % 4 != 0`, where(off));
    if (recLen < dirEntryMinRecLen(nameLen)) throw new Corrupt('directory entry', `rec_len ${recLen} is too small for name_len ${nameLen}`, where(off));
    if (off + recLen > area.length) throw new Corrupt('directory entry', `rec_len ${recLen} overruns the block (${area.length - off} bytes left)`, where(off));
    if (d.inode !== 0) {
      if (ctx.inodesCount !== undefined && d.inode > ctx.inodesCount) throw new Corrupt('directory entry', `inode ${d.inode} out of bounds`, where(off));
      if (nameLen === 0) throw new Corrupt('directory entry', 'live entry with an empty name', where(off));
      out.push({
        ino: d.inode,
        nameBytes: area.subarray(off + DIRENT_HEADER, off + DIRENT_HEADER + nameLen),
        fileType: ctx.hasFiletype ? d.file_type : EXT4_FT_UNKNOWN,
        offset: off,
        recLen,
      });
    }
    off += recLen;
  }
  return out;
}

/**
 * Parses a directory block: with a checksum seed the tail must be present and match
 * (EFSBADCRC otherwise), and the entries must end exactly where the tail starts.
 */
export function parseDirBlock(block: Uint8Array, ctx: DirParseCtx): DirEntryRaw[] {
  if (ctx.csumSeed === undefined) return parseDirArea(block, ctx);
  if (!hasDirTail(block)) {
    throw new Corrupt('directory block', 'has no checksum tail', { block: ctx.blockNr, ino: ctx.ino });
  }
  if (!ctx.skipCsum) {
    const stored = new DirEntryTail(block, block.length - DIRENT_TAIL_SIZE).det_checksum;
    const computed = dirBlockCsum(ctx.csumSeed, block);
    if (stored !== computed) throw new BadCrc('directory block', stored, computed, { block: ctx.blockNr, ino: ctx.ino });
  }
  return parseDirArea(block.subarray(0, block.length - DIRENT_TAIL_SIZE), ctx, block.length);
}
