/**
 * Feature flags of the superblock (Documentation/filesystems/ext4/super.rst, fs/ext4/ext4.h),
 * with their kernel names, and the policy of what ext4ts supports. The mount policy follows the
 * kernel: an unknown incompat bit refuses the mount, an unknown ro_compat bit allows read-only.
 */

export const COMPAT = {
  dir_prealloc: 0x1, imagic_inodes: 0x2, has_journal: 0x4, ext_attr: 0x8, resize_inode: 0x10,
  dir_index: 0x20, lazy_bg: 0x40, exclude_inode: 0x80, exclude_bitmap: 0x100,
  sparse_super2: 0x200, fast_commit: 0x400, stable_inodes: 0x800, orphan_file: 0x1000,
} as const;

export const INCOMPAT = {
  compression: 0x1, filetype: 0x2, recover: 0x4, journal_dev: 0x8, meta_bg: 0x10,
  extent: 0x40, '64bit': 0x80, mmp: 0x100, flex_bg: 0x200, ea_inode: 0x400, dirdata: 0x1000,
  metadata_csum_seed: 0x2000, large_dir: 0x4000, inline_data: 0x8000, encrypt: 0x10000,
  casefold: 0x20000,
} as const;

export const RO_COMPAT = {
  sparse_super: 0x1, large_file: 0x2, btree_dir: 0x4, huge_file: 0x8, gdt_csum: 0x10,
  dir_nlink: 0x20, extra_isize: 0x40, has_snapshot: 0x80, quota: 0x100, bigalloc: 0x200,
  metadata_csum: 0x400, replica: 0x800, readonly: 0x1000, project: 0x2000,
  shared_blocks: 0x4000, verity: 0x8000, orphan_present: 0x10000,
} as const;

export type CompatName = keyof typeof COMPAT;
export type IncompatName = keyof typeof INCOMPAT;
export type RoCompatName = keyof typeof RO_COMPAT;

/** Incompat features ext4ts can read. `recover` is handled separately (journal replay). */
export const SUPPORTED_INCOMPAT: readonly IncompatName[] = [
  'filetype', 'recover', 'meta_bg', 'extent', '64bit', 'flex_bg', 'metadata_csum_seed',
  'large_dir', 'inline_data', 'mmp',
];

/** ro_compat features ext4ts understands; any other bit makes the image read-only. */
export const SUPPORTED_RO_COMPAT: readonly RoCompatName[] = [
  'sparse_super', 'large_file', 'btree_dir', 'huge_file', 'gdt_csum', 'dir_nlink',
  'extra_isize', 'metadata_csum', 'orphan_present', 'quota', 'project',
];

/** Names of the bits set in `value`; unknown bits appear as `0x…`. */
export function featureNames(table: Readonly<Record<string, number>>, value: number): string[] {
  const out: string[] = [];
  let rest = value >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if (rest & bit) {
      out.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  for (let b = 0; b < 32; b++) {
    const bit = 2 ** b;
    if (rest & bit) out.push(`0x${bit.toString(16)}`);
  }
  return out;
}

/** The bits of `value` that are not in `supported` (by name in `table`). */
export function unsupportedBits(
  table: Readonly<Record<string, number>>,
  supported: readonly string[],
  value: number,
): number {
  let mask = 0;
  for (const n of supported) mask |= table[n] ?? 0;
  return (value & ~mask) >>> 0;
}
