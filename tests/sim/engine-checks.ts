/**
 * Engine-side checks shared by the seeded simulators (data-sim.ts, crash-sim.ts): what holds at a
 * quiescent point whatever the workload was, the io_end accounting seen through hooks on each
 * file's InodeIo, and the mapping of a device write back to the page-cache buffers it carries.
 * Each reports a violation as a message; the simulator decides how to fail with its seed.
 */
import type { SimDevice, SimRequest } from '../../src/blockdev/sim-device.js';
import { BH } from '../../src/cache/buffer-head.js';
import { PG } from '../../src/cache/page.js';
import type { InodeInfo } from '../../src/fs/inode/inode.js';
import type { FileData } from '../../src/io/file-data.js';
import type { InodeIo, IoEnd, IoRange } from '../../src/io/io-end.js';
import { seededPrng, type Prng } from '../../src/runtime/random.js';
import { SimWorkQueue } from '../../src/runtime/work-queue.js';

/**
 * The seeded streams of one simulator run besides its workload's: fault decisions and
 * completion order, derived from the seed the same way in every simulator so a seed replays.
 */
export function seedStreams(seed: number, jitterTicks: number): { faultPrng: Prng; wq: SimWorkQueue } {
  return { faultPrng: seededPrng(seed * 31 + 7), wq: new SimWorkQueue(seed * 7 + 3, { jitterTicks }) };
}

/** A file the checks look at. */
export interface CheckedFile {
  readonly name: string;
  readonly info: InodeInfo;
}

/** The error as text for a report: name, message and the first frames of its stack. */
export function errText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}${e.stack !== undefined ? `\n${e.stack.split('\n').slice(1, 6).join('\n')}` : ''}` : String(e);
}

export function rangesText(ranges: readonly IoRange[]): string {
  return ranges.map((r) => `[${r.offset}, +${r.size})`).join(' ');
}

/** A file at a quiescent point: how far to scan its pages, and whether a conversion error is expected. */
export interface QuiescentFile extends CheckedFile {
  /** Largest byte offset ever touched, which bounds the page scan. */
  readonly maxEnd: number;
  /** Conversions of this file that failed on purpose (an injected ENOMEM). */
  readonly failedConversions: number;
}

/**
 * The invariants that hold once everything was written back and every completion ran, whatever
 * the data: nothing in flight on the device; every InodeIo idle with ioendCount 0 and unwritten 0
 * (invariants 5, 6); no page tagged or flagged dirty, writeback or locked (18, 19, S7); no buffer
 * AsyncWrite, Dirty or Delay; no cached page outside the file's range; no reservation left.
 * Returns the first violation, or undefined.
 */
export function quiescenceViolation(data: FileData, dev: SimDevice, files: readonly QuiescentFile[], where: string): string | undefined {
  if (dev.inFlightCount !== 0) return `${where}: ${dev.inFlightCount} device request(s) in flight after flushAll`;
  const ps = data.pageSizeBytes;
  for (const f of files) {
    if (!data.has(f.info.ino)) continue;
    const io = data.inodeIo(f.info);
    if (!io.isIdle() || io.ioendCount !== 0 || io.unwritten !== 0 || io.completed.length !== 0) {
      return `${where}: ${f.name} InodeIo not idle: ioendCount ${io.ioendCount}, unwritten ${io.unwritten}, queued ${io.completed.length} (invariants 5, 6)`;
    }
    if (io.conversionError !== undefined && f.failedConversions === 0) return `${where}: ${f.name} conversion failed: ${errText(io.conversionError)}`;
    const m = data.mappingOf(f.info);
    if (m.findTagged('writeback').length > 0) return `${where}: ${f.name} pages tagged writeback after flush (invariant 19, S7)`;
    if (m.dirtyPages().length > 0) return `${where}: ${f.name} pages tagged dirty after flush`;
    let seen = 0;
    for (let i = 0; i <= Math.ceil(f.maxEnd / ps) + 1; i++) {
      const page = m.findPage(i);
      if (page === undefined) continue;
      seen++;
      if (PG.testLocked(page) || PG.testWriteback(page) || PG.testDirty(page)) return `${where}: ${f.name} ${page.describe()} after flush (invariant 18)`;
      for (const bh of page.buffers) {
        if (BH.testAsyncWrite(bh) || BH.testDirty(bh) || BH.testDelay(bh)) return `${where}: ${f.name} ${bh.describe()} after flush`;
      }
    }
    if (seen !== m.nrPages) return `${where}: ${f.name} has ${m.nrPages} cached pages, ${seen} within the file's range`;
  }
  if (data.reservedBlocks !== 0) return `${where}: ${data.reservedBlocks} blocks still reserved with nothing dirty`;
  return undefined;
}

/** What a simulator learns from the io_end hooks (its model updates). */
export interface IoEndAuditEvents<F extends CheckedFile> {
  /**
   * An unwritten io_end of `f` went to the worker after its last bio (FAILED ones are not
   * converted). `convert` is the InodeIo's own conversion, unhooked.
   */
  queued?(f: F, io: IoEnd, convert: (ranges: readonly IoRange[]) => Promise<void>): void;
  /** The conversion of `ranges` of `f` failed with `e`: the data landed but reads as zeros. */
  convertFailed?(f: F, ranges: readonly IoRange[], e: unknown): void;
}

/**
 * Conversion accounting through hooks on each file's InodeIo (hook again whenever the cache may
 * have made a new one): addCompleted sees every unwritten io_end after its last bio, FAILED or
 * not; convert counts the conversions. At a quiescent point each queued io_end was converted
 * exactly once or, FAILED, never (invariants 8, 14).
 */
export class IoEndAudit<F extends CheckedFile> {
  /** Unwritten io_ends queued for the worker. */
  queued = 0;
  /** FAILED io_ends among them. */
  failedQueued = 0;
  /** Calls of InodeIo.convert. */
  convertCalls = 0;
  /** Ranges that went through convert successfully (a canary may add its own). */
  rangesConverted = 0;
  private readonly hooked = new WeakSet<InodeIo>();
  private readonly seen = new WeakSet<IoEnd>();
  private readonly unwrittenBase: number;
  private readonly conversionsBase: number;

  /**
   * `unwrittenMade` counts the io_ends made UNWRITTEN so far (default: the buffered path's; add
   * direct I/O's when it runs too).
   */
  constructor(private readonly data: FileData, private readonly events: IoEndAuditEvents<F>, private readonly note: (msg: string) => void,
    private readonly unwrittenMade: () => number = () => data.stats.unwrittenIoEnds) {
    this.unwrittenBase = unwrittenMade();
    this.conversionsBase = data.stats.conversions;
  }

  /** Hooks the InodeIo of `f` (creating the inode's cache state if absent). */
  hook(f: F): void {
    const io = this.data.inodeIo(f.info);
    if (this.hooked.has(io)) return;
    this.hooked.add(io);
    const addCompleted = io.addCompleted.bind(io);
    const convert = io.convert;
    io.addCompleted = (ioEnd: IoEnd): void => {
      if (this.seen.has(ioEnd)) this.note(`${f.name}: io_end queued for conversion twice (invariant 8)`);
      this.seen.add(ioEnd);
      this.queued++;
      if (ioEnd.isFailed) this.failedQueued++;
      this.events.queued?.(f, ioEnd, convert);
      addCompleted(ioEnd);
    };
    (io as unknown as { convert: (r: readonly IoRange[]) => Promise<void> }).convert = async (ranges) => {
      this.convertCalls++;
      this.rangesConverted += ranges.length;
      try {
        await convert(ranges);
      } catch (e) {
        this.rangesConverted -= ranges.length;
        this.events.convertFailed?.(f, ranges, e);
        throw e;
      }
    };
  }

  /** Hooks every file whose cache state exists (never creates it). */
  hookAll(files: readonly F[]): void {
    for (const f of files) if (this.data.has(f.info.ino)) this.hook(f);
  }

  /** The accounting at a quiescent point; the first violation, or undefined. */
  violation(where: string): string | undefined {
    const conversions = this.data.stats.conversions - this.conversionsBase;
    if (conversions !== this.rangesConverted) return `${where}: stats.conversions ${conversions} but ${this.rangesConverted} ranges went through convert`;
    if (this.convertCalls + this.failedQueued !== this.queued) {
      return `${where}: ${this.queued} unwritten io_ends queued, ${this.convertCalls} converted + ${this.failedQueued} FAILED (each converted once, FAILED never: invariants 8, 14)`;
    }
    const unwrittenIoEnds = this.unwrittenMade() - this.unwrittenBase;
    if (this.queued > unwrittenIoEnds) return `${where}: ${this.queued} io_ends queued but only ${unwrittenIoEnds} were UNWRITTEN`;
    return undefined;
  }
}

/** One block of a data bio: the page-cache buffer it writes. */
export interface DataBioBlock<F> {
  readonly f: F;
  readonly lblk: number;
  /** The buffer's bytes as submitted. */
  readonly data: Uint8Array;
  /** The buffer's extent was unwritten (its io_end converts it after the write). */
  readonly unwritten: boolean;
}

/**
 * The page-cache buffers a device write carries, found by their state: a data bio writes exactly
 * buffers under async write (seed 002), so every block of the request must be one. Returns
 * undefined for a write that carries none (metadata, direct I/O), the blocks by physical number
 * otherwise, or a violation message for a write mixing both (a data bio with foreign blocks, or
 * metadata written over data in flight) or a block under async write in two buffers.
 */
export function dataBioBlocks<F extends CheckedFile>(data: FileData, files: readonly F[], req: Pick<SimRequest, 'op' | 'offsetBytes' | 'lenBytes'>, bs: number): Map<number, DataBioBlock<F>> | string | undefined {
  if (req.op !== 'write' || req.offsetBytes % bs !== 0 || req.lenBytes % bs !== 0) return undefined;
  const first = req.offsetBytes / bs;
  const n = req.lenBytes / bs;
  const hits = new Map<number, DataBioBlock<F>>();
  for (const f of files) {
    if (!data.has(f.info.ino)) continue;
    for (const page of data.mappingOf(f.info).findTagged('writeback')) {
      for (const bh of page.buffers) {
        if (!BH.testAsyncWrite(bh) || !BH.testMapped(bh)) continue;
        const pb = bh.pblk as number;
        if (pb < first || pb >= first + n) continue;
        if (hits.has(pb)) return `block ${pb} is under async write in two buffers`;
        hits.set(pb, { f, lblk: bh.lblk, data: page.data.slice(bh.offsetInPage, bh.offsetInPage + bs), unwritten: BH.testUnwritten(bh) });
      }
    }
  }
  if (hits.size === 0) return undefined;
  if (hits.size !== n) {
    return `device write [block ${first}, +${n}) covers ${hits.size} block(s) under async write and ${n - hits.size} other(s): ` +
      'a data bio with foreign blocks, or metadata written over data in flight';
  }
  return hits;
}
