/**
 * The ext4 superblock (Documentation/filesystems/ext4/super.rst; struct ext4_super_block in
 * fs/ext4/ext4.h). 1024 bytes at byte 1024 of the device. The raw fields keep kernel names;
 * every split (hi/lo) or derived value has exactly one accessor below. validateSuperblock()
 * checks everything later code sizes allocations or loops from, so those values can be trusted.
 */
import { defineStruct, u8, u16, u32, u64, bytes } from './struct.js';
import { Corrupt, BadCrc, Incompatible, hex } from '../util/errors.js';
import { crc32cRaw } from '../util/crc.js';
import {
  COMPAT, INCOMPAT, RO_COMPAT, SUPPORTED_INCOMPAT, SUPPORTED_RO_COMPAT, featureNames,
  unsupportedBits,
} from './features.js';

export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
export const EXT4_SUPER_MAGIC = 0xef53;
/** s_state bits. */
export const EXT4_VALID_FS = 0x1;
export const EXT4_ERROR_FS = 0x2;
export const EXT4_ORPHAN_FS = 0x4;
/** s_flags bits. */
export const EXT2_FLAGS_SIGNED_HASH = 0x1;
export const EXT2_FLAGS_UNSIGNED_HASH = 0x2;
export const EXT2_FLAGS_TEST_FILESYS = 0x4;
/** s_checksum_type value for crc32c. */
export const EXT4_CRC32C_CHKSUM = 1;
/** Inode numbers reserved by ext4. */
export const EXT4_ROOT_INO = 2;
export const EXT4_JOURNAL_INO = 8;
export const EXT4_GOOD_OLD_FIRST_INO = 11;
export const EXT4_GOOD_OLD_INODE_SIZE = 128;
export const EXT4_DYNAMIC_REV = 1;

export const SuperBlock = defineStruct('ext4_super_block', SUPERBLOCK_SIZE, {
  s_inodes_count: u32(0x0),
  s_blocks_count_lo: u32(0x4),
  s_r_blocks_count_lo: u32(0x8),
  s_free_blocks_count_lo: u32(0xc),
  s_free_inodes_count: u32(0x10),
  s_first_data_block: u32(0x14),
  s_log_block_size: u32(0x18),
  s_log_cluster_size: u32(0x1c),
  s_blocks_per_group: u32(0x20),
  s_clusters_per_group: u32(0x24),
  s_inodes_per_group: u32(0x28),
  s_mtime: u32(0x2c),
  s_wtime: u32(0x30),
  s_mnt_count: u16(0x34),
  s_max_mnt_count: u16(0x36),
  s_magic: u16(0x38),
  s_state: u16(0x3a),
  s_errors: u16(0x3c),
  s_minor_rev_level: u16(0x3e),
  s_lastcheck: u32(0x40),
  s_checkinterval: u32(0x44),
  s_creator_os: u32(0x48),
  s_rev_level: u32(0x4c),
  s_def_resuid: u16(0x50),
  s_def_resgid: u16(0x52),
  s_first_ino: u32(0x54),
  s_inode_size: u16(0x58),
  s_block_group_nr: u16(0x5a),
  s_feature_compat: u32(0x5c),
  s_feature_incompat: u32(0x60),
  s_feature_ro_compat: u32(0x64),
  s_uuid: bytes(0x68, 16),
  s_volume_name: bytes(0x78, 16),
  s_last_mounted: bytes(0x88, 64),
  s_algorithm_usage_bitmap: u32(0xc8),
  s_prealloc_blocks: u8(0xcc),
  s_prealloc_dir_blocks: u8(0xcd),
  s_reserved_gdt_blocks: u16(0xce),
  s_journal_uuid: bytes(0xd0, 16),
  s_journal_inum: u32(0xe0),
  s_journal_dev: u32(0xe4),
  s_last_orphan: u32(0xe8),
  s_hash_seed: bytes(0xec, 16),
  s_def_hash_version: u8(0xfc),
  s_jnl_backup_type: u8(0xfd),
  s_desc_size: u16(0xfe),
  s_default_mount_opts: u32(0x100),
  s_first_meta_bg: u32(0x104),
  s_mkfs_time: u32(0x108),
  s_jnl_blocks: bytes(0x10c, 68),
  s_blocks_count_hi: u32(0x150),
  s_r_blocks_count_hi: u32(0x154),
  s_free_blocks_count_hi: u32(0x158),
  s_min_extra_isize: u16(0x15c),
  s_want_extra_isize: u16(0x15e),
  s_flags: u32(0x160),
  s_raid_stride: u16(0x164),
  s_mmp_interval: u16(0x166),
  s_mmp_block: u64(0x168),
  s_raid_stripe_width: u32(0x170),
  s_log_groups_per_flex: u8(0x174),
  s_checksum_type: u8(0x175),
  s_encryption_level: u8(0x176),
  s_reserved_pad: u8(0x177),
  s_kbytes_written: u64(0x178),
  s_snapshot_inum: u32(0x180),
  s_snapshot_id: u32(0x184),
  s_snapshot_r_blocks_count: u64(0x188),
  s_snapshot_list: u32(0x190),
  s_error_count: u32(0x194),
  s_first_error_time: u32(0x198),
  s_first_error_ino: u32(0x19c),
  s_first_error_block: u64(0x1a0),
  s_first_error_func: bytes(0x1a8, 32),
  s_first_error_line: u32(0x1c8),
  s_last_error_time: u32(0x1cc),
  s_last_error_ino: u32(0x1d0),
  s_last_error_line: u32(0x1d4),
  s_last_error_block: u64(0x1d8),
  s_last_error_func: bytes(0x1e0, 32),
  s_mount_opts: bytes(0x200, 64),
  s_usr_quota_inum: u32(0x240),
  s_grp_quota_inum: u32(0x244),
  s_overhead_clusters: u32(0x248),
  s_backup_bgs: bytes(0x24c, 8),
  s_encrypt_algos: bytes(0x254, 4),
  s_encrypt_pw_salt: bytes(0x258, 16),
  s_lpf_ino: u32(0x268),
  s_prj_quota_inum: u32(0x26c),
  s_checksum_seed: u32(0x270),
  s_wtime_hi: u8(0x274),
  s_mtime_hi: u8(0x275),
  s_mkfs_time_hi: u8(0x276),
  s_lastcheck_hi: u8(0x277),
  s_first_error_time_hi: u8(0x278),
  s_last_error_time_hi: u8(0x279),
  s_first_error_errcode: u8(0x27a),
  s_last_error_errcode: u8(0x27b),
  s_encoding: u16(0x27c),
  s_encoding_flags: u16(0x27e),
  s_orphan_file_inum: u32(0x280),
  s_reserved: bytes(0x284, 376),
  s_checksum: u32(0x3fc),
});
export type SuperBlockView = InstanceType<typeof SuperBlock>;

/** Total blocks (s_blocks_count_hi only with 64bit). */
export function blocksCount(sb: SuperBlockView): number {
  const hi = hasIncompat(sb, INCOMPAT['64bit']) ? sb.s_blocks_count_hi : 0;
  return hi * 0x1_0000_0000 + sb.s_blocks_count_lo;
}
export function setBlocksCount(sb: SuperBlockView, n: number): void {
  sb.s_blocks_count_lo = n >>> 0;
  sb.s_blocks_count_hi = Math.floor(n / 0x1_0000_0000);
}
/** Reserved blocks (for root). */
export function rBlocksCount(sb: SuperBlockView): number {
  const hi = hasIncompat(sb, INCOMPAT['64bit']) ? sb.s_r_blocks_count_hi : 0;
  return hi * 0x1_0000_0000 + sb.s_r_blocks_count_lo;
}
export function setRBlocksCount(sb: SuperBlockView, n: number): void {
  sb.s_r_blocks_count_lo = n >>> 0;
  sb.s_r_blocks_count_hi = Math.floor(n / 0x1_0000_0000);
}
/** Free blocks as recorded in the superblock (the kernel recomputes it from the groups). */
export function freeBlocksCount(sb: SuperBlockView): number {
  const hi = hasIncompat(sb, INCOMPAT['64bit']) ? sb.s_free_blocks_count_hi : 0;
  return hi * 0x1_0000_0000 + sb.s_free_blocks_count_lo;
}
export function setFreeBlocksCount(sb: SuperBlockView, n: number): void {
  sb.s_free_blocks_count_lo = n >>> 0;
  sb.s_free_blocks_count_hi = Math.floor(n / 0x1_0000_0000);
}
/** Block size in bytes. */
export function blockSize(sb: SuperBlockView): number {
  return 1024 << sb.s_log_block_size;
}
/** Group descriptor size in bytes: s_desc_size with 64bit, else 32. */
export function descSize(sb: SuperBlockView): number {
  return hasIncompat(sb, INCOMPAT['64bit']) ? sb.s_desc_size : 32;
}
/** Inode record size in bytes (128 for revision 0). */
export function inodeSize(sb: SuperBlockView): number {
  return sb.s_rev_level === 0 ? EXT4_GOOD_OLD_INODE_SIZE : sb.s_inode_size;
}
/** First non-reserved inode. */
export function firstIno(sb: SuperBlockView): number {
  return sb.s_rev_level === 0 ? EXT4_GOOD_OLD_FIRST_INO : sb.s_first_ino;
}
export function hasCompat(sb: SuperBlockView, bit: number): boolean {
  return (sb.s_feature_compat & bit) !== 0;
}
export function hasIncompat(sb: SuperBlockView, bit: number): boolean {
  return (sb.s_feature_incompat & bit) !== 0;
}
export function hasRoCompat(sb: SuperBlockView, bit: number): boolean {
  return (sb.s_feature_ro_compat & bit) !== 0;
}
/** True when metadata checksums (crc32c) are on. */
export function hasMetadataCsum(sb: SuperBlockView): boolean {
  return hasRoCompat(sb, RO_COMPAT.metadata_csum);
}
/** Number of block groups. */
export function groupCount(sb: SuperBlockView): number {
  return Math.ceil((blocksCount(sb) - sb.s_first_data_block) / sb.s_blocks_per_group);
}
/** A superblock timestamp with its high byte (seconds since the epoch). */
export function sbTime(lo: number, hi: number): number {
  return hi * 0x1_0000_0000 + lo;
}

/**
 * The seed every metadata checksum starts from: s_checksum_seed with metadata_csum_seed,
 * else crc32c(~0, s_uuid) (ext4_fill_super).
 */
export function csumSeed(sb: SuperBlockView): number {
  if (hasIncompat(sb, INCOMPAT.metadata_csum_seed)) return sb.s_checksum_seed;
  return crc32cRaw(0xffffffff, sb.s_uuid);
}

/** crc32c of the superblock up to s_checksum (ext4_superblock_csum). */
export function computeSuperblockCsum(sb: SuperBlockView): number {
  const end = sb.base + SuperBlock.offsetOf('s_checksum');
  return crc32cRaw(0xffffffff, sb.bytes.subarray(sb.base, end));
}
export function setSuperblockCsum(sb: SuperBlockView): void {
  if (hasMetadataCsum(sb)) sb.s_checksum = computeSuperblockCsum(sb);
}

/** What a mount may do with an image, decided from its features (the kernel's policy). */
export interface FeatureVerdict {
  /** Writing is allowed (no unknown ro_compat bits). */
  writable: boolean;
  /** Why writing is not allowed, if it is not. */
  readOnlyReason?: string;
  /** The journal has unreplayed transactions (INCOMPAT_RECOVER). */
  needsRecovery: boolean;
}

const SB_WHERE = { block: 0 } as const;

/**
 * Checks every superblock field that later code trusts (sizes, counts, geometry) and the
 * checksum, then decides what a mount may do. Throws Corrupt, BadCrc or Incompatible.
 */
export function validateSuperblock(sb: SuperBlockView, deviceBytes: number): FeatureVerdict {
  const bad = (detail: string): never => {
    throw new Corrupt('superblock', detail, SB_WHERE);
  };
  if (sb.s_magic !== EXT4_SUPER_MAGIC) bad(`magic is 0x${hex(sb.s_magic)}`);
  if (hasMetadataCsum(sb)) {
    if (sb.s_checksum_type !== EXT4_CRC32C_CHKSUM) bad(`checksum type ${sb.s_checksum_type}`);
    const c = computeSuperblockCsum(sb);
    if (c !== sb.s_checksum) throw new BadCrc('superblock', sb.s_checksum, c, SB_WHERE);
  }
  checkFeatures(sb);
  if (sb.s_log_block_size > 6) bad(`s_log_block_size ${sb.s_log_block_size} (block size > 64 KiB)`);
  const bs = blockSize(sb);
  if (sb.s_rev_level > EXT4_DYNAMIC_REV) bad(`revision ${sb.s_rev_level}`);
  if (sb.s_log_cluster_size !== sb.s_log_block_size) bad('cluster size differs from block size');
  if (sb.s_first_data_block !== (bs === 1024 ? 1 : 0)) bad(`s_first_data_block ${sb.s_first_data_block}`);
  if (sb.s_blocks_per_group === 0 || sb.s_blocks_per_group > bs * 8) {
    bad(`s_blocks_per_group ${sb.s_blocks_per_group}`);
  }
  if (sb.s_inodes_per_group === 0 || sb.s_inodes_per_group > bs * 8) {
    bad(`s_inodes_per_group ${sb.s_inodes_per_group}`);
  }
  const isz = inodeSize(sb);
  if (isz < EXT4_GOOD_OLD_INODE_SIZE || isz > bs || (isz & (isz - 1)) !== 0) bad(`inode size ${isz}`);
  const ds = descSize(sb);
  if (hasIncompat(sb, INCOMPAT['64bit']) && (ds < 32 || ds > 1024 || (ds & (ds - 1)) !== 0)) {
    bad(`s_desc_size ${ds}`);
  }
  const blocks = blocksCount(sb);
  if (!Number.isSafeInteger(blocks * bs)) {
    throw new Incompatible(`image of ${blocks} blocks is larger than 2^53 bytes`);
  }
  if (blocks <= sb.s_first_data_block) bad(`s_blocks_count ${blocks}`);
  if (blocks * bs > deviceBytes) {
    bad(`s_blocks_count ${blocks} (${blocks * bs} bytes) exceeds the device (${deviceBytes} bytes)`);
  }
  const groups = groupCount(sb);
  if (groups * sb.s_inodes_per_group !== sb.s_inodes_count) {
    bad(`s_inodes_count ${sb.s_inodes_count} != ${groups} groups x ${sb.s_inodes_per_group}`);
  }
  if (firstIno(sb) < EXT4_GOOD_OLD_FIRST_INO || firstIno(sb) > sb.s_inodes_count) {
    bad(`s_first_ino ${firstIno(sb)}`);
  }
  if (sb.s_log_groups_per_flex > 31) bad(`s_log_groups_per_flex ${sb.s_log_groups_per_flex}`);
  return verdict(sb);
}

/** Refuses unknown incompat features by name (the kernel's ext4_feature_set_ok). */
function checkFeatures(sb: SuperBlockView): void {
  const badIncompat = unsupportedBits(INCOMPAT, SUPPORTED_INCOMPAT, sb.s_feature_incompat);
  if (badIncompat !== 0) {
    const names = featureNames(INCOMPAT, badIncompat);
    throw new Incompatible(`unsupported incompat features: ${names.join(', ')}`, names);
  }
  if (hasRoCompat(sb, RO_COMPAT.bigalloc)) {
    throw new Incompatible('bigalloc (cluster size > block size) is not supported', ['bigalloc']);
  }
}

function verdict(sb: SuperBlockView): FeatureVerdict {
  const needsRecovery = hasIncompat(sb, INCOMPAT.recover);
  const badRo = unsupportedBits(RO_COMPAT, SUPPORTED_RO_COMPAT, sb.s_feature_ro_compat);
  if (badRo !== 0) {
    const names = featureNames(RO_COMPAT, badRo);
    return { writable: false, readOnlyReason: `unsupported ro_compat features: ${names.join(', ')}`, needsRecovery };
  }
  return { writable: true, needsRecovery };
}

/** Feature names of a superblock, for `ext4ts info`. */
export function superblockFeatureNames(sb: SuperBlockView): string[] {
  return [
    ...featureNames(COMPAT, sb.s_feature_compat),
    // The kernel's RECOVER bit is "needs_recovery" in dumpe2fs, which users compare us with.
    ...featureNames(INCOMPAT, sb.s_feature_incompat).map((n) => (n === 'recover' ? 'needs_recovery' : n)),
    ...featureNames(RO_COMPAT, sb.s_feature_ro_compat),
  ];
}

/** s_errors values (EXT4_ERRORS_*): what the kernel does on a detected error. */
export const EXT4_ERRORS_CONTINUE = 1;
export const EXT4_ERRORS_RO = 2;
export const EXT4_ERRORS_PANIC = 3;
/** s_creator_os value for Linux (EXT4_OS_LINUX). */
export const EXT4_OS_LINUX = 0;
/** s_default_mount_opts bits (EXT4_DEFM_*): user_xattr and acl, the mke2fs.conf defaults. */
export const EXT4_DEFM_XATTR_USER = 0x4;
export const EXT4_DEFM_ACL = 0x8;
/** s_jnl_backup_type: s_jnl_blocks holds a copy of the journal inode's i_block and size. */
export const EXT3_JNL_BACKUP_BLOCKS = 1;
/** s_jnl_blocks is 17 words: i_block[0..14], then i_size_high, then i_size. */
export const EXT4_JNL_BLOCKS_WORDS = 17;
/** s_log_groups_per_flex that mke2fs picks by default (16 groups per flex group). */
export const EXT4_DEFAULT_LOG_GROUPS_PER_FLEX = 4;
/** s_desc_size with the 64bit feature (EXT4_MIN_DESC_SIZE_64BIT). */
export const EXT4_MIN_DESC_SIZE_64BIT = 64;
/** s_desc_size without 64bit: 32-byte descriptors (EXT4_MIN_DESC_SIZE). */
export const EXT4_MIN_DESC_SIZE = 32;

/** Stores a superblock timestamp into its 32-bit low field and 8-bit high field. */
export function setSbTime(sb: SuperBlockView, field: 'mtime' | 'wtime' | 'mkfs_time' | 'lastcheck', sec: number): void {
  const lo = ((sec % 0x1_0000_0000) + 0x1_0000_0000) % 0x1_0000_0000;
  const hi = Math.floor(sec / 0x1_0000_0000) & 0xff;
  switch (field) {
    case 'mtime': sb.s_mtime = lo; sb.s_mtime_hi = hi; break;
    case 'wtime': sb.s_wtime = lo; sb.s_wtime_hi = hi; break;
    case 'mkfs_time': sb.s_mkfs_time = lo; sb.s_mkfs_time_hi = hi; break;
    case 'lastcheck': sb.s_lastcheck = lo; sb.s_lastcheck_hi = hi; break;
  }
}

/**
 * The s_jnl_blocks backup of the journal inode (EXT3_JNL_BACKUP_BLOCKS): its 15 i_block words,
 * then i_size_high and i_size, as ext2fs's write_journal_inode() stores them.
 */
export function jnlBlocksBackup(iBlock: Uint8Array, sizeBytes: number): Uint8Array {
  const out = new Uint8Array(EXT4_JNL_BLOCKS_WORDS * 4);
  out.set(iBlock.subarray(0, 15 * 4), 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(15 * 4, Math.floor(sizeBytes / 0x1_0000_0000), true);
  dv.setUint32(16 * 4, sizeBytes >>> 0, true);
  return out;
}
