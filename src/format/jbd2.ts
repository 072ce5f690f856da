/**
 * The jbd2 journal superblock and block header (include/linux/jbd2.h: journal_header_t,
 * journal_superblock_t, JBD2_* constants; fs/jbd2/journal.c: journal_check_superblock(),
 * load_superblock(), jbd2_superblock_csum(), journal_tag_bytes(); Documentation/filesystems/
 * ext4/journal.rst).
 *
 * Unlike the rest of ext4, every jbd2 field is BIG-endian (be32 in the field tables). The
 * superblock sits in the first block of the journal (inode 8 for an internal journal).
 * validateJournalSuperblock() makes journal_check_superblock()'s checks plus bounds on s_start
 * and s_nr_users, so recovery can trust first/last/start, the feature set and the tag size.
 * A journal needs recovery exactly when s_start != 0 (jbd2_journal_recover()).
 */
import { defineStruct, u8, be32, bytes } from './struct.js';
import { crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc, Incompatible, hex, type Where } from '../util/errors.js';

export const JBD2_MAGIC_NUMBER = 0xc03b3998;

/** h_blocktype values. */
export const JBD2_DESCRIPTOR_BLOCK = 1;
export const JBD2_COMMIT_BLOCK = 2;
export const JBD2_SUPERBLOCK_V1 = 3;
export const JBD2_SUPERBLOCK_V2 = 4;
export const JBD2_REVOKE_BLOCK = 5;

/** s_feature_compat bits. */
export const JBD2_FEATURE_COMPAT_CHECKSUM = 0x1;
/** s_feature_incompat bits. */
export const JBD2_FEATURE_INCOMPAT_REVOKE = 0x1;
export const JBD2_FEATURE_INCOMPAT_64BIT = 0x2;
export const JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT = 0x4;
export const JBD2_FEATURE_INCOMPAT_CSUM_V2 = 0x8;
export const JBD2_FEATURE_INCOMPAT_CSUM_V3 = 0x10;
export const JBD2_FEATURE_INCOMPAT_FAST_COMMIT = 0x20;
/** Features the kernel knows (JBD2_KNOWN_*_FEATURES); others make it refuse the journal. */
export const JBD2_KNOWN_COMPAT_FEATURES = JBD2_FEATURE_COMPAT_CHECKSUM;
export const JBD2_KNOWN_ROCOMPAT_FEATURES = 0;
export const JBD2_KNOWN_INCOMPAT_FEATURES =
  JBD2_FEATURE_INCOMPAT_REVOKE | JBD2_FEATURE_INCOMPAT_64BIT | JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT |
  JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3 | JBD2_FEATURE_INCOMPAT_FAST_COMMIT;

const INCOMPAT_NAMES: Readonly<Record<number, string>> = {
  0x1: 'journal_incompat_revoke', 0x2: 'journal_64bit', 0x4: 'journal_async_commit',
  0x8: 'journal_checksum_v2', 0x10: 'journal_checksum_v3', 0x20: 'journal_fast_commit',
};

/** s_checksum_type values. */
export const JBD2_CRC32_CHKSUM = 1;
export const JBD2_MD5_CHKSUM = 2;
export const JBD2_SHA1_CHKSUM = 3;
export const JBD2_CRC32C_CHKSUM = 4;

/** A journal (with the v2 feature check) must have at least this many blocks. */
export const JBD2_MIN_JOURNAL_BLOCKS = 1024;
/** Fast-commit area when s_num_fc_blks is 0. */
export const JBD2_DEFAULT_FAST_COMMIT_BLOCKS = 256;
/** s_users holds 16-byte ids of at most 48 filesystems. */
export const JBD2_USERS_MAX = 48;
export const JBD2_SUPERBLOCK_SIZE = 1024;

/** journal_header_t: starts every descriptor, commit, revoke and superblock block. */
export const JournalHeader = defineStruct('journal_header_t', 12, {
  /** JBD2_MAGIC_NUMBER. */
  h_magic: be32(0x0),
  /** JBD2_*_BLOCK. */
  h_blocktype: be32(0x4),
  /** Transaction id the block belongs to. */
  h_sequence: be32(0x8),
});

/** journal_superblock_t (1024 bytes; the rest of the journal's first block is unused). */
export const JournalSuperblock = defineStruct('journal_superblock_t', JBD2_SUPERBLOCK_SIZE, {
  /** s_header.h_magic: JBD2_MAGIC_NUMBER. */
  h_magic: be32(0x0),
  /** s_header.h_blocktype: JBD2_SUPERBLOCK_V1 or _V2. */
  h_blocktype: be32(0x4),
  /** s_header.h_sequence (unused in the superblock). */
  h_sequence: be32(0x8),
  /** Journal block size in bytes (must equal the filesystem's). */
  s_blocksize: be32(0xc),
  /** Journal length in blocks. */
  s_maxlen: be32(0x10),
  /** First block of log information (after the superblock). */
  s_first: be32(0x14),
  /** First commit id expected in the log. */
  s_sequence: be32(0x18),
  /** Block number of the start of the log; 0 means the journal is clean. */
  s_start: be32(0x1c),
  /** Error value set by jbd2_journal_abort() (a negative errno, stored as u32). */
  s_errno: be32(0x20),
  /** Features (v2 superblock only). */
  s_feature_compat: be32(0x24),
  s_feature_incompat: be32(0x28),
  s_feature_ro_compat: be32(0x2c),
  /** 128-bit uuid of the journal; crc32c(~0, s_uuid) seeds block checksums. */
  s_uuid: bytes(0x30, 16),
  /** Filesystems sharing the journal (external journals). */
  s_nr_users: be32(0x40),
  /** Block number of the dynamic superblock copy (unused). */
  s_dynsuper: be32(0x44),
  /** Limit of journal blocks per transaction (unused by the kernel). */
  s_max_transaction: be32(0x48),
  /** Limit of data blocks per transaction (unused by the kernel). */
  s_max_trans_data: be32(0x4c),
  /** JBD2_*_CHKSUM: crc32c (4) with csum v2/v3. */
  s_checksum_type: u8(0x50),
  s_padding2: bytes(0x51, 3),
  /** Fast-commit blocks at the end of the journal (0: the default 256). */
  s_num_fc_blks: be32(0x54),
  /** Head of the log, only up to date while the filesystem is clean. */
  s_head: be32(0x58),
  s_padding: bytes(0x5c, 160),
  /** crc32c(~0, superblock with this field 0), with csum v2/v3. */
  s_checksum: be32(0xfc),
  /** 16-byte ids of the filesystems sharing the journal. */
  s_users: bytes(0x100, 16 * JBD2_USERS_MAX),
});
export type JournalSuperblockView = InstanceType<typeof JournalSuperblock>;

/** True when the superblock's feature fields are meaningful (v2). */
function isV2(jsb: JournalSuperblockView): boolean {
  return jsb.h_blocktype === JBD2_SUPERBLOCK_V2;
}
function incompat(jsb: JournalSuperblockView): number {
  return isV2(jsb) ? jsb.s_feature_incompat : 0;
}

/** jbd2_journal_has_csum_v2or3(): block checksums are crc32c (v2 or v3). */
export function journalHasCsumV2or3(jsb: JournalSuperblockView): boolean {
  return (incompat(jsb) & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3)) !== 0;
}

/** The journal needs recovery: the log is not empty (s_start != 0). */
export function journalNeedsRecovery(jsb: JournalSuperblockView): boolean {
  return jsb.s_start !== 0;
}

/** s_errno as the signed errno it is. */
export function journalErrno(jsb: JournalSuperblockView): number {
  return jsb.s_errno | 0;
}

/** jbd2_journal_get_num_fc_blks(): fast-commit blocks, 0 without the feature. */
export function journalFcBlocks(jsb: JournalSuperblockView): number {
  if ((incompat(jsb) & JBD2_FEATURE_INCOMPAT_FAST_COMMIT) === 0) return 0;
  return jsb.s_num_fc_blks !== 0 ? jsb.s_num_fc_blks : JBD2_DEFAULT_FAST_COMMIT_BLOCKS;
}

/** journal_tag_bytes(): size of a block tag in descriptor blocks for these features. */
export function journalTagBytes(jsb: JournalSuperblockView): number {
  const f = incompat(jsb);
  if ((f & JBD2_FEATURE_INCOMPAT_CSUM_V3) !== 0) return 16;
  let sz = 12;
  if ((f & JBD2_FEATURE_INCOMPAT_CSUM_V2) !== 0) sz += 2;
  return (f & JBD2_FEATURE_INCOMPAT_64BIT) !== 0 ? sz : sz - 4;
}

/** j_csum_seed: crc32c(~0, s_uuid), the seed of every journal block checksum. */
export function journalCsumSeed(jsb: JournalSuperblockView): number {
  return crc32cRaw(0xffffffff, jsb.s_uuid);
}

const ZERO_CSUM = new Uint8Array(4);

/** jbd2_superblock_csum(): crc32c(~0) over the 1024-byte superblock with s_checksum as 0. */
export function computeJournalSuperblockCsum(jsb: JournalSuperblockView): number {
  const off = JournalSuperblock.offsetOf('s_checksum');
  const b = jsb.bytes.subarray(jsb.base, jsb.base + JBD2_SUPERBLOCK_SIZE);
  let c = crc32cRaw(0xffffffff, b.subarray(0, off));
  c = crc32cRaw(c, ZERO_CSUM);
  return crc32cRaw(c, b.subarray(off + 4));
}

/** Stores the superblock checksum when the journal uses csum v2/v3. */
export function setJournalSuperblockCsum(jsb: JournalSuperblockView): void {
  if (journalHasCsumV2or3(jsb)) jsb.s_checksum = computeJournalSuperblockCsum(jsb);
}

/** What the journal code needs from a validated superblock. */
export interface JournalGeometry {
  /** 1 or 2 (JBD2_SUPERBLOCK_V1/_V2). */
  version: 1 | 2;
  /** First log block (j_first). */
  first: number;
  /** One past the last log block (j_last): s_maxlen minus the fast-commit area. */
  last: number;
  /** s_maxlen. */
  maxlenBlocks: number;
  /** Fast-commit blocks at the end (0 without the feature). */
  fcBlocks: number;
  /** 0 (none), 1 (compat checksum), 2 or 3 (crc32c block tags). */
  csumVersion: 0 | 1 | 2 | 3;
  /** Size of a descriptor block tag in bytes. */
  tagBytes: number;
  /** s_start != 0: the log holds transactions to replay. */
  needsRecovery: boolean;
}

/** Where the journal superblock lives and what it must agree with. */
export interface JournalCtx {
  /** The filesystem block size. */
  blockSize: number;
  /** Blocks the journal inode (or device) really has (j_total_len). */
  journalBlocks: number;
  /** Physical block of the superblock, for error messages. */
  blockNr?: number;
}

function csumVersionOf(jsb: JournalSuperblockView): 0 | 1 | 2 | 3 {
  const f = incompat(jsb);
  if ((f & JBD2_FEATURE_INCOMPAT_CSUM_V3) !== 0) return 3;
  if ((f & JBD2_FEATURE_INCOMPAT_CSUM_V2) !== 0) return 2;
  return isV2(jsb) && (jsb.s_feature_compat & JBD2_FEATURE_COMPAT_CHECKSUM) !== 0 ? 1 : 0;
}

/** Names of incompat bits, for Incompatible errors. */
function incompatNames(bits: number): string[] {
  const out: string[] = [];
  for (let b = 1; b !== 0 && b <= bits; b = (b << 1) >>> 0) {
    if ((bits & b) !== 0) out.push(INCOMPAT_NAMES[b] ?? `journal_incompat_0x${b.toString(16)}`);
  }
  return out;
}

/** journal_check_superblock()'s v2 part: features, size, checksum kind and checksum. */
function checkV2(jsb: JournalSuperblockView, bad: (d: string) => never, where: Where): void {
  const unknownRo = jsb.s_feature_ro_compat & ~JBD2_KNOWN_ROCOMPAT_FEATURES;
  const unknownIn = (jsb.s_feature_incompat & ~JBD2_KNOWN_INCOMPAT_FEATURES) >>> 0;
  if (unknownRo !== 0 || unknownIn !== 0) {
    const names = incompatNames(unknownIn);
    if (unknownRo !== 0) names.push(`journal_ro_compat_0x${hex(unknownRo)}`);
    throw new Incompatible(`unrecognised journal features: ${names.join(', ')}`, names);
  }
  const fc = journalFcBlocks(jsb);
  if (jsb.s_maxlen < JBD2_MIN_JOURNAL_BLOCKS || jsb.s_maxlen - JBD2_MIN_JOURNAL_BLOCKS < fc) {
    bad(`s_maxlen ${jsb.s_maxlen} too short (minimum ${JBD2_MIN_JOURNAL_BLOCKS} + ${fc} fast-commit blocks)`);
  }
  const f = jsb.s_feature_incompat;
  if ((f & JBD2_FEATURE_INCOMPAT_CSUM_V2) !== 0 && (f & JBD2_FEATURE_INCOMPAT_CSUM_V3) !== 0) {
    bad('has checksum v2 and v3 at the same time');
  }
  if (journalHasCsumV2or3(jsb) && (jsb.s_feature_compat & JBD2_FEATURE_COMPAT_CHECKSUM) !== 0) {
    bad('has checksum v1 and v2/v3 at the same time');
  }
  if (journalHasCsumV2or3(jsb)) {
    if (jsb.s_checksum_type !== JBD2_CRC32C_CHKSUM) bad(`s_checksum_type ${jsb.s_checksum_type} (want crc32c, ${JBD2_CRC32C_CHKSUM})`);
    const computed = computeJournalSuperblockCsum(jsb);
    if (computed !== jsb.s_checksum) throw new BadCrc('jbd2 superblock', jsb.s_checksum, computed, where);
  }
  if (jsb.s_nr_users > JBD2_USERS_MAX) bad(`s_nr_users ${jsb.s_nr_users} > ${JBD2_USERS_MAX}`);
}

/**
 * journal_check_superblock() + load_superblock(): checks magic, block type, block size, length
 * against the journal's real size, s_first, the v2 features and checksum, and that a nonzero
 * s_start lies inside the log. Throws Corrupt, BadCrc or Incompatible (unknown features).
 */
export function validateJournalSuperblock(jsb: JournalSuperblockView, ctx: JournalCtx): JournalGeometry {
  const where: Where = ctx.blockNr !== undefined ? { block: ctx.blockNr } : {};
  const bad = (detail: string): never => {
    throw new Corrupt('jbd2 superblock', detail, where);
  };
  if (jsb.h_magic !== JBD2_MAGIC_NUMBER) bad(`h_magic 0x${hex(jsb.h_magic)}`);
  if (jsb.h_blocktype !== JBD2_SUPERBLOCK_V1 && jsb.h_blocktype !== JBD2_SUPERBLOCK_V2) {
    bad(`unrecognised superblock format h_blocktype ${jsb.h_blocktype}`);
  }
  if (jsb.s_blocksize !== ctx.blockSize) bad(`s_blocksize ${jsb.s_blocksize} != filesystem block size ${ctx.blockSize}`);
  if (jsb.s_maxlen > ctx.journalBlocks) bad(`s_maxlen ${jsb.s_maxlen} > journal size ${ctx.journalBlocks} blocks`);
  if (jsb.s_first === 0 || jsb.s_first >= jsb.s_maxlen) bad(`s_first ${jsb.s_first} (s_maxlen ${jsb.s_maxlen})`);
  if (isV2(jsb)) checkV2(jsb, bad, where);
  const fcBlocks = journalFcBlocks(jsb);
  const last = jsb.s_maxlen - fcBlocks;
  if (jsb.s_first >= last) bad(`s_first ${jsb.s_first} leaves no log before block ${last}`);
  if (jsb.s_start !== 0 && (jsb.s_start < jsb.s_first || jsb.s_start >= last)) {
    bad(`s_start ${jsb.s_start} outside the log [${jsb.s_first}, ${last})`);
  }
  return {
    version: isV2(jsb) ? 2 : 1,
    first: jsb.s_first,
    last,
    maxlenBlocks: jsb.s_maxlen,
    fcBlocks,
    csumVersion: csumVersionOf(jsb),
    tagBytes: journalTagBytes(jsb),
    needsRecovery: journalNeedsRecovery(jsb),
  };
}
