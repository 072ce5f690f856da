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
 * builder takes that job, so a failure is reported for the file it concerns and in order.
 *
 * This module is both sides: the main thread's SmallFileReader, and the worker's loop (run when
 * the module is loaded as a worker with its workerData).
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { openSync, readSync, closeSync } from 'node:fs';
import { assert } from '../util/assert.js';

/** One file to read: `size` bytes at `offset` of `path` (a host file, or a member of a plain tar). */
export interface ReadJob {
  path: string;
  offset: number;
  size: number;
  /** The file is an archive read at offsets: kept open for the next member. */
  archive: boolean;
}

/** Either the bytes of a job or why it could not be read. */
export type ReadResult = Uint8Array | { error: string };

interface WorkerInput {
  jobs: ReadJob[];
  /** Int32Array[1] over a SharedArrayBuffer: bytes posted and not yet taken. */
  pending: SharedArrayBuffer;
  limitBytes: number;
}

interface Batch {
  first: number;
  results: ReadResult[];
}

/** Bytes read ahead at most (default of SmallFileReader). */
const DEFAULT_LIMIT_BYTES = 16 << 20;
/** A batch is posted once it holds this many bytes or files. */
const BATCH_BYTES = 256 << 10;
const BATCH_FILES = 64;

/** The main thread's side: results in job order. */
export class SmallFileReader {
  private readonly worker: Worker;
  private readonly pending: Int32Array;
  private readonly results: (ReadResult | undefined)[];
  private readonly waiters = new Map<number, () => void>();
  private failure: Error | undefined;
  private next = 0;

  constructor(private readonly jobs: readonly ReadJob[], private readonly limitBytes = DEFAULT_LIMIT_BYTES) {
    const sab = new SharedArrayBuffer(4);
    this.pending = new Int32Array(sab);
    this.results = new Array<ReadResult | undefined>(jobs.length);
    const input: WorkerInput = { jobs: [...jobs], pending: sab, limitBytes };
    this.worker = new Worker(new URL(import.meta.url), { workerData: input });
    this.worker.on('message', (b: Batch) => {
      b.results.forEach((r, i) => {
        this.results[b.first + i] = r;
        this.waiters.get(b.first + i)?.();
      });
    });
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => {
      if (this.results.includes(undefined)) this.fail(new Error(`the source reader thread exited (code ${code}) before reading every file`));
    });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const w of this.waiters.values()) w();
  }

  /** The next job's bytes (jobs are taken in order, each once). */
  async take(): Promise<Uint8Array> {
    const i = this.next++;
    assert(i < this.jobs.length, () => `SmallFileReader: job ${i} of ${this.jobs.length}`);
    let r = this.results[i];
    if (r === undefined) {
      await new Promise<void>((resolve) => {
        this.waiters.set(i, resolve);
        if (this.results[i] !== undefined || this.failure !== undefined) resolve();
      });
      this.waiters.delete(i);
      r = this.results[i];
      if (r === undefined) throw this.failure ?? new Error('source reader failed');
    }
    this.results[i] = undefined;
    // Taken, failed or not: its bytes no longer count against the read-ahead limit. The worker
    // is woken only once half the limit is free: a wake-up per file would cost a context switch.
    // OK to index: jobs[i] exists (asserted above).
    const size = this.jobs[i]!.size;
    const before = Atomics.sub(this.pending, 0, size);
    if (before > this.limitBytes / 2 && before - size <= this.limitBytes / 2) Atomics.notify(this.pending, 0);
    if (!(r instanceof Uint8Array)) throw new Error(r.error);
    return r;
  }

  /** Stops the worker (after the last take, or when the build gave up): always call it. */
  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** The worker's loop: reads every job in order and posts batches. */
function workerMain(input: WorkerInput): void {
  const pending = new Int32Array(input.pending);
  const archives = new Map<string, number>();
  let batch: Batch = { first: 0, results: [] };
  let batchBytes = 0;
  const post = (): void => {
    const transfer = batch.results.flatMap((r) => (r instanceof Uint8Array ? [r.buffer as ArrayBuffer] : []));
    parentPort?.postMessage(batch, transfer);
    batch = { first: batch.first + batch.results.length, results: [] };
    batchBytes = 0;
  };
  input.jobs.forEach((job) => {
    // Flow control: `pending` counts every byte read and not yet taken, this batch's included.
    // Over the limit, post what we have and sleep until half of it is free (take() wakes us
    // then; Atomics.wait returns at once if the count moved before we slept).
    if (Atomics.load(pending, 0) > input.limitBytes) {
      if (batch.results.length > 0) post();
      for (let cur = Atomics.load(pending, 0); cur > input.limitBytes / 2; cur = Atomics.load(pending, 0)) Atomics.wait(pending, 0, cur, 1000);
    }
    const r = readJob(job, archives);
    batch.results.push(r);
    batchBytes += job.size;
    Atomics.add(pending, 0, job.size);
    if (batchBytes >= BATCH_BYTES || batch.results.length >= BATCH_FILES) post();
  });
  if (batch.results.length > 0) post();
  for (const fd of archives.values()) closeSync(fd);
}

function readJob(job: ReadJob, archives: Map<string, number>): ReadResult {
  const buf = new Uint8Array(job.size);
  let fd: number;
  try {
    fd = archives.get(job.path) ?? openSync(job.path, 'r');
  } catch (err) {
    return { error: `cannot read the source: ${(err as Error).message}` };
  }
  if (job.archive) archives.set(job.path, fd);
  try {
    for (let got = 0; got < buf.length; ) {
      const n = readSync(fd, buf, got, buf.length - got, job.offset + got);
      if (n === 0) return { error: `the source ended at ${got} of ${job.size} bytes (changed during the build?)` };
      got += n;
    }
  } catch (err) {
    return { error: `cannot read the source: ${(err as Error).message}` };
  } finally {
    if (!job.archive) closeSync(fd);
  }
  return buf;
}

if (!isMainThread && (workerData as WorkerInput | undefined)?.jobs !== undefined) workerMain(workerData as WorkerInput);
