/**
 * mkfs: makes a new ext4 filesystem on a BlockDevice (misc/mke2fs.c main()). planMkfs()
 * resolves the options and lays everything out without touching the device, so bad options
 * never destroy anything; writeMkfs() then writes only metadata.
 *
 * What is written: bitmaps of initialised groups, the blocks of group 0's inode table that hold
 * inodes 1..11, the root directory, lost+found, the journal superblock (and extent block), the
 * descriptor table and superblock copies. Nothing else: on a device that reads as zeros (a
 * freshly truncated image file) the inode tables, uninitialised bitmaps and the journal are
 * already right, so every group gets EXT4_BG_INODE_ZEROED and a 4 TiB image costs a few MiB.
 * On a device with old contents (`zeroed: false`), mke2fs's lazy_itable_init behaviour: the
 * journal is zeroed (stale blocks must never look like transactions), inode tables are left for
 * the kernel's lazy init thread (no INODE_ZEROED flag; only the used inodes are written), and
 * without group checksums (no uninit_bg/metadata_csum) every inode table is zeroed because
 * nothing tells the kernel or e2fsck to skip them.
 *
 * Order: everything else first, the descriptor tables next, the superblocks last (primary at the
 * very end), then a flush: a crash midway leaves no valid-looking superblock over half-written
 * metadata.
 */
import type { BlockDevice } from '../../blockdev/block-device.js';
import type { Clock } from '../../runtime/clock.js';
import { seededRandom, type Random } from '../../runtime/random.js';
import { crc32cRaw } from '../../util/crc.js';
import { PosixError, Incompatible } from '../../util/errors.js';
import { assert } from '../../util/assert.js';
import { SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, EXT4_GOOD_OLD_FIRST_INO } from '../../format/superblock.js';
import {
  type MkfsOptions, type MkfsFeatures, applyFeatureEdits, settleFeatures, sizeTypeOf, parseUuid, randomUuid,
  formatUuid, labelBytes, featureBits,
} from './options.js';
import { COMPAT, INCOMPAT, RO_COMPAT, featureNames } from '../../format/features.js';
import { computeGeometry, layOut, superCopies, type Layout } from './layout.js';
import {
  type BuildParams, buildSuperblock, superblockCopy, buildGdt, buildBlockBitmap, buildInodeBitmap,
  bitmapChecksums, writesBlockBitmap, writesInodeBitmap, journalInode, journalTreeBlock, buildReservedInodes,
  rootDirBlock, lostFoundBlock, journalSuperblock, hasGroupCsum, backupGroups,
} from './build.js';

/** Sources of time and randomness, and what the device is known to hold. */
export interface MkfsContext {
  clock: Clock;
  random: Random;
  /** Derive the hash seed from the UUID instead of drawing it (reproducible images). */
  reproducible: boolean;
}

/** A fully resolved mkfs: parameters, layout, and what it will say about itself. */
export interface MkfsPlan {
  layout: Layout;
  params: Omit<BuildParams, 'itableZeroed'>;
  journalBlocks: number;
  warnings: string[];
  sizeType: string;
}

/** What mkfs made, like the summary mke2fs prints and dumpe2fs -h shows. */
export interface MkfsResult {
  uuid: string;
  hashSeed: string;
  label: string;
  blockSize: number;
  blocksCount: number;
  inodesCount: number;
  inodeSize: number;
  groupCount: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  reservedBlocksCount: number;
  freeBlocksCount: number;
  freeInodesCount: number;
  journalBlocks: number;
  /** Filesystem features, as dumpe2fs names them. */
  features: string[];
  /** First blocks of the superblock backups. */
  backupSuperblocks: number[];
  /** mke2fs's size type (floppy, small, default, big, huge). */
  sizeType: string;
  /** Notes such as "too small for a journal; made without". */
  warnings: string[];
  /** Bytes written to the device. */
  bytesWritten: number;
}

const MAX_U32 = 0xffff_ffff;

/** ext2fs_default_journal_size(): journal blocks for a filesystem of `blocks` blocks, -1 if too small. */
export function defaultJournalBlocks(blocks: number): number {
  if (blocks < 2048) return -1;
  if (blocks < 32768) return 1024;
  if (blocks < 256 * 1024) return 4096;
  if (blocks < 512 * 1024) return 8192;
  if (blocks < 4096 * 1024) return 16384;
  if (blocks < 8192 * 1024) return 32768;
  if (blocks < 16384 * 1024) return 65536;
  if (blocks < 32768 * 1024) return 131072;
  return 262144;
}

function einval(detail: string): PosixError {
  return new PosixError('EINVAL', 'mkfs', undefined, detail);
}

function checkInt(v: number, min: number, max: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw einval(`${what} ${v} is out of range (${min}..${max})`);
  return v;
}

/** Block size, inode size and inode ratio, validated (mke2fs's PRS() checks). */
function sizes(opts: MkfsOptions, bytes: number): { bs: number; isz: number; ratio: number; type: string } {
  const type = sizeTypeOf(bytes);
  const bs = opts.blockSize ?? type.blockSize;
  if (bs !== 1024 && bs !== 2048 && bs !== 4096) throw einval(`block size ${bs} (ext4ts makes 1024, 2048 or 4096)`);
  const isz = opts.inodeSize ?? 256;
  if (!Number.isInteger(isz) || isz < 128 || isz > bs || (isz & (isz - 1)) !== 0) {
    throw einval(`invalid inode size ${isz} (min 128/max ${bs}, a power of two)`);
  }
  let ratio = opts.inodeRatio ?? type.inodeRatio;
  checkInt(ratio, 1024, 65536 * 1024, 'inode ratio');
  if (ratio < bs) ratio = bs;
  return { bs, isz, ratio, type: type.name };
}

/** The features after -O edits, made consistent (see settleFeatures). */
function featuresFor(opts: MkfsOptions): MkfsFeatures {
  const { features, explicit } = applyFeatureEdits(opts.features);
  settleFeatures(features, explicit);
  return features;
}

/**
 * Resolves options into a plan (see the module comment). `deviceBytes` is what the target
 * holds; without opts.sizeBytes the whole device is used, rounded down to 4 KiB like mke2fs.
 * Throws PosixError EINVAL / Incompatible for bad options, before anything is written.
 */
export function planMkfs(opts: MkfsOptions, deviceBytes: number, ctx: MkfsContext): MkfsPlan {
  const warnings: string[] = [];
  const features = featuresFor(opts);
  // The cheap checks first: a bad label should not wait for a 4 TiB layout.
  const label = labelBytes(opts.label);
  const owner = opts.rootOwner ?? { uid: 0, gid: 0 };
  checkInt(owner.uid, 0, MAX_U32, 'root owner uid');
  checkInt(owner.gid, 0, MAX_U32, 'root owner gid');
  const uuid = opts.uuid !== undefined ? parseUuid(opts.uuid, 'UUID') : randomUuid(ctx.random);
  const hashSeed = opts.hashSeed !== undefined ? parseUuid(opts.hashSeed, 'hash seed')
    : randomUuid(ctx.reproducible ? seededRandom(uuid) : ctx.random);
  const bytes = opts.sizeBytes ?? Math.floor(deviceBytes / 4096) * 4096;
  checkInt(bytes, 1, Number.MAX_SAFE_INTEGER, 'filesystem size');
  if (bytes > deviceBytes) throw einval(`filesystem size ${bytes} is larger than the device (${deviceBytes} bytes)`);
  const { bs, isz, ratio, type } = sizes(opts, bytes);
  const blocks = Math.floor(bytes / bs);
  if (blocks > MAX_U32 && !features['64bit']) {
    throw new Incompatible(`${blocks} blocks need the 64bit feature (drop ^64bit)`, ['64bit']);
  }
  let inodesWanted = opts.inodesCount ?? Math.floor((blocks * bs) / ratio);
  if (opts.inodesCount !== undefined) checkInt(opts.inodesCount, 1, MAX_U32, 'inode count');
  inodesWanted = Math.min(inodesWanted, MAX_U32);
  const pct = opts.reservedPercent ?? 5;
  if (!(pct >= 0 && pct <= 50)) throw einval(`reserved blocks percentage ${pct} (0..50)`);
  const geo = computeGeometry({
    blockSize: bs, blocksCount: blocks, inodesWanted, inodeSize: isz, rBlocksCount: Math.floor((pct * blocks) / 100.0),
    is64bit: features['64bit'], flexBg: features.flex_bg, sparseSuper: features.sparse_super,
  });
  let journalBlocks = 0;
  if (features.has_journal) {
    journalBlocks = defaultJournalBlocks(geo.blocksCount);
    if (journalBlocks < 0) {
      warnings.push('filesystem too small for a journal; made without one');
      features.has_journal = false;
      journalBlocks = 0;
    }
  }
  const layout = layOut(geo, journalBlocks, features.metadata_csum || features.gdt_csum);
  const params = {
    features, uuid, hashSeed, label, now: ctx.clock.now(), rootUid: owner.uid, rootGid: owner.gid,
    csumSeed: crc32cRaw(0xffffffff, uuid),
  };
  return { layout, params, journalBlocks, warnings, sizeType: type };
}

/**
 * Queues device writes with a bounded number in flight, splitting at the device's request
 * limit; counts bytes. The first failure is rethrown by drain().
 */
class Writer {
  bytesWritten = 0;
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown = undefined;
  private zeros: Uint8Array | undefined;
  constructor(private readonly dev: BlockDevice, private readonly depth = 16) {}

  async write(offset: number, bytes: Uint8Array): Promise<void> {
    const max = Math.max(this.dev.sectorSize, this.dev.maxRequestBytes);
    for (let done = 0; done < bytes.length; done += max) {
      await this.submit(offset + done, bytes.subarray(done, Math.min(bytes.length, done + max)));
    }
  }

  async zero(offset: number, len: number): Promise<void> {
    const max = Math.max(this.dev.sectorSize, this.dev.maxRequestBytes);
    this.zeros ??= new Uint8Array(Math.min(max, 1 << 20));
    for (let done = 0; done < len; done += this.zeros.length) {
      await this.submit(offset + done, this.zeros.subarray(0, Math.min(this.zeros.length, len - done)));
    }
  }

  private async submit(offset: number, bytes: Uint8Array): Promise<void> {
    while (this.inflight.size >= this.depth) await Promise.race(this.inflight);
    if (this.failure !== undefined) throw this.failure;
    this.bytesWritten += bytes.length;
    const p: Promise<void> = this.dev.write(offset, bytes).catch((e: unknown) => {
      this.failure ??= e;
    }).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  async drain(): Promise<void> {
    await Promise.all(this.inflight);
    if (this.failure !== undefined) throw this.failure;
  }
}

/** Writes the bitmaps of initialised groups; returns their checksums (metadata_csum only). */
async function writeBitmaps(w: Writer, l: Layout, p: BuildParams): Promise<Map<number, { block: number; inode: number }>> {
  const sums = new Map<number, { block: number; inode: number }>();
  const bs = l.geo.blockSize;
  for (let g = 0; g < l.geo.groupCount; g++) {
    const bb = writesBlockBitmap(l, g) ? buildBlockBitmap(l, g) : undefined;
    const ib = writesInodeBitmap(p, g) ? buildInodeBitmap(l, g) : undefined;
    if (bb !== undefined) await w.write(l.blockBitmap[g]! * bs, bb);
    if (ib !== undefined) await w.write(l.inodeBitmap[g]! * bs, ib);
    if (p.features.metadata_csum && (bb !== undefined || ib !== undefined)) sums.set(g, bitmapChecksums(l, p, bb, ib));
  }
  return sums;
}

/** Zeroes what a dirty device must not show: the journal, and all inode tables without group checksums. */
async function zeroStale(w: Writer, l: Layout, p: BuildParams): Promise<void> {
  const bs = l.geo.blockSize;
  for (const r of l.journal) await w.zero(r.pblk * bs, r.len * bs);
  if (!hasGroupCsum(p)) {
    for (let g = 0; g < l.geo.groupCount; g++) await w.zero(l.inodeTable[g]! * bs, l.geo.inodeTableBlocks * bs);
  }
}

/** Writes the inode table head, directories and journal structures. */
async function writeInodesAndDirs(w: Writer, l: Layout, p: BuildParams): Promise<Uint8Array | undefined> {
  const bs = l.geo.blockSize;
  let jIBlock: Uint8Array | undefined;
  let jRec: Uint8Array | undefined;
  if (l.journal.length > 0) {
    const j = journalInode(l, p);
    jIBlock = j.iBlock;
    jRec = j.rec;
    // OK to index: the journal has at least one extent here.
    await w.write(l.journal[0]!.pblk * bs, journalSuperblock(l, p));
    if (l.journalTreeBlock !== undefined) await w.write(l.journalTreeBlock * bs, journalTreeBlock(l, p));
  }
  await w.write(l.inodeTable[0]! * bs, buildReservedInodes(l, p, jRec));
  await w.write(l.rootBlock * bs, rootDirBlock(l, p));
  for (let i = 0; i < l.lostFoundBlocks.length; i++) await w.write(l.lostFoundBlocks[i]! * bs, lostFoundBlock(l, p, i));
  return jIBlock;
}

/**
 * Writes the planned filesystem to `dev`. `zeroed`: the device reads as zeros everywhere (a
 * freshly truncated file), so nothing needs zeroing and inode tables are marked zeroed.
 * Returns the number of bytes written.
 */
export async function writeMkfs(dev: BlockDevice, plan: MkfsPlan, zeroed: boolean): Promise<number> {
  const l = plan.layout;
  const f = plan.params.features;
  // Without group checksums every inode table is zeroed now (zeroStale), so all are zeroed.
  const p: BuildParams = { ...plan.params, itableZeroed: zeroed || !(f.metadata_csum || f.gdt_csum) };
  const bs = l.geo.blockSize;
  assert(l.geo.blocksCount * bs <= dev.sizeBytes, 'mkfs: the filesystem does not fit the device');
  const w = new Writer(dev);
  if (!zeroed) await zeroStale(w, l, p);
  const sums = await writeBitmaps(w, l, p);
  const jIBlock = await writeInodesAndDirs(w, l, p);
  const gdt = buildGdt(l, p, (g) => sums.get(g) ?? { block: 0, inode: 0 });
  const copies = superCopies(l.geo);
  for (const c of copies) await w.write((c.block + 1) * bs, gdt);
  await w.drain();
  const primary = buildSuperblock(l, p, jIBlock);
  const kbytes = Math.floor(w.bytesWritten / 1024);
  for (const c of copies) {
    if (c.group === 0) continue;
    await w.write(c.block * bs, superblockCopy(primary, c.group, kbytes));
    if (!zeroed && bs > SUPERBLOCK_SIZE) await w.zero(c.block * bs + SUPERBLOCK_SIZE, bs - SUPERBLOCK_SIZE);
  }
  await w.drain();
  // The rest of block 0 after the primary superblock (the boot sector before it is left alone).
  const sbEnd = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE;
  if (!zeroed && bs > sbEnd) await w.zero(sbEnd, bs - sbEnd);
  await w.write(SUPERBLOCK_OFFSET, superblockCopy(primary, 0, kbytes));
  await w.drain();
  await dev.flush();
  return w.bytesWritten;
}

/** The result summary of a plan. */
export function mkfsResult(plan: MkfsPlan, bytesWritten: number): MkfsResult {
  const l = plan.layout;
  const g = l.geo;
  let free = 0;
  for (let i = 0; i < g.groupCount; i++) free += l.freeBlocks[i]!;
  return {
    uuid: formatUuid(plan.params.uuid), hashSeed: formatUuid(plan.params.hashSeed),
    label: new TextDecoder().decode(plan.params.label), blockSize: g.blockSize, blocksCount: g.blocksCount,
    inodesCount: g.inodesCount, inodeSize: g.inodeSize, groupCount: g.groupCount, blocksPerGroup: g.blocksPerGroup,
    inodesPerGroup: g.inodesPerGroup, reservedBlocksCount: g.rBlocksCount, freeBlocksCount: free,
    freeInodesCount: g.inodesCount - EXT4_GOOD_OLD_FIRST_INO, journalBlocks: plan.journalBlocks, features: featureList(plan.params.features),
    backupSuperblocks: backupGroups(l).map((x) => g.firstDataBlock + x * g.blocksPerGroup),
    sizeType: plan.sizeType, warnings: plan.warnings, bytesWritten,
  };
}

/** Feature names of a feature set, in superblock order (compat, incompat, ro_compat). */
function featureList(f: MkfsFeatures): string[] {
  const b = featureBits(f);
  return [...featureNames(COMPAT, b.compat), ...featureNames(INCOMPAT, b.incompat), ...featureNames(RO_COMPAT, b.roCompat)];
}
