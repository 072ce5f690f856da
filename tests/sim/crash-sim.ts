/**
 * The crash harness of the data path (issue 5): `runCrashSeed(seed)` makes an ext4 image of two
 * block groups (group 1 holds a backup superblock, so a torn primary is repaired from it) whose
 * free blocks all hold POISON, standing in for the old data of deleted files; mounts it on a
 * SimDevice (volatile write cache, seeded completion order); runs a seeded mix over three files
 * of buffered writes and reads, direct writes and reads, asynchronous direct I/O (several
 * requests of an AioContext in flight together, into holes, fallocated space and written blocks,
 * possibly overlapping, possibly still in flight while other files are worked on), fallocate,
 * punch hole, zero range, truncate, writepages, commit and fsync; injects EIO on seeded data bios
 * (buffered and direct, reads and writes), ENOMEM at the named fault sites, and ENOSPC by filling
 * the image first; and cuts the power at a seeded device request, or after the run. The image
 * that survives is repaired with `e2fsck -fy` and must then pass `e2fsck -fn` (after a clean
 * unmount it must pass without repair). Checked:
 *   1. nothing stale: no byte of a file, read before or after the crash, is poison — unwritten
 *      extents read as zeros and a conversion never reaches the disk before its data;
 *   2. nothing fsynced lost: every byte a returned fsync covered, whose value the model knew then
 *      and that no later operation touched, reads back as it was. Bytes of a write that failed,
 *      or of a call whose outcome is open (ENOMEM), are not known until written again;
 *   3. no leaks or double actions, at quiescent points and at the end of a run without a crash:
 *      the checks of engine-checks.ts (every InodeIo idle, no page locked, dirty or under
 *      writeback, reservedBlocks 0, each queued io_end converted once or, FAILED, never), no
 *      direct request in flight and i_dio_count back to 0, no AIO request left;
 *   4. errors reported: a failed writeback bio (or conversion) of a file makes its next fsync fail
 *      with EIO, once; a direct request whose bio (or conversion) failed fails with EIO itself, and
 *      fsync does not report it again; a failed direct write converts nothing, so its bytes read
 *      as they were, or zeros where nothing was written, or its own data only where the block was
 *      written already — never poison; a direct read whose bio failed fails with EIO.
 * Every decision comes from the seed: a failure names it and the command that replays it
 * (CRASH_DEBUG=1 also prints the operation log and e2fsck's repair).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Ext4 } from '../../src/api/ext4.js';
import { fixedClock, seededRandom } from '../../src/api/mkfs.js';
import type { BlockDevice } from '../../src/blockdev/block-device.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import { SimDevice, type CrashMode, type SimRequest } from '../../src/blockdev/sim-device.js';
import type { ErrCursor } from '../../src/cache/address-space.js';
import { BH } from '../../src/cache/buffer-head.js';
import { getBalloc } from '../../src/fs/alloc/balloc.js';
import { testBit } from '../../src/fs/alloc/bitmap.js';
import type { ExtentRec } from '../../src/fs/extents/extent-tree.js';
import { iget } from '../../src/fs/inode/icache.js';
import type { InodeInfo } from '../../src/fs/inode/inode.js';
import { Namespace } from '../../src/fs/namespace.js';
import { Ext4Super } from '../../src/fs/super.js';
import { AioContext, type AioRequest } from '../../src/io/aio.js';
import { DirectIo } from '../../src/io/direct-io.js';
import { FileData, type FallocateMode } from '../../src/io/file-data.js';
import type { IoEnd, IoRange } from '../../src/io/io-end.js';
import { FAULT_SITES, faults, type FaultSite } from '../../src/runtime/faults.js';
import { seededPrng, type Prng } from '../../src/runtime/random.js';
import { Mutex } from '../../src/runtime/mutex.js';
import type { SimWorkQueue } from '../../src/runtime/work-queue.js';
import { isExt4Error } from '../../src/util/errors.js';
import { IoEndAudit, dataBioBlocks, errText, quiescenceViolation, rangesText, seedStreams } from './engine-checks.js';

/** The old data of deleted files: every free block of a fresh image is filled with it. */
export const POISON = new TextEncoder().encode('STALE!!\n');

/**
 * Index in `b` of the first poison signature, or -1. `fileOffset` is the file offset of b[0]:
 * blocks are aligned alike in the file and on the device, so poison sits at file offsets that
 * are multiples of 8.
 */
export function findPoison(b: Uint8Array, fileOffset = 0): number {
  for (let i = (8 - (fileOffset % 8)) % 8; i + 8 <= b.length; i += 8) {
    let same = true;
    for (let k = 0; k < 8 && same; k++) same = b[i + k] === POISON[k];
    if (same) return i;
  }
  return -1;
}

/** The command that replays one seed. */
export function replayCommand(seed: number): string {
  return `CRASH_SEEDS=1 CRASH_FIRST=${seed} node scripts/run-tests.mjs crash-poison`;
}

/** What one seed exercised (summed over a run to show the checks were not vacuous). */
export interface CrashCounters {
  /** Power cuts inside the run (not after its end). */
  crashes: number;
  /** Data bios failed with EIO (buffered or direct, read or write). */
  eioBios: number;
  /** Fault-site hits failed with ENOMEM. */
  enomemHits: number;
  /** Calls that failed or came back short with ENOSPC. */
  enospc: number;
  /** Asynchronous direct requests submitted. */
  asyncRequests: number;
  /** Of those, requests that took the unwritten path (io_end converted in the worker). */
  asyncUnwritten: number;
  /** Ranges converted from unwritten to written (buffered and direct). */
  conversions: number;
  /** fsynced bytes checked after the crash. */
  claimedBytes: number;
}

export interface CrashSeedSummary {
  seed: number;
  /** Operations started. */
  ops: number;
  /** How the run ended: a power cut inside it, one after it, or a clean unmount. */
  end: 'crash' | 'crash after the run' | 'unmount';
  counters: CrashCounters;
  /** The configuration line and one line per operation. */
  log: string[];
}

/** A failed seed; the message names the seed, the replay command and the last operations. */
export class CrashSeedError extends Error {
  constructor(readonly seed: number, message: string) {
    super(message);
    this.name = 'CrashSeedError';
  }
}

// ---------------------------------------------------------------------------------------------
// Configuration and images
// ---------------------------------------------------------------------------------------------

/**
 * Image size per block size: the smallest with two block groups at mke2fs's default geometry
 * (8 × block size blocks per group). e2fsck looks for a backup superblock only where the default
 * geometry puts group 1, so smaller groups would not be repaired automatically.
 */
const IMAGE_BYTES: Readonly<Record<number, number>> = { 1024: 12 << 20, 2048: 33 << 20, 4096: 129 << 20 };
const MKFS_TIME = 1_700_000_000;
const FILES = 3;

interface CrashConfig {
  blockSize: number;
  pageSize: number;
  maxRequestBytes: number;
  maxBioVecs: number;
  /** Size of the "user pages" a direct request's buffer is cut into. */
  userPageBytes: number;
  latency: { min: number; max: number };
  jitterTicks: number;
  dirtyLimitBytes: number;
  mode: CrashMode;
  ops: number;
  /** The device request at which the power is cut (Infinity: after the run). */
  crashAtRequest: number;
  /** Without a power cut inside the run: unmount cleanly instead of cutting it after. */
  cleanUnmount: boolean;
  /** Probability that a data bio fails with EIO (0: none this seed). */
  eioRate: number;
  /** Probability that a hit of an enabled fault site fails with ENOMEM (0: none). */
  enomemRate: number;
  enomemSites: FaultSite[];
  /** Free blocks a filler file leaves (ENOSPC), or undefined for an empty image. */
  freeBlocksLeft: number | undefined;
}

function pickConfig(p: Prng): CrashConfig {
  const blockSize = [1024, 2048, 4096][p.below(3)]!;
  const pageSize = [4096, 16384, 65536][p.below(3)]!;
  const maxLat = p.between(0, 20);
  const crash = p.below(4);
  const eio = p.chance(0.35);
  const enomem = p.chance(0.3);
  const sites = FAULT_SITES.filter(() => p.chance(0.5));
  return {
    blockSize,
    pageSize,
    maxRequestBytes: [4096, 65536, 1 << 20][p.below(3)]!,
    maxBioVecs: p.between(1, 8),
    userPageBytes: [blockSize, 4096, 16384][p.below(3)]!,
    latency: { min: p.between(0, Math.min(3, maxLat)), max: maxLat },
    jitterTicks: p.between(0, 4),
    dirtyLimitBytes: [4, 8, 32][p.below(3)]! * pageSize,
    mode: (['lose-unflushed', 'keep-unflushed', 'random'] as const)[p.below(3)]!,
    ops: p.between(10, 45),
    // A quarter of the seeds run to the end; the others cut early, mid-run or late.
    crashAtRequest: crash === 0 ? Number.POSITIVE_INFINITY : 1 + p.below([150, 1500, 6000][crash - 1]!),
    cleanUnmount: p.chance(0.5),
    eioRate: eio ? [0.03, 0.1, 0.25][p.below(3)]! : 0,
    enomemRate: enomem && sites.length > 0 ? [0.02, 0.1, 0.3][p.below(3)]! : 0,
    enomemSites: enomem ? sites : [],
    freeBlocksLeft: p.chance(0.25) ? p.between(24, 400) : undefined,
  };
}

function describeConfig(seed: number, c: CrashConfig): string {
  const faultText = `eio=${c.eioRate} enomem=${c.enomemRate}${c.enomemSites.length > 0 ? `@${c.enomemSites.join(',')}` : ''}`;
  return `config seed=${seed} bs=${c.blockSize} ps=${c.pageSize} req=${c.maxRequestBytes} vecs=${c.maxBioVecs} ` +
    `userpage=${c.userPageBytes} lat=${c.latency.min}..${c.latency.max} jitter=${c.jitterTicks} dirty=${c.dirtyLimitBytes} ` +
    `ops=${c.ops} crash=${c.crashAtRequest}/${c.mode}${c.crashAtRequest === Number.POSITIVE_INFINITY ? (c.cleanUnmount ? '/unmount' : '/after') : ''} ` +
    `free=${c.freeBlocksLeft ?? 'all'} ${faultText}`;
}

/** Fresh poisoned images, one per block size, made once per process (the device copies them). */
const baseImages = new Map<number, Uint8Array>();

/**
 * A fresh filesystem of IMAGE_BYTES[blockSize] (two block groups) whose FREE blocks hold poison;
 * metadata areas (inode tables included) are as mkfs left them. The result is shared: copy it
 * before writing.
 */
export async function crashBaseImage(blockSize: number): Promise<Uint8Array> {
  const cached = baseImages.get(blockSize);
  if (cached !== undefined) return cached;
  const size = IMAGE_BYTES[blockSize];
  if (size === undefined) throw new Error(`crash harness: no image size for ${blockSize}-byte blocks`);
  const base = new Uint8Array(size);
  const made = await Ext4.mkfs(new MemDevice(base), {
    sizeBytes: size, blockSize, inodesCount: 256, random: seededRandom(blockSize), clock: fixedClock(MKFS_TIME),
  });
  if (made.groupCount < 2 || made.backupSuperblocks.length === 0) throw new Error(`crash harness: ${blockSize}-byte image has no backup superblock`);
  const poisoned = new Uint8Array(blockSize);
  for (let at = 0; at < blockSize; at += 8) poisoned.set(POISON, at);
  const ro = await Ext4Super.mount(new MemDevice(base, true), { readOnly: true });
  const balloc = getBalloc(ro);
  for (let g = 0; g < ro.groupCount; g++) {
    const bitmap = (await balloc.readBlockBitmap(g)).data;
    const first = ro.groupFirstBlock(g);
    for (let i = 0; i < ro.blocksPerGroup && first + i < ro.blocksCount; i++) {
      if (!testBit(bitmap, i)) base.set(poisoned, (first + i) * blockSize);
    }
  }
  await ro.close();
  baseImages.set(blockSize, base);
  return base;
}

/** Where images go for e2fsck: memory-backed when the host has /dev/shm. */
let workDir: string | undefined;
function imageDir(): string {
  if (workDir === undefined) {
    const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'ext4ts-crash-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    workDir = dir;
  }
  return workDir;
}

// ---------------------------------------------------------------------------------------------
// The device and the model
// ---------------------------------------------------------------------------------------------

/** A request issued after the power cut: the machine is off, it never completes. */
function never(): Promise<void> {
  return new Promise<void>(() => {});
}

type Gate = (op: SimRequest['op'], offsetBytes: number, lenBytes: number, bufs: readonly Uint8Array[], issue: () => Promise<void>) => Promise<void>;

/**
 * The device the engine mounts: every request passes the harness's gate (power cut, EIO
 * decision) on its way to the SimDevice. It offers writev so that a direct write's bio arrives
 * as slices of the caller's buffer, which names the request it belongs to.
 */
class GatedDevice implements BlockDevice {
  readonly sizeBytes: number;
  readonly sectorSize: number;
  readonly maxRequestBytes: number;
  readonly readOnly: boolean;

  constructor(private readonly inner: SimDevice, private readonly gate: Gate) {
    this.sizeBytes = inner.sizeBytes;
    this.sectorSize = inner.sectorSize;
    this.maxRequestBytes = inner.maxRequestBytes;
    this.readOnly = inner.readOnly;
  }

  read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    return this.gate('read', offsetBytes, dst.length, [dst], () => this.inner.read(offsetBytes, dst));
  }
  write(offsetBytes: number, src: Uint8Array): Promise<void> {
    return this.gate('write', offsetBytes, src.length, [src], () => this.inner.write(offsetBytes, src));
  }
  writev(offsetBytes: number, srcs: readonly Uint8Array[]): Promise<void> {
    const len = srcs.reduce((n, b) => n + b.length, 0);
    return this.gate('write', offsetBytes, len, srcs, () => {
      const joined = new Uint8Array(len);
      let at = 0;
      for (const b of srcs) {
        joined.set(b, at);
        at += b.length;
      }
      return this.inner.write(offsetBytes, joined);
    });
  }
  flush(): Promise<void> {
    return this.gate('flush', 0, 0, [], () => this.inner.flush());
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * The model of one file: its bytes as a read returns them now, where known, and what the last
 * fsync that returned success made durable. Bytes at or past the size are zeros (what the file
 * must show if it grows again).
 */
class FileModel {
  size = 0;
  /** Expected content (meaningful where `known`); capacity grows on demand. */
  cur = new Uint8Array(0);
  /** 1 where `cur` is exactly what a read returns now. */
  known = new Uint8Array(0);
  /** Content at the last fsync that returned success. */
  synced = new Uint8Array(0);
  /** 1 where that fsync made the byte durable and no later operation touched it. */
  claim = new Uint8Array(0);
  /** Write errors (failed writeback bios, failed conversions) no fsync has reported yet. */
  unseenEio = 0;
  /** Data bios of this file that failed (a FAILED io_end needs one). */
  failedBios = 0;
  /** Injected conversion failures (a conversion error is then expected at quiescence). */
  failedConversions = 0;
  /** Largest byte offset ever touched (bounds the page scan). */
  maxEnd = 0;
  /** Asynchronous requests in flight on this file, settled before its next operation. */
  batch: Promise<void> | undefined;

  constructor(readonly name: string, readonly info: InodeInfo, readonly cursor: ErrCursor) {}

  private ensure(n: number): void {
    if (n <= this.cur.length) return;
    let cap = Math.max(4096, this.cur.length);
    while (cap < n) cap *= 2;
    const cur = new Uint8Array(cap);
    const known = new Uint8Array(cap).fill(1);
    cur.set(this.cur);
    known.set(this.known);
    this.cur = cur;
    this.known = known;
  }

  /** Bytes [pos, pos + bytes.length) are now exactly `bytes`. */
  set(pos: number, bytes: Uint8Array): void {
    this.ensure(pos + bytes.length);
    this.cur.set(bytes, pos);
    this.known.fill(1, pos, pos + bytes.length);
  }

  /** Bytes [from, to) are now zeros. */
  zero(from: number, to: number): void {
    if (to <= from) return;
    this.ensure(to);
    this.cur.fill(0, from, to);
    this.known.fill(1, from, to);
  }

  /** Bytes [from, to) may hold anything (an outcome the model cannot know). */
  forget(from: number, to: number): void {
    if (to <= from) return;
    this.ensure(to);
    this.known.fill(0, from, to);
  }

  /** An operation may change bytes [from, to): no fsync claim on them survives. */
  touch(from: number, to: number): void {
    this.claim.fill(0, Math.min(from, this.claim.length), Math.min(to, this.claim.length));
    this.maxEnd = Math.max(this.maxEnd, to);
  }

  /** The size is now `size`: everything past it reads as zeros when the file grows again. */
  resize(size: number): void {
    this.size = size;
    if (size < this.cur.length) {
      this.cur.fill(0, size);
      this.known.fill(1, size);
    }
  }

  /** An fsync returned success: every known byte is durable. */
  fsynced(): void {
    this.ensure(this.size);
    this.synced = this.cur.slice(0, this.size);
    this.claim = this.known.slice(0, this.size);
  }

  /** First byte of `got` (read at `pos`) that is known and differs from the model, or -1. */
  firstMismatch(pos: number, got: Uint8Array): number {
    this.ensure(pos + got.length);
    for (let i = 0; i < got.length; i++) if (this.known[pos + i] === 1 && this.cur[pos + i] !== got[i]) return i;
    return -1;
  }

  /** The model of [from, to) as it is now, for later comparison. */
  snapshot(from: number, to: number): { cur: Uint8Array; known: Uint8Array } {
    this.ensure(to);
    return { cur: this.cur.slice(from, to), known: this.known.slice(from, to) };
  }
}

/** A direct write in flight: found again by its buffer when its bios reach the device. */
interface DioWrite {
  readonly f: FileModel;
  readonly pos: number;
  readonly data: Uint8Array;
  /** Its bios failed with EIO so far. */
  failedBios: number;
  /** Its conversion (async unwritten path) failed. */
  conversionFailed: boolean;
  /** One of its bios reached the device (before that, a conversion of its range is writeback's). */
  submitted: boolean;
  /** Blocks of its range whose cached data failed to write back while it was in flight. */
  readonly wbFailed: Set<number>;
  /** Its promise settled (the request released its block range). */
  settled: boolean;
  /** Cancelled before it started. */
  cancelled: boolean;
}

/** An operation that reads file data: a read bio of `f`'s blocks mapped before it began is one of its. */
interface ReadContext {
  readonly f: FileModel;
  /** Physical block → logical block, for the blocks mapped when the operation began. */
  readonly blocks: ReadonlyMap<number, number>;
  /** Logical blocks whose read bio failed. */
  readonly failed: number[];
}

/**
 * What a direct write finds before it starts: the file's extents, and the blocks its page cache
 * holds dirty or under writeback, which the request writes back (and converts) before its own bios.
 */
interface BlocksBefore {
  readonly exts: readonly ExtentRec[];
  readonly cached: ReadonlySet<number>;
}

/** A checker failure: what the engine did differs from what the model allows. */
class Violation extends Error {
  constructor(readonly opIndex: number, message: string) {
    super(message);
  }
}

/** The outcome of a direct write call. */
type DioOutcome = { n: number } | { error: unknown };

// ---------------------------------------------------------------------------------------------
// The simulation of one seed
// ---------------------------------------------------------------------------------------------

class CrashSim {
  readonly log: string[] = [];
  readonly counters: CrashCounters = { crashes: 0, eioBios: 0, enomemHits: 0, enospc: 0, asyncRequests: 0, asyncUnwritten: 0, conversions: 0, claimedBytes: 0 };
  private readonly cfg: CrashConfig;
  private readonly p: Prng;
  private readonly faultPrng: Prng;
  private readonly wq: SimWorkQueue;
  private sim!: SimDevice;
  private s!: Ext4Super;
  private ns!: Namespace;
  private data: FileData | undefined;
  private dio!: DirectIo;
  private audit: IoEndAudit<FileModel> | undefined;
  private files: FileModel[] = [];
  private opIndex = -1;
  private violation: Violation | undefined;
  /** The image after the power cut (or the clean unmount). */
  private image: Uint8Array | undefined;
  private end: CrashSeedSummary['end'] = 'crash';
  /** The files' creation was committed before the power cut (else they may be missing). */
  private committed = false;
  private requests = 0;
  /** The next device request fails with EIO (read by the SimDevice's predicate). */
  private failNext = false;
  /** Harness checks (nested, possibly from a batch settling in the background) and the final phase run without injected faults. */
  private quiet = 0;
  private faultsOn = false;
  private uninstallFaults: (() => void) | undefined;
  private readonly dioWrites = new Map<ArrayBufferLike, DioWrite>();
  private readonly readContexts: ReadContext[] = [];
  /** Byte ranges whose write failed during the current operation, forgotten again after it. */
  private failedRanges: { f: FileModel; from: number; to: number }[] = [];
  /** The mount-wide operation queue (the API's WriteOps.run), also DirectIo's `serialize`. */
  private readonly queue = new Mutex('crash harness operation queue');

  constructor(readonly seed: number) {
    this.p = seededPrng(seed);
    this.cfg = pickConfig(this.p);
    ({ faultPrng: this.faultPrng, wq: this.wq } = seedStreams(seed, this.cfg.jitterTicks));
    this.log.push(describeConfig(seed, this.cfg));
  }

  private get bs(): number {
    return this.cfg.blockSize;
  }

  private get fd(): FileData {
    const d = this.data;
    if (d === undefined) throw new Error('crash harness: no FileData yet');
    return d;
  }

  private say(text: string): void {
    this.log.push(`#${this.opIndex} ${text}`);
  }

  /** Records the first violation (later ones are usually consequences) and stops the op. */
  private fail(message: string): never {
    const v = new Violation(this.opIndex, message);
    this.violation ??= v;
    throw v;
  }

  /** Records a violation seen inside engine code (the device gate, hooks): no throw there. */
  private note(message: string): void {
    if (this.image === undefined) this.violation ??= new Violation(this.opIndex, message);
  }

  /** Runs `fn` after every earlier operation of the mount, one at a time (WriteOps.run). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  // ---- the run ------------------------------------------------------------------------------

  async run(): Promise<CrashSeedSummary> {
    const onUnhandled = (e: unknown): void => this.note(`unhandled error in a completion or worker: ${errText(e)}`);
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    try {
      const base = await crashBaseImage(this.bs);
      try {
        await this.wq.run(() => this.main(base));
      } catch (e) {
        // After the power cut the device is dead: the workload stalls (the queue reports it).
        if (this.image === undefined) throw e;
      }
      if (this.violation !== undefined) throw this.violation;
      this.countEngine();
      await this.checkImage();
      return { seed: this.seed, ops: this.opIndex + 1, end: this.end, counters: this.counters, log: this.log };
    } catch (e) {
      const v = this.violation ?? (e instanceof Violation ? e : new Violation(this.opIndex, `engine threw: ${errText(e)}`));
      throw new CrashSeedError(this.seed, this.report(v));
    } finally {
      this.removeFaults();
      process.off('unhandledRejection', onUnhandled);
      process.off('uncaughtException', onUnhandled);
    }
  }

  /** The failure report: seed, op, message, replay command, configuration, last operations. */
  private report(v: Violation): string {
    const all = process.env['CRASH_DEBUG'] !== undefined;
    const ops = this.log.slice(1);
    return `crash-sim seed ${this.seed} failed at op #${v.opIndex}: ${v.message}\n  replay: ${replayCommand(this.seed)}\n  ${this.log[0]}\n` +
      `  ${all ? 'ops' : 'last ops'}:\n    ${(all ? ops : ops.slice(-30)).join('\n    ')}`;
  }

  private async main(base: Uint8Array): Promise<void> {
    const c = this.cfg;
    this.sim = new SimDevice({ queue: this.wq, seed: this.seed * 13 + 5, image: base, maxRequestBytes: c.maxRequestBytes, latencyTicks: c.latency, eio: () => this.failNext });
    const dev = new GatedDevice(this.sim, (op, off, len, bufs, issue) => this.gate(op, off, len, bufs, issue));
    this.s = await Ext4Super.mount(dev, { clock: fixedClock(MKFS_TIME) });
    this.ns = new Namespace(this.s);
    const data = new FileData(this.s, { wq: this.wq, pageSizeBytes: c.pageSize, maxBioVecs: c.maxBioVecs, dirtyLimitBytes: c.dirtyLimitBytes });
    this.data = data;
    this.dio = new DirectIo(this.s, data, { serialize: (fn) => this.exclusive(fn), userPageBytes: c.userPageBytes });
    this.audit = new IoEndAudit<FileModel>(data, {
      queued: (f, io) => this.onQueued(f, io),
      convertFailed: (f, ranges, e) => this.onConvertFailed(f, ranges, e),
    }, (msg) => this.note(msg), () => data.stats.unwrittenIoEnds + this.dio.stats.ioEnds);
    for (let i = 0; i < FILES; i++) {
      const created = await this.ns.mknod(`/f${i}`, { type: 'file' }, 0o644, { uid: 0, gid: 0 });
      const info = await iget(this.s, created.ino);
      this.files.push(new FileModel(`f${i}`, info, data.openErrCursor(info)));
    }
    if (c.freeBlocksLeft !== undefined) await this.fill(c.freeBlocksLeft);
    await this.s.commit();
    if (this.image === undefined) this.committed = true;
    this.installFaults();
    for (let i = 0; i < c.ops && this.image === undefined; i++) {
      this.opIndex = i;
      this.audit.hookAll(this.files);
      await this.op();
      this.endOp();
    }
    if (this.image === undefined) {
      this.opIndex = c.ops;
      await this.finalPhase();
    }
  }

  /** A filler file takes all but `left` free blocks (unwritten: no data written), for ENOSPC. */
  private async fill(left: number): Promise<void> {
    const created = await this.ns.mknod('/filler', { type: 'file' }, 0o644, { uid: 0, gid: 0 });
    const info = await iget(this.s, created.ino);
    const take = getBalloc(this.s).freeBlocksCount() - left;
    if (take > 0) await this.fd.fallocate(info, 0, take * this.bs, {});
    this.say(`filler: ${Math.max(0, take)} blocks, ${getBalloc(this.s).freeBlocksCount()} left free`);
  }

  private installFaults(): void {
    if (this.cfg.enomemRate === 0) return;
    const sites = new Set(this.cfg.enomemSites);
    this.faultsOn = true;
    this.uninstallFaults = faults.install((site) => this.quiet === 0 && sites.has(site) && this.faultPrng.chance(this.cfg.enomemRate));
  }

  private removeFaults(): void {
    if (this.uninstallFaults === undefined) return;
    for (const v of faults.failures.values()) this.counters.enomemHits += v;
    this.uninstallFaults();
    this.uninstallFaults = undefined;
  }

  /** The power cut: the image a restart finds. Everything issued later never completes. */
  private cutPower(why: string): void {
    this.say(`power cut ${why} (${this.cfg.mode})`);
    this.image = this.sim.crash(this.cfg.mode);
  }

  // ---- the device gate ----------------------------------------------------------------------

  /**
   * Every device request: counted toward the power cut, hooks refreshed (the cache may have made
   * a new InodeIo, whose io_ends must be seen), then the EIO decision, which the SimDevice reads
   * through its predicate while `issue` submits.
   */
  private gate(op: SimRequest['op'], offsetBytes: number, lenBytes: number, bufs: readonly Uint8Array[], issue: () => Promise<void>): Promise<void> {
    if (this.image !== undefined) return never();
    this.requests++;
    if (this.requests >= this.cfg.crashAtRequest) {
      this.cutPower(`at device request ${this.requests} (${op} [${offsetBytes}, +${lenBytes}))`);
      return never();
    }
    this.audit?.hookAll(this.files);
    this.failNext = op === 'write' ? this.writeFails(offsetBytes, lenBytes, bufs) : op === 'read' ? this.readFails(offsetBytes, lenBytes) : false;
    try {
      return issue();
    } finally {
      this.failNext = false;
    }
  }

  private eioNow(): boolean {
    return this.cfg.eioRate > 0 && this.quiet === 0 && this.faultPrng.chance(this.cfg.eioRate);
  }

  /**
   * A write request: a direct write's bio (found by its buffer), a writeback bio (its blocks are
   * page-cache buffers under async write), or metadata (never failed).
   */
  private writeFails(offsetBytes: number, lenBytes: number, bufs: readonly Uint8Array[]): boolean {
    const data = this.data;
    const first = bufs[0];
    if (data === undefined || first === undefined) return false;
    const dw = this.dioWrites.get(first.buffer);
    if (dw !== undefined) {
      dw.submitted = true;
      if (!this.eioNow()) return false;
      const at = dw.pos + first.byteOffset - dw.data.byteOffset;
      dw.failedBios++;
      dw.f.failedBios++;
      this.counters.eioBios++;
      this.say(`  ! EIO on a direct write bio of ${dw.f.name} [${at}, +${lenBytes})`);
      return true;
    }
    const hits = dataBioBlocks(data, this.files, { op: 'write', offsetBytes, lenBytes }, this.bs);
    if (typeof hits === 'string') this.note(hits);
    if (hits === undefined || typeof hits === 'string' || !this.eioNow()) return false;
    const hit = new Set<FileModel>();
    for (const h of hits.values()) {
      hit.add(h.f);
      this.failedRange(h.f, h.lblk * this.bs, (h.lblk + 1) * this.bs);
      for (const dw of this.dioWrites.values()) {
        if (dw.f === h.f && !dw.settled && h.lblk * this.bs >= dw.pos && h.lblk * this.bs < dw.pos + dw.data.length) dw.wbFailed.add(h.lblk);
      }
    }
    for (const f of hit) {
      f.unseenEio++;
      f.failedBios++;
    }
    this.counters.eioBios++;
    this.say(`  ! EIO on a writeback bio: ${[...hits.values()].map((h) => `${h.f.name}:${h.lblk}${h.unwritten ? 'u' : ''}`).join(' ')}`);
    return true;
  }

  /**
   * A read request whose blocks were all mapped to one file when a reading operation began. Not
   * the read of a block a direct write in flight covers (no read of a batch overlaps its writes):
   * that is a failed extending write zeroing the tail of the block holding EOF, and with that
   * double fault the tail keeps the failed data past EOF, as in the kernel; the model does not
   * follow it.
   */
  private readFails(offsetBytes: number, lenBytes: number): boolean {
    const bs = this.bs;
    if (offsetBytes % bs !== 0 || lenBytes % bs !== 0 || lenBytes === 0) return false;
    for (const ctx of this.readContexts) {
      const lblks: number[] = [];
      for (let b = offsetBytes / bs; b < (offsetBytes + lenBytes) / bs; b++) {
        const l = ctx.blocks.get(b);
        if (l === undefined) break;
        lblks.push(l);
      }
      if (lblks.length !== lenBytes / bs) continue;
      const written = (w: DioWrite): boolean => w.f === ctx.f && !w.settled && lblks.some((l) => l * bs >= w.pos && l * bs < w.pos + w.data.length);
      if ([...this.dioWrites.values()].some(written) || !this.eioNow()) return false;
      ctx.failed.push(...lblks);
      ctx.f.failedBios++;
      this.counters.eioBios++;
      this.say(`  ! EIO on a read bio of ${ctx.f.name} lblk ${lblks[0]}+${lblks.length}`);
      return true;
    }
    return false;
  }

  /** The bytes of a failed write are not known (the cache may show them, the disk does not). */
  private failedRange(f: FileModel, from: number, to: number): void {
    f.forget(from, to);
    this.failedRanges.push({ f, from, to });
  }

  // ---- io_end hooks -------------------------------------------------------------------------

  /**
   * A FAILED io_end is not converted (invariant 14): all its ranges stay unwritten and read as
   * zeros from disk, even the blocks of its bios that landed.
   */
  private onQueued(f: FileModel, io: IoEnd): void {
    if (!io.isFailed) return;
    this.say(`  ! FAILED io_end of ${f.name} ${rangesText(io.ranges)}: not converted`);
    if (f.failedBios === 0) this.note(`${f.name}: io_end FAILED but no bio of the file failed`);
    for (const r of io.ranges) this.failedRange(f, r.offset, r.offset + r.size);
  }

  /**
   * A conversion failed: only an injected ENOMEM is expected. The data landed but reads as zeros.
   * The io_end of an asynchronous direct write (the unsettled request covering the ranges whose
   * bios reached the device: the range lock lets no overlapping request start before it settles,
   * and the writeback a request starts on its range comes before its own bios) makes that
   * request fail with EIO; a writeback io_end makes the file's next fsync fail with EIO.
   */
  private onConvertFailed(f: FileModel, ranges: readonly IoRange[], e: unknown): void {
    if (!(this.faultsOn && isExt4Error(e) && e.code === 'ENOMEM')) this.note(`${f.name}: conversion of ${rangesText(ranges)} failed: ${errText(e)}`);
    f.failedConversions++;
    const covers = (w: DioWrite): boolean => ranges.every((r) => r.offset >= w.pos && r.offset + r.size <= w.pos + w.data.length);
    const dw = [...this.dioWrites.values()].find((w) => w.f === f && w.submitted && !w.settled && covers(w));
    if (dw !== undefined) {
      dw.conversionFailed = true;
      this.say(`  ! conversion of direct write ${f.name} ${rangesText(ranges)} failed`);
      return;
    }
    this.say(`  ! conversion of ${f.name} ${rangesText(ranges)} failed: EIO for fsync`);
    f.unseenEio++;
    for (const r of ranges) this.failedRange(f, r.offset, r.offset + r.size);
  }

  // ---- operations ---------------------------------------------------------------------------

  private async op(): Promise<void> {
    const f = this.files[this.p.below(this.files.length)]!;
    const k = this.p.below(100);
    if (k < 88) await this.settle(f);
    if (k < 22) return this.opWrite(f);
    if (k < 32) return this.opDirectWrite(f);
    if (k < 46) return this.opAio(f);
    if (k < 52) return this.opFallocate(f);
    if (k < 56) return this.opPunch(f);
    if (k < 62) return this.opTruncate(f);
    if (k < 72) return this.opFsync(f);
    if (k < 77) return this.opRead(f);
    if (k < 81) return this.opDirectRead(f);
    if (k < 84) return this.opWritepages(f);
    if (k < 88) return this.opQuiesce('quiesce');
    if (k < 94) return this.opYield();
    return this.opCommit();
  }

  /** After each operation: failed writes forgotten again (the op's own model update may have set them), sizes taken. */
  private endOp(): void {
    for (const r of this.failedRanges.splice(0)) r.f.forget(r.from, r.to);
    if (this.violation !== undefined) throw this.violation;
  }

  /**
   * Is `e` an error the call may return? ENOMEM needs fault injection, ENOSPC the filler file;
   * anything else must be in `allowed`. Returns its code; anything unexpected fails the seed.
   */
  private expected(e: unknown, allowed: readonly string[]): string {
    if (e instanceof Violation) throw e;
    if (isExt4Error(e)) {
      if (allowed.includes(e.code) || (e.code === 'ENOMEM' && this.faultsOn)) return e.code;
      if (e.code === 'ENOSPC' && this.cfg.freeBlocksLeft !== undefined) {
        this.counters.enospc++;
        return e.code;
      }
    }
    return this.fail(`unexpected error: ${errText(e)}`);
  }

  /** The engine's size of `f` must be `want` (a known outcome); the model takes it. */
  private checkSize(f: FileModel, want: number | undefined, what: string): void {
    const got = this.fd.sizeOf(f.info);
    if (want !== undefined && got !== want) this.fail(`${f.name}: size ${got} after ${what}, expected ${want}`);
    f.resize(got);
  }

  private randomBytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = 1 + this.p.below(255);
    return b;
  }

  /** Checks a read of `f` at `pos` against the model: known bytes, and no poison anywhere. */
  private checkRead(f: FileModel, pos: number, got: Uint8Array, what: string): void {
    const stale = findPoison(got, pos);
    if (stale >= 0) this.fail(`${f.name}: ${what} byte ${pos + stale} is poison (stale data exposed)`);
    const bad = f.firstMismatch(pos, got);
    if (bad >= 0) this.fail(`${f.name}: ${what} byte ${pos + bad} is 0x${got[bad]!.toString(16)}, model 0x${f.cur[pos + bad]!.toString(16)}`);
  }

  /** The extents of `f` (under its tree lock). */
  private extents(f: FileModel): Promise<ExtentRec[]> {
    const d = this.fd;
    return d.withTreeLock(f.info, () => d.extentTree(f.info).extents());
  }

  private async blocksBefore(f: FileModel): Promise<BlocksBefore> {
    const exts = await this.quietly(() => this.extents(f));
    const cached = new Set<number>();
    const d = this.fd;
    if (d.has(f.info.ino)) {
      for (const page of d.mappingOf(f.info).pagesInOrder()) {
        for (const bh of page.buffers) if (BH.testDirty(bh) || BH.testDelay(bh) || BH.testAsyncWrite(bh)) cached.add(bh.lblk);
      }
    }
    return { exts, cached };
  }

  /** Starts watching the read bios of `f` for EIO injection (only when the seed injects EIO). */
  private async readContext(f: FileModel): Promise<ReadContext | undefined> {
    if (this.cfg.eioRate === 0) return undefined;
    const blocks = new Map<number, number>();
    for (const e of await this.quietly(() => this.extents(f))) for (let i = 0; i < e.len; i++) blocks.set(e.pblk + i, e.lblk + i);
    const ctx: ReadContext = { f, blocks, failed: [] };
    this.readContexts.push(ctx);
    return ctx;
  }

  private endReadContext(ctx: ReadContext | undefined): void {
    if (ctx === undefined) return;
    this.readContexts.splice(this.readContexts.indexOf(ctx), 1);
  }

  /** Runs a harness check with fault injection off. */
  private async quietly<T>(fn: () => Promise<T>): Promise<T> {
    this.quiet++;
    try {
      return await fn();
    } finally {
      this.quiet--;
    }
  }

  private async opWrite(f: FileModel): Promise<void> {
    const bs = this.bs;
    const pos = this.p.below(f.size + 3 * bs + 1);
    const len = 1 + this.p.below(this.p.chance(0.2) ? 200_000 : 12_000);
    const bytes = this.randomBytes(len);
    this.say(`${f.name} write [${pos}, +${len}) size ${f.size}`);
    // Touched before the call: a power cut inside it may keep part of it.
    f.touch(pos, pos + len);
    const ctx = await this.readContext(f);
    const d = this.fd;
    try {
      const n = await this.exclusive(() => d.withInodeLock(f.info, () => d.write(f.info, pos, bytes)));
      if (n !== len) this.fail(`${f.name}: write returned ${n}, expected ${len}`);
      f.set(pos, bytes);
      this.checkSize(f, Math.max(f.size, pos + len), 'write');
    } catch (e) {
      // Read-modify-write reads the edges: EIO only when one of those reads failed.
      const code = this.expected(e, ctx !== undefined && ctx.failed.length > 0 ? ['EIO'] : []);
      this.say(`  -> ${code}`);
      if (code === 'ENOSPC') this.checkSize(f, f.size, 'a write refused with ENOSPC');
      else {
        f.forget(pos, pos + len);
        this.checkSize(f, undefined, 'a failed write');
      }
    } finally {
      this.endReadContext(ctx);
    }
  }

  /** A block-aligned range of `f` for direct I/O, drawn from what the file holds (holes, unwritten, written, past EOF). */
  private dioRange(f: FileModel, exts: readonly ExtentRec[]): { pos: number; len: number } {
    const bs = this.bs;
    const eofBlk = Math.ceil(f.size / bs);
    const kind = this.p.below(4);
    let blk: number;
    const unwritten = exts.filter((e) => e.unwritten);
    const written = exts.filter((e) => !e.unwritten);
    if (kind === 1 && unwritten.length > 0) {
      const e = unwritten[this.p.below(unwritten.length)]!;
      blk = e.lblk + this.p.below(e.len);
    } else if (kind === 2 && written.length > 0) {
      const e = written[this.p.below(written.length)]!;
      blk = e.lblk + this.p.below(e.len);
    } else if (kind === 3 || eofBlk === 0) {
      blk = eofBlk + this.p.below(4);
    } else {
      // Anywhere inside the file: a hole unless an extent is there.
      blk = this.p.below(eofBlk);
    }
    return { pos: blk * bs, len: (1 + this.p.below(this.p.chance(0.2) ? 64 : 8)) * bs };
  }

  private async opDirectWrite(f: FileModel): Promise<void> {
    const blocks = await this.blocksBefore(f);
    const { pos, len } = this.dioRange(f, blocks.exts);
    const bytes = this.randomBytes(len);
    this.say(`${f.name} direct write [${pos}, +${len}) size ${f.size}`);
    f.touch(pos, pos + len);
    const before = f.snapshot(pos, pos + len);
    const dw = this.trackDioWrite(f, pos, bytes);
    let out: DioOutcome;
    try {
      out = { n: await this.dio.write(f.info, pos, bytes) };
    } catch (e) {
      out = { error: e };
    }
    dw.settled = true;
    this.dioWrites.delete(bytes.buffer);
    const oldSize = f.size;
    const n = this.applyDirectWrite(dw, out);
    this.checkSize(f, n > 0 ? Math.max(oldSize, pos + n) : oldSize, 'a direct write');
    if ('error' in out && n === 0) await this.checkFailedDirectWrite(dw, blocks, before, oldSize);
  }

  /** Registers a direct write so that its bios are recognised at the device. */
  private trackDioWrite(f: FileModel, pos: number, data: Uint8Array): DioWrite {
    const dw: DioWrite = { f, pos, data, failedBios: 0, conversionFailed: false, submitted: false, wbFailed: new Set(), settled: false, cancelled: false };
    this.dioWrites.set(data.buffer, dw);
    return dw;
  }

  /**
   * The model after a direct write settled, and the checks of its outcome: EIO exactly when one
   * of its bios or its conversion failed; a short count only with a cause (ENOSPC, ENOMEM).
   * Returns the bytes written (0 when it failed).
   */
  private applyDirectWrite(dw: DioWrite, out: DioOutcome): number {
    const { f, pos, data } = dw;
    const len = data.length;
    const mustEio = dw.failedBios > 0 || dw.conversionFailed;
    if ('n' in out) {
      const n = out.n;
      if (mustEio) this.fail(`${f.name}: direct write [${pos}, +${len}) returned ${n} although ${dw.failedBios > 0 ? 'a bio' : 'its conversion'} failed (EIO lost)`);
      if (n <= 0 || n > len || n % this.bs !== 0) this.fail(`${f.name}: direct write [${pos}, +${len}) returned ${n}`);
      if (n < len) {
        if (!this.faultsOn && this.cfg.freeBlocksLeft === undefined) this.fail(`${f.name}: direct write [${pos}, +${len}) short (${n}) with no cause`);
        // Without injected ENOMEM the cause can only be ENOSPC (S1: partial progress).
        if (!this.faultsOn) this.counters.enospc++;
        this.say(`  -> short: ${n}`);
      }
      // A short count wrote exactly its prefix; the rest is as it was (S1).
      f.set(pos, data.subarray(0, n));
      return n;
    }
    const allowed = mustEio ? ['EIO'] : dw.cancelled ? ['ECANCELED'] : [];
    const code = this.expected(out.error, allowed);
    this.say(`  -> ${code}`);
    if (mustEio && code !== 'EIO') this.fail(`${f.name}: direct write [${pos}, +${len}) failed with ${code}, not EIO, after a failed bio or conversion`);
    if (dw.cancelled && code !== 'ECANCELED') this.fail(`${f.name}: direct write [${pos}, +${len}) was cancelled but failed with ${code}`);
    // Nothing was written when nothing was submitted (ENOSPC, ECANCELED); EIO and ENOMEM may
    // leave written blocks with the new data.
    if (code === 'EIO' || code === 'ENOMEM') f.forget(pos, pos + len);
    return 0;
  }

  /**
   * A direct write failed: nothing of it was converted (invariant 14), so each byte reads as it
   * was; or zero where the disk held no written data (a hole, an unwritten extent, cached data
   * whose writeback failed too) or past the size the file had before (a failed extending write
   * leaves nothing there); or the new byte where the block was written before the request's bios
   * went out (on disk, or by the writeback the request started first) and its bio landed. A block
   * whose cached data failed to write back meanwhile may hold anything older. Never poison. Read
   * directly (the disk, not the cache), faults off.
   */
  private async checkFailedDirectWrite(dw: DioWrite, blocks: BlocksBefore, before: { cur: Uint8Array; known: Uint8Array }, sizeBefore: number): Promise<void> {
    const { f, pos, data } = dw;
    const bs = this.bs;
    const end = Math.min(pos + data.length, Math.floor(f.size / bs) * bs);
    if (end <= pos || this.image !== undefined) return;
    const got = new Uint8Array(end - pos);
    await this.quietly(() => this.dio.read(f.info, pos, got));
    const stale = findPoison(got, pos);
    if (stale >= 0) this.fail(`${f.name}: failed direct write [${pos}, +${data.length}): byte ${pos + stale} reads poison`);
    const onDisk = (lblk: number): boolean => blocks.exts.some((e) => !e.unwritten && lblk >= e.lblk && lblk < e.lblk + e.len);
    for (let i = 0; i < got.length; i++) {
      const lblk = Math.floor((pos + i) / bs);
      const v = got[i]!;
      if (dw.wbFailed.has(lblk) || before.known[i] !== 1 || v === before.cur[i]) continue;
      if (v === 0 && (!onDisk(lblk) || pos + i >= sizeBefore)) continue;
      if (v === data[i] && (onDisk(lblk) || blocks.cached.has(lblk))) continue;
      this.fail(`${f.name}: failed direct write [${pos}, +${data.length}): byte ${pos + i} (lblk ${lblk}, ${onDisk(lblk) ? 'written' : blocks.cached.has(lblk) ? 'cached' : 'not written'} before) ` +
        `is 0x${v.toString(16)}: neither its old value 0x${before.cur[i]!.toString(16)}, nor zero where nothing was written, nor the new value where a block was`);
    }
  }

  /**
   * Asynchronous direct I/O: several requests of one AioContext in flight together, writes into
   * holes, unwritten and written blocks and past EOF (some overlapping, run in submission order
   * by the range lock; some cancelled while they wait), and reads of ranges no write touches.
   * Half the batches stay in flight while the next operations work on other files.
   */
  private async opAio(f: FileModel): Promise<void> {
    const bs = this.bs;
    const blocks = await this.blocksBefore(f);
    const n = this.p.between(2, 8);
    const writes: { pos: number; len: number }[] = [];
    const iocbs: { op: 'read' | 'write'; pos: number; buf: Uint8Array }[] = [];
    for (let i = 0; i < n; i++) {
      if (this.p.chance(0.2) && f.size >= bs) {
        const r = this.aioReadRange(f, writes, iocbs);
        if (r !== undefined) iocbs.push({ op: 'read', pos: r.pos, buf: new Uint8Array(r.len) });
        continue;
      }
      const prev = writes[this.p.below(Math.max(1, writes.length))];
      const w = prev !== undefined && this.p.chance(0.2) ? { ...prev } : this.dioRange(f, blocks.exts);
      if (iocbs.some((c) => c.op === 'read' && c.pos < w.pos + w.len && w.pos < c.pos + c.buf.length)) continue;
      writes.push(w);
      iocbs.push({ op: 'write', pos: w.pos, buf: this.randomBytes(w.len) });
    }
    if (iocbs.length === 0) return this.opYield();
    const depth = this.p.chance(0.15) ? this.p.between(1, iocbs.length) : iocbs.length;
    this.say(`${f.name} aio depth ${depth}: ${iocbs.map((c) => `${c.op} [${c.pos}, +${c.buf.length})`).join(', ')} size ${f.size}`);
    for (const c of iocbs) if (c.op === 'write') f.touch(c.pos, c.pos + c.buf.length);
    const ctx = await this.readContext(f);
    const aio = new AioContext(this.dio, f.info, { depth });
    const before = iocbs.map((c) => f.snapshot(c.pos, c.pos + c.buf.length));
    const tracked = iocbs.map((c) => (c.op === 'write' ? this.trackDioWrite(f, c.pos, c.buf) : undefined));
    const reqs = aio.submit(iocbs);
    this.counters.asyncRequests += reqs.length;
    // A later request overlapping an earlier one waits for it: it may be cancelled meanwhile.
    reqs.forEach((r, i) => {
      const dw = tracked[i];
      const overlapped = iocbs.slice(0, i).some((c) => c.pos < r.iocb.pos + r.iocb.buf.length && r.iocb.pos < c.pos + c.buf.length);
      if (dw !== undefined && overlapped && this.p.chance(0.25) && r.cancel()) dw.cancelled = true;
    });
    const outcomes = reqs.map((r, i) => r.done.then(
      (ev): DioOutcome => ({ n: ev.res }),
      (e: unknown): DioOutcome => ({ error: e }),
    ).finally(() => {
      const dw = tracked[i];
      if (dw !== undefined) dw.settled = true;
    }));
    const oldSize = f.size;
    const batch = Promise.all(outcomes).then(async (outs) => {
      await aio.destroy();
      for (const dw of tracked) if (dw !== undefined) this.dioWrites.delete(dw.data.buffer);
      await this.applyAio(f, reqs, outs, tracked, before, blocks, oldSize, ctx);
    }).finally(() => this.endReadContext(ctx));
    // Requests the queue had no room for never ran.
    for (const dw of tracked.slice(reqs.length)) if (dw !== undefined) this.dioWrites.delete(dw.data.buffer);
    // Settled (and its violations thrown) by the next operation on f; no unhandled rejection meanwhile.
    batch.catch(() => {});
    f.batch = batch;
    if (this.p.chance(0.5)) {
      this.say('  (left in flight)');
      return;
    }
    await this.settle(f);
  }

  /** A read range of whole blocks inside the file that overlaps no write of the batch. */
  private aioReadRange(f: FileModel, writes: readonly { pos: number; len: number }[], iocbs: readonly { pos: number; buf: Uint8Array }[]): { pos: number; len: number } | undefined {
    const bs = this.bs;
    const blocks = Math.floor(f.size / bs);
    for (let tries = 0; tries < 4 && blocks > 0; tries++) {
      const b = this.p.below(blocks);
      const len = Math.min(blocks - b, 1 + this.p.below(8)) * bs;
      const pos = b * bs;
      const free = (r: { pos: number; len: number }): boolean => r.pos + r.len <= pos || pos + len <= r.pos;
      if (writes.every(free) && iocbs.every((c) => free({ pos: c.pos, len: c.buf.length }))) return { pos, len };
    }
    return undefined;
  }

  /** Waits for the asynchronous requests in flight on `f` and applies them to the model. */
  private async settle(f: FileModel): Promise<void> {
    const b = f.batch;
    if (b === undefined) return;
    f.batch = undefined;
    await b;
  }

  private async settleAll(): Promise<void> {
    for (const f of this.files) await this.settle(f);
  }

  /**
   * Applies a settled batch in submission order (overlapping requests ran in that order): writes
   * as applyDirectWrite says, reads checked against the model; then the failed writes that no
   * other request of the batch overlaps are read back (checkFailedDirectWrite).
   */
  private async applyAio(f: FileModel, reqs: readonly AioRequest[], outs: readonly DioOutcome[], tracked: readonly (DioWrite | undefined)[],
    before: readonly { cur: Uint8Array; known: Uint8Array }[], blocks: BlocksBefore, oldSize: number, ctx: ReadContext | undefined): Promise<void> {
    const bs = this.bs;
    let size = oldSize;
    const failed: number[] = [];
    for (const [i, r] of reqs.entries()) {
      const out = outs[i]!;
      const dw = tracked[i];
      const { pos, buf } = r.iocb;
      if (dw !== undefined) {
        const n = this.applyDirectWrite(dw, out);
        size = Math.max(size, n > 0 ? pos + n : 0);
        if ('error' in out && n === 0) failed.push(i);
        continue;
      }
      const readFailed = ctx !== undefined && ctx.failed.some((l) => l >= pos / bs && l < (pos + buf.length) / bs);
      if ('error' in out) {
        const code = this.expected(out.error, readFailed ? ['EIO'] : []);
        this.say(`  -> read [${pos}, +${buf.length}) ${code}`);
        continue;
      }
      if (readFailed) this.fail(`${f.name}: aio read [${pos}, +${buf.length}) returned ${out.n} although one of its bios failed (EIO lost)`);
      this.checkDirectRead(f, pos, buf, out.n, buf.length, 'aio read');
    }
    this.checkSize(f, size, 'an aio batch');
    for (const i of failed) {
      const r = reqs[i]!;
      const alone = reqs.every((o, j) => j === i || o.iocb.op === 'read' || o.iocb.pos >= r.iocb.pos + r.iocb.buf.length || r.iocb.pos >= o.iocb.pos + o.iocb.buf.length);
      if (alone) await this.checkFailedDirectWrite(tracked[i]!, blocks, before[i]!, oldSize);
    }
  }

  private async opFallocate(f: FileModel): Promise<void> {
    const pos = this.p.below(f.size + 1);
    const len = 1 + this.p.below(100_000);
    const kinds: [string, FallocateMode][] = [['', {}], [' keep', { keepSize: true }], [' zero', { zeroRange: true }], [' zero keep', { zeroRange: true, keepSize: true }]];
    const [name, mode] = kinds[this.p.below(kinds.length)]!;
    const end = pos + len;
    const newSize = mode.keepSize === true ? f.size : Math.max(f.size, end);
    this.say(`${f.name} fallocate${name} [${pos}, +${len}) size ${f.size}`);
    const zero = mode.zeroRange === true;
    f.touch(zero ? pos : f.size, zero ? Math.min(end, newSize) : newSize);
    const d = this.fd;
    try {
      await this.exclusive(() => d.withInodeLock(f.info, () => d.fallocate(f.info, pos, len, mode)));
      if (zero) f.zero(pos, Math.min(end, newSize));
      this.checkSize(f, newSize, 'fallocate');
    } catch (e) {
      this.say(`  -> ${this.expected(e, [])}`);
      // Preallocation never changes data; a zero range may have happened in part.
      if (zero) f.forget(pos, end);
      this.checkSize(f, undefined, 'a failed fallocate');
    }
  }

  private async opPunch(f: FileModel): Promise<void> {
    if (f.size === 0) return this.opYield();
    const pos = this.p.below(f.size);
    const len = 1 + this.p.below(f.size - pos);
    this.say(`${f.name} punch [${pos}, +${len})`);
    f.touch(pos, pos + len);
    const d = this.fd;
    try {
      await this.exclusive(() => d.withInodeLock(f.info, () => d.fallocate(f.info, pos, len, { punchHole: true, keepSize: true })));
      f.zero(pos, pos + len);
    } catch (e) {
      this.say(`  -> ${this.expected(e, [])}`);
      f.forget(pos, pos + len);
    }
    this.checkSize(f, f.size, 'punch');
  }

  private async opTruncate(f: FileModel): Promise<void> {
    const size = this.p.below(f.size + 50_000);
    this.say(`${f.name} truncate ${f.size} -> ${size}`);
    f.touch(Math.min(size, f.size), Math.max(size, f.size));
    const d = this.fd;
    try {
      await this.exclusive(() => d.withInodeLock(f.info, () => d.truncate(f.info, size, (i, sz) => this.ns.truncateInode(i, sz))));
      this.checkSize(f, size, 'truncate');
    } catch (e) {
      this.say(`  -> ${this.expected(e, [])}`);
      f.forget(Math.min(size, f.size), Math.max(size, f.size));
      this.checkSize(f, undefined, 'a failed truncate');
    }
  }

  /**
   * fsync: EIO exactly when a write error of the file is unseen (once per error: errseq), success
   * otherwise; a success that returned before the power cut makes every known byte durable.
   */
  private async opFsync(f: FileModel): Promise<void> {
    this.say(`${f.name} fsync (unseen write errors: ${f.unseenEio})`);
    await this.fsyncExpect(f);
  }

  /** fsync of `f`, checked; false when it failed with an injected ENOMEM. */
  private async fsyncExpect(f: FileModel): Promise<boolean> {
    const d = this.fd;
    let got: string | undefined;
    try {
      await this.exclusive(() => d.withInodeLock(f.info, () => d.fsync(f.info, f.cursor)));
    } catch (e) {
      got = this.expected(e, ['EIO']);
    }
    if (got === 'ENOMEM' || got === 'ENOSPC') {
      this.say(`  -> ${got}`);
      return false;
    }
    if (got === 'EIO' && f.unseenEio === 0) this.fail(`${f.name}: fsync failed with EIO but no write of the file failed since it last reported one (invariant 14: once)`);
    if (got === undefined && f.unseenEio > 0) this.fail(`${f.name}: fsync succeeded but ${f.unseenEio} write error(s) of the file were never reported (EIO lost)`);
    if (got === 'EIO') this.say('  -> EIO');
    f.unseenEio = 0;
    // Only an fsync that returned before the power cut counts.
    if (got === undefined && this.image === undefined) f.fsynced();
    return true;
  }

  private async opRead(f: FileModel): Promise<void> {
    const pos = this.p.below(f.size + this.cfg.pageSize + 1);
    const len = 1 + this.p.below(2 * this.cfg.pageSize);
    this.say(`${f.name} read [${pos}, +${len}) size ${f.size}`);
    const ctx = await this.readContext(f);
    const d = this.fd;
    try {
      const got = await this.exclusive(() => d.read(f.info, pos, len));
      const want = Math.max(0, Math.min(len, f.size - pos));
      if (got.length !== want) this.fail(`${f.name}: read [${pos}, +${len}) returned ${got.length} bytes, expected ${want}`);
      // A failed readahead bio may be retried: the data must be right all the same.
      this.checkRead(f, pos, got, 'read');
    } catch (e) {
      this.say(`  -> ${this.expected(e, ctx !== undefined && ctx.failed.length > 0 ? ['EIO'] : [])}`);
    } finally {
      this.endReadContext(ctx);
    }
  }

  private async opDirectRead(f: FileModel): Promise<void> {
    const bs = this.bs;
    const pos = this.p.below(Math.ceil(f.size / bs) + 2) * bs;
    const len = (1 + this.p.below(16)) * bs;
    this.say(`${f.name} direct read [${pos}, +${len}) size ${f.size}`);
    const ctx = await this.readContext(f);
    const buf = new Uint8Array(len);
    try {
      const n = await this.dio.read(f.info, pos, buf);
      if (ctx !== undefined && ctx.failed.length > 0) this.fail(`${f.name}: direct read [${pos}, +${len}) returned ${n} although one of its bios failed (EIO lost)`);
      this.checkDirectRead(f, pos, buf, n, Math.max(0, Math.min(len, f.size - pos)), 'direct read');
    } catch (e) {
      this.say(`  -> ${this.expected(e, ctx !== undefined && ctx.failed.length > 0 ? ['EIO'] : [])}`);
    } finally {
      this.endReadContext(ctx);
    }
  }

  /**
   * A direct read of `buf.length` bytes at `pos` returned `n`: `want` bytes, or fewer after an
   * injected ENOMEM (partial progress: a prefix of whole blocks); zeros past the count.
   */
  private checkDirectRead(f: FileModel, pos: number, buf: Uint8Array, n: number, want: number, what: string): void {
    const short = n < want && n > 0 && n % this.bs === 0 && this.faultsOn;
    if (n !== want && !short) this.fail(`${f.name}: ${what} [${pos}, +${buf.length}) returned ${n}, expected ${want}`);
    if (buf.subarray(n).some((v) => v !== 0)) this.fail(`${f.name}: ${what} [${pos}, +${buf.length}) left non-zero bytes past its count ${n}`);
    this.checkRead(f, pos, buf.subarray(0, n), what);
  }

  private async opWritepages(f: FileModel): Promise<void> {
    this.say(`${f.name} writepages`);
    const d = this.fd;
    try {
      await this.exclusive(() => d.writepages(f.info));
    } catch (e) {
      this.say(`  -> ${this.expected(e, [])}`);
    }
  }

  private async opCommit(): Promise<void> {
    this.say('commit');
    await this.exclusive(() => this.s.commit());
  }

  /** Lets the queue run a few items (completions, conversions) before the next operation. */
  private async opYield(): Promise<void> {
    const n = this.p.between(1, 40);
    this.say(`yield ${n}`);
    // Only while something is queued: with an empty pool the queue would report a stall.
    for (let i = 0; i < n && this.wq.pending > 0; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /**
   * Everything settled and written back (flushAll), then the quiescent checks (property 3) and
   * every file read back through the cache. Skipped when flushAll fails with an injected ENOMEM.
   */
  private async opQuiesce(where: string): Promise<void> {
    this.say(where);
    await this.settleAll();
    const d = this.fd;
    try {
      await this.exclusive(() => d.flushAll());
    } catch (e) {
      this.say(`  -> ${this.expected(e, [])}: not quiescent`);
      return;
    }
    await this.dio.drain();
    const engine = quiescenceViolation(d, this.sim, this.files, where) ?? this.audit?.violation(where);
    if (engine !== undefined) this.fail(engine);
    if (this.dio.inFlight() !== 0) this.fail(`${where}: ${this.dio.inFlight()} direct request(s) in flight`);
    for (const f of this.files) {
      if (!d.has(f.info.ino)) continue;
      if (!(await this.dioIdle(f))) this.fail(`${where}: ${f.name} i_dio_count not back to 0 (invariant 15)`);
      const got = await this.quietly(() => this.exclusive(() => d.read(f.info, 0, f.size)));
      if (got.length !== f.size) this.fail(`${where}: ${f.name} reads ${got.length} bytes, size ${f.size}`);
      this.checkRead(f, 0, got, `${where}: whole-file read`);
    }
  }

  /**
   * True when i_dio_count of `f` is 0: inode_dio_wait's promise is then already resolved, so its
   * callback runs within two microtask turns (no macrotask: with nothing queued the simulator
   * would report a stall).
   */
  private async dioIdle(f: FileModel): Promise<boolean> {
    let idle = false;
    void this.fd.dioWait(f.info).then(() => {
      idle = true;
    });
    await Promise.resolve();
    await Promise.resolve();
    return idle;
  }

  /**
   * The end of a run without a power cut: faults off, everything settled and flushed, the
   * quiescent checks, each file's unseen error reported by one fsync and no more by a second;
   * then a clean unmount or a power cut after the run (as the seed says).
   */
  private async finalPhase(): Promise<void> {
    this.quiet++;
    await this.opQuiesce('final');
    for (const f of this.files) {
      this.say(`final fsync ${f.name} (unseen write errors: ${f.unseenEio})`);
      await this.fsyncExpect(f);
      await this.fsyncExpect(f);
    }
    this.endOp();
    if (this.image !== undefined) return;
    if (!this.cfg.cleanUnmount) {
      this.end = 'crash after the run';
      this.cutPower('after the run');
      return;
    }
    this.say('unmount');
    await this.dio.drain();
    await this.exclusive(() => this.fd.flushAll());
    await this.s.close();
    if (this.image === undefined) {
      this.end = 'unmount';
      this.image = this.sim.durableImage();
    }
  }

  private countEngine(): void {
    if (this.end === 'crash') this.counters.crashes++;
    if (this.data !== undefined) this.counters.conversions += this.data.stats.conversions + this.dio.stats.conversions;
    if (this.data !== undefined) this.counters.asyncUnwritten += this.dio.stats.unwrittenAsync;
  }

  // ---- after the power cut ------------------------------------------------------------------

  /**
   * The image after the power cut: e2fsck -fy repairs it (a clean unmount needs no repair), then
   * e2fsck -fn must find it clean; every file is read back: nothing stale, nothing fsynced lost.
   */
  private async checkImage(): Promise<void> {
    const img = this.image;
    if (img === undefined) throw new Violation(this.opIndex, 'no image after the run');
    const path = join(imageDir(), `crash-${process.pid}-${this.seed}.img`);
    writeFileSync(path, img);
    try {
      const debug = process.env['CRASH_DEBUG'] !== undefined;
      if (this.end !== 'unmount') {
        const fix = spawnSync('e2fsck', ['-fy', path], { encoding: 'utf8' });
        if (debug) process.stderr.write(`seed ${this.seed}: e2fsck -fy (exit ${fix.status}):\n${fix.stdout}\n`);
        if (fix.status === null || fix.status >= 4) throw new Violation(this.opIndex, `e2fsck -fy exit ${fix.status}:\n${fix.stdout}${fix.stderr}`);
      }
      const check = spawnSync('e2fsck', ['-fn', path], { encoding: 'utf8' });
      if (check.status !== 0) {
        throw new Violation(this.opIndex, `e2fsck -fn ${this.end === 'unmount' ? 'after a clean unmount' : 'after repair'} exit ${check.status}:\n${check.stdout}${check.stderr}`);
      }
      await this.readBack(path);
    } finally {
      rmSync(path, { force: true });
    }
  }

  private async readBack(path: string): Promise<void> {
    if (!this.committed) return;
    const fs = await Ext4.open(path);
    try {
      for (const f of this.files) {
        // The files were committed before the first operation: they must exist.
        const got = await fs.readFile(`/${f.name}`);
        const stale = findPoison(got);
        if (stale >= 0) throw new Violation(this.opIndex, `${f.name}: byte ${stale} is poison after the crash (stale data exposed)`);
        for (let b = 0; b < f.claim.length; b++) {
          if (f.claim[b] !== 1) continue;
          this.counters.claimedBytes++;
          if (b >= got.length || got[b] !== f.synced[b]) {
            throw new Violation(this.opIndex, `${f.name}: fsynced byte ${b} lost (size ${got.length}, got ${got[b]}, want ${f.synced[b]})`);
          }
        }
      }
    } finally {
      await fs.close();
    }
  }
}

/**
 * Runs one seed: returns what it exercised, or throws a CrashSeedError naming the seed, the
 * command that replays it and the last operations.
 */
export async function runCrashSeed(seed: number): Promise<CrashSeedSummary> {
  return new CrashSim(seed).run();
}

// ---------------------------------------------------------------------------------------------
// Command line (used by `npm run sim -- --crash` to run seed ranges in child processes)
// ---------------------------------------------------------------------------------------------

/**
 * `node dist/tests/sim/crash-sim.js --first S --count N [--stride K]`: runs seeds S, S+K, …
 * (N of them) and prints, one per line: `FAIL <seed>` followed by the report and `END`;
 * `PROGRESS <done>` every 100 seeds; `EXERCISED <crashes> <EIO bios> <ENOMEM hits> <ENOSPC>
 * <async requests> <async unwritten> <conversions> <fsynced bytes checked>`; and last
 * `DONE <run> <failed> <seconds>`.
 */
async function main(argv: string[]): Promise<void> {
  const num = (name: string, dflt: number): number => {
    const i = argv.indexOf(name);
    const v = i >= 0 ? Number(argv[i + 1]) : dflt;
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name} must be a non-negative integer`);
    return v;
  };
  const first = num('--first', 1);
  const count = num('--count', 1);
  const stride = Math.max(1, num('--stride', 1));
  const t0 = performance.now();
  let failed = 0;
  const sum: CrashCounters = { crashes: 0, eioBios: 0, enomemHits: 0, enospc: 0, asyncRequests: 0, asyncUnwritten: 0, conversions: 0, claimedBytes: 0 };
  for (let k = 0; k < count; k++) {
    const seed = first + k * stride;
    try {
      const r = await runCrashSeed(seed);
      for (const key of Object.keys(sum) as (keyof CrashCounters)[]) sum[key] += r.counters[key];
    } catch (e) {
      failed++;
      process.stdout.write(`FAIL ${seed}\n${e instanceof CrashSeedError ? e.message : `crash-sim seed ${seed}: ${errText(e)}\n  replay: ${replayCommand(seed)}`}\nEND\n`);
    }
    if ((k + 1) % 100 === 0) process.stdout.write(`PROGRESS ${k + 1}\n`);
  }
  process.stdout.write(`EXERCISED ${Object.values(sum).join(' ')}\n`);
  process.stdout.write(`DONE ${count} ${failed} ${((performance.now() - t0) / 1000).toFixed(1)}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main(process.argv.slice(2));
}
