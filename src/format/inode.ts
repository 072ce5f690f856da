/**
 * The on-disk inode (Documentation/filesystems/ext4/inodes.rst; struct ext4_inode). A record is
 * s_inode_size bytes: the 128-byte base, then i_extra_isize bytes of extra fields (checksum hi,
 * nanosecond and epoch bits of the times, crtime, projid), then in-inode xattrs. An extra
 * field counts only when it fits inside 128 + i_extra_isize (EXT4_FITS_IN_INODE), so each split
 * field has one accessor here that applies that rule.
 */
import { defineStruct, u16, u32, bytes, setLe32 } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc } from '../util/errors.js';

/** Size of the view: the base inode plus every extra field we know (to i_projid). */
export const INODE_VIEW_SIZE = 160;
export const EXT4_GOOD_OLD_INODE_SIZE = 128;
/** i_block holds 15 words (60 bytes): block map, extent root, fast symlink or inline data. */
export const EXT4_N_BLOCKS = 15;
export const I_BLOCK_BYTES = 60;

export const Inode = defineStruct('ext4_inode', INODE_VIEW_SIZE, {
  i_mode: u16(0x0),
  i_uid: u16(0x2),
  i_size_lo: u32(0x4),
  i_atime: u32(0x8),
  i_ctime: u32(0xc),
  i_mtime: u32(0x10),
  i_dtime: u32(0x14),
  i_gid: u16(0x18),
  i_links_count: u16(0x1a),
  i_blocks_lo: u32(0x1c),
  i_flags: u32(0x20),
  l_i_version: u32(0x24),
  i_block: bytes(0x28, I_BLOCK_BYTES),
  i_generation: u32(0x64),
  i_file_acl_lo: u32(0x68),
  i_size_high: u32(0x6c),
  i_obso_faddr: u32(0x70),
  l_i_blocks_high: u16(0x74),
  l_i_file_acl_high: u16(0x76),
  l_i_uid_high: u16(0x78),
  l_i_gid_high: u16(0x7a),
  l_i_checksum_lo: u16(0x7c),
  l_i_reserved: u16(0x7e),
  i_extra_isize: u16(0x80),
  i_checksum_hi: u16(0x82),
  i_ctime_extra: u32(0x84),
  i_mtime_extra: u32(0x88),
  i_atime_extra: u32(0x8c),
  i_crtime: u32(0x90),
  i_crtime_extra: u32(0x94),
  i_version_hi: u32(0x98),
  i_projid: u32(0x9c),
});
export type InodeView = InstanceType<typeof Inode>;

/** i_mode file types (S_IFMT). */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** i_flags bits used by ext4ts. */
export const EXT4_SECRM_FL = 0x1;
export const EXT4_SYNC_FL = 0x8;
export const EXT4_IMMUTABLE_FL = 0x10;
export const EXT4_APPEND_FL = 0x20;
export const EXT4_NOATIME_FL = 0x80;
export const EXT4_INDEX_FL = 0x1000;
export const EXT4_JOURNAL_DATA_FL = 0x4000;
export const EXT4_TOPDIR_FL = 0x20000;
export const EXT4_HUGE_FILE_FL = 0x40000;
export const EXT4_EXTENTS_FL = 0x80000;
export const EXT4_VERITY_FL = 0x100000;
export const EXT4_EA_INODE_FL = 0x200000;
export const EXT4_INLINE_DATA_FL = 0x10000000;
export const EXT4_ENCRYPT_FL = 0x800;
export const EXT4_CASEFOLD_FL = 0x40000000;

/** The kind of object an i_mode describes. */
export type FileType = 'file' | 'dir' | 'symlink' | 'chr' | 'blk' | 'fifo' | 'sock';

/** Maps S_IFMT bits to a FileType, or undefined for an invalid type. */
export function fileTypeOfMode(mode: number): FileType | undefined {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'file';
    case S_IFDIR: return 'dir';
    case S_IFLNK: return 'symlink';
    case S_IFCHR: return 'chr';
    case S_IFBLK: return 'blk';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'sock';
    default: return undefined;
  }
}

/** True when an extra field ending at byte `end` fits in 128 + i_extra_isize (and the record). */
export function fitsInInode(ino: InodeView, end: number, inodeSize: number): boolean {
  if (inodeSize <= EXT4_GOOD_OLD_INODE_SIZE) return false;
  return end <= EXT4_GOOD_OLD_INODE_SIZE + ino.i_extra_isize;
}

/** File size in bytes (i_size_high counts for regular files, and for every file with large_dir). */
export function inodeSizeBytes(ino: InodeView, largeDir: boolean): number {
  const isReg = (ino.i_mode & S_IFMT) === S_IFREG;
  const hi = isReg || largeDir ? ino.i_size_high : 0;
  return hi * 0x1_0000_0000 + ino.i_size_lo;
}
export function setInodeSizeBytes(ino: InodeView, size: number): void {
  ino.i_size_lo = size >>> 0;
  ino.i_size_high = Math.floor(size / 0x1_0000_0000);
}

/** i_blocks in 512-byte units, honouring huge_file and EXT4_HUGE_FILE_FL (ext4_inode_blocks). */
export function inodeBlocks512(ino: InodeView, hugeFile: boolean, blockSize: number): number {
  if (!hugeFile) return ino.i_blocks_lo;
  const n = ino.l_i_blocks_high * 0x1_0000_0000 + ino.i_blocks_lo;
  return ino.i_flags & EXT4_HUGE_FILE_FL ? n * (blockSize / 512) : n;
}

/** Owner uid with its high 16 bits. */
export function inodeUid(ino: InodeView): number {
  return ino.l_i_uid_high * 0x10000 + ino.i_uid;
}
export function inodeGid(ino: InodeView): number {
  return ino.l_i_gid_high * 0x10000 + ino.i_gid;
}
export function setInodeUid(ino: InodeView, uid: number): void {
  ino.i_uid = uid & 0xffff;
  ino.l_i_uid_high = uid >>> 16;
}
export function setInodeGid(ino: InodeView, gid: number): void {
  ino.i_gid = gid & 0xffff;
  ino.l_i_gid_high = gid >>> 16;
}

/** The xattr block (i_file_acl with its high 16 bits). */
export function inodeFileAcl(ino: InodeView): number {
  return ino.l_i_file_acl_high * 0x1_0000_0000 + ino.i_file_acl_lo;
}

/** A timestamp: seconds since the epoch (may be negative) and nanoseconds. */
export interface Timespec {
  sec: number;
  nsec: number;
}

/** The four timestamps of an inode. crtime is absent in 128-byte inodes. */
export type TimeField = 'atime' | 'mtime' | 'ctime' | 'crtime';

const TIME_FIELDS = {
  atime: ['i_atime', 'i_atime_extra'],
  mtime: ['i_mtime', 'i_mtime_extra'],
  ctime: ['i_ctime', 'i_ctime_extra'],
  crtime: ['i_crtime', 'i_crtime_extra'],
} as const;

/**
 * Decodes a timestamp the way ext4_decode_extra_time() does: the 32-bit seconds are signed,
 * the low 2 bits of the extra word add multiples of 2^32 seconds (the epoch bits) and the upper
 * 30 bits are nanoseconds. Without the extra word, nanoseconds are 0.
 */
export function inodeTime(ino: InodeView, which: TimeField, inodeSize: number): Timespec | undefined {
  const [secF, extraF] = TIME_FIELDS[which];
  const extraEnd = Inode.offsetOf(extraF) + 4;
  if (which === 'crtime' && !fitsInInode(ino, Inode.offsetOf('i_crtime') + 4, inodeSize)) return undefined;
  const sec32 = ino[secF] | 0;
  if (!fitsInInode(ino, extraEnd, inodeSize)) return { sec: sec32, nsec: 0 };
  const extra = ino[extraF];
  return { sec: sec32 + (extra & 3) * 0x1_0000_0000, nsec: extra >>> 2 };
}

/** Encodes a timestamp (inverse of inodeTime); the extra word is written only if it fits. */
export function setInodeTime(ino: InodeView, which: TimeField, t: Timespec, inodeSize: number): void {
  const offs = TIME_OFFSETS[which];
  const secOff = offs.sec;
  const extraOff = offs.extra;
  // Clamp to what the record can hold, as the kernel does (EXT4_{EXTRA_,}TIMESTAMP_{MIN,MAX}).
  const hasExtra = fitsInInode(ino, extraOff + 4, inodeSize);
  const max = hasExtra ? 0x7fff_ffff + 3 * 0x1_0000_0000 : 0x7fff_ffff;
  let sec = t.sec;
  let nsec = t.nsec;
  if (sec < -0x8000_0000) {
    sec = -0x8000_0000;
    nsec = 0;
  } else if (sec > max) {
    sec = max;
    nsec = 0;
  }
  // The epoch bits count how many 2^32 spans the seconds are past the signed 32-bit range.
  const epoch = Math.floor((sec + 0x8000_0000) / 0x1_0000_0000);
  const lo = sec - epoch * 0x1_0000_0000;
  if (which === 'crtime' && !fitsInInode(ino, secOff + 4, inodeSize)) return;
  // Stored byte by byte (a hot path: every create, write and utimes sets two or four times).
  setLe32(ino.bytes, ino.base + secOff, lo >>> 0);
  if (hasExtra) setLe32(ino.bytes, ino.base + extraOff, ((nsec << 2) | (epoch & 3)) >>> 0);
}

/** Byte offsets of each timestamp's seconds and extra words (TIME_FIELDS'). */
const TIME_OFFSETS = Object.fromEntries(
  Object.entries(TIME_FIELDS).map(([w, [sec, extra]]) => [w, { sec: Inode.offsetOf(sec), extra: Inode.offsetOf(extra) }]),
) as Record<TimeField, { sec: number; extra: number }>;

/** Scratch for le32 (crc32cRaw consumes it before the next call). */
const LE32_BYTES = new Uint8Array(4);
const LE32_VIEW = new DataView(LE32_BYTES.buffer);
function le32(n: number): Uint8Array {
  LE32_VIEW.setUint32(0, n >>> 0, true);
  return LE32_BYTES;
}
const ZERO2 = new Uint8Array(2);

/** The per-inode checksum seed: crc32c(fs seed, ino) then crc32c(…, i_generation). */
export function inodeCsumSeed(fsSeed: number, inoNr: number, generation: number): number {
  return crc32cRaw(crc32cRaw(fsSeed, le32(inoNr)), le32(generation));
}

const CSUM_LO = Inode.offsetOf('l_i_checksum_lo');
const CSUM_HI = Inode.offsetOf('i_checksum_hi');

/**
 * ext4_inode_csum(): crc32c over the whole record with l_i_checksum_lo (and i_checksum_hi when it
 * fits) taken as zero. `record` is exactly s_inode_size bytes.
 */
export function computeInodeCsum(record: Uint8Array, inodeSeed: number, hiFits: boolean): number {
  const c = sumCsumPieces(inodeCsumPieces(record, hiFits), inodeSeed);
  return hiFits ? c : c & 0xffff;
}

/** crc32c chained over the pieces, each checksum field between them taken as two zero bytes: no copy. */
function sumCsumPieces(pieces: readonly Uint8Array[], inodeSeed: number): number {
  // OK to index: inodeCsumPieces makes two or three pieces.
  let c = crc32cRaw(crc32cRaw(inodeSeed, pieces[0]!), ZERO2);
  if (pieces.length === 3) c = crc32cRaw(crc32cRaw(c, pieces[1]!), ZERO2);
  return crc32cRaw(c, pieces[pieces.length - 1]!);
}

/**
 * The pieces of `record` (s_inode_size bytes) that ext4_inode_csum() sums around the checksum
 * fields: views, so an in-core inode can keep them and be checksummed with no allocation.
 */
export function inodeCsumPieces(record: Uint8Array, hiFits: boolean): Uint8Array[] {
  return hiFits
    ? [record.subarray(0, CSUM_LO), record.subarray(CSUM_LO + 2, CSUM_HI), record.subarray(CSUM_HI + 2)]
    : [record.subarray(0, CSUM_LO), record.subarray(CSUM_LO + 2)];
}

/** Stamps the checksum of an inode record from inodeCsumPieces (as setInodeCsum does). */
export function setInodeCsumFromPieces(ino: InodeView, pieces: readonly Uint8Array[], inodeSeed: number): void {
  const c = sumCsumPieces(pieces, inodeSeed);
  ino.l_i_checksum_lo = c & 0xffff;
  if (pieces.length === 3) ino.i_checksum_hi = c >>> 16;
}

/** True when the record has room for i_checksum_hi. */
export function inodeCsumHiFits(ino: InodeView, inodeSize: number): boolean {
  return fitsInInode(ino, CSUM_HI + 2, inodeSize);
}

/**
 * Verifies an inode record's checksum. `ino` is a view over a (possibly padded) copy of
 * `record`. Throws BadCrc on mismatch. An all-zero (never used) record is not checked.
 */
export function verifyInodeCsum(
  ino: InodeView, record: Uint8Array, inoNr: number, fsSeed: number, block: number,
): void {
  const hiFits = fitsInInode(ino, CSUM_HI + 2, record.length);
  const seed = inodeCsumSeed(fsSeed, inoNr, ino.i_generation);
  const computed = computeInodeCsum(record, seed, hiFits);
  const stored = hiFits ? ino.i_checksum_hi * 0x10000 + ino.l_i_checksum_lo : ino.l_i_checksum_lo;
  if (computed !== stored) throw new BadCrc('inode', stored, computed, { ino: inoNr, block });
}

/** Writes the checksum of `record` (s_inode_size bytes) into its own fields. */
export function setInodeCsum(ino: InodeView, record: Uint8Array, inoNr: number, fsSeed: number): void {
  const hiFits = fitsInInode(ino, CSUM_HI + 2, record.length);
  const c = computeInodeCsum(record, inodeCsumSeed(fsSeed, inoNr, ino.i_generation), hiFits);
  ino.l_i_checksum_lo = c & 0xffff;
  if (hiFits) ino.i_checksum_hi = c >>> 16;
}

/**
 * Checks the extra-size field against the record size (the kernel's "bad extra_isize"): it must
 * be a multiple of 4 and leave the record inside s_inode_size.
 */
export function validateExtraIsize(ino: InodeView, inoNr: number, inodeSize: number): void {
  if (inodeSize <= EXT4_GOOD_OLD_INODE_SIZE) return;
  const e = ino.i_extra_isize;
  if (e % 4 !== 0 || EXT4_GOOD_OLD_INODE_SIZE + e > inodeSize) {
    throw new Corrupt('inode', `bad i_extra_isize ${e} (inode size ${inodeSize})`, { ino: inoNr });
  }
}

/**
 * Device number of a character or block special inode (ext4_iget): the old 16-bit encoding in
 * i_block[0] when it is non-zero, else the new 32-bit encoding in i_block[1].
 */
export function decodeRdev(iBlock: Uint8Array): { major: number; minor: number } {
  const dv = new DataView(iBlock.buffer, iBlock.byteOffset, 8);
  const old = dv.getUint32(0, true);
  if (old !== 0) return { major: (old >>> 8) & 0xff, minor: old & 0xff };
  const dev = dv.getUint32(4, true);
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

/**
 * Stores a device number in i_block the way ext4_init_special_inode's writer does
 * (ext4_do_update_inode): the old 16-bit encoding in word 0 when major and minor fit in 8 bits,
 * else the new 32-bit encoding in word 1 with word 0 zero.
 */
export function encodeRdev(iBlock: Uint8Array, major: number, minor: number): void {
  const dv = new DataView(iBlock.buffer, iBlock.byteOffset, 8);
  if (major < 256 && minor < 256) {
    dv.setUint32(0, (major << 8) | minor, true);
    dv.setUint32(4, 0, true);
  } else {
    dv.setUint32(0, 0, true);
    dv.setUint32(4, ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0, true);
  }
}

/** Stores the xattr block number in its split lo/high fields (the inverse of inodeFileAcl). */
export function setInodeFileAcl(ino: InodeView, blk: number): void {
  ino.i_file_acl_lo = blk % 0x1_0000_0000;
  ino.l_i_file_acl_high = Math.floor(blk / 0x1_0000_0000);
}
