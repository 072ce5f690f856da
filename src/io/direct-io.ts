/**
 * Direct I/O (O_DIRECT) on extent-mapped files: fs/ext4/inode.c ext4_direct_IO/ext4_ext_direct_IO
 * after seed 003 (ext4_dio_get_block_overwrite, ext4_dio_get_block_unwritten_sync,
 * ext4_dio_get_block_unwritten_async, ext4_end_io_dio), the extending-write rules of
 * fs/ext4/file.c (ext4_dio_write_checks, ext4_handle_inode_extension) and the generic parts of
 * fs/direct-io.c that the kernel keeps outside ext4 (map, build bios from the caller's pages,
 * submit, dio_complete). IO-DESIGN.md §2.8 is the model.
 *
 * Requests bypass the page cache: offset, length and the buffer (its byteOffset, standing in for
 * the user address) must be multiples of the block size, else EINVAL, as on Linux. Cached pages
 * overlapping the range are written back and waited for (writeAndWaitRange) and, for writes,
 * dropped (invalidateRange) before the I/O, and clean ones dropped again after it. Bios take
 * their segments straight from the caller's buffer, cut at "user page" boundaries (one bio_vec
 * per page, like get_user_pages), and respect the device's maxRequestBytes and maxBioVecs.
 *
 * Write paths (the kernel's three get_block variants):
 * - overwrite: every block mapped, written and inside i_size. No allocation, no io_end; only the
 *   check runs under the inode lock (the tree lock for the lookups), the I/O runs unlocked, so
 *   overwrites of one file proceed in parallel.
 * - synchronous, not an overwrite: holes are allocated as unwritten extents (fallocated ones stay
 *   unwritten), the bios are submitted and awaited, then exactly [offset, offset + bytesDone) is
 *   converted (markWritten under the tree lock) when bytesDone > 0 and no bio failed. Nothing is
 *   converted on failure: EIO leaves the blocks unwritten (they read as zeros) and is returned to
 *   this write's caller, never recorded for fsync. No io_end (seed 003's sync get_block).
 * - asynchronous: the io_end is allocated lazily, when the mapping first returns an unwritten
 *   extent (`faults.hit('dio_io_end_alloc')`, IoEnd.init, setUnwritten), and is carried by the
 *   request, never by the inode (scenario S9: no inode-global pointer another DIO could clobber).
 *   Every bio holds one reference; ranges are added only after their segment joined a bio
 *   (invariant 11). Completion drops references with completeBio/putDefer, so the conversion runs
 *   in the work queue, never in a bio completion, and the request settles only after the io_end
 *   was released (its conversion done). A failed bio marks the io_end FAILED: nothing converted.
 * - extending (end beyond i_size, or append): synchronous under the inode lock whatever the caller
 *   asked. The inode goes on the orphan list first, the data lands, the range is converted, then
 *   i_size grows (setSize and the on-disk i_size), blocks this request allocated past the final
 *   size are freed, and the inode leaves the orphan list. A crash in between leaves the old size,
 *   and the orphan list frees the blocks past it at the next mount: never a larger size over stale
 *   blocks.
 *
 * Unaligned requests are refused, so Linux's unaligned-AIO rule (S16: zeroing partial blocks must
 * wait for conversions) has nothing to zero here; its aligned core is kept by the range lock below.
 * Conversions of different requests touching one unwritten extent at disjoint blocks need no wait:
 * each converts its own explicit ranges under the tree lock, never ranges derived from extents.
 *
 * Partial progress (S1, invariant 15): mapping stops at the first error (ENOSPC, ENOMEM from a
 * fault site); the mapped prefix is still submitted and a short count returned. No progress (S2):
 * nothing is submitted, the lazily allocated io_end (if any) is released once by the submitter's
 * putDefer (UNWRITTEN without ranges), i_dio_count goes back, the error is thrown.
 *
 * Locks, always taken in this order (a later one is never held while waiting for an earlier one):
 * block-range lock → `serialize` (the mount's metadata queue, WriteOps.run in the API) → inode
 * lock (withInodeLock) → tree lock (withTreeLock). The range lock (per inode, FIFO, readers share)
 * keeps overlapping requests from being in flight together: devices give no order between
 * overlapping requests (FileDevice) or refuse them (SimDevice), and it is S16's wait made narrow:
 * a write into unwritten blocks never starts while another request's conversion of those blocks is
 * pending, because that request holds its range until its conversion finished. Conversions of the
 * buffered path are waited for through the page cache (their pages stay under writeback until
 * converted, so writeAndWaitRange waits). dioBegin is taken under the inode lock and dioEnd comes
 * after the conversion, so truncate (which waits for i_dio_count under the inode lock) never frees
 * blocks under a request. After dioBegin a request needs only the tree lock and the work queue,
 * which is what keeps truncate's wait deadlock-free.
 *
 * Limits: one request moves at most MAX_RW_COUNT bytes (longer ones are short, as on Linux);
 * data allocation leaves DIO_RESERVE_BLOCKS free for extent-tree splits of later conversions and
 * never takes blocks reserved by delayed buffered writes.
 */
import type { Ext4Super } from '../fs/super.js';
import type { InodeInfo } from '../fs/inode/inode.js';
import { writeInode, addInodeBlocks } from '../fs/inode/inode.js';
import { touch } from '../fs/inode/inode-life.js';
import { orphanAdd, orphanDel } from '../fs/orphan.js';
import { ExtentTree, EXT_LBLK_LIMIT } from '../fs/extents/extent-tree.js';
import { mapExtentPoint } from '../fs/extents/extent-lookup.js';
import { getBalloc } from '../fs/alloc/balloc.js';
import { setInodeSizeBytes } from '../format/inode.js';
import { EXT_UNWRITTEN_MAX_LEN } from '../format/extent.js';
import { Bio, BioBuilder, type BioOp, type BioStatus } from '../blockdev/bio.js';
import { faults } from '../runtime/faults.js';
import { assert, Ext4Bug } from '../util/assert.js';
import { Ext4Error, PosixError, isExt4Error } from '../util/errors.js';
import { IoEnd, type IoRange } from './io-end.js';
import type { FileData } from './file-data.js';
import { Mutex } from '../runtime/mutex.js';

/** Most bytes one read or write moves (Linux MAX_RW_COUNT: INT_MAX rounded down to a page). */
export const MAX_RW_COUNT = 0x7fff_f000;
/** Free blocks a data allocation leaves for extent-tree blocks of later conversions. */
export const DIO_RESERVE_BLOCKS = 8;
/** Default size of the "user pages" a caller's buffer is cut into (one bio_vec each). */
export const DIO_USER_PAGE_BYTES = 4096;

/** Which of the kernel's paths a request took. */
export type DioPath = 'read' | 'overwrite' | 'unwritten-sync' | 'unwritten-async' | 'extending';

/** The stats counter of each path. */
const PATH_STAT = {
  read: 'reads', overwrite: 'overwrites', 'unwritten-sync': 'unwrittenSync', 'unwritten-async': 'unwrittenAsync', extending: 'extending',
} as const satisfies Record<DioPath, keyof DirectIoStats>;

/** What the optional trace hook sees (tests use it to check ordering, e.g. S16). */
export type DioTraceEvent =
  | { kind: 'submit'; id: number; ino: number; path: DioPath; firstLblk: number; endLblk: number }
  | { kind: 'complete'; id: number; ino: number; path: DioPath; res: number; error: string | undefined };

export interface DirectIoOptions {
  /**
   * Runs a metadata phase (block mapping with allocation, cache writeback, size update) one at a
   * time with the mount's other metadata operations; the API passes WriteOps.run. Default: a
   * mutex private to this DirectIo.
   */
  serialize?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Most segments per bio (default: the FileData's maxBioVecs). */
  maxBioVecs?: number;
  /** Size of the user pages the caller's buffer is cut into (default 4096). */
  userPageBytes?: number;
  /** Called at each request's submission and completion. */
  trace?: (ev: DioTraceEvent) => void;
}

export interface DirectWriteOptions {
  /** An AIO request (a kiocb that is not sync): lazy io_end, conversion in the work queue. */
  async?: boolean;
  /** O_APPEND: the position is i_size, read under the inode lock (must be block aligned). */
  append?: boolean;
  /** Lets the submitter cancel the request until it starts (see DioCancel). */
  cancel?: DioCancel;
}

export interface DirectReadOptions {
  cancel?: DioCancel;
}

/** Counters of this DirectIo (for tests and `--stats`). */
export interface DirectIoStats {
  reads: number;
  overwrites: number;
  unwrittenSync: number;
  unwrittenAsync: number;
  extending: number;
  /** io_ends allocated (async requests whose mapping returned an unwritten extent). */
  ioEnds: number;
  bios: number;
  bytesRead: number;
  bytesWritten: number;
  /** Synchronous conversions run by this module (async ones run in the InodeIo worker). */
  conversions: number;
  /** Requests that moved fewer bytes than asked (short reads at EOF not counted). */
  shortWrites: number;
  /** Requests that failed. */
  failed: number;
  /** Requests cancelled before they started. */
  cancelled: number;
}

/** Errors of the asynchronous API that the POSIX errno table does not have yet. */
export class AsyncIoError extends Ext4Error {
  override readonly name = 'AsyncIoError';
  readonly code: 'EAGAIN' | 'ECANCELED';
  readonly errno: number;
  readonly syscall: string;
  constructor(code: 'EAGAIN' | 'ECANCELED', syscall: string, detail: string) {
    super(`${code}: ${detail}, ${syscall}`);
    this.code = code;
    this.errno = code === 'EAGAIN' ? 11 : 125;
    this.syscall = syscall;
  }
}

/**
 * Cancellation of one request, possible only before it starts (it is still waiting for its
 * block range): then it touches nothing and rejects with ECANCELED. Once started — mapped or
 * submitted — it runs to completion and cancel() returns false, as io_cancel fails for file I/O
 * on Linux.
 */
export class DioCancel {
  private state: 'waiting' | 'started' | 'cancelled' = 'waiting';
  private listener: (() => void) | undefined;

  /** Cancels the request if it has not started; true when it was cancelled. */
  cancel(): boolean {
    if (this.state !== 'waiting') return false;
    this.state = 'cancelled';
    this.listener?.();
    return true;
  }
  get isCancelled(): boolean {
    return this.state === 'cancelled';
  }
  /** @internal Marks the request started; false if it was cancelled first. */
  start(): boolean {
    if (this.state === 'cancelled') return false;
    this.state = 'started';
    return true;
  }
  /** @internal Calls `fn` when cancelled (at most one listener). */
  onCancel(fn: () => void): void {
    this.listener = fn;
    if (this.state === 'cancelled') fn();
  }
}

/** One run of a request's mapping: `len` blocks from `lblk`. */
interface DioRun {
  lblk: number;
  len: number;
  /** First physical block; undefined for a hole (reads only). */
  pblk: number | undefined;
  kind: 'mapped' | 'unwritten' | 'hole';
  /** Allocated by this request (freed again if it lands past the final size). */
  allocated: boolean;
}

/** A held or waiting entry of a block-range lock. */
interface RangeEntry {
  readonly start: number;
  readonly end: number;
  readonly write: boolean;
  /** Resolves when the entry is released (or its wait was cancelled). */
  readonly gone: Promise<void>;
  release(): void;
}

/**
 * A FIFO block-range lock: an entry waits for every earlier entry it conflicts with (a write
 * conflicts with any overlapping entry, a read only with overlapping writes). Waiting only on
 * earlier entries makes cycles impossible.
 */
class BlockRangeLock {
  private readonly entries: RangeEntry[] = [];

  get size(): number {
    return this.entries.length;
  }

  /** Queues an entry; returns it and a promise that resolves when it is granted. */
  acquire(start: number, end: number, write: boolean): { entry: RangeEntry; granted: Promise<void> } {
    assert(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start < end, () => `range lock [${start}, ${end})`);
    const conflicts = this.entries.filter((e) => e.start < end && start < e.end && (write || e.write));
    let wake!: () => void;
    const gone = new Promise<void>((resolve) => (wake = resolve));
    let released = false;
    const entry: RangeEntry = {
      start, end, write, gone,
      release: () => {
        if (released) return;
        released = true;
        const i = this.entries.indexOf(entry);
        assert(i >= 0, 'range lock entry released but not queued');
        this.entries.splice(i, 1);
        wake();
      },
    };
    this.entries.push(entry);
    return { entry, granted: Promise.all(conflicts.map((e) => e.gone)).then(() => undefined) };
  }
}

/** Per-inode state of direct I/O: the range lock and the requests in flight. */
class DioInode {
  readonly ranges = new BlockRangeLock();
  inFlight = 0;
}

/**
 * One request in flight (the generic `struct dio` plus its iocb): counts its bios, holds the
 * lazily allocated io_end (never published anywhere else), and settles `done` once every bio
 * finished — for an unwritten io_end, after its release, that is after the conversion.
 */
class DioRequest {
  io: IoEnd | undefined;
  /** The first failed bio's status. */
  failed: BioStatus | undefined;
  private bios = 0;
  private finished = 0;
  private closed = false;
  private resolveDone!: () => void;
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(readonly id: number) {}

  /** A bio was built for this request: it takes an io_end reference (invariant 2). */
  bioBuilt(): void {
    this.bios++;
    this.io?.get();
  }

  /**
   * The bio completion (dio_bio_end_aio → ext4_end_io_dio): with an io_end, completeBio links
   * the bio's finish to the io_end when conversion is pending and drops the reference with
   * putDefer, which queues the conversion; never converts here (invariant 9). A failed
   * conversion is this request's result (issueWrite finds the range unwritten), never the
   * mapping's: the caller sees the error once, and no later fsync reports it again.
   */
  endBio(status: BioStatus): void {
    if (status !== 0) this.failed ??= status;
    const io = this.io;
    if (io !== undefined) io.completeBio({ finish: () => this.finishOne() }, status !== 0);
    else this.finishOne();
  }

  /** Submission is over: the submitter's io_end reference goes (after the last bio, invariant 3). */
  closeSubmission(): void {
    assert(!this.closed, () => `dio request ${this.id}: submission closed twice`);
    this.closed = true;
    this.io?.putDefer();
    this.check();
  }

  private finishOne(): void {
    this.finished++;
    assert(this.finished <= this.bios, () => `dio request ${this.id}: more bios finished than built`);
    this.check();
  }

  private check(): void {
    if (this.closed && this.finished === this.bios) this.resolveDone();
  }
}

/** Rejects errors that are bugs, so that only Ext4Errors become a request's result. */
function asResult(e: unknown): Ext4Error {
  if (!isExt4Error(e) || e instanceof Ext4Bug) throw e;
  return e;
}

export class DirectIo {
  readonly stats: DirectIoStats = {
    reads: 0, overwrites: 0, unwrittenSync: 0, unwrittenAsync: 0, extending: 0, ioEnds: 0, bios: 0,
    bytesRead: 0, bytesWritten: 0, conversions: 0, shortWrites: 0, failed: 0, cancelled: 0,
  };
  private readonly serialize: <T>(fn: () => Promise<T>) => Promise<T>;
  private readonly maxBioVecs: number;
  private readonly userPageBytes: number;
  private readonly trace: ((ev: DioTraceEvent) => void) | undefined;
  private readonly inodes = new Map<number, DioInode>();
  private nextId = 1;
  private inFlightTotal = 0;
  private drainWaiters: (() => void)[] = [];
  private readonly metaMutex = new Mutex('direct I/O metadata phase');

  constructor(readonly s: Ext4Super, readonly data: FileData, opts: DirectIoOptions = {}) {
    this.serialize = opts.serialize ?? ((fn) => this.mutex(fn));
    this.maxBioVecs = opts.maxBioVecs ?? data.maxBioVecs;
    this.userPageBytes = opts.userPageBytes ?? DIO_USER_PAGE_BYTES;
    this.trace = opts.trace;
    const bs = s.blockSize;
    assert(Number.isSafeInteger(this.maxBioVecs) && this.maxBioVecs >= 1, () => `maxBioVecs ${this.maxBioVecs}`);
    assert(this.userPageBytes >= bs && this.userPageBytes % bs === 0, () => `user page ${this.userPageBytes} vs block ${bs}`);
    assert(s.dev.maxRequestBytes >= bs, () => `device requests of ${s.dev.maxRequestBytes} bytes cannot hold a block`);
  }

  /** Requests in flight on `info` (0 when idle: i_dio_count is back where it was, invariant 15). */
  inFlight(info?: InodeInfo): number {
    if (info === undefined) return this.inFlightTotal;
    return this.inodes.get(info.ino)?.inFlight ?? 0;
  }

  /** Resolves when no request is in flight on any inode (call before unmount, outside serialize). */
  async drain(): Promise<void> {
    while (this.inFlightTotal > 0) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
  }

  // -------------------------------------------------------------------------------------------
  // read
  // -------------------------------------------------------------------------------------------

  /**
   * O_DIRECT read of `dst.length` bytes at `pos` into `dst`: holes and unwritten blocks read as
   * zeros, a read past i_size is short (the bytes of `dst` past the count are zeroed). Dirty or
   * in-flight cached pages of the range are written back first, so the device holds the data.
   */
  async read(info: InodeInfo, pos: number, dst: Uint8Array, opts: DirectReadOptions = {}): Promise<number> {
    this.checkFile(info, 'read');
    const len = this.checkAligned(pos, dst, 'read');
    if (len === 0) return 0;
    const bs = this.s.blockSize;
    const req = new DioRequest(this.nextId++);
    const unlock = await this.lockRange(info, pos / bs, (pos + len) / bs, false, opts.cancel, 'read');
    try {
      if (this.hasCachedPages(info, pos, pos + len, false)) {
        await this.serialize(() => this.data.withInodeLock(info, () => this.data.writeAndWaitRange(info, pos, pos + len)));
      }
      const plan = await this.data.withInodeLock(info, async () => {
        const n = Math.max(0, Math.min(len, this.data.sizeOf(info) - pos));
        if (n === 0) return undefined;
        // Dirty pages cached since the check above are the caller's race: the device is read as it is.
        this.data.dioBegin(info);
        try {
          return { n, runs: await this.mapRead(info, pos / bs, Math.ceil(n / bs)) };
        } catch (e) {
          this.data.dioEnd(info);
          throw e;
        }
      });
      if (plan === undefined) {
        dst.fill(0, 0, len);
        this.emitComplete(req.id, info, 'read', 0, undefined);
        return 0;
      }
      let got: number;
      try {
        const sub = this.submit(info, req, plan.runs, dst, pos, 'read', 'read');
        await req.done;
        if (req.failed !== undefined) throw new PosixError('EIO', 'read', undefined, `direct read of inode ${info.ino} at ${pos} failed`);
        if (sub.bytes === 0) throw sub.err ?? new Ext4Bug('direct read moved nothing without an error');
        got = Math.min(plan.n, sub.bytes);
      } finally {
        this.data.dioEnd(info);
      }
      dst.fill(0, got, len);
      this.stats.reads++;
      this.stats.bytesRead += got;
      this.emitComplete(req.id, info, 'read', got, undefined);
      return got;
    } catch (e) {
      this.stats.failed++;
      this.emitComplete(req.id, info, 'read', -1, e);
      throw e;
    } finally {
      unlock();
    }
  }

  /** Maps blocks [first, first+count) for reading (no allocation), under the tree lock. */
  private mapRead(info: InodeInfo, first: number, count: number): Promise<DioRun[]> {
    return this.data.withTreeLock(info, async () => {
      const runs: DioRun[] = [];
      for (let cur = first; cur < first + count; ) {
        const m = await mapExtentPoint(this.s, info, cur, first + count - cur);
        runs.push({ lblk: cur, len: m.len, pblk: m.kind === 'hole' ? undefined : m.pblk, kind: m.kind, allocated: false });
        cur += m.len;
      }
      return runs;
    });
  }

  // -------------------------------------------------------------------------------------------
  // write
  // -------------------------------------------------------------------------------------------

  /**
   * O_DIRECT write of `src` at `pos` (see the module header for the paths). Returns the bytes
   * written, fewer than asked after partial progress (S1); throws when nothing was written (S2)
   * or any bio failed (EIO: nothing converted). With `async`, the returned promise is the AIO
   * completion: it settles only after the io_end's conversion ran in the work queue.
   */
  async write(info: InodeInfo, pos: number, src: Uint8Array, opts: DirectWriteOptions = {}): Promise<number> {
    this.checkFile(info, 'write');
    if (this.s.readOnly) throw new PosixError('EROFS', 'write');
    const append = opts.append === true;
    const len = this.checkAligned(append ? 0 : pos, src, 'write');
    if (len === 0) return 0;
    const bs = this.s.blockSize;
    if (!append && (pos + len) / bs > EXT_LBLK_LIMIT) throw new PosixError('EFBIG', 'write');
    const req = new DioRequest(this.nextId++);
    const data = src.subarray(0, len);
    // An append does not know its range before the inode lock: it locks the whole file.
    const [from, to] = append ? [0, EXT_LBLK_LIMIT] : [pos / bs, (pos + len) / bs];
    const unlock = await this.lockRange(info, from, to, true, opts.cancel, 'write');
    let path: DioPath = 'overwrite';
    try {
      const r = await this.writeLocked(info, req, append ? -1 : pos, data, opts.async === true);
      path = r.path;
      this.stats[PATH_STAT[path]]++;
      this.stats.bytesWritten += r.done;
      if (r.done < len) this.stats.shortWrites++;
      this.emitComplete(req.id, info, path, r.done, undefined);
      return r.done;
    } catch (e) {
      this.stats.failed++;
      this.emitComplete(req.id, info, path, -1, e);
      throw e;
    } finally {
      unlock();
    }
  }

  /** The write once its block range is held: the overwrite fast path, else the locked paths. */
  private async writeLocked(info: InodeInfo, req: DioRequest, pos: number, src: Uint8Array, async: boolean): Promise<{ done: number; path: DioPath }> {
    const len = src.length;
    if (pos >= 0 && !this.hasCachedPages(info, pos, pos + len, true)) {
      const runs = await this.data.withInodeLock(info, () => this.tryOverwrite(info, pos, len));
      if (runs !== undefined) return { done: await this.issueWrite(info, req, pos, src, runs, 'overwrite'), path: 'overwrite' };
    }
    type Step = { done: number } | { pos: number; runs: DioRun[]; mapErr: Ext4Error | undefined };
    const step = await this.serialize(() => this.data.withInodeLock(info, async (): Promise<Step> => {
      const at = pos >= 0 ? pos : this.data.sizeOf(info);
      if (at % this.s.blockSize !== 0) throw new PosixError('EINVAL', 'write', undefined, `append at unaligned size ${at}`);
      if ((at + len) / this.s.blockSize > EXT_LBLK_LIMIT) throw new PosixError('EFBIG', 'write');
      const oldSize = this.data.sizeOf(info);
      const flushFrom = at + len > oldSize ? Math.min(at, oldSize) : at;
      await this.flushCache(info, flushFrom, at + len);
      if (at + len > oldSize) return { done: await this.writeExtending(info, req, at, src, oldSize) };
      this.data.dioBegin(info);
      try {
        const m = await this.mapWrite(info, req, at, len, async);
        touch(this.s, info, ['mtime', 'ctime']);
        return { pos: at, ...m };
      } catch (e) {
        this.data.dioEnd(info);
        throw e;
      }
    }));
    if ('done' in step) return { done: step.done, path: 'extending' };
    const overwrite = step.mapErr === undefined && step.runs.every((r) => r.kind === 'mapped');
    const path: DioPath = overwrite ? 'overwrite' : async ? 'unwritten-async' : 'unwritten-sync';
    return { done: await this.issueWrite(info, req, step.pos, src, step.runs, path, step.mapErr), path };
  }

  /**
   * The overwrite check (ext4_overwrite_io), under the inode lock: every block of the range
   * mapped and written and the range inside i_size. On success takes i_dio_count and returns the
   * runs; the I/O then runs without the inode lock.
   */
  private async tryOverwrite(info: InodeInfo, pos: number, len: number): Promise<DioRun[] | undefined> {
    // Pages cached since the caller looked need the slow path (writeback needs `serialize`).
    if (pos + len > this.data.sizeOf(info) || this.hasCachedPages(info, pos, pos + len, true)) return undefined;
    const bs = this.s.blockSize;
    const runs = await this.mapRead(info, pos / bs, len / bs);
    if (runs.some((r) => r.kind !== 'mapped')) return undefined;
    this.data.dioBegin(info);
    touch(this.s, info, ['mtime', 'ctime']);
    return runs;
  }

  /**
   * Submits a non-extending write and waits for it (i_dio_count is held, released here after the
   * conversion). Sync: converts [pos, pos + done) when done > 0 and no bio failed. Async: the
   * io_end's worker converted before `req.done`; a conversion that failed leaves the range
   * unwritten, which is checked and reported as EIO.
   */
  private async issueWrite(info: InodeInfo, req: DioRequest, pos: number, src: Uint8Array, runs: DioRun[], path: DioPath, mapErr?: Ext4Error): Promise<number> {
    let done: number;
    try {
      const sub = this.submit(info, req, runs, src, pos, 'write', path);
      await req.done;
      if (req.failed !== undefined) throw this.writeEio(info, pos);
      done = sub.bytes;
      if (done === 0) throw mapErr ?? sub.err ?? new Ext4Bug('direct write moved nothing without an error');
      if (req.io === undefined && this.prefixHasUnwritten(runs, pos, done)) await this.convertSync(info, pos, done);
      const io = req.io;
      if (io !== undefined && io.ranges.length > 0 && !(await this.isWritten(info, io.ranges))) {
        throw new PosixError('EIO', 'write', undefined, `inode ${info.ino}: unwritten extent conversion failed after a direct write at ${pos}; the range reads as zeros`);
      }
    } finally {
      this.data.dioEnd(info);
      await this.invalidateAfter(info, pos, pos + src.length);
    }
    return done;
  }

  /**
   * The extending write, run entirely under the inode lock (and serialize): orphan list, map and
   * allocate, write, convert, then grow i_size, free what this request allocated past it, leave
   * the orphan list. Always synchronous: no io_end.
   */
  private async writeExtending(info: InodeInfo, req: DioRequest, pos: number, src: Uint8Array, oldSize: number): Promise<number> {
    const s = this.s;
    // An unlinked open file is on the orphan list already (its links are 0).
    const orphan = info.linksCount > 0;
    if (orphan) await orphanAdd(s, info);
    this.data.dioBegin(info);
    let done = 0;
    let err: Ext4Error | undefined;
    let runs: DioRun[] = [];
    try {
      const m = await this.mapWrite(info, req, pos, src.length, false);
      runs = m.runs;
      const sub = this.submit(info, req, runs, src, pos, 'write', 'extending');
      await req.done;
      if (req.failed !== undefined) err = this.writeEio(info, pos);
      else if (sub.bytes === 0) err = m.mapErr ?? sub.err;
      else {
        try {
          if (this.prefixHasUnwritten(runs, pos, sub.bytes)) await this.convertSync(info, pos, sub.bytes);
          done = sub.bytes;
        } catch (e) {
          err = asResult(e);
        }
      }
    } finally {
      const newSize = done > 0 ? Math.max(oldSize, pos + done) : oldSize;
      if (newSize > oldSize) {
        this.data.setSize(info, newSize);
        setInodeSizeBytes(info.view, newSize);
      }
      await this.trimAllocated(info, runs, newSize);
      if (done === 0) await this.zeroPastEof(info, runs, newSize);
      touch(s, info, ['mtime', 'ctime']);
      await writeInode(s, info);
      if (orphan) await orphanDel(s, info);
      this.data.dioEnd(info);
    }
    if (done === 0) throw err ?? new Ext4Bug('extending direct write moved nothing without an error');
    return done;
  }

  /**
   * Maps [pos, pos+len) for writing under the tree lock (the get_block loop): holes become
   * unwritten extents; for an async request the io_end is allocated at the first unwritten run
   * (seed 003). Stops at the first error, which is returned with the runs mapped before it.
   */
  private mapWrite(info: InodeInfo, req: DioRequest, pos: number, len: number, async: boolean): Promise<{ runs: DioRun[]; mapErr: Ext4Error | undefined }> {
    const s = this.s;
    const bs = s.blockSize;
    return this.data.withTreeLock(info, async () => {
      const tree = this.data.extentTree(info);
      const runs: DioRun[] = [];
      let mapErr: Ext4Error | undefined;
      let grew = false;
      try {
        for (let cur = pos / bs; cur < (pos + len) / bs; ) {
          const m = await mapExtentPoint(s, info, cur, (pos + len) / bs - cur);
          let run: DioRun;
          if (m.kind === 'hole') {
            run = await this.allocUnwritten(info, tree, cur, m.len, runs);
            grew = true;
          } else {
            run = { lblk: cur, len: m.len, pblk: m.pblk, kind: m.kind, allocated: false };
          }
          if (run.kind === 'unwritten' && async && req.io === undefined) {
            // Seed 003: the io_end exists only once an unwritten extent needs converting.
            faults.hit('dio_io_end_alloc');
            req.io = IoEnd.init(this.data.inodeIo(info));
            req.io.setUnwritten();
            this.stats.ioEnds++;
          }
          runs.push(run);
          cur += run.len;
        }
      } catch (e) {
        mapErr = asResult(e);
      }
      if (grew) await writeInode(s, info);
      return { runs, mapErr };
    });
  }

  /**
   * Allocates up to `len` blocks for the hole at `lblk` as one unwritten extent (goal: right
   * after the previous run or extent). Leaves the delayed writers' reservations and
   * DIO_RESERVE_BLOCKS untouched. Called under the tree lock.
   */
  private async allocUnwritten(info: InodeInfo, tree: ExtentTree, lblk: number, len: number, prev: readonly DioRun[]): Promise<DioRun> {
    const balloc = getBalloc(this.s);
    const avail = balloc.freeBlocksCount() - this.data.reservedBlocks - DIO_RESERVE_BLOCKS;
    if (avail <= 0) throw new PosixError('ENOSPC', 'write', undefined, `inode ${info.ino}: no block for a direct write at block ${lblk}`);
    let goal = balloc.goalForInode(info.ino);
    const last = prev[prev.length - 1];
    if (last !== undefined && last.pblk !== undefined && last.lblk + last.len === lblk) goal = last.pblk + last.len;
    else if (lblk > 0) {
      const e = await tree.lookup(lblk - 1);
      if (e !== undefined) goal = e.pblk + (lblk - e.lblk);
    }
    faults.hit('block_alloc');
    const got = await balloc.allocBlocks({ goal, maxLen: Math.min(len, EXT_UNWRITTEN_MAX_LEN, avail), minLen: 1, ino: info.ino });
    try {
      await tree.insert({ lblk, len: got.len, pblk: got.pblk, unwritten: true });
    } catch (e) {
      await balloc.freeBlocks(got.pblk, got.len);
      throw e;
    }
    addInodeBlocks(this.s, info, got.len);
    return { lblk, len: got.len, pblk: got.pblk, kind: 'unwritten', allocated: true };
  }

  /**
   * Sync conversion (ext4_convert_unwritten_extents after the I/O): markWritten under the tree
   * lock. A failure is this write's error (the data is on disk but reads as zeros).
   */
  private async convertSync(info: InodeInfo, pos: number, bytes: number): Promise<void> {
    const s = this.s;
    const bs = s.blockSize;
    faults.hit('conversion');
    await s.withMetaUpdate(() => this.data.withTreeLock(info, async () => {
      await this.data.extentTree(info).markWritten(pos / bs, bytes / bs);
      await writeInode(s, info);
    }));
    this.stats.conversions++;
  }

  /** True when every block of `ranges` is mapped and written (the async conversion ran). */
  private isWritten(info: InodeInfo, ranges: readonly IoRange[]): Promise<boolean> {
    const bs = this.s.blockSize;
    return this.data.withTreeLock(info, async () => {
      for (const r of ranges) {
        for (let cur = r.offset / bs; cur < (r.offset + r.size) / bs; ) {
          const m = await mapExtentPoint(this.s, info, cur, (r.offset + r.size) / bs - cur);
          if (m.kind !== 'mapped') return false;
          cur += m.len;
        }
      }
      return true;
    });
  }

  /**
   * After a failed or short extending write (ext4_truncate_failed_write): frees the blocks this
   * request allocated at or beyond the block holding the final size, so nothing allocated stays
   * past EOF. Called under the inode lock.
   */
  private async trimAllocated(info: InodeInfo, runs: readonly DioRun[], sizeBytes: number): Promise<void> {
    const s = this.s;
    const eofBlk = Math.ceil(sizeBytes / s.blockSize);
    const doomed = runs.filter((r) => r.allocated && r.lblk + r.len > eofBlk);
    if (doomed.length === 0) return;
    await this.data.withTreeLock(info, async () => {
      const balloc = getBalloc(s);
      const tree = this.data.extentTree(info);
      for (const r of doomed) {
        const from = Math.max(r.lblk, eofBlk);
        for (const f of await tree.remove(from, r.lblk + r.len - from)) {
          await balloc.freeBlocks(f.pblk, f.len);
          addInodeBlocks(s, info, -f.len);
        }
      }
      await writeInode(s, info);
    });
  }

  /**
   * After a failed extending write (ext4_truncate_failed_write, whose truncate zeroes the partial
   * block with ext4_block_truncate_page): the written block holding EOF may have taken this
   * request's data past EOF from a bio that landed while another failed. Zeroes that tail on disk,
   * so the file reads zeros there, not the failed write's data, once it grows again. Best effort,
   * like the kernel's: an I/O error leaves the tail as it is, and the cleanup after it still runs.
   * Called under the inode lock, within the request's block range.
   */
  private async zeroPastEof(info: InodeInfo, runs: readonly DioRun[], sizeBytes: number): Promise<void> {
    const s = this.s;
    const bs = s.blockSize;
    const lblk = Math.floor(sizeBytes / bs);
    const run = runs.find((r) => r.kind === 'mapped' && r.lblk <= lblk && lblk < r.lblk + r.len);
    if (sizeBytes % bs === 0 || run?.pblk === undefined) return;
    const pblk = run.pblk + (lblk - run.lblk);
    const block = new Uint8Array(bs);
    try {
      await s.readBlocks(pblk, 1, block);
      block.fill(0, sizeBytes % bs);
      await s.dev.write(pblk * bs, block);
    } catch (e) {
      // An I/O error leaves the tail; a bug still throws.
      asResult(e);
    }
  }

  // -------------------------------------------------------------------------------------------
  // bios
  // -------------------------------------------------------------------------------------------

  /**
   * Builds and submits the bios of a request from its runs, in file order (dio_bio_submit): each
   * segment comes from the caller's buffer, cut at user-page boundaries; holes and unwritten runs
   * of a read are zero-filled instead. A bio allocation failure (`dio_bio_alloc`) stops the loop:
   * what was queued before is the request's prefix. Returns the bytes of that prefix. Runs
   * synchronously, so no completion arrives before closeSubmission.
   */
  private submit(info: InodeInfo, req: DioRequest, runs: readonly DioRun[], buf: Uint8Array, pos: number, op: BioOp, path: DioPath): { bytes: number; err: Ext4Error | undefined } {
    const s = this.s;
    const bs = s.blockSize;
    const builder = new BioBuilder<DioRequest>({
      dev: s.dev, op, blockSizeBytes: bs,
      alloc: (sector) => {
        faults.hit('dio_bio_alloc');
        this.stats.bios++;
        const bio = new Bio<DioRequest>({ dev: s.dev, op, sector, maxVecs: this.maxBioVecs, private: req, endIo: (b, st) => b.private.endBio(st) });
        req.bioBuilt();
        return bio;
      },
    });
    const maxSeg = Math.min(this.userPageBytes, Math.floor(s.dev.maxRequestBytes / bs) * bs);
    /** The user page holding byte `off` of `buf` (as a view of its own) and where the segment ends. */
    const pageOf = (off: number): { page: Uint8Array; base: number; end: number } => {
      const abs = buf.byteOffset + off;
      const pageStart = abs - (abs % this.userPageBytes) - buf.byteOffset;
      const pageEnd = Math.min(buf.length, pageStart + this.userPageBytes);
      const base = Math.max(0, pageStart);
      return { page: buf.subarray(base, pageEnd), base, end: Math.min(pageEnd, off + maxSeg) };
    };
    let bytes = 0;
    let err: Ext4Error | undefined;
    const first = runs[0];
    const last = runs[runs.length - 1];
    if (first !== undefined && last !== undefined) {
      this.trace?.({ kind: 'submit', id: req.id, ino: info.ino, path, firstLblk: first.lblk, endLblk: last.lblk + last.len });
    }
    try {
      for (const run of runs) {
        const runOff = run.lblk * bs - pos;
        const runEnd = runOff + run.len * bs;
        if (op === 'read' && run.kind !== 'mapped') {
          buf.fill(0, runOff, runEnd);
          bytes += runEnd - runOff;
          continue;
        }
        assert(run.pblk !== undefined, () => `inode ${info.ino}: direct ${op} of unmapped block ${run.lblk}`);
        for (let off = runOff; off < runEnd; ) {
          const pg = pageOf(off);
          const segEnd = Math.min(runEnd, pg.end);
          builder.add(run.pblk + (off - runOff) / bs, pg.page, off - pg.base, segEnd - off);
          // Only now did the segment join a bio: account it (invariant 11).
          if (run.kind === 'unwritten' && req.io !== undefined) req.io.addRange(pos + off, segEnd - off);
          bytes += segEnd - off;
          off = segEnd;
        }
      }
    } catch (e) {
      err = asResult(e);
    }
    builder.submit();
    req.closeSubmission();
    return { bytes, err };
  }

  // -------------------------------------------------------------------------------------------
  // helpers
  // -------------------------------------------------------------------------------------------

  private checkFile(info: InodeInfo, syscall: string): void {
    if (info.type !== 'file') throw new PosixError(info.type === 'dir' ? 'EISDIR' : 'EINVAL', syscall);
    if (info.hasInlineData || !info.hasExtents) {
      throw new PosixError('EOPNOTSUPP', syscall, undefined, `inode ${info.ino}: direct I/O needs an extent-mapped file`);
    }
  }

  /**
   * Linux's O_DIRECT alignment rule: offset, length and buffer (its byteOffset) multiples of the
   * block size, else EINVAL. Returns the length, clipped to MAX_RW_COUNT.
   */
  private checkAligned(pos: number, buf: Uint8Array, syscall: string): number {
    const bs = this.s.blockSize;
    if (!Number.isSafeInteger(pos) || pos < 0) throw new PosixError('EINVAL', syscall, undefined, `position ${pos}`);
    if (pos % bs !== 0 || buf.length % bs !== 0 || buf.byteOffset % bs !== 0) {
      throw new PosixError('EINVAL', syscall, undefined, `direct I/O needs ${bs}-byte alignment (position ${pos}, length ${buf.length}, buffer offset ${buf.byteOffset})`);
    }
    return Math.min(buf.length, Math.floor(MAX_RW_COUNT / bs) * bs);
  }

  private writeEio(info: InodeInfo, pos: number): PosixError {
    return new PosixError('EIO', 'write', undefined, `direct write of inode ${info.ino} at ${pos} failed; nothing was converted`);
  }

  /** True when the first `bytes` of the runs (from `pos`) include an unwritten block. */
  private prefixHasUnwritten(runs: readonly DioRun[], pos: number, bytes: number): boolean {
    const endBlk = (pos + bytes) / this.s.blockSize;
    return runs.some((r) => r.kind === 'unwritten' && r.lblk < endBlk);
  }

  /** Does the page cache hold a page of [start, end) (with `anyState`, even a clean one)? */
  private hasCachedPages(info: InodeInfo, start: number, end: number, anyState: boolean): boolean {
    const mapping = this.data.mappingOf(info);
    if (mapping.nrPages === 0) return false;
    const ps = this.data.pageSizeBytes;
    for (let idx = Math.floor(start / ps); idx < Math.ceil(end / ps); idx++) {
      if (mapping.findPage(idx) === undefined) continue;
      if (anyState || mapping.isTagged(idx, 'dirty') || mapping.isTagged(idx, 'writeback')) return true;
    }
    return false;
  }

  /** Before a write: write back, wait for and drop the cached pages of [start, end). */
  private async flushCache(info: InodeInfo, start: number, end: number): Promise<void> {
    if (!this.hasCachedPages(info, start, end, true)) return;
    await this.data.writeAndWaitRange(info, start, end);
    await this.data.invalidateRange(info, start, end);
  }

  /**
   * After a write (kiocb_invalidate_post_direct_write): drops clean pages a buffered reader
   * instantiated meanwhile, which hold the old contents. Dirty ones are the caller's race and are
   * left (the kernel warns and leaves them too). Runs after dioEnd, so a truncate waiting for
   * i_dio_count under the inode lock never waits for us.
   */
  private async invalidateAfter(info: InodeInfo, start: number, end: number): Promise<void> {
    if (!this.hasCachedPages(info, start, end, true)) return;
    await this.data.withInodeLock(info, async () => {
      if (this.hasCachedPages(info, start, end, false)) return;
      await this.data.invalidateRange(info, start, end);
    });
  }

  /**
   * Takes the block-range lock of [from, to) and counts the request in flight. A request
   * cancelled while it waits leaves the queue at once and rejects with ECANCELED. Returns the
   * function that releases both.
   */
  private async lockRange(info: InodeInfo, from: number, to: number, write: boolean, cancel: DioCancel | undefined, syscall: string): Promise<() => void> {
    let di = this.inodes.get(info.ino);
    if (di === undefined) {
      di = new DioInode();
      this.inodes.set(info.ino, di);
    }
    const d = di;
    const { entry, granted } = d.ranges.acquire(from, to, write);
    d.inFlight++;
    this.inFlightTotal++;
    const unlock = (): void => {
      entry.release();
      d.inFlight--;
      this.inFlightTotal--;
      assert(d.inFlight >= 0 && this.inFlightTotal >= 0, 'direct I/O in-flight count below zero');
      if (d.inFlight === 0 && d.ranges.size === 0) this.inodes.delete(info.ino);
      if (this.inFlightTotal === 0) for (const w of this.drainWaiters.splice(0)) w();
    };
    if (cancel !== undefined) {
      const cancelled = new Promise<void>((resolve) => cancel.onCancel(resolve));
      await Promise.race([granted, cancelled]);
      if (!cancel.start()) {
        unlock();
        this.stats.cancelled++;
        throw new AsyncIoError('ECANCELED', syscall, `request on inode ${info.ino} cancelled before it started`);
      }
    } else {
      await granted;
    }
    return unlock;
  }

  private emitComplete(id: number, info: InodeInfo, path: DioPath, res: number, e: unknown): void {
    this.trace?.({ kind: 'complete', id, ino: info.ino, path, res, error: e === undefined ? undefined : isExt4Error(e) ? e.code : String(e) });
  }

  /** The default `serialize`: one metadata phase at a time within this DirectIo. */
  private mutex<T>(fn: () => Promise<T>): Promise<T> {
    return this.metaMutex.run(fn);
  }
}
