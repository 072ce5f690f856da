/**
 * ext4_io_end (fs/ext4/page-io.c, the best-known design of ../shared/IO-DESIGN.md §4): one
 * IoEnd per mapped extent of a writeback pass, shared and reference-counted by every bio that
 * writes it (seed 000), so an unwritten extent is converted once, after its last bio completed.
 *
 * Verbs and who calls them (IO-DESIGN §2.2–2.3):
 *   IoEnd.init()   the submitter's reference (count 1), before any bio (ext4_init_io_end);
 *   get()          one reference per bio, taken when the bio is built (ext4_get_io_end);
 *   putDefer()     from a bio completion: never converts there (ext4_put_io_end_defer);
 *   put()          from process context: converts in the caller (ext4_put_io_end);
 *   release()      exactly once, at the put that takes count 1 → 0 (ext4_release_io_end).
 *
 * Adopted later fixes: a list of (offset, size) ranges instead of one range (5.6, so sub-page
 * holes with 1 KiB blocks convert exactly the written blocks, §1.3 G); FAILED ⇒ no conversion
 * (2025: a failed write keeps its blocks unwritten, so reads return zeros, never stale data);
 * one predicate, deferCompletion(), decides both "link this bio to the io_end" and "queue the
 * io_end for the worker" (2025 UAF fix, scenario S10); page writeback of an unwritten io_end's
 * bios ends only after conversion (3.11, invariant 24).
 *
 * Invariants asserted here (IO-DESIGN §6): 1 single release, never below zero, no use after
 * release; 4 release preconditions; 5/6 per-inode counters; 8 deferred queue; 9 conversion
 * only after every bio completed and never inside a completion; 13 UNWRITTEN with no ranges
 * cannot reach release; 25 one predicate.
 */
import { assert } from '../util/assert.js';
import type { WorkQueue } from '../runtime/work-queue.js';

/** A byte range of the file that an io_end must convert from unwritten to written. */
export interface IoRange {
  /** Byte offset in the file. */
  offset: number;
  /** Length in bytes. */
  size: number;
}

/** Where deferred conversion runs: a work queue (process context), never a completion. */
export type { WorkQueue } from '../runtime/work-queue.js';

/** A completed bio linked to an io_end whose completion is deferred until after conversion. */
export interface DeferredBio {
  /**
   * Ends writeback for the pages of this bio (ext4_finish_bio). `convertFailed`: the io_end's
   * conversion failed, so the data landed but reads as zeros — a lost write for the page cache to
   * report; a direct request reports it as its own result instead.
   */
  finish(convertFailed: boolean): void;
}

export const IO_END_UNWRITTEN = 0x1;
export const IO_END_FAILED = 0x2;

/**
 * Per-inode io_end state (ext4_inode_info's i_completed_io_list, i_unwritten, i_ioend_count,
 * i_rsv_conversion_work). `convert` is the extent-tree conversion supplied by the writeback
 * layer (it runs ExtentTree.markWritten for each range).
 */
export class InodeIo {
  /** Allocated, not yet released io_ends (invariant 5). */
  ioendCount = 0;
  /** Live io_ends with UNWRITTEN set (invariant 6). */
  unwritten = 0;
  /** io_ends whose last put deferred them to the worker (i_completed_io_list). */
  readonly completed: IoEnd[] = [];
  /** The worker for this inode is queued or running. */
  private workQueued = false;
  /** First conversion error not yet reported (logged by the kernel as potential data loss). */
  conversionError: unknown;
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    readonly ino: number,
    readonly wq: WorkQueue,
    readonly convert: (ranges: readonly IoRange[]) => Promise<void>,
  ) {}

  /** ext4_add_complete_io: queue the worker iff the list goes empty → non-empty (invariant 8). */
  addCompleted(io: IoEnd): void {
    assert(io.deferCompletion(), () => `inode ${this.ino}: io_end queued without needing deferral`);
    assert(!io.onList, () => `inode ${this.ino}: io_end queued twice`);
    io.onList = true;
    const wasEmpty = this.completed.length === 0;
    this.completed.push(io);
    if (wasEmpty && !this.workQueued) {
      this.workQueued = true;
      // The worker's own failures are bugs (conversion errors are caught in endIo): let them surface.
      this.wq.queue(() => void this.doWork());
    }
  }

  /** ext4_do_flush_completed_IO: convert (or, FAILED, only clear) each queued io_end, release it. */
  private async doWork(): Promise<void> {
    try {
      while (this.completed.length > 0) {
        const batch = this.completed.splice(0, this.completed.length);
        for (const io of batch) {
          io.onList = false;
          await io.endIo();
        }
      }
    } finally {
      this.workQueued = false;
      this.wakeIfIdle();
    }
  }

  /** Counters back to zero when idle (STYLE §7): resolves when no io_end is alive or queued. */
  waitIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  isIdle(): boolean {
    return this.ioendCount === 0 && this.unwritten === 0 && this.completed.length === 0 && !this.workQueued;
  }

  /** @internal */
  wakeIfIdle(): void {
    if (!this.isIdle()) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }
}

export class IoEnd {
  private count = 1;
  private flags = 0;
  private released = false;
  /** @internal On the inode's completed list. */
  onList = false;
  readonly ranges: IoRange[] = [];
  /** Bios whose page completion waits for this io_end's release (invariant 24). */
  private readonly deferredBios: DeferredBio[] = [];

  private constructor(readonly inode: InodeIo) {}

  /** ext4_init_io_end: the submitter's reference (count 1); counts the io_end as alive. */
  static init(inode: InodeIo): IoEnd {
    inode.ioendCount++;
    return new IoEnd(inode);
  }

  private live(what: string): void {
    assert(!this.released, () => `inode ${this.inode.ino}: ${what} on a released io_end`);
    assert(this.count > 0, () => `inode ${this.inode.ino}: ${what} on an io_end with count ${this.count}`);
  }

  get refcount(): number {
    return this.count;
  }
  get isUnwritten(): boolean {
    return (this.flags & IO_END_UNWRITTEN) !== 0;
  }
  get isFailed(): boolean {
    return (this.flags & IO_END_FAILED) !== 0;
  }
  get isReleased(): boolean {
    return this.released;
  }

  /** ext4_get_io_end: one more reference (one per bio, taken before the bio is submitted). */
  get(): this {
    this.live('get');
    this.count++;
    return this;
  }

  /**
   * ext4_set_io_unwritten_flag: idempotent; counts the io_end in the inode's unwritten total
   * once (invariant 6).
   */
  setUnwritten(): void {
    this.live('setUnwritten');
    if (this.isUnwritten) return;
    this.flags |= IO_END_UNWRITTEN;
    this.inode.unwritten++;
  }

  /** ext4_clear_io_unwritten_flag, guarded so it decrements only once. */
  private clearUnwritten(): void {
    if (!this.isUnwritten) return;
    this.flags &= ~IO_END_UNWRITTEN;
    this.inode.unwritten--;
    assert(this.inode.unwritten >= 0, () => `inode ${this.inode.ino}: unwritten count below zero`);
  }

  /**
   * Records a byte range this io_end's bios write into unwritten blocks (ext4_io_end_vec).
   * Called only after the buffers joined a bio (invariant 11); adjacent ranges merge.
   */
  addRange(offset: number, size: number): void {
    this.live('addRange');
    assert(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(size) && size > 0, () => `addRange(${offset}, ${size})`);
    const last = this.ranges[this.ranges.length - 1];
    if (last !== undefined && last.offset + last.size === offset) last.size += size;
    else this.ranges.push({ offset, size });
  }

  /** A bio of this io_end failed (EXT4_IO_END_FAILED): its ranges will not be converted. */
  markFailed(): void {
    this.live('markFailed');
    this.flags |= IO_END_FAILED;
  }

  /**
   * The one predicate (ext4_io_end_defer_completion, invariant 25): completion must wait for
   * the worker when there is something to convert — UNWRITTEN with at least one range. A
   * FAILED io_end with UNWRITTEN also goes to the worker, which only clears the flag, so both
   * paths stay one.
   */
  deferCompletion(): boolean {
    return this.isUnwritten && this.ranges.length > 0;
  }

  /**
   * Bio completion side (ext4_end_bio): if completion is deferred, the bio's page completion is
   * linked to this io_end and runs at release; otherwise it runs now. Then the bio's reference
   * is dropped with putDefer().
   */
  completeBio(bio: DeferredBio, failed: boolean): void {
    this.live('completeBio');
    if (failed) this.markFailed();
    if (this.deferCompletion()) this.deferredBios.push(bio);
    else bio.finish(false);
    this.putDefer();
  }

  /**
   * ext4_put_io_end_defer (any context, including a bio completion): the last put queues the
   * io_end for the worker when completion is deferred, else releases it at once. Never
   * converts here (invariant 9).
   */
  putDefer(): void {
    this.live('putDefer');
    if (--this.count > 0) return;
    if (this.deferCompletion()) {
      this.inode.addCompleted(this);
      return;
    }
    // UNWRITTEN without ranges (invariant 13): nothing to convert, so the flag goes here.
    this.clearUnwritten();
    this.release(false);
  }

  /**
   * ext4_put_io_end (process context: the submitter after its last bio, or sync paths): the
   * last put converts in the caller. Returns the conversion error, if any.
   */
  async put(): Promise<unknown> {
    this.live('put');
    if (--this.count > 0) return undefined;
    return this.endIo();
  }

  /**
   * ext4_end_io_end: convert every range unless the write failed, clear UNWRITTEN, release.
   * Runs only once the count reached zero, that is after every bio completed (invariant 9).
   */
  async endIo(): Promise<unknown> {
    assert(this.count === 0 && !this.released, () => `inode ${this.inode.ino}: endIo at count ${this.count}`);
    let err: unknown;
    if (this.isUnwritten && this.ranges.length > 0 && !this.isFailed) {
      try {
        await this.inode.convert(this.ranges);
      } catch (e) {
        err = e;
        this.inode.conversionError ??= e;
      }
    }
    this.clearUnwritten();
    this.release(err !== undefined);
    return err;
  }

  /**
   * ext4_release_io_end: exactly once, off every list, not UNWRITTEN (invariants 1, 4); ends
   * page writeback of the bios whose completion waited for the conversion (invariant 24), telling
   * them whether it failed.
   */
  private release(convertFailed: boolean): void {
    assert(!this.released, () => `inode ${this.inode.ino}: io_end released twice`);
    assert(this.count === 0, () => `inode ${this.inode.ino}: release at count ${this.count}`);
    assert(!this.onList, () => `inode ${this.inode.ino}: release of a queued io_end`);
    assert(!this.isUnwritten, () => `inode ${this.inode.ino}: release of an UNWRITTEN io_end`);
    this.released = true;
    for (const b of this.deferredBios.splice(0)) b.finish(convertFailed);
    this.inode.ioendCount--;
    assert(this.inode.ioendCount >= 0, () => `inode ${this.inode.ino}: io_end count below zero`);
    this.inode.wakeIfIdle();
  }
}
