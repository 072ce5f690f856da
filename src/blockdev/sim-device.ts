/**
 * SimDevice: a BlockDevice for deterministic simulation, modelled on TigerBeetle's
 * `src/testing/storage.zig` (STYLE.md §11). Everything it decides — latency, completion order,
 * injected errors, what survives a crash — comes from a seed, so a failing run replays from it.
 *
 * The model:
 * - Every request completes later, through a WorkQueue (a SimWorkQueue picks the order), after a
 *   seeded latency; requests in flight together complete in any order.
 * - A volatile write cache: a completed write is visible to every later read at once, but is
 *   durable only once a flush() submitted after its completion has completed (a cache barrier,
 *   the kernel's REQ_PREFLUSH). Completed-but-unflushed writes and writes still in flight are
 *   what a crash may lose.
 * - `crash(mode)` returns the durable image after a power cut: unflushed writes dropped, all
 *   kept, or (seeded) any subset of them kept, each possibly torn at sector granularity. The
 *   image never holds bytes nobody wrote: each sector is its durable content or that of a write
 *   to it. Later writes to the same sector win over earlier ones, as in a drive's cache.
 * - Injected EIO on chosen requests (a predicate, or a probability per op). A failed read
 *   returns nothing; a failed write changes nothing; a failed flush makes nothing durable.
 *
 * Bug detectors (assertions, thrown from the submitting call): a write overlapping a request in
 * flight, or a read overlapping a write in flight (the result would be undefined on real
 * hardware); requests not sector-aligned (the BlockDevice contract) unless allowed; requests
 * above maxRequestBytes; using the device after crash() or closing it with requests in flight.
 */
import { assert } from '../util/assert.js';
import { IoError, PosixError } from '../util/errors.js';
import { seededPrng, type Prng } from '../runtime/random.js';
import type { WorkQueue } from '../runtime/work-queue.js';
import { assertRange, type BlockDevice } from './block-device.js';

/** What the device was asked, as seen by the EIO predicate. */
export interface SimRequest {
  /** Submission order, from 0. */
  readonly id: number;
  readonly op: 'read' | 'write' | 'flush';
  readonly offsetBytes: number;
  readonly lenBytes: number;
}

export interface SimDeviceOptions {
  /** Delivers completions (a SimWorkQueue in tests). */
  queue: WorkQueue;
  /** Seed for the device's own decisions (latency, probabilistic EIO, crash). */
  seed: number;
  /**
   * Initial durable contents, shared and never written (the device keeps its changes apart, so
   * a large image costs only what a run writes): leave it unchanged while the device lives. Or
   * give sizeBytes for a zeroed device.
   */
  image?: Uint8Array;
  sizeBytes?: number;
  sectorSize?: number;
  /** Largest request in bytes (default 1 MiB). */
  maxRequestBytes?: number;
  readOnly?: boolean;
  /** Latency range in virtual ticks, inclusive (default 0..10). */
  latencyTicks?: { min: number; max: number };
  /** Fails a request with EIO when it returns true. */
  eio?: (req: SimRequest) => boolean;
  /** Fails requests with EIO at random, with these probabilities per op. */
  eioProbability?: { read?: number; write?: number; flush?: number };
  /** Accept requests that are not multiples of sectorSize (default false: the contract). */
  allowUnaligned?: boolean;
}

/**
 * How a crash treats writes not yet flushed: all lost, all kept, or a seeded subset kept in any
 * order (a later write surviving while an earlier one vanishes), each possibly torn.
 */
export type CrashMode = 'lose-unflushed' | 'keep-unflushed' | 'random';

/** Bytes per copy-on-write chunk of a device's contents. */
const CHUNK_BYTES = 64 << 10;

/**
 * A device's contents: CHUNK_BYTES chunks read from the initial image until first written, then
 * from a private copy, so the image is never written and a large one costs only what changes.
 */
class Contents {
  /** The chunks written so far, by index. */
  private readonly own = new Map<number, Uint8Array>();

  constructor(private readonly base: Uint8Array) {}

  /** Copies `dst.length` bytes at `offsetBytes` into `dst`. */
  read(offsetBytes: number, dst: Uint8Array): void {
    this.pieces(offsetBytes, dst.length, (i, from, at, n) => {
      const chunk = this.own.get(i);
      const pos = offsetBytes + at;
      dst.set(chunk !== undefined ? chunk.subarray(from, from + n) : this.base.subarray(pos, pos + n), at);
    });
  }

  /** Stores `src` at `offsetBytes`, copying each chunk it touches on its first write. */
  write(offsetBytes: number, src: Uint8Array): void {
    this.pieces(offsetBytes, src.length, (i, from, at, n) => {
      let chunk = this.own.get(i);
      if (chunk === undefined) {
        chunk = this.base.slice(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
        this.own.set(i, chunk);
      }
      chunk.set(src.subarray(at, at + n), from);
    });
  }

  /** The whole contents as a new array. */
  toArray(): Uint8Array {
    const out = this.base.slice();
    for (const [i, chunk] of this.own) out.set(chunk, i * CHUNK_BYTES);
    return out;
  }

  /** Calls `fn(chunk index, offset in chunk, offset in the request, length)` per chunk of a request. */
  private pieces(offsetBytes: number, len: number, fn: (i: number, from: number, at: number, n: number) => void): void {
    for (let at = 0; at < len; ) {
      const i = Math.floor((offsetBytes + at) / CHUNK_BYTES);
      const from = offsetBytes + at - i * CHUNK_BYTES;
      const n = Math.min(len - at, CHUNK_BYTES - from);
      fn(i, from, at, n);
      at += n;
    }
  }
}

/** A write in the volatile cache or in flight. */
interface SimWrite {
  readonly id: number;
  readonly offsetBytes: number;
  /** A copy of the data, taken at submission. */
  readonly data: Uint8Array;
}

/** A request in flight, for the overlap detector. */
interface InFlight {
  readonly req: SimRequest;
  /** The write's data, for crash(); undefined for reads. */
  readonly write: SimWrite | undefined;
}

export interface SimDeviceStats {
  reads: number;
  writes: number;
  flushes: number;
  /** Requests failed with injected EIO. */
  eio: number;
}

export class SimDevice implements BlockDevice {
  readonly sizeBytes: number;
  readonly sectorSize: number;
  readonly maxRequestBytes: number;
  readonly readOnly: boolean;
  readonly prng: Prng;
  readonly stats: SimDeviceStats = { reads: 0, writes: 0, flushes: 0, eio: 0 };
  /** What survives a power cut with nothing in the cache. */
  private readonly durable: Contents;
  /** What reads see: durable plus the completed writes in the cache. */
  private readonly visible: Contents;
  /** Completed, unflushed writes in completion order. */
  private cache: SimWrite[] = [];
  private readonly inflight = new Map<number, InFlight>();
  private nextId = 0;
  private crashed = false;
  private closed = false;

  constructor(private readonly opts: SimDeviceOptions) {
    this.prng = seededPrng(opts.seed);
    this.sectorSize = opts.sectorSize ?? 512;
    this.maxRequestBytes = opts.maxRequestBytes ?? 1 << 20;
    this.readOnly = opts.readOnly ?? false;
    const image = opts.image ?? new Uint8Array(opts.sizeBytes ?? 0);
    assert(opts.image === undefined || opts.sizeBytes === undefined || opts.sizeBytes === opts.image.length, 'SimDevice: image and sizeBytes disagree');
    this.sizeBytes = image.length;
    this.durable = new Contents(image);
    this.visible = new Contents(image);
    const lat = opts.latencyTicks ?? { min: 0, max: 10 };
    assert(Number.isSafeInteger(lat.min) && lat.min >= 0 && lat.max >= lat.min, 'SimDevice: bad latency range');
    assert(this.sizeBytes % this.sectorSize === 0, 'SimDevice: size not a multiple of the sector size');
  }

  /** Requests submitted and not yet completed. */
  get inFlightCount(): number {
    return this.inflight.size;
  }
  /** Completed writes not yet made durable by a flush. */
  get unflushedCount(): number {
    return this.cache.length;
  }

  read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    const req = this.begin('read', offsetBytes, dst.length);
    return this.complete(req, undefined, () => {
      this.visible.read(offsetBytes, dst);
    });
  }

  write(offsetBytes: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) return Promise.reject(new PosixError('EROFS', 'write'));
    const req = this.begin('write', offsetBytes, src.length);
    const w: SimWrite = { id: req.id, offsetBytes, data: src.slice() };
    return this.complete(req, w, () => {
      this.visible.write(offsetBytes, w.data);
      this.cache.push(w);
    });
  }

  /**
   * A cache barrier: the writes completed before this call become durable when it completes
   * (writes completing meanwhile need a later flush).
   */
  flush(): Promise<void> {
    const req = this.begin('flush', 0, 0);
    const barrier = new Set(this.cache.map((w) => w.id));
    return this.complete(req, undefined, () => {
      const keep: SimWrite[] = [];
      for (const w of this.cache) {
        if (barrier.has(w.id)) this.durable.write(w.offsetBytes, w.data);
        else keep.push(w);
      }
      this.cache = keep;
    });
  }

  async close(): Promise<void> {
    assert(this.inflight.size === 0, () => `SimDevice closed with ${this.inflight.size} requests in flight`);
    this.closed = true;
  }

  /**
   * A power cut: returns the image a restart would find (a copy), according to `mode`. The
   * device is dead afterwards: requests still in flight never complete and new ones are bugs.
   */
  crash(mode: CrashMode): Uint8Array {
    assert(!this.crashed, 'SimDevice crashed twice');
    this.crashed = true;
    const image = this.durable.toArray();
    // Cached writes in completion order, then in-flight writes (newer than any cached write
    // they overlap, since in-flight writes never overlap each other or earlier in-flight ones).
    const inflightWrites = [...this.inflight.values()].flatMap((f) => (f.write !== undefined ? [f.write] : []));
    for (const w of [...this.cache, ...inflightWrites]) {
      if (mode === 'lose-unflushed') break;
      if (mode === 'keep-unflushed') {
        image.set(w.data, w.offsetBytes);
        continue;
      }
      const fate = this.prng.below(3); // 0 lost, 1 kept whole, 2 torn
      if (fate === 1) image.set(w.data, w.offsetBytes);
      else if (fate === 2) this.tear(image, w);
    }
    this.cache = [];
    this.inflight.clear();
    return image;
  }

  /** A copy of what is durable now (what crash('lose-unflushed') would return). */
  durableImage(): Uint8Array {
    return this.durable.toArray();
  }

  /** Keeps a seeded subset of the sectors of `w` in `image`. */
  private tear(image: Uint8Array, w: SimWrite): void {
    const ss = this.sectorSize;
    const end = w.offsetBytes + w.data.length;
    for (let s = Math.floor(w.offsetBytes / ss) * ss; s < end; s += ss) {
      if (!this.prng.chance(0.5)) continue;
      const from = Math.max(s, w.offsetBytes);
      const to = Math.min(s + ss, end);
      image.set(w.data.subarray(from - w.offsetBytes, to - w.offsetBytes), from);
    }
  }

  /** Checks a new request against the contract and the requests in flight; registers it. */
  private begin(op: SimRequest['op'], offsetBytes: number, lenBytes: number): SimRequest {
    assert(!this.crashed, 'SimDevice used after crash()');
    assert(!this.closed, 'SimDevice used after close()');
    assertRange(this, offsetBytes, lenBytes);
    assert(lenBytes <= this.maxRequestBytes, () => `SimDevice: ${op} of ${lenBytes} bytes exceeds maxRequestBytes ${this.maxRequestBytes}`);
    if (!(this.opts.allowUnaligned ?? false)) {
      assert(offsetBytes % this.sectorSize === 0 && lenBytes % this.sectorSize === 0, () =>
        `SimDevice: ${op} [${offsetBytes}, +${lenBytes}) is not aligned to ${this.sectorSize}-byte sectors`);
    }
    const req: SimRequest = { id: this.nextId++, op, offsetBytes, lenBytes };
    if (op !== 'flush') this.assertNoOverlap(req);
    return req;
  }

  /**
   * The concurrency bug detector: a write may not overlap anything in flight, and a read may
   * not overlap a write in flight (TigerBeetle's storage.zig asserts the same).
   */
  private assertNoOverlap(req: SimRequest): void {
    const end = req.offsetBytes + req.lenBytes;
    for (const f of this.inflight.values()) {
      const o = f.req;
      if (o.op === 'flush' || (req.op === 'read' && o.op === 'read')) continue;
      const overlaps = req.offsetBytes < o.offsetBytes + o.lenBytes && o.offsetBytes < end;
      assert(!overlaps, () =>
        `SimDevice: ${req.op} #${req.id} [${req.offsetBytes}, +${req.lenBytes}) overlaps ${o.op} #${o.id} ` +
        `[${o.offsetBytes}, +${o.lenBytes}) still in flight (seed ${this.prng.seed})`);
    }
  }

  /**
   * Queues the completion of `req` after a seeded latency: decides EIO now (so the predicate
   * sees requests in submission order), applies `effect` and settles the promise when the
   * scheduler runs it.
   */
  private complete(req: SimRequest, write: SimWrite | undefined, effect: () => void): Promise<void> {
    this.stats[req.op === 'read' ? 'reads' : req.op === 'write' ? 'writes' : 'flushes']++;
    const fail = this.shouldFail(req);
    const lat = this.opts.latencyTicks ?? { min: 0, max: 10 };
    const delay = this.prng.between(lat.min, lat.max);
    this.inflight.set(req.id, { req, write });
    return new Promise<void>((resolve, reject) => {
      this.opts.queue.queue(() => {
        // A crash ended the device: the request never completes.
        if (this.crashed) return;
        const gone = this.inflight.delete(req.id);
        assert(gone, () => `SimDevice: request #${req.id} completed twice`);
        if (fail) {
          this.stats.eio++;
          reject(new IoError(req.op, `injected EIO (request #${req.id}, seed ${this.prng.seed})`, req.op === 'flush' ? undefined : req.offsetBytes));
          return;
        }
        effect();
        resolve();
      }, delay);
    });
  }

  private shouldFail(req: SimRequest): boolean {
    if (this.opts.eio?.(req) === true) return true;
    const p = this.opts.eioProbability?.[req.op] ?? 0;
    return p > 0 && this.prng.chance(p);
  }
}
