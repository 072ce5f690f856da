/**
 * Block group descriptors (Documentation/filesystems/ext4/group_descr.rst; struct
 * ext4_group_desc). 32 bytes without `64bit`, s_desc_size (64) with it: the `_hi` halves exist
 * only in the long form, so every split field has one accessor that takes the descriptor size
 * into account. Checksums: crc32c (metadata_csum) or crc16 (gdt_csum/uninit_bg), as
 * ext4_group_desc_csum() computes them; bitmap checksums as ext4_{block,inode}_bitmap_csum_*.
 */
import { defineStruct, u16, u32 } from './struct.js';
import { crc16, crc32cRaw } from '../util/crc.js';
import { Corrupt, BadCrc } from '../util/errors.js';

export const GroupDescRaw = defineStruct('ext4_group_desc', 64, {
  bg_block_bitmap_lo: u32(0x0),
  bg_inode_bitmap_lo: u32(0x4),
  bg_inode_table_lo: u32(0x8),
  bg_free_blocks_count_lo: u16(0xc),
  bg_free_inodes_count_lo: u16(0xe),
  bg_used_dirs_count_lo: u16(0x10),
  bg_flags: u16(0x12),
  bg_exclude_bitmap_lo: u32(0x14),
  bg_block_bitmap_csum_lo: u16(0x18),
  bg_inode_bitmap_csum_lo: u16(0x1a),
  bg_itable_unused_lo: u16(0x1c),
  bg_checksum: u16(0x1e),
  bg_block_bitmap_hi: u32(0x20),
  bg_inode_bitmap_hi: u32(0x24),
  bg_inode_table_hi: u32(0x28),
  bg_free_blocks_count_hi: u16(0x2c),
  bg_free_inodes_count_hi: u16(0x2e),
  bg_used_dirs_count_hi: u16(0x30),
  bg_itable_unused_hi: u16(0x32),
  bg_exclude_bitmap_hi: u32(0x34),
  bg_block_bitmap_csum_hi: u16(0x38),
  bg_inode_bitmap_csum_hi: u16(0x3a),
  bg_reserved: u32(0x3c),
});

/** bg_flags bits. */
export const EXT4_BG_INODE_UNINIT = 0x1;
export const EXT4_BG_BLOCK_UNINIT = 0x2;
export const EXT4_BG_INODE_ZEROED = 0x4;

const CSUM_OFF = GroupDescRaw.offsetOf('bg_checksum');
const HI_START = GroupDescRaw.offsetOf('bg_block_bitmap_hi');

/**
 * A group descriptor of either size. It copies nothing: reads and writes go to the descriptor
 * block's bytes, so the cache sees changes.
 */
export class GroupDesc {
  private readonly raw: InstanceType<typeof GroupDescRaw>;
  private readonly long: boolean;
  /** Descriptor size in bytes (32 or s_desc_size). */
  readonly descSize: number;
  constructor(bytes: Uint8Array, base: number, descSize: number) {
    // The view spans 64 bytes; a 32-byte descriptor at the end of a block gets a padded copy
    // only if needed. OK: in the short form no accessor below touches bytes past 32.
    const need = base + 64 <= bytes.length;
    this.raw = need ? new GroupDescRaw(bytes, base) : new GroupDescRaw(padTo64(bytes, base), 0);
    this.long = descSize >= 64;
    this.descSize = descSize;
    if (!need && this.long) throw new Corrupt('group descriptor', `does not fit (${descSize} bytes)`);
  }
  private hi(v: number): number {
    return this.long ? v * 0x1_0000_0000 : 0;
  }
  get blockBitmap(): number { return this.hi(this.raw.bg_block_bitmap_hi) + this.raw.bg_block_bitmap_lo; }
  get inodeBitmap(): number { return this.hi(this.raw.bg_inode_bitmap_hi) + this.raw.bg_inode_bitmap_lo; }
  get inodeTable(): number { return this.hi(this.raw.bg_inode_table_hi) + this.raw.bg_inode_table_lo; }
  get freeBlocksCount(): number {
    return (this.long ? this.raw.bg_free_blocks_count_hi * 0x10000 : 0) + this.raw.bg_free_blocks_count_lo;
  }
  get freeInodesCount(): number {
    return (this.long ? this.raw.bg_free_inodes_count_hi * 0x10000 : 0) + this.raw.bg_free_inodes_count_lo;
  }
  get usedDirsCount(): number {
    return (this.long ? this.raw.bg_used_dirs_count_hi * 0x10000 : 0) + this.raw.bg_used_dirs_count_lo;
  }
  get itableUnused(): number {
    return (this.long ? this.raw.bg_itable_unused_hi * 0x10000 : 0) + this.raw.bg_itable_unused_lo;
  }
  get flags(): number { return this.raw.bg_flags; }
  get checksum(): number { return this.raw.bg_checksum; }
  get blockBitmapCsum(): number {
    return (this.long ? this.raw.bg_block_bitmap_csum_hi * 0x10000 : 0) + this.raw.bg_block_bitmap_csum_lo;
  }
  get inodeBitmapCsum(): number {
    return (this.long ? this.raw.bg_inode_bitmap_csum_hi * 0x10000 : 0) + this.raw.bg_inode_bitmap_csum_lo;
  }
  set blockBitmap(v: number) { this.raw.bg_block_bitmap_lo = v >>> 0; if (this.long) this.raw.bg_block_bitmap_hi = Math.floor(v / 0x1_0000_0000); }
  set inodeBitmap(v: number) { this.raw.bg_inode_bitmap_lo = v >>> 0; if (this.long) this.raw.bg_inode_bitmap_hi = Math.floor(v / 0x1_0000_0000); }
  set inodeTable(v: number) { this.raw.bg_inode_table_lo = v >>> 0; if (this.long) this.raw.bg_inode_table_hi = Math.floor(v / 0x1_0000_0000); }
  set freeBlocksCount(v: number) { this.raw.bg_free_blocks_count_lo = v & 0xffff; if (this.long) this.raw.bg_free_blocks_count_hi = v >>> 16; }
  set freeInodesCount(v: number) { this.raw.bg_free_inodes_count_lo = v & 0xffff; if (this.long) this.raw.bg_free_inodes_count_hi = v >>> 16; }
  set usedDirsCount(v: number) { this.raw.bg_used_dirs_count_lo = v & 0xffff; if (this.long) this.raw.bg_used_dirs_count_hi = v >>> 16; }
  set itableUnused(v: number) { this.raw.bg_itable_unused_lo = v & 0xffff; if (this.long) this.raw.bg_itable_unused_hi = v >>> 16; }
  set flags(v: number) { this.raw.bg_flags = v; }
  set checksum(v: number) { this.raw.bg_checksum = v; }
  set blockBitmapCsum(v: number) { this.raw.bg_block_bitmap_csum_lo = v & 0xffff; if (this.long) this.raw.bg_block_bitmap_csum_hi = v >>> 16; }
  set inodeBitmapCsum(v: number) { this.raw.bg_inode_bitmap_csum_lo = v & 0xffff; if (this.long) this.raw.bg_inode_bitmap_csum_hi = v >>> 16; }
  /** The descriptor's own bytes (descSize of them). */
  get bytes(): Uint8Array { return this.raw.bytes.subarray(this.raw.base, this.raw.base + this.descSize); }
}

function padTo64(bytes: Uint8Array, base: number): Uint8Array {
  const out = new Uint8Array(64);
  out.set(bytes.subarray(base, Math.min(bytes.length, base + 64)));
  return out;
}

/** How group descriptors are checksummed on this filesystem. */
export type GdCsumKind = { kind: 'crc32c'; seed: number } | { kind: 'crc16'; uuid: Uint8Array } | { kind: 'none' };

function le32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b;
}

/** ext4_group_desc_csum(): the 16-bit checksum of descriptor `group`. */
export function computeGroupDescCsum(gd: GroupDesc, group: number, csum: GdCsumKind): number {
  const d = gd.bytes;
  const tailLen = d.length - (CSUM_OFF + 2);
  if (csum.kind === 'crc32c') {
    let c = crc32cRaw(csum.seed, le32(group));
    c = crc32cRaw(c, d.subarray(0, CSUM_OFF));
    c = crc32cRaw(c, new Uint8Array(2));
    if (tailLen > 0) c = crc32cRaw(c, d.subarray(CSUM_OFF + 2));
    return c & 0xffff;
  }
  if (csum.kind === 'crc16') {
    let c = crc16(0xffff, csum.uuid);
    c = crc16(c, le32(group));
    c = crc16(c, d.subarray(0, CSUM_OFF));
    if (d.length > HI_START) c = crc16(c, d.subarray(CSUM_OFF + 2));
    return c;
  }
  return 0;
}

/** Verifies a descriptor's checksum; throws BadCrc on mismatch. */
export function verifyGroupDescCsum(gd: GroupDesc, group: number, csum: GdCsumKind, block: number): void {
  if (csum.kind === 'none') return;
  const c = computeGroupDescCsum(gd, group, csum);
  if (c !== gd.checksum) throw new BadCrc('group descriptor', gd.checksum, c, { group, block });
}

export function setGroupDescCsum(gd: GroupDesc, group: number, csum: GdCsumKind): void {
  if (csum.kind !== 'none') gd.checksum = computeGroupDescCsum(gd, group, csum);
}

/** crc32c of a bitmap (ext4_*_bitmap_csum_set): `bits/8` bytes from the fs seed. */
export function bitmapCsum(seed: number, bitmap: Uint8Array, bits: number): number {
  return crc32cRaw(seed, bitmap.subarray(0, bits >>> 3));
}

/**
 * Compares a bitmap checksum with the descriptor's (16 bits in the short form, 32 in the long
 * one, as the kernel does).
 */
export function bitmapCsumMatches(stored: number, computed: number, descSize: number): boolean {
  return descSize >= 64 ? stored === computed : stored === (computed & 0xffff);
}
