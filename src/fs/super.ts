/**
 * Mount-time state of a filesystem (fs/ext4/super.c: ext4_fill_super): the validated
 * superblock, the group descriptors, checksum configuration and feature switches, and the
 * metadata buffer cache. Every later read starts here; nothing above re-reads the superblock.
 */
import { NoBarrierDevice } from '../blockdev/no-barrier-device.js';
import type { BlockDevice } from '../blockdev/block-device.js';
import { BufferCache } from '../cache/buffer-cache.js';
import {
  SuperBlock, type SuperBlockView, validateSuperblock, blockSize, blocksCount, descSize,
  inodeSize, groupCount, hasIncompat, hasRoCompat, hasCompat, hasMetadataCsum, csumSeed,
  SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, type FeatureVerdict, EXT2_FLAGS_UNSIGNED_HASH,
} from '../format/superblock.js';
import { COMPAT, INCOMPAT, RO_COMPAT } from '../format/features.js';
import { GroupDesc, type GdCsumKind, verifyGroupDescCsum } from '../format/group-desc.js';
import { Corrupt, PosixError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { systemClock, type Clock, type ClockTime } from '../runtime/clock.js';
import { setFreeBlocksCount, setSuperblockCsum, EXT4_VALID_FS } from '../format/superblock.js';
import { setGroupDescCsum } from '../format/group-desc.js';
import { Mutex } from '../runtime/mutex.js';

/** Largest group count we accept: bounds the descriptor table we read at mount. */
const MAX_GROUPS = 1 << 22;

export interface MountOptions {
  /** Mount read-only (no write is ever issued). */
  readOnly?: boolean;
  /** Mount even if the journal needs recovery (read-only only), ignoring the journal. */
  noRecovery?: boolean;
  /** Metadata cache capacity in blocks. */
  cacheBlocks?: number;
  /**
   * false: no cache flush at commits, one at close (the kernel's `nobarrier`; see
   * blockdev/no-barrier-device.ts). Crash consistency is given up until close returns.
   * Default true.
   */
  barrier?: boolean;
  /** Source of every timestamp written (default: the system clock). */
  clock?: Clock;
}

/** Feature switches read once at mount. */
export interface Features {
  extents: boolean;
  filetype: boolean;
  metadataCsum: boolean;
  gdtCsum: boolean;
  is64bit: boolean;
  flexBg: boolean;
  metaBg: boolean;
  hugeFile: boolean;
  largeDir: boolean;
  inlineData: boolean;
  dirIndex: boolean;
  dirNlink: boolean;
  extraIsize: boolean;
  hasJournal: boolean;
  sparseSuper: boolean;
  sparseSuper2: boolean;
  orphanFile: boolean;
  /** Directory hashes treat name bytes as unsigned (s_flags UNSIGNED_HASH). */
  unsignedHash: boolean;
}

export class Ext4Super {
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly inodeSize: number;
  readonly groupCount: number;
  readonly descSize: number;
  readonly inodesPerGroup: number;
  readonly blocksPerGroup: number;
  readonly firstDataBlock: number;
  /** Seed of every metadata checksum (crc32c), 0 without metadata_csum. */
  readonly csumSeed: number;
  readonly gdCsum: GdCsumKind;
  readonly features: Features;
  readonly verdict: FeatureVerdict;
  readonly readOnly: boolean;
  /** The four 32-bit words of s_hash_seed. */
  readonly hashSeed: Uint32Array;
  readonly clock: Clock;
  /** Groups whose descriptor changed since the last commit (checksum stamped at commit). */
  private readonly dirtyGroups = new Set<number>();
  private superDirty = false;
  /** s_state as found at mount (restored, with VALID_FS, by a clean close). */
  private mountState = 0;
  private closed = false;

  private constructor(
    readonly dev: BlockDevice,
    readonly sbBytes: Uint8Array,
    readonly sb: SuperBlockView,
    readonly cache: BufferCache,
    readonly groups: readonly GroupDesc[],
    readOnly: boolean,
    verdict: FeatureVerdict,
    clock: Clock,
  ) {
    this.clock = clock;
    this.blockSize = blockSize(sb);
    this.blocksCount = blocksCount(sb);
    this.inodeSize = inodeSize(sb);
    this.groupCount = groupCount(sb);
    this.descSize = descSize(sb);
    this.inodesPerGroup = sb.s_inodes_per_group;
    this.blocksPerGroup = sb.s_blocks_per_group;
    this.firstDataBlock = sb.s_first_data_block;
    this.features = featuresOf(sb);
    this.csumSeed = this.features.metadataCsum ? csumSeed(sb) : 0;
    this.gdCsum = gdCsumKind(sb, this.csumSeed);
    this.verdict = verdict;
    this.readOnly = readOnly;
    const hs = sb.s_hash_seed;
    this.hashSeed = new Uint32Array(4);
    const dv = new DataView(hs.buffer, hs.byteOffset, 16);
    for (let i = 0; i < 4; i++) this.hashSeed[i] = dv.getUint32(i * 4, true);
  }

  /**
   * Reads and validates the superblock and every group descriptor (the kernel's
   * ext4_fill_super + ext4_check_descriptors). Throws Corrupt, BadCrc, Incompatible, IoError.
   */
  static async mount(device: BlockDevice, opts: MountOptions = {}): Promise<Ext4Super> {
    const dev = opts.barrier === false && !device.readOnly && opts.readOnly !== true ? new NoBarrierDevice(device) : device;
    if (dev.sizeBytes < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) {
      throw new Corrupt('superblock', `device of ${dev.sizeBytes} bytes is too small to hold one`);
    }
    const sbBytes = new Uint8Array(SUPERBLOCK_SIZE);
    await dev.read(SUPERBLOCK_OFFSET, sbBytes);
    const sb = new SuperBlock(sbBytes, 0);
    const verdict = validateSuperblock(sb, dev.sizeBytes);
    const readOnly = (opts.readOnly ?? false) || dev.readOnly;
    if (verdict.needsRecovery && !(readOnly && opts.noRecovery)) {
      throw new PosixError('EROFS', 'mount', undefined,
        'the journal needs recovery (the filesystem was not cleanly unmounted); ' +
        'run e2fsck, or read it as it is on disk, ignoring the journal (noRecovery; CLI: --no-replay)');
    }
    if (!readOnly && !verdict.writable) {
      throw new PosixError('EROFS', 'mount', undefined, `${verdict.readOnlyReason}; open it read-only`);
    }
    const groups = groupCount(sb);
    if (groups > MAX_GROUPS) throw new Corrupt('superblock', `${groups} block groups (limit ${MAX_GROUPS})`);
    const cache = new BufferCache(dev, blockSize(sb), blocksCount(sb), opts.cacheBlocks, readOnly);
    const gds = await readGroupDescs(sb, cache, groups);
    const s = new Ext4Super(dev, sbBytes, sb, cache, gds, readOnly, verdict, opts.clock ?? systemClock);
    s.checkDescriptors();
    if (!readOnly) await s.markMountedRw();
    return s;
  }

  /** Verifies each descriptor's checksum and that its bitmaps and table lie inside the fs. */
  private checkDescriptors(): void {
    const itableBlocks = Math.ceil((this.inodesPerGroup * this.inodeSize) / this.blockSize);
    this.groups.forEach((gd, g) => {
      const block = this.gdBlockOf(g);
      verifyGroupDescCsum(gd, g, this.gdCsum, block);
      const inside = (b: number, n: number): boolean => b >= this.firstDataBlock && b + n <= this.blocksCount;
      const bad = (what: string, v: number): never => {
        throw new Corrupt('group descriptor', `${what} ${v} outside the filesystem`, { group: g, block });
      };
      if (!inside(gd.blockBitmap, 1)) bad('block bitmap', gd.blockBitmap);
      if (!inside(gd.inodeBitmap, 1)) bad('inode bitmap', gd.inodeBitmap);
      if (!inside(gd.inodeTable, itableBlocks)) bad('inode table', gd.inodeTable);
    });
  }

  /** The block that holds group descriptor `g` (see readGroupDescs for meta_bg). */
  gdBlockOf(g: number): number {
    return gdBlockNr(this.sb, Math.floor(g / (this.blockSize / this.descSize)));
  }

  /** The descriptor of group `g`. */
  group(g: number): GroupDesc {
    const gd = this.groups[g];
    if (gd === undefined) throw new Corrupt('group descriptor', `group ${g} does not exist`);
    return gd;
  }

  /** First block of group `g`. */
  groupFirstBlock(g: number): number {
    return this.firstDataBlock + g * this.blocksPerGroup;
  }

  /** The filesystem label as text. */
  get label(): string {
    const b = this.sb.s_volume_name;
    const end = b.indexOf(0);
    return new TextDecoder().decode(b.subarray(0, end < 0 ? b.length : end));
  }

  /** Reads a whole data block, uncached (for file data). */
  async readBlocks(first: number, count: number, dst: Uint8Array): Promise<void> {
    if (first < 0 || first + count > this.blocksCount) {
      throw new Corrupt('data block', `range ${first}+${count} outside the filesystem`);
    }
    await this.dev.read(first * this.blockSize, dst.subarray(0, count * this.blockSize));
  }

  /** Now, from the mount's clock. */
  now(): ClockTime {
    return this.clock.now();
  }

  /**
   * A read-write mount without a journal of its own writes (ext4_setup_super with no journal):
   * VALID_FS is cleared on disk before anything else is written, so that a crash before close()
   * leaves a filesystem e2fsck knows to check; close() restores it.
   */
  private async markMountedRw(): Promise<void> {
    const sb = this.sb;
    this.mountState = sb.s_state;
    sb.s_state = sb.s_state & ~EXT4_VALID_FS;
    const t = this.now();
    sb.s_mtime = lo32(t.sec);
    sb.s_mtime_hi = hi8(t.sec);
    sb.s_mnt_count = (sb.s_mnt_count + 1) & 0xffff;
    await this.writeSuper();
    await this.dev.flush();
  }

  private assertWritable(what: string): void {
    assert(!this.readOnly, () => `${what} on a read-only mount`);
    assert(!this.closed, () => `${what} after close`);
  }

  /** Group `g`'s descriptor changed: its checksum is stamped and its block written at commit. */
  markGroupDirty(g: number): void {
    this.assertWritable('markGroupDirty');
    assert(g >= 0 && g < this.groupCount, () => `markGroupDirty(${g})`);
    this.dirtyGroups.add(g);
  }

  /** A superblock field changed: written at commit. */
  markSuperDirty(): void {
    this.assertWritable('markSuperDirty');
    this.superDirty = true;
  }

  /**
   * Writes every change (sync_fs): block finalizers first (bitmap checksums land in the
   * descriptors), then the descriptors' checksums, the free counts summed into the superblock,
   * all dirty blocks in order, and last the superblock; then a device flush.
   */
  commit(): Promise<void> {
    return this.withMetaUpdate(() => this.commitLocked());
  }

  /**
   * Runs `fn`, a metadata change made outside the mount's operation queue (the conversion work of
   * io_ends), so that no commit interleaves with it: like a journal handle, it either lands
   * wholly before a commit's write-out or wholly after (a buffer dirtied while the cache is being
   * written would otherwise be marked clean unwritten, or trip the commit's empty-cache check).
   */
  withMetaUpdate<T>(fn: () => Promise<T>): Promise<T> {
    return this.metaLock.run(fn);
  }
  private readonly metaLock = new Mutex('metadata update lock');

  /**
   * Work a commit does first (upward calls registered by higher modules, STYLE §1), one-shot: a
   * hook is removed before it runs and registered again when there is new work. The data path
   * repacks the extent trees it reshaped; the block allocator releases the blocks freed since
   * the last commit, in the commit that writes the metadata no longer pointing at them. A hook
   * registered while hooks run (a repack freeing tree blocks) runs in the same commit.
   */
  readonly preCommitHooks = new Set<() => Promise<void>>();

  private async commitLocked(): Promise<void> {
    if (this.readOnly) return;
    for (let rounds = 0; this.preCommitHooks.size > 0; rounds++) {
      assert(rounds < 1000, 'pre-commit hooks keep registering each other');
      const h = this.preCommitHooks.values().next().value as () => Promise<void>;
      this.preCommitHooks.delete(h);
      await h();
    }
    this.assertWritable('commit');
    this.cache.finalizeAll();
    if (this.dirtyGroups.size > 0) {
      for (const g of this.dirtyGroups) {
        setGroupDescCsum(this.group(g), g, this.gdCsum);
        this.cache.markDirty(await this.cache.bread(this.gdBlockOf(g), 'group descriptor block'));
      }
      this.dirtyGroups.clear();
      let freeBlocks = 0;
      let freeInodes = 0;
      for (const gd of this.groups) {
        freeBlocks += gd.freeBlocksCount;
        freeInodes += gd.freeInodesCount;
      }
      setFreeBlocksCount(this.sb, freeBlocks);
      this.sb.s_free_inodes_count = freeInodes;
      this.superDirty = true;
    }
    // data=ordered without a journal: file data that completed before this commit (and the
    // conversions that say it is written) must be durable before the metadata that points at
    // it, or a crash could keep a converted extent whose data was lost (stale blocks).
    if (this.cache.dirtyCount > 0) await this.dev.flush();
    await this.cache.sync();
    if (this.superDirty) {
      const t = this.now();
      this.sb.s_wtime = lo32(t.sec);
      this.sb.s_wtime_hi = hi8(t.sec);
      await this.writeSuper();
      await this.dev.flush();
      this.superDirty = false;
    }
    assert(this.cache.dirtyCount === 0, () => `${this.cache.dirtyCount} dirty buffers after commit`);
  }

  /** Writes the primary superblock with a fresh checksum (backups are mkfs's and resize's). */
  private async writeSuper(): Promise<void> {
    if (this.features.metadataCsum) setSuperblockCsum(this.sb);
    await this.dev.write(SUPERBLOCK_OFFSET, this.sbBytes);
    // With 1 KiB blocks the superblock is block 1: keep a cached copy of that block coherent.
    this.cache.forget(Math.floor(SUPERBLOCK_OFFSET / this.blockSize));
  }

  /** Commits and restores the mount-time state with VALID_FS (a clean unmount); closes the device. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.readOnly) {
      this.sb.s_state = this.mountState | EXT4_VALID_FS;
      this.superDirty = true;
      await this.commit();
    }
    this.closed = true;
    await this.dev.close();
  }
}

function lo32(sec: number): number {
  return ((sec % 0x1_0000_0000) + 0x1_0000_0000) % 0x1_0000_0000;
}
function hi8(sec: number): number {
  return Math.floor(sec / 0x1_0000_0000) & 0xff;
}

function featuresOf(sb: SuperBlockView): Features {
  return {
    extents: hasIncompat(sb, INCOMPAT.extent),
    filetype: hasIncompat(sb, INCOMPAT.filetype),
    metadataCsum: hasMetadataCsum(sb),
    gdtCsum: hasRoCompat(sb, RO_COMPAT.gdt_csum),
    is64bit: hasIncompat(sb, INCOMPAT['64bit']),
    flexBg: hasIncompat(sb, INCOMPAT.flex_bg),
    metaBg: hasIncompat(sb, INCOMPAT.meta_bg),
    hugeFile: hasRoCompat(sb, RO_COMPAT.huge_file),
    largeDir: hasIncompat(sb, INCOMPAT.large_dir),
    inlineData: hasIncompat(sb, INCOMPAT.inline_data),
    dirIndex: hasCompat(sb, COMPAT.dir_index),
    dirNlink: hasRoCompat(sb, RO_COMPAT.dir_nlink),
    extraIsize: hasRoCompat(sb, RO_COMPAT.extra_isize),
    hasJournal: hasCompat(sb, COMPAT.has_journal),
    sparseSuper: hasRoCompat(sb, RO_COMPAT.sparse_super),
    sparseSuper2: hasCompat(sb, COMPAT.sparse_super2),
    orphanFile: hasCompat(sb, COMPAT.orphan_file),
    unsignedHash: (sb.s_flags & EXT2_FLAGS_UNSIGNED_HASH) !== 0,
  };
}

function gdCsumKind(sb: SuperBlockView, seed: number): GdCsumKind {
  if (hasMetadataCsum(sb)) return { kind: 'crc32c', seed };
  if (hasRoCompat(sb, RO_COMPAT.gdt_csum)) return { kind: 'crc16', uuid: sb.s_uuid.slice() };
  return { kind: 'none' };
}

/** True when group `g` holds a superblock backup (ext4_bg_has_super). */
export function groupHasSuper(sb: SuperBlockView, g: number): boolean {
  if (g === 0) return true;
  if (hasCompat(sb, COMPAT.sparse_super2)) {
    const bgs = new DataView(sb.s_backup_bgs.buffer, sb.s_backup_bgs.byteOffset, 8);
    return g === bgs.getUint32(0, true) || g === bgs.getUint32(4, true);
  }
  if (g <= 1 || !hasRoCompat(sb, RO_COMPAT.sparse_super)) return true;
  if (!(g & 1)) return false;
  return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

function isPowerOf(n: number, b: number): boolean {
  let p = 1;
  while (p < n) p *= b;
  return p === n;
}

/**
 * Block holding descriptor block `n` (ext4's descriptor_loc): right after the superblock,
 * or with meta_bg, in the first group of meta-group n (after its backup superblock if any).
 */
export function gdBlockNr(sb: SuperBlockView, n: number): number {
  const first = sb.s_first_data_block;
  if (!hasIncompat(sb, INCOMPAT.meta_bg) || n < sb.s_first_meta_bg) return first + 1 + n;
  const descPerBlock = blockSize(sb) / descSize(sb);
  const g = n * descPerBlock;
  return first + g * sb.s_blocks_per_group + (groupHasSuper(sb, g) ? 1 : 0);
}

async function readGroupDescs(sb: SuperBlockView, cache: BufferCache, groups: number): Promise<GroupDesc[]> {
  const bs = blockSize(sb);
  const ds = descSize(sb);
  const perBlock = bs / ds;
  const out: GroupDesc[] = [];
  for (let n = 0; n * perBlock < groups; n++) {
    const nr = gdBlockNr(sb, n);
    const buf = await cache.bread(nr, 'group descriptor block');
    // GroupDesc views point into this buffer for the whole mount: it must never be evicted.
    cache.pin(buf);
    for (let i = 0; i < perBlock && n * perBlock + i < groups; i++) out.push(new GroupDesc(buf.data, i * ds, ds));
  }
  return out;
}
