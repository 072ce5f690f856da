/**
 * Reads the builder's small source files on a worker thread, in the order the builder will
 * write them, so that opening and reading thousands of files (about a tenth of a 20,000-file
 * build when done on the main thread) overlaps the engine's work on another CPU.
 *
 * The worker reads each job whole with synchronous calls (from the host's page cache that is a
 * few microseconds; a thread-pool round trip per file would cost more than the read) and posts
 * the buffers in batches, transferred, not copied. Flow control: a shared counter holds the
 * bytes posted and not yet taken; the worker sleeps (Atomics.wait) while it is above the limit,
 * and take() wakes it. A job that cannot be read becomes an error message, thrown when the
 * builder takes that job, so a failure is reported for the file it concerns and in order. Jobs
 * arrive in batches as the builder's walk of the source finds them; the worker never holds the
 * whole list.
 *
 * This module is both sides: the main thread's SmallFileReader, and the worker's loop (run when
 * the module is loaded as a worker with its workerData).
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { openSync, readSync, closeSync } from 'node:fs';
import { hostFsPath } from '../util/bytes.js';
import { assert } from '../util/assert.js';

/** One file to read: `size` bytes at `offset` of `path` (a host file, or a member of a plain tar). */
export interface ReadJob {
  path: string;
  offset: number;
  size: number;
  /** The file is an archive read at offsets: kept open for the next member. */
  archive: boolean;
}

/** Either the bytes of a job or why it could not be read (with the job's size). */
export type ReadResult = Uint8Array | { error: string; size: number };

interface WorkerInput {
  /**
   * Int32Array[2] over a SharedArrayBuffer: [0] bytes posted and not yet taken, [1] set to 1
   * when the main thread stops (the worker skips the jobs it still has).
   */
  pending: SharedArrayBuffer;
  limitBytes: number;
}

/**
 * Main to worker: the next jobs, numbered on from the last batch, packed as one string of
 * NUL-separated paths (NUL cannot occur in a path) and typed arrays: cloning an array of job
 * objects cost the main thread ~5 us per file (postMessage was 3 % of a 20,000-file build).
 */
interface JobBatch {
  paths: string;
  offsets: Float64Array;
  sizes: Float64Array;
  archive: Uint8Array;
  /** The last message: close the archives kept open and exit. */
  end?: boolean;
}

function packJobs(jobs: readonly ReadJob[]): JobBatch {
  const n = jobs.length;
  const b: JobBatch = { paths: jobs.map((j) => j.path).join('\0'), offsets: new Float64Array(n), sizes: new Float64Array(n), archive: new Uint8Array(n) };
  jobs.forEach((j, i) => {
    b.offsets[i] = j.offset;
    b.sizes[i] = j.size;
    b.archive[i] = j.archive ? 1 : 0;
  });
  return b;
}

function unpackJobs(b: JobBatch): ReadJob[] {
  if (b.sizes.length === 0) return [];
  const paths = b.paths.split('\0');
  assert(paths.length === b.sizes.length, () => `read worker: ${paths.length} paths for ${b.sizes.length} jobs`);
  // OK to index: the arrays have one entry per path (asserted).
  return paths.map((path, i) => ({ path, offset: b.offsets[i]!, size: b.sizes[i]!, archive: b.archive[i] === 1 }));
}

/** Worker to main: results of jobs first, first + 1, … */
interface Batch {
  first: number;
  results: ReadResult[];
}

/** Bytes read ahead at most (default of SmallFileReader). */
const DEFAULT_LIMIT_BYTES = 16 << 20;
/** A batch (of jobs, or of results) is posted once it holds this many bytes or files. */
const BATCH_BYTES = 256 << 10;
const BATCH_FILES = 64;

/**
 * The main thread's side: jobs are added in order as the builder learns of them (its walk of
 * the source runs ahead of its writes), results are taken in the same order.
 */
export class SmallFileReader {
  private readonly worker: Worker;
  private readonly pending: Int32Array;
  /** Results that arrived and were not taken yet, by job number. */
  private readonly results = new Map<number, ReadResult>();
  private readonly waiters = new Map<number, () => void>();
  private failure: Error | undefined;
  /** Jobs added, posted to the worker, and the next job to take. */
  private added = 0;
  private sent = 0;
  private next = 0;
  private unsent: ReadJob[] = [];
  private closed = false;
  private readonly exited: Promise<void>;

  constructor(private readonly limitBytes = DEFAULT_LIMIT_BYTES) {
    const sab = new SharedArrayBuffer(8);
    this.pending = new Int32Array(sab);
    const input: WorkerInput = { pending: sab, limitBytes };
    this.worker = new Worker(new URL(import.meta.url), { workerData: input });
    this.worker.on('message', (b: Batch) => {
      b.results.forEach((r, i) => {
        this.results.set(b.first + i, r);
        this.waiters.get(b.first + i)?.();
      });
    });
    this.worker.on('error', (e) => this.fail(e));
    this.exited = new Promise((resolve) => {
      this.worker.on('exit', (code) => {
        if (!this.closed) this.fail(new Error(`the source reader thread exited (code ${code}) before reading every file`));
        resolve();
      });
    });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const w of this.waiters.values()) w();
  }

  /** Queues the next job (posted to the worker in batches). */
  add(job: ReadJob): void {
    this.added++;
    this.unsent.push(job);
    if (this.unsent.length >= BATCH_FILES) this.send();
  }

  private send(): void {
    if (this.unsent.length === 0) return;
    const batch = packJobs(this.unsent);
    this.sent += this.unsent.length;
    this.unsent = [];
    this.worker.postMessage(batch, [batch.offsets.buffer as ArrayBuffer, batch.sizes.buffer as ArrayBuffer, batch.archive.buffer as ArrayBuffer]);
  }

  /** The next job's bytes (jobs are taken in order, each once). */
  async take(): Promise<Uint8Array> {
    const i = this.next++;
    assert(i < this.added, () => `SmallFileReader: job ${i} taken but ${this.added} added`);
    // The job may still wait in the unsent batch: the worker cannot read what it does not have.
    // (Only then: a message per take would cost more than the reads.)
    if (i >= this.sent) this.send();
    let r = this.results.get(i);
    if (r === undefined) {
      await new Promise<void>((resolve) => {
        this.waiters.set(i, resolve);
        if (this.results.has(i) || this.failure !== undefined) resolve();
      });
      this.waiters.delete(i);
      r = this.results.get(i);
      if (r === undefined) throw this.failure ?? new Error('source reader failed');
    }
    this.results.delete(i);
    // Taken, failed or not: its bytes no longer count against the read-ahead limit. The worker
    // is woken only once half the limit is free: a wake-up per file would cost a context switch.
    const size = r instanceof Uint8Array ? r.length : r.size;
    const before = Atomics.sub(this.pending, 0, size);
    if (before > this.limitBytes / 2 && before - size <= this.limitBytes / 2) Atomics.notify(this.pending, 0);
    if (!(r instanceof Uint8Array)) throw new Error(r.error);
    return r;
  }

  /**
   * Stops the worker (after the last take, or when the build gave up): always call it. The
   * worker drops the jobs it still has, closes the archives it kept open and exits.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.pending, 1, 1);
    Atomics.notify(this.pending, 0);
    const end: JobBatch = { ...packJobs([]), end: true };
    this.worker.postMessage(end);
    // It sees the stop flag between two reads and before any wait: it exits promptly.
    await this.exited;
  }
}

/** The worker's side: reads each batch of jobs in order and posts results in batches. */
function workerMain(input: WorkerInput): void {
  const pending = new Int32Array(input.pending);
  const archives = new Map<string, number>();
  let batch: Batch = { first: 0, results: [] };
  let batchBytes = 0;
  // The batch's files are read into one slab, sized for the jobs the batch will hold: one
  // buffer to allocate, transfer and collect per batch instead of one per file.
  let slab: Uint8Array | undefined;
  let slabAt = 0;
  const post = (): void => {
    const transfer = new Set<ArrayBuffer>();
    for (const r of batch.results) if (r instanceof Uint8Array) transfer.add(r.buffer as ArrayBuffer);
    parentPort?.postMessage(batch, [...transfer]);
    batch = { first: batch.first + batch.results.length, results: [] };
    batchBytes = 0;
    slab = undefined;
  };
  parentPort?.on('message', (m: JobBatch) => {
    if (m.end === true) {
      for (const fd of archives.values()) closeSync(fd);
      parentPort?.close();
      return;
    }
    const jobs = unpackJobs(m);
    for (let i = 0; i < jobs.length; i++) {
      // OK to index: i < jobs.length.
      const job = jobs[i]!;
      if (Atomics.load(pending, 1) !== 0) return;
      // Flow control: `pending` counts every byte read and not yet taken, this batch's
      // included. Over the limit, post what we have and sleep until half of it is free (take()
      // wakes us then; Atomics.wait returns at once if the count moved before we slept).
      if (Atomics.load(pending, 0) > input.limitBytes) {
        if (batch.results.length > 0) post();
        for (let cur = Atomics.load(pending, 0); cur > input.limitBytes / 2 && Atomics.load(pending, 1) === 0; cur = Atomics.load(pending, 0)) {
          Atomics.wait(pending, 0, cur, 1000);
        }
      }
      if (slab === undefined) {
        // What post() will have taken when it runs: up to BATCH_BYTES or BATCH_FILES.
        let bytes = 0;
        for (let j = i; j < jobs.length && j - i < BATCH_FILES - batch.results.length && batchBytes + bytes < BATCH_BYTES; j++) bytes += jobs[j]!.size;
        slab = new Uint8Array(bytes);
        slabAt = 0;
      }
      const into = slabAt + job.size <= slab.length ? slab.subarray(slabAt, slabAt + job.size) : new Uint8Array(job.size);
      if (into.buffer === slab.buffer) slabAt += job.size;
      const r = readJob(job, archives, into);
      batch.results.push(r);
      batchBytes += job.size;
      Atomics.add(pending, 0, job.size);
      if (batchBytes >= BATCH_BYTES || batch.results.length >= BATCH_FILES) post();
    }
    // The main thread may be waiting for the last of these: no result stays behind.
    if (batch.results.length > 0) post();
  });
}

/** Reads `job` into `buf` (job.size bytes). */
function readJob(job: ReadJob, archives: Map<string, number>, buf: Uint8Array): ReadResult {
  let fd: number;
  try {
    fd = archives.get(job.path) ?? openSync(hostFsPath(job.path), 'r');
  } catch (err) {
    return { error: `cannot read the source: ${(err as Error).message}`, size: job.size };
  }
  if (job.archive) archives.set(job.path, fd);
  try {
    for (let got = 0; got < buf.length; ) {
      const n = readSync(fd, buf, got, buf.length - got, job.offset + got);
      if (n === 0) return { error: `the source ended at ${got} of ${job.size} bytes (changed during the build?)`, size: job.size };
      got += n;
    }
  } catch (err) {
    return { error: `cannot read the source: ${(err as Error).message}`, size: job.size };
  } finally {
    if (!job.archive) closeSync(fd);
  }
  return buf;
}

if (!isMainThread && (workerData as WorkerInput | undefined)?.pending !== undefined) workerMain(workerData as WorkerInput);
