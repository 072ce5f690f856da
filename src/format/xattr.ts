/**
 * Extended attributes (Documentation/filesystems/ext4/attributes.rst; fs/ext4/xattr.h:
 * struct ext4_xattr_header, ext4_xattr_ibody_header, ext4_xattr_entry; fs/ext4/xattr.c:
 * check_xattrs(), ext4_xattr_block_csum(), ext4_xattr_hash_entry(), ext4_xattr_rehash(),
 * xattr_find_entry()).
 *
 * Two places hold attributes:
 * - the in-inode area after 128 + i_extra_isize: a 4-byte magic, then entries; value offsets
 *   count from the first entry (IFIRST), values sit at the end of the area;
 * - one block named by i_file_acl: a 32-byte header, entries sorted by (name_index, name_len,
 *   name), values packed downward from the block end, offsets from the block start; with
 *   metadata_csum the header holds crc32c(fs seed, le64 block number, block with h_checksum 0).
 * Entries are 16 bytes plus the name, padded to 4; the list ends with four zero bytes.
 *
 * Invariants: the parsers make the kernel's check_xattrs() checks (names inside the area and
 * NUL-free, values inside the area, after the entry list, padded size included) before any
 * value is read, and every walk advances by at least 16 bytes, so it is bounded by the area.
 * Values stored in separate inodes (ea_inode) are refused as Incompatible. The builders write
 * what the kernel writes: sorted block entries with hashes and h_hash, unsorted in-inode
 * entries with e_hash 0, values padded with zeros.
 */
import { defineStruct, u8, u16, u32, bytes } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc, Incompatible, PosixError, hex, type Where } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { decodeName, encodeUtf8 } from '../util/bytes.js';

export const EXT4_XATTR_MAGIC = 0xea020000;

/** struct ext4_xattr_header: the first 32 bytes of an xattr block. */
export const XattrHeader = defineStruct('ext4_xattr_header', 32, {
  /** EXT4_XATTR_MAGIC. */
  h_magic: u32(0x0),
  /** Inodes sharing this block (blocks with identical content are shared). */
  h_refcount: u32(0x4),
  /** Blocks used: always 1. */
  h_blocks: u32(0x8),
  /** ext4_xattr_rehash() of the entry hashes; the key for block sharing. */
  h_hash: u32(0xc),
  /** crc32c(fs seed, le64 block number, block with this field 0), with metadata_csum. */
  h_checksum: u32(0x10),
  /** __u32 h_reserved[3]: zero. */
  h_reserved: bytes(0x14, 12),
});
/** struct ext4_xattr_ibody_header: the magic at the start of the in-inode area. */
export const XattrIbodyHeader = defineStruct('ext4_xattr_ibody_header', 4, { h_magic: u32(0x0) });
/** struct ext4_xattr_entry: 16 bytes, then e_name_len name bytes, padded to 4. */
export const XattrEntryView = defineStruct('ext4_xattr_entry', 16, {
  /** Length of the name after the prefix (0 for the POSIX ACL names). */
  e_name_len: u8(0x0),
  /** EXT4_XATTR_INDEX_*: which prefix the name has. */
  e_name_index: u8(0x1),
  /** Value offset: from the block start, or from the first in-inode entry. */
  e_value_offs: u16(0x2),
  /** Inode holding the value (ea_inode), else 0. */
  e_value_inum: u32(0x4),
  /** Value length in bytes. */
  e_value_size: u32(0x8),
  /** ext4_xattr_hash_entry() of name and value (0 in-inode). */
  e_hash: u32(0xc),
});

const ENTRY_HEADER = XattrEntryView.SIZE;
const BLOCK_HEADER = XattrHeader.SIZE;
const IBODY_HEADER = XattrIbodyHeader.SIZE;
/** Entries and values are padded to 4 bytes (EXT4_XATTR_PAD). */
export const EXT4_XATTR_PAD = 4;
/** Largest e_value_size the kernel accepts (EXT4_XATTR_SIZE_MAX). */
export const EXT4_XATTR_SIZE_MAX = 1 << 24;
/** Most inodes that may share one block (EXT4_XATTR_REFCOUNT_MAX). */
export const EXT4_XATTR_REFCOUNT_MAX = 1024;

/** e_name_index values (EXT4_XATTR_INDEX_*). */
export const EXT4_XATTR_INDEX_USER = 1;
export const EXT4_XATTR_INDEX_POSIX_ACL_ACCESS = 2;
export const EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT = 3;
export const EXT4_XATTR_INDEX_TRUSTED = 4;
export const EXT4_XATTR_INDEX_LUSTRE = 5;
export const EXT4_XATTR_INDEX_SECURITY = 6;
export const EXT4_XATTR_INDEX_SYSTEM = 7;
export const EXT4_XATTR_INDEX_RICHACL = 8;
export const EXT4_XATTR_INDEX_ENCRYPTION = 9;

/** e_name_index -> prefix (ext4_xattr_handler_map; 2, 3 and 8 are whole names). */
export const XATTR_PREFIXES: Readonly<Record<number, string>> = {
  1: 'user.', 2: 'system.posix_acl_access', 3: 'system.posix_acl_default', 4: 'trusted.',
  6: 'security.', 7: 'system.', 8: 'system.richacl',
};
/**
 * The name indexes the kernel has a handler for (user, both POSIX ACLs, trusted, security):
 * listxattr shows entries of these only and getxattr finds only these. Others (system.data, the
 * inline-data carrier; richacl, lustre, encryption, unknown indexes) are hidden.
 */
export const XATTR_LISTED_INDEXES: ReadonlySet<number> = new Set([
  EXT4_XATTR_INDEX_USER, EXT4_XATTR_INDEX_POSIX_ACL_ACCESS, EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT,
  EXT4_XATTR_INDEX_TRUSTED, EXT4_XATTR_INDEX_SECURITY,
]);
/** Indexes whose prefix is a whole name (the entry's own name is empty). */
const WHOLE_NAME_INDEXES = [EXT4_XATTR_INDEX_POSIX_ACL_ACCESS, EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT, EXT4_XATTR_INDEX_RICHACL];
/** Prefix indexes, tried in order by splitXattrName. */
const PREFIX_INDEXES = [EXT4_XATTR_INDEX_USER, EXT4_XATTR_INDEX_TRUSTED, EXT4_XATTR_INDEX_SECURITY, EXT4_XATTR_INDEX_SYSTEM];

/** The prefix of a name index, or undefined for indexes with no handler (hidden from listxattr). */
export function xattrPrefix(nameIndex: number): string | undefined {
  return XATTR_PREFIXES[nameIndex];
}

/**
 * Splits a full attribute name into (index, name bytes after the prefix) the way the kernel's
 * handlers match it: whole names first, then prefixes. Undefined when no handler takes it.
 */
export function splitXattrName(name: string): { nameIndex: number; nameBytes: Uint8Array } | undefined {
  for (const idx of WHOLE_NAME_INDEXES) if (name === XATTR_PREFIXES[idx]) return { nameIndex: idx, nameBytes: new Uint8Array(0) };
  for (const idx of PREFIX_INDEXES) {
    // OK: every PREFIX_INDEXES member has a prefix in XATTR_PREFIXES.
    const p = XATTR_PREFIXES[idx]!;
    if (name.startsWith(p) && name.length > p.length) return { nameIndex: idx, nameBytes: encodeUtf8(name.slice(p.length)) };
  }
  return undefined;
}

/** One attribute as parsed. */
export interface XattrEntry {
  /** Prefix + name, e.g. "user.comment"; for an index with no prefix, the bare name. */
  name: string;
  nameIndex: number;
  /** The name bytes after the prefix (a view into the parsed buffer). */
  nameBytes: Uint8Array;
  /** The value (a view into the parsed buffer). */
  value: Uint8Array;
  /** e_hash as stored. */
  hash: number;
}

/** Context of an in-inode area. */
export interface XattrCtx {
  ino?: number;
  blockNr?: number;
  csumSeed?: number;
}

/** Context of an xattr block. */
export interface XattrBlockCtx {
  /** The block's number: part of the checksum, and of error messages. */
  blockNr: number;
  /** Filesystem checksum seed (s_csum_seed); present iff metadata_csum. */
  csumSeed?: number;
  /** The block was verified before (the cache remembers): skip the checksum. */
  skipCsum?: boolean;
  ino?: number;
}

/** EXT4_XATTR_LEN(): an entry's size with its name, padded to 4. */
export function xattrEntryLen(nameLen: number): number {
  return (ENTRY_HEADER + nameLen + EXT4_XATTR_PAD - 1) & ~(EXT4_XATTR_PAD - 1);
}

/** EXT4_XATTR_SIZE(): a value's size padded to 4. */
export function xattrValueLen(size: number): number {
  return (size + EXT4_XATTR_PAD - 1) & ~(EXT4_XATTR_PAD - 1);
}

function isLastEntry(area: Uint8Array, off: number): boolean {
  return area[off] === 0 && area[off + 1] === 0 && area[off + 2] === 0 && area[off + 3] === 0;
}

/**
 * First pass of check_xattrs(): walks the names from `firstOff`, checking that each entry ends
 * before the area does and that names hold no NUL. Returns the entry offsets and where the
 * terminating zero word is.
 */
function walkNames(area: Uint8Array, firstOff: number, bad: (d: string) => never): { offs: number[]; endOff: number } {
  const offs: number[] = [];
  let off = firstOff;
  // Each step advances by at least 16 bytes: at most area.length / 16 iterations.
  for (;;) {
    if (off + 4 > area.length) bad(`entry list is not terminated (offset ${off} of ${area.length})`);
    if (isLastEntry(area, off)) break;
    // OK to index: off + 4 <= area.length was checked above.
    const nameLen = area[off]!;
    const next = off + xattrEntryLen(nameLen);
    if (next >= area.length) bad(`e_name of the entry at offset ${off} out of bounds (e_name_len ${nameLen})`);
    if (area.subarray(off + ENTRY_HEADER, off + ENTRY_HEADER + nameLen).includes(0)) {
      bad(`bad e_name length ${nameLen} at offset ${off} (the name holds a NUL)`);
    }
    offs.push(off);
    off = next;
  }
  return { offs, endOff: off };
}

/**
 * Second pass of check_xattrs(): checks each value's size and place (after the names, inside
 * the area including padding) and builds the results. `valueBase` is what e_value_offs
 * counts from.
 */
function readEntries(area: Uint8Array, firstOff: number, valueBase: number, what: string, where: Where): XattrEntry[] {
  const bad = (detail: string): never => {
    throw new Corrupt(what, detail, where);
  };
  const { offs, endOff } = walkNames(area, firstOff, bad);
  const out: XattrEntry[] = [];
  for (const off of offs) {
    const e = new XattrEntryView(area, off);
    if (e.e_value_inum !== 0) {
      throw new Incompatible(`xattr value in inode ${e.e_value_inum} (ea_inode) is not supported`, ['ea_inode']);
    }
    const size = e.e_value_size;
    if (size > EXT4_XATTR_SIZE_MAX) bad(`e_value_size ${size} too large at offset ${off}`);
    let value: Uint8Array = new Uint8Array(0);
    if (size !== 0) {
      const voffs = e.e_value_offs;
      if (voffs > area.length - valueBase) bad(`e_value_offs ${voffs} out of bounds at offset ${off}`);
      const vstart = valueBase + voffs;
      if (vstart < endOff + 4) bad(`value at e_value_offs ${voffs} overlaps the entries (offset ${off})`);
      if (xattrValueLen(size) > area.length - vstart) {
        bad(`e_value_size ${size} at e_value_offs ${voffs} overruns the area (${area.length - vstart} bytes left)`);
      }
      value = area.subarray(vstart, vstart + size);
    }
    const nameBytes = area.subarray(off + ENTRY_HEADER, off + ENTRY_HEADER + e.e_name_len);
    out.push({
      name: (xattrPrefix(e.e_name_index) ?? '') + decodeName(nameBytes),
      nameIndex: e.e_name_index,
      nameBytes,
      value,
      hash: e.e_hash,
    });
  }
  return out;
}

/**
 * Parses the in-inode area (the bytes after 128 + i_extra_isize up to the inode's end). No
 * magic means no in-inode attributes (the kernel's EXT4_STATE_XATTR is clear).
 */
export function parseXattrIbody(area: Uint8Array, ctx: XattrCtx = {}): XattrEntry[] {
  if (area.length < IBODY_HEADER || new XattrIbodyHeader(area, 0).h_magic !== EXT4_XATTR_MAGIC) return [];
  const where: Where = ctx.ino !== undefined ? { ino: ctx.ino } : {};
  if (area.length < IBODY_HEADER + 4) throw new Corrupt('in-inode xattrs', `area of ${area.length} bytes is too small`, where);
  return readEntries(area, IBODY_HEADER, IBODY_HEADER, 'in-inode xattrs', where);
}

const ZERO_CSUM = new Uint8Array(4);

/**
 * ext4_xattr_block_csum(): crc32c(fs seed, le64 block number), then the block with h_checksum
 * read as zero.
 */
export function computeXattrBlockCsum(block: Uint8Array, blockNr: number, seed: number): number {
  assert(Number.isSafeInteger(blockNr) && blockNr >= 0, () => `xattr block number ${blockNr}`);
  const nr = new Uint8Array(8);
  const dv = new DataView(nr.buffer);
  dv.setUint32(0, blockNr >>> 0, true);
  dv.setUint32(4, Math.floor(blockNr / 0x1_0000_0000), true);
  const csumOff = XattrHeader.offsetOf('h_checksum');
  let c = crc32cRaw(seed, nr);
  c = crc32cRaw(c, block.subarray(0, csumOff));
  c = crc32cRaw(c, ZERO_CSUM);
  return crc32cRaw(c, block.subarray(csumOff + 4));
}

/** ext4_xattr_block_csum_set(). */
export function setXattrBlockCsum(block: Uint8Array, blockNr: number, seed: number): void {
  new XattrHeader(block, 0).h_checksum = computeXattrBlockCsum(block, blockNr, seed);
}

/**
 * Parses and checks an xattr block (ext4_xattr_check_block): magic and h_blocks == 1, the
 * checksum when ctx.csumSeed is given (BadCrc), then the entries.
 */
export function parseXattrBlock(block: Uint8Array, ctx: XattrBlockCtx): XattrEntry[] {
  const where: Where = ctx.ino !== undefined ? { block: ctx.blockNr, ino: ctx.ino } : { block: ctx.blockNr };
  if (block.length < BLOCK_HEADER + 4) throw new Corrupt('xattr block', `of ${block.length} bytes is too small`, where);
  const h = new XattrHeader(block, 0);
  if (h.h_magic !== EXT4_XATTR_MAGIC || h.h_blocks !== 1) {
    throw new Corrupt('xattr block', `invalid header: h_magic 0x${hex(h.h_magic)}, h_blocks ${h.h_blocks}`, where);
  }
  if (ctx.csumSeed !== undefined && ctx.skipCsum !== true) {
    const computed = computeXattrBlockCsum(block, ctx.blockNr, ctx.csumSeed);
    if (computed !== h.h_checksum) throw new BadCrc('xattr block', h.h_checksum, computed, where);
  }
  return readEntries(block, BLOCK_HEADER, 0, 'xattr block', where);
}

/**
 * ext4_xattr_hash_entry(): mixes the name bytes (as unsigned char) and the value as
 * little-endian 32-bit words, zero-padded to 4 bytes. `signedChars` gives
 * ext4_xattr_hash_entry_signed(), the variant that kernels on signed-char architectures and
 * old e2fsprogs computed; e2fsck and the kernel accept either on read.
 */
export function xattrHashEntry(nameBytes: Uint8Array, value: Uint8Array, signedChars = false): number {
  let hash = 0;
  for (const b of nameBytes) {
    const c = signedChars && b >= 0x80 ? b - 256 : b;
    // A negative c XORs as its 32-bit two's complement, as C's sign extension does.
    hash = ((hash << 5) ^ (hash >>> 27) ^ c) >>> 0;
  }
  const words = xattrValueLen(value.length) / 4;
  for (let w = 0; w < words; w++) {
    let word = 0;
    for (let k = 3; k >= 0; k--) word = (word << 8) | (value[w * 4 + k] ?? 0);
    hash = ((hash << 16) ^ (hash >>> 16) ^ word) >>> 0;
  }
  return hash;
}

/** ext4_xattr_rehash(): the block hash from the entry hashes in order; 0 if any entry hash is 0. */
export function xattrBlockHash(entryHashes: readonly number[]): number {
  let hash = 0;
  for (const h of entryHashes) {
    if (h === 0) return 0;
    hash = ((hash << 16) ^ (hash >>> 16) ^ h) >>> 0;
  }
  return hash;
}

/** An attribute to store. */
export interface XattrInput {
  nameIndex: number;
  /** The name after the prefix. */
  nameBytes: Uint8Array;
  value: Uint8Array;
}

/** The kernel's order for block entries (xattr_find_entry, sorted): index, name length, name. */
export function compareXattrEntries(a: XattrInput, b: XattrInput): number {
  if (a.nameIndex !== b.nameIndex) return a.nameIndex - b.nameIndex;
  if (a.nameBytes.length !== b.nameBytes.length) return a.nameBytes.length - b.nameBytes.length;
  for (let i = 0; i < a.nameBytes.length; i++) {
    // OK to index: both names have this length.
    const d = a.nameBytes[i]! - b.nameBytes[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** Bytes the entries, the terminator and the padded values take (without any header). */
export function xattrSpaceNeeded(entries: readonly XattrInput[]): number {
  let n = 4;
  for (const e of entries) n += xattrEntryLen(e.nameBytes.length) + xattrValueLen(e.value.length);
  return n;
}

/** Asserts that each input can be stored: a bad input is a caller bug. */
function checkInputs(entries: readonly XattrInput[]): void {
  for (const e of entries) {
    assert(Number.isInteger(e.nameIndex) && e.nameIndex >= 1 && e.nameIndex <= 255, () => `xattr name index ${e.nameIndex}`);
    assert(e.nameBytes.length <= 255, () => `xattr name of ${e.nameBytes.length} bytes`);
    assert(!e.nameBytes.includes(0), 'xattr name holds a NUL');
    assert(e.value.length <= EXT4_XATTR_SIZE_MAX, () => `xattr value of ${e.value.length} bytes`);
  }
}

/**
 * Writes the entries at `firstOff` and their values downward from the end of `area`, the way
 * ext4_xattr_set_entry() places each new value just below the previous ones. e_value_offs
 * counts from `valueBase`. Returns each entry's e_hash.
 */
function writeEntries(area: Uint8Array, firstOff: number, valueBase: number, entries: readonly XattrInput[], hashed: boolean): number[] {
  const hashes: number[] = [];
  let off = firstOff;
  let valueEnd = area.length;
  for (const e of entries) {
    const v = new XattrEntryView(area, off);
    v.e_name_len = e.nameBytes.length;
    v.e_name_index = e.nameIndex;
    area.set(e.nameBytes, off + ENTRY_HEADER);
    if (e.value.length > 0) {
      valueEnd -= xattrValueLen(e.value.length);
      area.set(e.value, valueEnd);
      v.e_value_offs = valueEnd - valueBase;
    }
    v.e_value_size = e.value.length;
    const h = hashed ? xattrHashEntry(e.nameBytes, e.value) : 0;
    v.e_hash = h;
    hashes.push(h);
    off += xattrEntryLen(e.nameBytes.length);
  }
  assert(off + 4 <= valueEnd, 'xattr entries overlap their values');
  return hashes;
}

/**
 * Builds an xattr block: header (refcount, h_blocks 1, h_hash), entries sorted as the kernel
 * keeps them, values packed from the end. h_checksum is left 0: the caller sets it with
 * setXattrBlockCsum once the block has its number. Throws ENOSPC if the entries do not fit.
 */
export function buildXattrBlock(entries: readonly XattrInput[], blockSize: number, refcount = 1): Uint8Array {
  checkInputs(entries);
  assert(refcount >= 1 && refcount <= EXT4_XATTR_REFCOUNT_MAX, () => `xattr block refcount ${refcount}`);
  const sorted = [...entries].sort(compareXattrEntries);
  for (let i = 1; i < sorted.length; i++) {
    // OK to index: 1 <= i < sorted.length.
    assert(compareXattrEntries(sorted[i - 1]!, sorted[i]!) !== 0, 'duplicate xattr name');
  }
  if (BLOCK_HEADER + xattrSpaceNeeded(sorted) > blockSize) {
    throw new PosixError('ENOSPC', 'setxattr', undefined, `xattrs need ${BLOCK_HEADER + xattrSpaceNeeded(sorted)} bytes, block has ${blockSize}`);
  }
  const block = new Uint8Array(blockSize);
  const h = new XattrHeader(block, 0);
  h.h_magic = EXT4_XATTR_MAGIC;
  h.h_refcount = refcount;
  h.h_blocks = 1;
  h.h_hash = xattrBlockHash(writeEntries(block, BLOCK_HEADER, 0, sorted, true));
  return block;
}

/**
 * Builds the in-inode area of `size` bytes: the magic, the entries in the given order, values
 * from the end of the area, e_hash 0 (the kernel hashes only block entries). No entries give
 * an all-zero area (magic cleared, as ext4_xattr_ibody_set does). Throws ENOSPC if they do not fit.
 */
export function buildXattrIbody(entries: readonly XattrInput[], size: number): Uint8Array {
  checkInputs(entries);
  const area = new Uint8Array(size);
  if (entries.length === 0) return area;
  if (IBODY_HEADER + xattrSpaceNeeded(entries) > size) {
    throw new PosixError('ENOSPC', 'setxattr', undefined, `in-inode xattrs need ${IBODY_HEADER + xattrSpaceNeeded(entries)} bytes, area has ${size}`);
  }
  new XattrIbodyHeader(area, 0).h_magic = EXT4_XATTR_MAGIC;
  writeEntries(area, IBODY_HEADER, IBODY_HEADER, entries, false);
  return area;
}

/*
 * POSIX ACLs (fs/posix_acl.c: posix_acl_from_xattr, posix_acl_valid, posix_acl_to_xattr;
 * fs/ext4/acl.c: ext4_acl_to_disk, ext4_acl_from_disk). The system.posix_acl_access and
 * system.posix_acl_default attributes travel through setxattr/getxattr in the generic
 * "posix_acl_xattr" format (version 2, 8-byte entries), but ext4 stores them in its own,
 * shorter format (version 1, 4-byte entries for the tags that carry no id).
 */

/** ACL tags (include/uapi/linux/posix_acl.h). */
export const ACL_USER_OBJ = 0x01;
export const ACL_USER = 0x02;
export const ACL_GROUP_OBJ = 0x04;
export const ACL_GROUP = 0x08;
export const ACL_MASK = 0x10;
export const ACL_OTHER = 0x20;
/** e_id of entries without an id in the xattr format. */
export const ACL_UNDEFINED_ID = 0xffffffff;
/** Permission bits an entry may hold (ACL_READ | ACL_WRITE | ACL_EXECUTE). */
const ACL_PERM_MASK = 0x7;
/** a_version of the xattr format (POSIX_ACL_XATTR_VERSION). */
export const POSIX_ACL_XATTR_VERSION = 2;
/** a_version of ext4's on-disk format (EXT4_ACL_VERSION). */
export const EXT4_ACL_VERSION = 1;

/** struct posix_acl_xattr_header (include/uapi/linux/posix_acl_xattr.h). */
export const PosixAclXattrHeader = defineStruct('posix_acl_xattr_header', 4, {
  /** POSIX_ACL_XATTR_VERSION. */
  a_version: u32(0x0),
});
/** struct posix_acl_xattr_entry. */
export const PosixAclXattrEntry = defineStruct('posix_acl_xattr_entry', 8, {
  /** ACL_* tag. */
  e_tag: u16(0x0),
  /** rwx bits. */
  e_perm: u16(0x2),
  /** uid or gid for ACL_USER / ACL_GROUP, else ACL_UNDEFINED_ID. */
  e_id: u32(0x4),
});
/** ext4_acl_header (fs/ext4/acl.h). */
export const Ext4AclHeader = defineStruct('ext4_acl_header', 4, {
  /** EXT4_ACL_VERSION. */
  a_version: u32(0x0),
});
/** ext4_acl_entry: the long form, for ACL_USER and ACL_GROUP. */
export const Ext4AclEntry = defineStruct('ext4_acl_entry', 8, {
  e_tag: u16(0x0),
  e_perm: u16(0x2),
  /** uid or gid. */
  e_id: u32(0x4),
});
/** ext4_acl_entry_short: the short form, for the tags without an id. */
export const Ext4AclEntryShort = defineStruct('ext4_acl_entry_short', 4, {
  e_tag: u16(0x0),
  e_perm: u16(0x2),
});

/** One ACL entry. */
export interface AclEntry {
  /** ACL_* tag. */
  tag: number;
  /** rwx bits (0..7). */
  perm: number;
  /** uid/gid for ACL_USER/ACL_GROUP, ACL_UNDEFINED_ID for the others. */
  id: number;
}

function aclHasId(tag: number): boolean {
  return tag === ACL_USER || tag === ACL_GROUP;
}

/**
 * posix_acl_valid(): entries in the order USER_OBJ, USER*, GROUP_OBJ, GROUP*, MASK, OTHER,
 * with a MASK whenever named USER/GROUP entries exist, and only rwx permission bits.
 * Returns false on a violation.
 */
function aclIsValid(entries: readonly AclEntry[]): boolean {
  // States as in the kernel: USER_OBJ expected, then USER*, GROUP*, OTHER, done (0).
  let state = ACL_USER_OBJ;
  let needsMask = false;
  for (const e of entries) {
    if ((e.perm & ~ACL_PERM_MASK) !== 0) return false;
    switch (e.tag) {
      case ACL_USER_OBJ: if (state !== ACL_USER_OBJ) return false; state = ACL_USER; break;
      case ACL_USER: if (state !== ACL_USER) return false; needsMask = true; break;
      case ACL_GROUP_OBJ: if (state !== ACL_USER) return false; state = ACL_GROUP; break;
      case ACL_GROUP: if (state !== ACL_GROUP) return false; needsMask = true; break;
      case ACL_MASK: if (state !== ACL_GROUP) return false; state = ACL_OTHER; break;
      case ACL_OTHER:
        if (state !== ACL_OTHER && !(state === ACL_GROUP && !needsMask)) return false;
        state = 0;
        break;
      default: return false;
    }
  }
  return state === 0;
}

/**
 * Parses an ACL in the xattr format, as setxattr() receives it (posix_acl_from_xattr, then
 * posix_acl_valid). An empty list (header only) means "no ACL". Throws PosixError EINVAL for
 * a malformed or invalid ACL and EOPNOTSUPP for an unknown version, like the kernel.
 */
export function parsePosixAclXattr(value: Uint8Array, syscall = 'setxattr'): AclEntry[] {
  const einval = (d: string): never => { throw new PosixError('EINVAL', syscall, undefined, `invalid POSIX ACL: ${d}`); };
  const H = PosixAclXattrHeader.SIZE;
  const E = PosixAclXattrEntry.SIZE;
  if (value.length < H) einval(`${value.length} bytes`);
  const version = new PosixAclXattrHeader(value, 0).a_version;
  if (version !== POSIX_ACL_XATTR_VERSION) {
    throw new PosixError('EOPNOTSUPP', syscall, undefined, `POSIX ACL xattr version ${version}`);
  }
  if ((value.length - H) % E !== 0) einval(`size ${value.length} is not 4 + 8n`);
  const out: AclEntry[] = [];
  for (let off = H; off < value.length; off += E) {
    const v = new PosixAclXattrEntry(value, off);
    if (aclHasId(v.e_tag) && v.e_id === ACL_UNDEFINED_ID) einval(`entry with tag ${v.e_tag} has id -1`);
    out.push({ tag: v.e_tag, perm: v.e_perm, id: aclHasId(v.e_tag) ? v.e_id : ACL_UNDEFINED_ID });
  }
  if (out.length > 0 && !aclIsValid(out)) einval('bad entry order, tag or permission');
  return out;
}

/** Bytes of `entries` in ext4's format (ext4_acl_size): long entries for USER/GROUP, short for the rest. */
function ext4AclSize(entries: readonly AclEntry[]): number {
  let n = Ext4AclHeader.SIZE;
  for (const e of entries) n += aclHasId(e.tag) ? Ext4AclEntry.SIZE : Ext4AclEntryShort.SIZE;
  return n;
}

/** ext4_acl_to_disk(): a valid ACL in ext4's on-disk format. */
export function encodeExt4Acl(entries: readonly AclEntry[]): Uint8Array {
  assert(aclIsValid(entries), 'encodeExt4Acl of an invalid ACL');
  const out = new Uint8Array(ext4AclSize(entries));
  new Ext4AclHeader(out, 0).a_version = EXT4_ACL_VERSION;
  let off = Ext4AclHeader.SIZE;
  for (const e of entries) {
    if (aclHasId(e.tag)) {
      const v = new Ext4AclEntry(out, off);
      v.e_tag = e.tag;
      v.e_perm = e.perm;
      v.e_id = e.id;
      off += Ext4AclEntry.SIZE;
    } else {
      const v = new Ext4AclEntryShort(out, off);
      v.e_tag = e.tag;
      v.e_perm = e.perm;
      off += Ext4AclEntryShort.SIZE;
    }
  }
  assert(off === out.length, 'ext4 ACL size');
  return out;
}

/**
 * ext4_acl_from_disk(): parses ext4's on-disk ACL. Throws Corrupt for a bad version, a size
 * that does not match the entries, or an unknown tag.
 */
export function parseExt4Acl(disk: Uint8Array, where: Where = {}): AclEntry[] {
  const bad = (d: string): never => { throw new Corrupt('ext4 ACL', d, where); };
  if (disk.length < Ext4AclHeader.SIZE) bad(`of ${disk.length} bytes is too small`);
  const version = new Ext4AclHeader(disk, 0).a_version;
  if (version !== EXT4_ACL_VERSION) bad(`version ${version}`);
  const out: AclEntry[] = [];
  let off = Ext4AclHeader.SIZE;
  // Each step advances by at least 4 bytes: bounded by disk.length / 4.
  while (off < disk.length) {
    if (off + Ext4AclEntryShort.SIZE > disk.length) bad(`entry at offset ${off} overruns the value`);
    const s = new Ext4AclEntryShort(disk, off);
    if (aclHasId(s.e_tag)) {
      if (off + Ext4AclEntry.SIZE > disk.length) bad(`entry at offset ${off} overruns the value`);
      out.push({ tag: s.e_tag, perm: s.e_perm, id: new Ext4AclEntry(disk, off).e_id });
      off += Ext4AclEntry.SIZE;
    } else if (s.e_tag === ACL_USER_OBJ || s.e_tag === ACL_GROUP_OBJ || s.e_tag === ACL_MASK || s.e_tag === ACL_OTHER) {
      out.push({ tag: s.e_tag, perm: s.e_perm, id: ACL_UNDEFINED_ID });
      off += Ext4AclEntryShort.SIZE;
    } else {
      bad(`unknown tag 0x${hex(s.e_tag)} at offset ${off}`);
    }
  }
  return out;
}

/** posix_acl_to_xattr(): the xattr format getxattr() returns. */
export function encodePosixAclXattr(entries: readonly AclEntry[]): Uint8Array {
  const out = new Uint8Array(PosixAclXattrHeader.SIZE + entries.length * PosixAclXattrEntry.SIZE);
  new PosixAclXattrHeader(out, 0).a_version = POSIX_ACL_XATTR_VERSION;
  entries.forEach((e, i) => {
    const v = new PosixAclXattrEntry(out, PosixAclXattrHeader.SIZE + i * PosixAclXattrEntry.SIZE);
    v.e_tag = e.tag;
    v.e_perm = e.perm;
    v.e_id = aclHasId(e.tag) ? e.id : ACL_UNDEFINED_ID;
  });
  return out;
}
