/**
 * mkfs options and their resolution into concrete parameters (misc/mke2fs.c PRS() and
 * misc/mke2fs.conf of e2fsprogs 1.47): the size-type table (floppy, small, default, big, huge)
 * that picks the block size and the inode ratio, the feature list with `-O feat,^feat` edits,
 * the label, UUID, hash seed and root owner.
 *
 * Deliberate differences from mke2fs's ext4 defaults, decided by the project:
 * - resize_inode is off: ext4ts has no online resize, so the reserved GDT blocks would be dead
 *   weight (and a second code path to keep right). `-O ^resize_inode` is accepted as a no-op.
 * - orphan_file is off: the orphan list lives in s_last_orphan / i_dtime chains, which every
 *   kernel and e2fsck understand. `-O ^orphan_file` is accepted as a no-op.
 * - metadata_csum_seed is on: the checksum seed is fixed at mkfs time (s_checksum_seed), so a
 *   later UUID change does not mean rewriting every checksum.
 * - `-O ^metadata_csum` turns on uninit_bg (crc16 group descriptor checksums and lazily
 *   initialised groups) unless `^uninit_bg` is given too; mke2fs 1.47 leaves both off.
 */
import { COMPAT, INCOMPAT, RO_COMPAT } from '../../format/features.js';
import { PosixError, Incompatible } from '../../util/errors.js';
import { encodeUtf8 } from '../../util/bytes.js';
import type { Random } from '../../runtime/random.js';

/** What a caller may ask of mkfs. Everything is optional; defaults follow mke2fs 1.47. */
export interface MkfsOptions {
  /** Size of the filesystem in bytes (default: the whole target). */
  sizeBytes?: number;
  /** Block size in bytes: 1024, 2048 or 4096 (default from the size type, like mke2fs). */
  blockSize?: number;
  /** Volume label, at most 16 bytes of UTF-8 (-L). */
  label?: string;
  /** Filesystem UUID as text ("xxxxxxxx-xxxx-…") or 16 bytes (-U); default random. */
  uuid?: string | Uint8Array;
  /** Directory hash seed (a UUID), default random, or derived from the UUID when reproducible. */
  hashSeed?: string | Uint8Array;
  /** Number of inodes wanted (-N); the result is rounded up to fill whole inode-table blocks. */
  inodesCount?: number;
  /** Bytes per inode (-i); default from the size type. */
  inodeRatio?: number;
  /** Inode record size in bytes (-I): a power of two from 128 to the block size; default 256. */
  inodeSize?: number;
  /** Feature edits (-O): "feat,^feat,…" or a list of such names. */
  features?: string | readonly string[];
  /** Percentage of blocks reserved for root (-m), default 5. */
  reservedPercent?: number;
  /** Owner of the root directory (-E root_owner=uid:gid), default 0:0. */
  rootOwner?: { uid: number; gid: number };
  /**
   * Derive everything random (hash seed) from the UUID, so that a fixed UUID and a fixed clock
   * give a byte-identical image. Default: true when the clock came from SOURCE_DATE_EPOCH.
   */
  reproducible?: boolean;
}

/** The features mkfs can write, as one switch each (kernel names). */
export interface MkfsFeatures {
  has_journal: boolean;
  ext_attr: boolean;
  dir_index: boolean;
  filetype: boolean;
  extent: boolean;
  '64bit': boolean;
  flex_bg: boolean;
  metadata_csum_seed: boolean;
  large_dir: boolean;
  sparse_super: boolean;
  large_file: boolean;
  huge_file: boolean;
  gdt_csum: boolean;
  dir_nlink: boolean;
  extra_isize: boolean;
  metadata_csum: boolean;
}
export type MkfsFeatureName = keyof MkfsFeatures;

/** The ext4 defaults (mke2fs.conf [fs_types] ext4 plus metadata_csum_seed, minus resize_inode). */
export function defaultFeatures(): MkfsFeatures {
  return {
    has_journal: true, ext_attr: true, dir_index: true, filetype: true, extent: true, '64bit': true,
    flex_bg: true, metadata_csum_seed: true, large_dir: false, sparse_super: true, large_file: true,
    huge_file: true, gdt_csum: false, dir_nlink: true, extra_isize: true, metadata_csum: true,
  };
}

/** Other spellings accepted by -O (e2fsprogs's names). */
const ALIASES: Readonly<Record<string, MkfsFeatureName>> = {
  uninit_bg: 'gdt_csum', uninit_groups: 'gdt_csum', extents: 'extent',
};

/** Features that exist but ext4ts mkfs does not create; naming them with ^ is a harmless no-op. */
const NOT_CREATED: Readonly<Record<string, string>> = {
  resize_inode: 'ext4ts has no online resize, so it reserves no GDT blocks',
  orphan_file: 'ext4ts keeps orphans in the s_last_orphan list',
  inline_data: 'ext4ts mkfs does not create inline-data directories yet',
  meta_bg: 'ext4ts mkfs lays out descriptors contiguously',
  sparse_super2: 'ext4ts mkfs places backups with sparse_super',
  bigalloc: 'ext4ts does not support clusters larger than a block',
  quota: 'ext4ts mkfs creates no quota inodes', project: 'ext4ts mkfs creates no quota inodes',
  encrypt: 'not supported by ext4ts', casefold: 'not supported by ext4ts', ea_inode: 'not supported by ext4ts',
  journal_dev: 'ext4ts mkfs makes internal journals only', mmp: 'not supported by ext4ts mkfs',
  verity: 'not supported by ext4ts', fast_commit: 'not supported by ext4ts mkfs',
  stable_inodes: 'not supported by ext4ts mkfs', dir_prealloc: 'obsolete', imagic_inodes: 'obsolete',
  lazy_bg: 'obsolete', exclude_inode: 'obsolete', exclude_bitmap: 'obsolete', compression: 'obsolete',
  dirdata: 'not supported by ext4ts', btree_dir: 'obsolete', has_snapshot: 'not supported by ext4ts',
  replica: 'not supported by ext4ts', readonly: 'not supported by ext4ts mkfs',
  shared_blocks: 'not supported by ext4ts', orphan_present: 'set by the kernel, not by mkfs',
  recover: 'set by the kernel, not by mkfs', needs_recovery: 'set by the kernel, not by mkfs',
};

/**
 * Applies `-O` edits to the defaults. Returns the features and the names the caller set
 * explicitly (so implied changes do not override an explicit wish). Throws PosixError EINVAL for
 * unknown names and Incompatible for features mkfs does not create.
 */
export function applyFeatureEdits(edits: string | readonly string[] | undefined): {
  features: MkfsFeatures;
  explicit: Set<MkfsFeatureName>;
} {
  const features = defaultFeatures();
  const explicit = new Set<MkfsFeatureName>();
  const list = edits === undefined ? [] : typeof edits === 'string' ? edits.split(',') : edits.flatMap((e) => e.split(','));
  for (const raw of list) {
    const item = raw.trim();
    if (item === '' || item === 'none') continue;
    const off = item.startsWith('^') || item.startsWith('-');
    const name = (off || item.startsWith('+') ? item.slice(1) : item).toLowerCase();
    const key = (ALIASES[name] ?? name) as MkfsFeatureName;
    if (key in features) {
      if (key === 'extent' && off) {
        throw new Incompatible('-O ^extent: ext4ts mkfs makes extent-mapped filesystems only', ['extent']);
      }
      features[key] = !off;
      explicit.add(key);
      continue;
    }
    const why = NOT_CREATED[name];
    if (why !== undefined) {
      if (off) continue;
      throw new Incompatible(`-O ${name}: feature not supported by ext4ts mkfs (${why})`, [name]);
    }
    throw new PosixError('EINVAL', 'mkfs', undefined,
      `unknown feature "${name}" in -O (known: ${Object.keys(defaultFeatures()).join(', ')}, uninit_bg)`);
  }
  return { features, explicit };
}

/**
 * Makes the feature set consistent the way mke2fs does: metadata_csum replaces gdt_csum;
 * without metadata_csum, metadata_csum_seed is dropped (an error if asked for) and uninit_bg
 * takes over unless turned off explicitly. Throws Incompatible for impossible combinations.
 */
export function settleFeatures(f: MkfsFeatures, explicit: ReadonlySet<MkfsFeatureName>): void {
  if (f.metadata_csum) {
    f.gdt_csum = false;
  } else {
    if (f.metadata_csum_seed) {
      if (explicit.has('metadata_csum_seed')) {
        throw new Incompatible('-O metadata_csum_seed needs metadata_csum', ['metadata_csum_seed']);
      }
      f.metadata_csum_seed = false;
    }
    if (!explicit.has('gdt_csum')) f.gdt_csum = true;
  }
}

/** The three words of superblock feature bits for a feature set. */
export function featureBits(f: MkfsFeatures): { compat: number; incompat: number; roCompat: number } {
  let compat = 0;
  let incompat = 0;
  let roCompat = 0;
  for (const [k, on] of Object.entries(f)) {
    if (!on) continue;
    if (k in COMPAT) compat |= COMPAT[k as keyof typeof COMPAT];
    else if (k in INCOMPAT) incompat |= INCOMPAT[k as keyof typeof INCOMPAT];
    else if (k in RO_COMPAT) roCompat |= RO_COMPAT[k as keyof typeof RO_COMPAT];
  }
  return { compat: compat >>> 0, incompat: incompat >>> 0, roCompat: roCompat >>> 0 };
}

/** mke2fs.conf's size types: chosen by the filesystem size, they give block size and inode ratio. */
export interface SizeType {
  name: 'floppy' | 'small' | 'default' | 'big' | 'huge';
  blockSize: number;
  inodeRatio: number;
}

const MiB = 1024 * 1024;
const TiB = 1024 * 1024 * MiB;

/**
 * The size type of a filesystem of `bytes` (mke2fs's parse_fs_type): floppy below 3 MiB, small
 * below 512 MiB (both 1 KiB blocks), default below 4 TiB, big below 16 TiB, huge above.
 */
export function sizeTypeOf(bytes: number): SizeType {
  if (bytes < 3 * MiB) return { name: 'floppy', blockSize: 1024, inodeRatio: 8192 };
  if (bytes < 512 * MiB) return { name: 'small', blockSize: 1024, inodeRatio: 4096 };
  if (bytes < 4 * TiB) return { name: 'default', blockSize: 4096, inodeRatio: 16384 };
  if (bytes < 16 * TiB) return { name: 'big', blockSize: 4096, inodeRatio: 32768 };
  return { name: 'huge', blockSize: 4096, inodeRatio: 65536 };
}

/** The block size mkfs gives a filesystem of `bytes` when none is asked for. */
export function defaultBlockSize(bytes: number): number {
  return sizeTypeOf(bytes).blockSize;
}

/** Parses a UUID given as text (with or without dashes) or 16 bytes. Throws EINVAL. */
export function parseUuid(v: string | Uint8Array, what: string): Uint8Array {
  if (typeof v !== 'string') {
    if (v.length !== 16) throw new PosixError('EINVAL', 'mkfs', undefined, `${what} must be 16 bytes, got ${v.length}`);
    return v.slice();
  }
  const hexText = v.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hexText) || !/^[0-9a-fA-F-]+$/.test(v)) {
    throw new PosixError('EINVAL', 'mkfs', undefined, `${what} "${v}" is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hexText.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A random (version 4, RFC 4122 variant) UUID from `random`, as libuuid's uuid_generate makes. */
export function randomUuid(random: Random): Uint8Array {
  const u = random.fill(new Uint8Array(16));
  // OK to index: u has 16 bytes.
  u[6] = (u[6]! & 0x0f) | 0x40;
  u[8] = (u[8]! & 0x3f) | 0x80;
  return u;
}

/** The UUID as text, lower case with dashes. */
export function formatUuid(u: Uint8Array): string {
  const h = [...u].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The label as the 16-byte s_volume_name field (NUL padded). Throws EINVAL when too long. */
export function labelBytes(label: string | undefined): Uint8Array {
  const b = encodeUtf8(label ?? '');
  if (b.length > 16) throw new PosixError('EINVAL', 'mkfs', undefined, `label "${label}" is ${b.length} bytes long; the limit is 16`);
  if (b.includes(0)) throw new PosixError('EINVAL', 'mkfs', undefined, 'label contains a NUL byte');
  return b;
}
