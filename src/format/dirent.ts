/**
 * Directory entries (Documentation/filesystems/ext4/directory.rst, "Linear (Classic)
 * Directories"; struct ext4_dir_entry_2 and struct ext4_dir_entry_tail in fs/ext4/ext4.h; the
 * checks of __ext4_check_dir_entry() and the tail handling of ext4_dirblock_csum_verify() in
 * fs/ext4/dir.c and fs/ext4/namei.c).
 *
 * A directory block is a chain of entries whose rec_len fields cover the block exactly. With
 * metadata_csum the last 12 bytes are a fake entry (inode 0, rec_len 12, file_type 0xDE) that
 * holds crc32c(inode seed, block before the tail). Invariants this module keeps:
 * - parseDirArea()/parseDirBlock() apply the kernel's entry checks to every entry before reading
 *   its name, so no caller ever sees an entry that leaves its block, and the walk always
 *   advances by at least 12 bytes (it is bounded by the block size).
 * - The writers (writeDirEntry, initDirTail, initDirBlock, setDirBlockCsum) assert their
 *   arguments: a bad argument is a bug in ext4ts, never bad input.
 */
import { defineStruct, u8, u16, u32 } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc, hex, type Where } from '../util/errors.js';
import { assert } from '../util/assert.js';

/** struct ext4_dir_entry_2: the 8-byte header; the name (name_len bytes) follows it. */
export const DirEntry2 = defineStruct('ext4_dir_entry_2', 8, {
  /** Inode number of the entry; 0 marks an unused entry. */
  inode: u32(0x0),
  /** Bytes from this entry to the next (encoded, see recLenFromDisk). */
  rec_len: u16(0x4),
  /** Length of the name in bytes (1..255 for live entries). */
  name_len: u8(0x6),
  /** EXT4_FT_* when the filesystem has the `filetype` feature, else the name_len high byte. */
  file_type: u8(0x7),
});
export type DirEntry2View = InstanceType<typeof DirEntry2>;

/** struct ext4_dir_entry_tail: the checksum tail in the last 12 bytes of a leaf block. */
export const DirEntryTail = defineStruct('ext4_dir_entry_tail', 12, {
  /** Pretends to be an unused entry: inode 0. */
  det_reserved_zero1: u32(0x0),
  /** Always 12 (the tail's own size). */
  det_rec_len: u16(0x4),
  /** Pretends the name is empty: name_len 0. */
  det_reserved_zero2: u8(0x6),
  /** Always EXT4_FT_DIR_CSUM (0xDE). */
  det_reserved_ft: u8(0x7),
  /** crc32c(inode checksum seed, the block up to this tail). */
  det_checksum: u32(0x8),
});

/** Bytes of the entry header before the name. */
export const DIRENT_HEADER = DirEntry2.SIZE;
/** Bytes of the checksum tail. */
export const DIRENT_TAIL_SIZE = DirEntryTail.SIZE;
/** Longest name (EXT4_NAME_LEN). */
export const EXT4_NAME_LEN = 255;
/** rec_len value that encodes 65536 in a 64 KiB block (EXT4_MAX_REC_LEN). */
export const EXT4_MAX_REC_LEN = 65535;
/** file_type values (EXT4_FT_*). */
export const EXT4_FT_UNKNOWN = 0;
export const EXT4_FT_REG_FILE = 1;
export const EXT4_FT_DIR = 2;
export const EXT4_FT_CHRDEV = 3;
export const EXT4_FT_BLKDEV = 4;
export const EXT4_FT_FIFO = 5;
export const EXT4_FT_SOCK = 6;
export const EXT4_FT_SYMLINK = 7;
/** One past the last real file type (EXT4_FT_MAX). */
export const EXT4_FT_MAX = 8;
/** file_type of the checksum tail. */
export const EXT4_FT_DIR_CSUM = 0xde;

/** Smallest and largest block sizes ext4 has (1 KiB .. 64 KiB). */
const MIN_BLOCK_SIZE = 1024;
const MAX_BLOCK_SIZE = 65536;

/** A live entry of a directory block (inode != 0). */
export interface DirEntryRaw {
  /** Inode number (nonzero). */
  ino: number;
  /** The name bytes, a view into the block (not a copy). */
  nameBytes: Uint8Array;
  /** EXT4_FT_* (EXT4_FT_UNKNOWN when the filesystem lacks `filetype`). */
  fileType: number;
  /** Byte offset of the entry in its block or area. */
  offset: number;
  /** Decoded rec_len in bytes. */
  recLen: number;
}

/** Where a directory block came from, and how to check it. */
export interface DirParseCtx {
  /** Physical block number, for error messages. */
  blockNr: number;
  /** The directory's inode number, for error messages. */
  ino: number;
  /** The filesystem has the `filetype` feature (file_type is meaningful). */
  hasFiletype: boolean;
  /** The directory inode's checksum seed; present iff metadata_csum (then a tail is required). */
  csumSeed?: number;
  /** The block was verified before (the cache remembers): skip the checksum, keep the tail check. */
  skipCsum?: boolean;
  /** s_inodes_count: entries naming a higher inode are corrupt ("inode out of bounds"). */
  inodesCount?: number;
}

/** The decoded header of one entry. */
export interface DirEntryHeader {
  ino: number;
  recLen: number;
  nameLen: number;
  fileType: number;
}

/** EXT4_DIR_REC_LEN / ext4_dir_rec_len(): round_up(8 + name_len, 4), the least rec_len for a name. */
export function dirEntryMinRecLen(nameLen: number): number {
  return (DIRENT_HEADER + nameLen + 3) & ~3;
}

function assertBlockSize(blockSize: number): void {
  assert(
    blockSize >= MIN_BLOCK_SIZE && blockSize <= MAX_BLOCK_SIZE && (blockSize & (blockSize - 1)) === 0,
    () => `block size ${blockSize} is not a power of two in 1 KiB..64 KiB`,
  );
}

/**
 * ext4_rec_len_from_disk(): rec_len is a u16, so a 64 KiB block cannot store 65536 directly.
 * Such blocks store it as 65535 (or 0), and longer lengths keep bits 16-17 in the low two bits,
 * which are otherwise always zero. Smaller blocks use the raw value (as e2fsprogs does).
 */
export function recLenFromDisk(dlen: number, blockSize: number): number {
  if (blockSize < MAX_BLOCK_SIZE) return dlen;
  if (dlen === EXT4_MAX_REC_LEN || dlen === 0) return blockSize;
  return (dlen & 65532) | ((dlen & 3) << 16);
}

/** ext4_rec_len_to_disk(): the inverse of recLenFromDisk. `len` must be a valid rec_len. */
export function recLenToDisk(len: number, blockSize: number): number {
  assert(Number.isInteger(len) && len > 0 && len <= blockSize && len % 4 === 0, () => `rec_len ${len} for block size ${blockSize}`);
  if (len < MAX_BLOCK_SIZE) return len;
  // Only a 64 KiB block can hold len == 65536.
  return EXT4_MAX_REC_LEN;
}

/** Decodes the header at `offset` without checking it (the caller checked it is in bounds). */
export function readDirEntry(area: Uint8Array, offset: number, blockSize: number): DirEntryHeader {
  const d = new DirEntry2(area, offset);
  return { ino: d.inode, recLen: recLenFromDisk(d.rec_len, blockSize), nameLen: d.name_len, fileType: d.file_type };
}

/** The least rec_len of any entry (a one-byte name). */
const MIN_REC_LEN = 12;

/**
 * __ext4_check_dir_entry(): checks the entry at `off` of an area of `area.length` bytes, in the
 * kernel's order, and returns its decoded header. Throws Corrupt naming the bad value. The
 * "too close to block end" rule keeps at least one minimal entry's room after every entry that
 * does not end the area, so a chain can only end exactly at the area's end.
 */
export function checkDirEntry(area: Uint8Array, off: number, blockSize: number, ctx: DirParseCtx): DirEntryHeader {
  checkedRecLen(area, off, blockSize, ctx);
  return readDirEntry(area, off, blockSize);
}

/**
 * checkDirEntry without decoding the header into an object: the entry's rec_len once every
 * check passed. Directory adds re-check whole blocks through it, so it allocates nothing.
 */
export function checkedRecLen(area: Uint8Array, off: number, blockSize: number, ctx: DirParseCtx): number {
  const size = area.length;
  if (off + DIRENT_HEADER > size) badDirEntry(ctx, off, `header crosses the end of the block (${size - off} bytes left)`);
  // OK to index: the header lies inside the area (checked above).
  const ino = (area[off]! | (area[off + 1]! << 8) | (area[off + 2]! << 16) | (area[off + 3]! << 24)) >>> 0;
  const recLen = recLenFromDisk(area[off + 4]! | (area[off + 5]! << 8), blockSize);
  const nameLen = area[off + 6]!;
  const minLen = MIN_REC_LEN;
  if (recLen < minLen) badDirEntry(ctx, off, `rec_len ${recLen} is smaller than minimal (${minLen})`);
  if (recLen % 4 !== 0) badDirEntry(ctx, off, `rec_len ${recLen} % 4 != 0`);
  if (recLen < dirEntryMinRecLen(nameLen)) badDirEntry(ctx, off, `rec_len ${recLen} is too small for name_len ${nameLen}`);
  const next = off + recLen;
  if (next > size) badDirEntry(ctx, off, `rec_len ${recLen} overruns the block (${size - off} bytes left)`);
  if (next > size - minLen && next !== size) badDirEntry(ctx, off, `rec_len ${recLen} ends too close to the block end (${size - next} bytes left)`);
  if (ctx.inodesCount !== undefined && ino > ctx.inodesCount) badDirEntry(ctx, off, `inode ${ino} out of bounds (s_inodes_count ${ctx.inodesCount})`);
  if (ino !== 0 && nameLen === 0) badDirEntry(ctx, off, `live entry for inode ${ino} has name_len 0`);
  return recLen;
}

function badDirEntry(ctx: DirParseCtx, off: number, detail: string): never {
  throw new Corrupt('directory entry', detail, { block: ctx.blockNr, ino: ctx.ino, offset: off });
}

/**
 * Parses a chain of entries covering `area` exactly (a block minus its tail, or an inline-data
 * area). Every entry passes checkDirEntry before its name is read. Returns the live entries.
 * `blockSize` is the filesystem block size, which rec_len decoding depends on.
 */
export function parseDirArea(area: Uint8Array, ctx: DirParseCtx, blockSize = area.length): DirEntryRaw[] {
  const out: DirEntryRaw[] = [];
  let off = 0;
  // Each step advances by recLen >= 12 (checked), so the loop runs at most size / 12 times.
  while (off < area.length) {
    const h = checkDirEntry(area, off, blockSize, ctx);
    if (h.ino !== 0) {
      out.push({
        ino: h.ino,
        nameBytes: area.subarray(off + DIRENT_HEADER, off + DIRENT_HEADER + h.nameLen),
        fileType: ctx.hasFiletype ? h.fileType : EXT4_FT_UNKNOWN,
        offset: off,
        recLen: h.recLen,
      });
    }
    off += h.recLen;
  }
  return out;
}

/** parseDirArea's checks without collecting the entries (validating a block we just changed). */
export function checkDirArea(area: Uint8Array, ctx: DirParseCtx, blockSize = area.length): void {
  // Each step advances by recLen >= 12 (checked).
  for (let off = 0; off < area.length; ) off += checkedRecLen(area, off, blockSize, ctx);
}

/** Offset of the checksum tail in a block of `blockSize` bytes (EXT4_DIRENT_TAIL). */
export function dirTailOffset(blockSize: number): number {
  return blockSize - DIRENT_TAIL_SIZE;
}

/** get_dirent_tail(): true when the last 12 bytes of `block` are a well-formed checksum tail. */
export function hasDirTail(block: Uint8Array): boolean {
  if (block.length < DIRENT_TAIL_SIZE) return false;
  const t = new DirEntryTail(block, dirTailOffset(block.length));
  return (
    t.det_reserved_zero1 === 0 &&
    recLenFromDisk(t.det_rec_len, block.length) === DIRENT_TAIL_SIZE &&
    t.det_reserved_zero2 === 0 &&
    t.det_reserved_ft === EXT4_FT_DIR_CSUM
  );
}

/** ext4_dirblock_csum(): crc32c(inode seed, the block before its tail). */
export function dirBlockCsum(seed: number, block: Uint8Array): number {
  return crc32cRaw(seed, block.subarray(0, dirTailOffset(block.length)));
}

/** Writes a fresh tail into the last 12 bytes (ext4_initialize_dirent_tail); checksum 0. */
export function initDirTail(block: Uint8Array): void {
  assertBlockSize(block.length);
  const off = dirTailOffset(block.length);
  block.fill(0, off);
  const t = new DirEntryTail(block, off);
  t.det_rec_len = recLenToDisk(DIRENT_TAIL_SIZE, block.length);
  t.det_reserved_ft = EXT4_FT_DIR_CSUM;
}

/** Stores the block's checksum in its tail (ext4_dirblock_csum_set). The tail must exist. */
export function setDirBlockCsum(seed: number, block: Uint8Array): void {
  assert(hasDirTail(block), 'setDirBlockCsum on a block without a checksum tail');
  new DirEntryTail(block, dirTailOffset(block.length)).det_checksum = dirBlockCsum(seed, block);
}

/**
 * Formats an empty leaf block: one unused entry spanning the block (minus the tail when
 * `withTail`), as ext4_append() + the kernel's new-block initialization leave it.
 */
export function initDirBlock(block: Uint8Array, withTail: boolean): void {
  assertBlockSize(block.length);
  block.fill(0);
  const len = withTail ? dirTailOffset(block.length) : block.length;
  const d = new DirEntry2(block, 0);
  d.inode = 0;
  d.rec_len = recLenToDisk(len, block.length);
  if (withTail) initDirTail(block);
}

/** Arguments of writeDirEntry. */
export interface DirEntryInit {
  ino: number;
  recLen: number;
  name: Uint8Array;
  fileType: number;
}

/**
 * Writes one entry header and its name at `offset` and zeroes the name's padding (up to the
 * next 4-byte boundary). The caller keeps the chain consistent (the recLens still cover the
 * block); the asserts catch callers that would write an entry checkDirEntry rejects.
 */
export function writeDirEntry(block: Uint8Array, offset: number, e: DirEntryInit, blockSize = block.length): void {
  assert(e.name.length >= 1 && e.name.length <= EXT4_NAME_LEN, () => `name of ${e.name.length} bytes`);
  assert(offset >= 0 && offset % 4 === 0, () => `entry offset ${offset} not 4-byte aligned`);
  assert(e.recLen >= dirEntryMinRecLen(e.name.length), () => `rec_len ${e.recLen} too small for a ${e.name.length}-byte name`);
  assert(offset + e.recLen <= block.length, () => `entry at ${offset} + rec_len ${e.recLen} passes the ${block.length}-byte block`);
  assert(Number.isInteger(e.fileType) && e.fileType >= 0 && e.fileType < EXT4_FT_MAX, () => `file_type ${e.fileType}`);
  const d = new DirEntry2(block, offset);
  d.inode = e.ino;
  d.rec_len = recLenToDisk(e.recLen, blockSize);
  d.name_len = e.name.length;
  d.file_type = e.fileType;
  block.set(e.name, offset + DIRENT_HEADER);
  block.fill(0, offset + DIRENT_HEADER + e.name.length, offset + dirEntryMinRecLen(e.name.length));
}

/** Changes the rec_len of the entry at `offset` (splitting or merging entries). */
export function setDirEntryRecLen(block: Uint8Array, offset: number, recLen: number, blockSize = block.length): void {
  const d = new DirEntry2(block, offset);
  assert(recLen >= dirEntryMinRecLen(d.name_len), () => `rec_len ${recLen} too small for name_len ${d.name_len}`);
  assert(offset + recLen <= block.length, () => `entry at ${offset} + rec_len ${recLen} passes the block`);
  d.rec_len = recLenToDisk(recLen, blockSize);
}

/** Changes the inode of the entry at `offset` (0 marks it unused, as unlink does at offset 0). */
export function setDirEntryIno(block: Uint8Array, offset: number, ino: number): void {
  new DirEntry2(block, offset).inode = ino;
}

/**
 * Parses a directory leaf block. With a checksum seed (metadata_csum) the block must end in a
 * well-formed tail (Corrupt otherwise), its checksum must match (BadCrc otherwise, unless
 * ctx.skipCsum), and the entries must end exactly where the tail starts.
 */
export function parseDirBlock(block: Uint8Array, ctx: DirParseCtx): DirEntryRaw[] {
  assertBlockSize(block.length);
  if (ctx.csumSeed === undefined) return parseDirArea(block, ctx, block.length);
  const where: Where = { block: ctx.blockNr, ino: ctx.ino };
  if (!hasDirTail(block)) {
    const t = new DirEntryTail(block, dirTailOffset(block.length));
    throw new Corrupt(
      'directory block',
      `has no checksum tail (det_reserved_zero1 ${t.det_reserved_zero1}, det_rec_len ${t.det_rec_len}, ` +
        `det_reserved_ft 0x${hex(t.det_reserved_ft)})`,
      where,
    );
  }
  if (ctx.skipCsum !== true) {
    const stored = new DirEntryTail(block, dirTailOffset(block.length)).det_checksum;
    const computed = dirBlockCsum(ctx.csumSeed, block);
    if (stored !== computed) throw new BadCrc('directory block', stored, computed, where);
  }
  return parseDirArea(block.subarray(0, dirTailOffset(block.length)), ctx, block.length);
}

// ---------------------------------------------------------------------------------------------
// Leaf-block editing for the directory write path (fs/ext4/namei.c: ext4_find_dest_de,
// ext4_insert_dentry, ext4_generic_delete_entry, dx_move_dirents/dx_pack_dirents,
// ext4_init_dot_dotdot). Callers pass areas that parseDirArea accepted; the asserts catch
// callers that break the chain.
// ---------------------------------------------------------------------------------------------

/** A live entry to write: inode, name bytes and EXT4_FT_* (0 without `filetype`). */
export interface DirEntryInput {
  ino: number;
  name: Uint8Array;
  fileType: number;
}

/** Offset of the '..' entry in a block that starts with '.' (rec_len 12) as the kernel lays it out. */
export const DOTDOT_OFFSET = dirEntryMinRecLen(1);

/**
 * ext4_find_dest_de's space test: the offset of the first entry of `area` (a block minus its
 * tail) that can take an entry needing `recLen` bytes — an unused entry whose rec_len is at
 * least that, or a live one whose slack (rec_len minus its own minimal length) is. Returns -1
 * when none can. The area must have passed parseDirArea (the walk trusts every rec_len).
 */
export function findDirSlot(area: Uint8Array, recLen: number, blockSize: number): number {
  let off = 0;
  // Each step advances by a rec_len >= 12 that parseDirArea checked: bounded by the area size.
  while (off < area.length) {
    const h = readDirEntry(area, off, blockSize);
    assert(h.recLen >= dirEntryMinRecLen(1) && off + h.recLen <= area.length, () => `findDirSlot: bad rec_len ${h.recLen} at ${off}`);
    const free = h.ino !== 0 ? h.recLen - dirEntryMinRecLen(h.nameLen) : h.recLen;
    if (free >= recLen) return off;
    off += h.recLen;
  }
  return -1;
}

/** findDestDirEntry's answer when the name is already in the area. */
export const DIR_NAME_EXISTS = -2;

/**
 * ext4_find_dest_de in one pass without decoding entries into objects: DIR_NAME_EXISTS when a
 * live entry of `area` has `name`, else what findDirSlot returns for `recLen`. Like findDirSlot,
 * it trusts a chain that parseDirArea accepted (a verified block).
 */
export function findDestDirEntry(area: Uint8Array, name: Uint8Array, recLen: number, blockSize: number): number {
  let slot = -1;
  let off = 0;
  const n = name.length;
  while (off < area.length) {
    // OK to index: the header lies inside the area (the chain was checked).
    const ino = (area[off]! | (area[off + 1]! << 8) | (area[off + 2]! << 16) | (area[off + 3]! << 24)) >>> 0;
    const rec = recLenFromDisk(area[off + 4]! | (area[off + 5]! << 8), blockSize);
    const nameLen = area[off + 6]!;
    assert(rec >= dirEntryMinRecLen(1) && off + rec <= area.length, () => `findDestDirEntry: bad rec_len ${rec} at ${off}`);
    if (ino !== 0 && nameLen === n) {
      let same = true;
      for (let i = 0; i < n && same; i++) same = area[off + DIRENT_HEADER + i] === name[i];
      if (same) return DIR_NAME_EXISTS;
    }
    if (slot < 0 && (ino !== 0 ? rec - dirEntryMinRecLen(nameLen) : rec) >= recLen) slot = off;
    off += rec;
  }
  return slot;
}

/**
 * ext4_insert_dentry: writes `e` into the slot at `offset` that findDirSlot returned. A live
 * entry there is cut to its minimal rec_len and the new entry takes the rest; an unused entry
 * is taken whole (rec_len unchanged). Returns the new entry's offset.
 */
export function insertDirEntry(block: Uint8Array, offset: number, e: DirEntryInput, blockSize = block.length): number {
  const h = readDirEntry(block, offset, blockSize);
  let at = offset;
  let recLen = h.recLen;
  if (h.ino !== 0) {
    const nlen = dirEntryMinRecLen(h.nameLen);
    assert(h.recLen - nlen >= dirEntryMinRecLen(e.name.length), () => `insertDirEntry: no room after the entry at ${offset}`);
    setDirEntryRecLen(block, offset, nlen, blockSize);
    at = offset + nlen;
    recLen = h.recLen - nlen;
  }
  assert(recLen >= dirEntryMinRecLen(e.name.length), () => `insertDirEntry: unused entry at ${offset} too small`);
  writeDirEntry(block, at, { ino: e.ino, recLen, name: e.name, fileType: e.fileType }, blockSize);
  return at;
}

/**
 * ext4_generic_delete_entry: removes the live entry at `offset` of `area` (a block minus its
 * tail). It is merged into the entry before it in the chain, whose rec_len grows over it, and
 * its bytes are wiped; the first entry of the area instead becomes unused (inode 0) with its
 * name_len, file_type and name wiped and its rec_len kept.
 */
export function deleteDirEntry(area: Uint8Array, offset: number, blockSize: number): void {
  let prev = -1;
  let off = 0;
  // Bounded like findDirSlot: every step advances by a checked rec_len.
  while (off < offset) {
    const h = readDirEntry(area, off, blockSize);
    assert(h.recLen >= dirEntryMinRecLen(1), () => `deleteDirEntry: bad rec_len ${h.recLen} at ${off}`);
    prev = off;
    off += h.recLen;
  }
  assert(off === offset, () => `deleteDirEntry: no entry starts at ${offset}`);
  const h = readDirEntry(area, offset, blockSize);
  assert(h.ino !== 0, () => `deleteDirEntry: entry at ${offset} is not live`);
  if (prev >= 0) {
    setDirEntryRecLen(area, prev, readDirEntry(area, prev, blockSize).recLen + h.recLen, blockSize);
    area.fill(0, offset, offset + h.recLen);
  } else {
    const d = new DirEntry2(area, offset);
    d.inode = 0;
    area.fill(0, offset + DirEntry2.offsetOf('name_len'), offset + h.recLen);
  }
}

/** Changes the file_type of the entry at `offset` (rename onto an existing name). */
export function setDirEntryFileType(block: Uint8Array, offset: number, fileType: number): void {
  assert(Number.isInteger(fileType) && fileType >= 0 && fileType < EXT4_FT_MAX, () => `file_type ${fileType}`);
  new DirEntry2(block, offset).file_type = fileType;
}

/**
 * Formats a leaf block from live entries, packed in the given order at their minimal rec_len,
 * the last one spanning to the end of the entry area (the tail's start with `withTail`): what
 * dx_move_dirents + dx_pack_dirents and do_split's rec_len fix-up leave. The rest of the block
 * is zeroed. No entries gives an empty leaf (initDirBlock). Names must not alias `block`.
 */
export function buildDirLeaf(block: Uint8Array, entries: readonly DirEntryInput[], withTail: boolean): void {
  const bs = block.length;
  initDirBlock(block, withTail);
  const end = withTail ? dirTailOffset(bs) : bs;
  let off = 0;
  entries.forEach((e, i) => {
    const min = dirEntryMinRecLen(e.name.length);
    const recLen = i === entries.length - 1 ? end - off : min;
    assert(off + recLen <= end && recLen >= min, () => `buildDirLeaf: ${entries.length} entries overflow a ${bs}-byte block`);
    writeDirEntry(block, off, { ino: e.ino, recLen, name: e.name, fileType: e.fileType }, bs);
    off += recLen;
  });
}

/**
 * ext4_init_dot_dotdot + ext4_initialize_dirent_tail: block 0 of a new directory, '.' (rec_len
 * 12) naming `dirIno` and '..' naming `parentIno` spanning the rest of the entry area, both
 * with file type EXT4_FT_DIR when the filesystem has `filetype`; the tail (checksum 0) when
 * `withTail`.
 */
export function initDirDotBlock(block: Uint8Array, dirIno: number, parentIno: number, hasFiletype: boolean, withTail: boolean): void {
  const bs = block.length;
  initDirBlock(block, withTail);
  const ft = hasFiletype ? EXT4_FT_DIR : EXT4_FT_UNKNOWN;
  const end = withTail ? dirTailOffset(bs) : bs;
  writeDirEntry(block, 0, { ino: dirIno, recLen: DOTDOT_OFFSET, name: DOT_NAME, fileType: ft }, bs);
  writeDirEntry(block, DOTDOT_OFFSET, { ino: parentIno, recLen: end - DOTDOT_OFFSET, name: DOTDOT_NAME, fileType: ft }, bs);
}
const DOT_NAME = new Uint8Array([0x2e]);
const DOTDOT_NAME = new Uint8Array([0x2e, 0x2e]);
