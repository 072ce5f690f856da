/**
 * An io_submit / io_uring-like asynchronous API over direct I/O (fs/aio.c: io_setup, io_submit,
 * io_getevents, io_cancel, io_destroy), bound to one open file.
 *
 * Usage: `const ctx = new AioContext(dio, info, { depth: 32 })`, then
 * `ctx.submit([{ op: 'write', buf, pos }, …])`. Each accepted iocb becomes an AioRequest whose
 * `done` promise settles with its IoEvent (bytes moved) or rejects with its error. submit()
 * returns at once: the submitter never waits for the data, so with a queue depth above one the
 * requests are in flight on the device together. With `reap: 'events'` the completions also go
 * to a completion queue read with `getEvents(min, max)`, as io_getevents does.
 *
 * Rules (the same as O_DIRECT on Linux, see direct-io.ts): offset, length and buffer must be
 * multiples of the block size, else the request fails with EINVAL; unaligned asynchronous
 * writes are not supported (Linux's partial-block zeroing, scenario S16, has no counterpart
 * here). The buffer belongs to the request until it settles: writes read it and reads fill it
 * while the request is in flight.
 *
 * Ordering: completions arrive in any order, and there is no ordering between requests unless
 * the caller awaits one before submitting the next. The one exception, which Linux does not
 * give: requests whose block ranges overlap run one after the other in submission order (the
 * direct-I/O range lock), because a device must never see overlapping writes in flight; so of
 * two overlapping writes submitted together, the later one's data wins. Writes that extend the
 * file are synchronous under the inode lock (as ext4 does them), so they run one at a time.
 *
 * Cancellation: supported only before a request starts, that is while it still waits for an
 * overlapping earlier request of the same file: cancel() then returns true and the request
 * settles with ECANCELED, having touched nothing. Once started (mapped or submitted) it runs to
 * completion and cancel() returns false, as io_cancel fails for regular-file I/O on Linux.
 *
 * DirectFile, at the end, is what a FileHandle opened with `{ direct: true }` delegates to.
 *
 * Limits: at most `depth` requests are in flight (plus, in events mode, completed but not yet
 * reaped); submit() takes what fits and returns those (io_submit's short count), and throws
 * EAGAIN when nothing fits.
 */
import type { InodeInfo } from '../fs/inode/inode.js';
import { assert } from '../util/assert.js';
import { PosixError, isExt4Error, type Ext4Error } from '../util/errors.js';
import { AsyncIoError, DioCancel, type DirectIo } from './direct-io.js';

export { AsyncIoError } from './direct-io.js';

/** Largest queue depth (the kernel's aio_max_nr is far larger; a limit on everything). */
export const AIO_MAX_DEPTH = 65536;

/** One request (struct iocb): read or write `buf.length` bytes at file offset `pos`. */
export interface Iocb {
  op: 'read' | 'write';
  buf: Uint8Array;
  pos: number;
  /** Caller's cookie, returned in the event (aio_data). */
  data?: unknown;
}

/** One completion (struct io_event). */
export interface IoEvent {
  iocb: Iocb;
  /** Bytes moved, or the negated errno on failure (io_event.res). */
  res: number;
  /** The error when the request failed. */
  error: Ext4Error | undefined;
}

/** A submitted request: its completion and its cancellation. */
export interface AioRequest {
  readonly iocb: Iocb;
  /** Settles with the request's event; rejects with its error. */
  readonly done: Promise<IoEvent>;
  /** Cancels the request if it has not started (see the module header). */
  cancel(): boolean;
}

export interface AioContextOptions {
  /** Most requests in flight (io_setup's nr_events); default 128. */
  depth?: number;
  /** 'promise' (default): completions settle the promises only; 'events': also queued for getEvents. */
  reap?: 'promise' | 'events';
  /** The file was opened for reading (else reads fail with EBADF); default true. */
  readable?: boolean;
  /** The file was opened for writing (else writes fail with EBADF); default true. */
  writable?: boolean;
}

export class AioContext {
  readonly depth: number;
  readonly reap: 'promise' | 'events';
  private readonly readable: boolean;
  private readonly writable: boolean;
  private inFlightCount = 0;
  private readonly events: IoEvent[] = [];
  private waiters: (() => void)[] = [];
  private destroyed = false;

  constructor(readonly dio: DirectIo, readonly info: InodeInfo, opts: AioContextOptions = {}) {
    this.depth = opts.depth ?? 128;
    this.reap = opts.reap ?? 'promise';
    this.readable = opts.readable ?? true;
    this.writable = opts.writable ?? true;
    if (!Number.isSafeInteger(this.depth) || this.depth < 1 || this.depth > AIO_MAX_DEPTH) {
      throw new PosixError('EINVAL', 'io_setup', undefined, `queue depth ${this.depth} outside 1..${AIO_MAX_DEPTH}`);
    }
  }

  /** Requests submitted and not yet settled. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Completions waiting for getEvents (events mode). */
  get pendingEvents(): number {
    return this.events.length;
  }

  /**
   * io_submit: starts as many of `iocbs` as the queue has room for, in order, and returns their
   * requests (fewer than given when the queue is nearly full). Throws EAGAIN when none fits and
   * EINVAL after destroy(). Errors of a request (alignment, EBADF, ENOSPC, EIO, …) settle it.
   */
  submit(iocbs: readonly Iocb[]): AioRequest[] {
    if (this.destroyed) throw new PosixError('EINVAL', 'io_submit', undefined, 'context destroyed');
    const used = this.inFlightCount + (this.reap === 'events' ? this.events.length : 0);
    const room = Math.max(0, this.depth - used);
    if (iocbs.length > 0 && room === 0) {
      throw new AsyncIoError('EAGAIN', 'io_submit', `queue full (${this.depth} requests in flight or unreaped)`);
    }
    return iocbs.slice(0, room).map((iocb) => this.start(iocb));
  }

  /** Starts one request: the direct-I/O call runs on its own, the caller gets its promise now. */
  private start(iocb: Iocb): AioRequest {
    const cancel = new DioCancel();
    this.inFlightCount++;
    const run = async (): Promise<number> => {
      if (iocb.op === 'read') {
        if (!this.readable) throw new PosixError('EBADF', 'io_submit', undefined, 'not open for reading');
        return this.dio.read(this.info, iocb.pos, iocb.buf, { cancel });
      }
      if (iocb.op !== 'write') throw new PosixError('EINVAL', 'io_submit', undefined, `unknown op ${String(iocb.op)}`);
      if (!this.writable) throw new PosixError('EBADF', 'io_submit', undefined, 'not open for writing');
      return this.dio.write(this.info, iocb.pos, iocb.buf, { async: true, cancel });
    };
    const done = run().then(
      (res) => this.settle({ iocb, res, error: undefined }),
      (e: unknown) => {
        // Bugs are not turned into events: they reject the promise as they are.
        const ev: IoEvent | undefined = isExt4Error(e) ? { iocb, res: -e.errno, error: e } : undefined;
        this.settle(ev);
        throw e;
      },
    );
    // Events mode reaps through getEvents: an unobserved rejection is not an unhandled one.
    if (this.reap === 'events') done.catch(() => {});
    return { iocb, done, cancel: () => cancel.cancel() };
  }

  /** A request settled: count it out, queue its event (events mode), wake waiters. */
  private settle(ev: IoEvent): IoEvent;
  private settle(ev: IoEvent | undefined): IoEvent | undefined;
  private settle(ev: IoEvent | undefined): IoEvent | undefined {
    this.inFlightCount--;
    assert(this.inFlightCount >= 0, 'aio in-flight count below zero');
    if (ev !== undefined && this.reap === 'events') this.events.push(ev);
    for (const w of this.waiters.splice(0)) w();
    return ev;
  }

  /**
   * io_getevents: waits until at least `minNr` completions are queued (or nothing is left in
   * flight, then returns what there is) and takes up to `maxNr` of them, oldest first.
   */
  async getEvents(minNr: number, maxNr: number): Promise<IoEvent[]> {
    if (this.reap !== 'events') throw new PosixError('EINVAL', 'io_getevents', undefined, "the context reaps through promises (reap: 'promise')");
    if (!Number.isSafeInteger(minNr) || !Number.isSafeInteger(maxNr) || minNr < 0 || maxNr < 1 || minNr > maxNr) {
      throw new PosixError('EINVAL', 'io_getevents', undefined, `min ${minNr}, max ${maxNr}`);
    }
    while (this.events.length < minNr && this.inFlightCount > 0) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.events.splice(0, maxNr);
  }

  /** io_cancel: true when `req` was cancelled before it started. */
  cancel(req: AioRequest): boolean {
    return req.cancel();
  }

  /** io_destroy: refuses new requests and waits for every request in flight to settle. */
  async destroy(): Promise<void> {
    this.destroyed = true;
    while (this.inFlightCount > 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
}

/** The open flags a DirectFile checks (the FileHandle's parsed flags). */
export interface DirectFileFlags {
  read: boolean;
  write: boolean;
  /** O_APPEND: every write goes to i_size, whatever the position says. */
  append: boolean;
}

/**
 * The O_DIRECT side of an open file, for the API's FileHandle: node:fs-shaped read/write through
 * DirectIo, `aio()` contexts bound to the file, and close() that waits for every request of those
 * contexts. Call it outside WriteOps.run: DirectIo serializes its own metadata phases.
 */
export class DirectFile {
  private readonly contexts = new Set<AioContext>();
  private closed = false;

  constructor(readonly dio: DirectIo, readonly info: InodeInfo, readonly flags: DirectFileFlags) {}

  private check(syscall: string, need: 'read' | 'write', buf: Uint8Array, offset: number, length: number): void {
    if (this.closed) throw new PosixError('EBADF', syscall);
    if (!this.flags[need]) throw new PosixError('EBADF', syscall, undefined, `not open for ${need === 'read' ? 'reading' : 'writing'}`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > buf.length) {
      throw new PosixError('EINVAL', syscall, undefined, `offset ${offset} + length ${length} outside a buffer of ${buf.length}`);
    }
  }

  /** pread with O_DIRECT: `length` bytes at `position` into `buffer` at `offset` (all block aligned). */
  async read(buffer: Uint8Array, offset = 0, length = buffer.length - offset, position = 0): Promise<{ bytesRead: number; buffer: Uint8Array }> {
    this.check('read', 'read', buffer, offset, length);
    const bytesRead = await this.dio.read(this.info, position, buffer.subarray(offset, offset + length));
    return { bytesRead, buffer };
  }

  /** pwrite with O_DIRECT (O_APPEND: at i_size); a short count after partial progress. */
  async write(buffer: Uint8Array, offset = 0, length = buffer.length - offset, position = 0): Promise<{ bytesWritten: number; buffer: Uint8Array }> {
    this.check('write', 'write', buffer, offset, length);
    const bytesWritten = await this.dio.write(this.info, position, buffer.subarray(offset, offset + length), { append: this.flags.append });
    return { bytesWritten, buffer };
  }

  /** io_setup for this file: a context whose requests check this file's open flags. */
  aio(opts: Omit<AioContextOptions, 'readable' | 'writable'> = {}): AioContext {
    if (this.closed) throw new PosixError('EBADF', 'io_setup');
    const ctx = new AioContext(this.dio, this.info, { ...opts, readable: this.flags.read, writable: this.flags.write });
    this.contexts.add(ctx);
    return ctx;
  }

  /** Refuses new requests and waits for every request of this file's contexts (io_destroy). */
  async close(): Promise<void> {
    this.closed = true;
    for (const ctx of this.contexts) await ctx.destroy();
    this.contexts.clear();
  }
}
