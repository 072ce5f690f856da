/**
 * Deferred work and completion delivery (STYLE.md §11): the seam where the kernel has workqueues
 * (`queue_work`, `flush_workqueue`) and interrupt-context bio completion. Everything that runs
 * "later" — a device completion, io_end conversion work — is queued here, so a test can choose
 * the order.
 *
 * Two implementations:
 * - `HostWorkQueue` (production): items run on macrotasks (setImmediate), in the order queued,
 *   those queued in one turn together; `delayTicks` is ignored (the host has real latency).
 * - `SimWorkQueue` (tests, modelled on TigerBeetle's deterministic simulator): items wait in a
 *   pool with a virtual ready time; each step picks one ready item with a seeded Prng, so any
 *   interleaving is replayed from its seed. Between two items it lets the host drain every
 *   promise continuation (a setImmediate turn), so the work an item triggers — awaiting code
 *   resuming and queueing more — is in the pool before the next pick, and the picks stay a
 *   function of the seed alone.
 *
 * Invariants: an item runs exactly once and never inside `queue()` (no re-entry into the
 * caller); the simulator bounds its steps (TigerBeetle: a limit on everything), so a livelock
 * fails with its seed instead of hanging.
 */
import { assert } from '../util/assert.js';
import { seededPrng, type Prng } from './random.js';

/** A unit of deferred work (the kernel's work_struct function). */
export type Work = () => void;

export interface WorkQueue {
  /**
   * Queues `work` to run later, never before `queue` returns. `delayTicks` is a simulated
   * latency in virtual ticks (at least that long after now); real queues ignore it.
   */
  queue(work: Work, delayTicks?: number): void;
}

/**
 * The production queue: items run first in first out on macrotasks. Items queued before the
 * next macrotask share it (one setImmediate per batch, not per item: a writeback of thousands
 * of small files queues one conversion per inode), each still after `queue` returned.
 */
export class HostWorkQueue implements WorkQueue {
  /** Items queued and not yet finished. */
  private pendingCount = 0;
  private idleWaiters: (() => void)[] = [];
  /** Items waiting for the scheduled macrotask. */
  private batch: Work[] = [];

  get pending(): number {
    return this.pendingCount;
  }

  queue(work: Work, _delayTicks = 0): void {
    this.pendingCount++;
    if (this.batch.length === 0) setImmediate(this.runBatch);
    this.batch.push(work);
  }

  private readonly runBatch = (): void => {
    const items = this.batch;
    this.batch = [];
    for (let i = 0; i < items.length; i++) {
      try {
        items[i]!();
      } catch (e) {
        // A failing item is a bug: the rest still run (they were queued and are counted), then
        // the first failure surfaces as an uncaught exception, as with one macrotask per item.
        this.finishOne();
        this.batch = items.slice(i + 1).concat(this.batch);
        if (this.batch.length > 0) setImmediate(this.runBatch);
        throw e;
      }
      this.finishOne();
    }
  };

  private finishOne(): void {
    this.pendingCount--;
    assert(this.pendingCount >= 0, 'HostWorkQueue pending count went negative');
    if (this.pendingCount === 0) this.wakeIdle();
  }

  /** Resolves once no item is queued or running (the kernel's flush_workqueue, roughly). */
  async idle(): Promise<void> {
    if (this.pendingCount === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of w) resolve();
  }
}

/** One queued item of the simulator. */
interface SimItem {
  /** The work to run. */
  readonly work: Work;
  /** Virtual tick at or after which the item may run. */
  readonly readyAtTicks: number;
  /** Queue order, for traces. */
  readonly id: number;
}

export interface SimWorkQueueOptions {
  /** Upper bound on items run by one runUntilIdle() (default 10,000,000); exceeding it is a bug. */
  maxSteps?: number;
  /** When > 0, `queue` adds a seeded extra latency in [0, jitterTicks] to every item. */
  jitterTicks?: number;
}

/**
 * The deterministic scheduler: a pool of items, a virtual clock in ticks and a seeded Prng that
 * picks which ready item runs next.
 */
export class SimWorkQueue implements WorkQueue {
  readonly prng: Prng;
  /** Virtual time in ticks; advances only when no item is ready. */
  private nowTicks = 0;
  private nextId = 0;
  private pool: SimItem[] = [];
  private readonly maxSteps: number;
  private readonly jitterTicks: number;
  /** Items run so far, over the queue's life. */
  steps = 0;

  constructor(seed: number | Prng, opts: SimWorkQueueOptions = {}) {
    this.prng = typeof seed === 'number' ? seededPrng(seed) : seed;
    this.maxSteps = opts.maxSteps ?? 10_000_000;
    this.jitterTicks = opts.jitterTicks ?? 0;
    assert(Number.isSafeInteger(this.maxSteps) && this.maxSteps > 0, 'SimWorkQueue maxSteps');
    assert(Number.isSafeInteger(this.jitterTicks) && this.jitterTicks >= 0, 'SimWorkQueue jitterTicks');
  }

  /** The seed to print when a run fails. */
  get seed(): number {
    return this.prng.seed;
  }
  get now(): number {
    return this.nowTicks;
  }
  /** Items queued and not yet run. */
  get pending(): number {
    return this.pool.length;
  }

  queue(work: Work, delayTicks = 0): void {
    assert(Number.isSafeInteger(delayTicks) && delayTicks >= 0, () => `bad delay ${delayTicks}`);
    const jitter = this.jitterTicks > 0 ? this.prng.between(0, this.jitterTicks) : 0;
    this.pool.push({ work, readyAtTicks: this.nowTicks + delayTicks + jitter, id: this.nextId++ });
  }

  /**
   * Runs one item, chosen uniformly among the ready ones (advancing virtual time to the
   * earliest ready time when none is ready yet). Returns false when the pool is empty. An
   * exception from the item propagates to the caller: work items do not fail, so it is a bug.
   */
  runOne(): boolean {
    if (this.pool.length === 0) return false;
    let earliest = Infinity;
    for (const it of this.pool) earliest = Math.min(earliest, it.readyAtTicks);
    if (earliest > this.nowTicks) this.nowTicks = earliest;
    const ready: number[] = [];
    this.pool.forEach((it, i) => {
      if (it.readyAtTicks <= this.nowTicks) ready.push(i);
    });
    // OK to assert non-null: `ready` is non-empty since the earliest item is ready now.
    const idx = ready[this.prng.below(ready.length)]!;
    const item = this.pool[idx]!;
    this.pool.splice(idx, 1);
    this.steps++;
    item.work();
    return true;
  }

  /**
   * Runs items until none is left, draining promise continuations after each one (see the
   * module comment), and returns how many ran. Call it from the test, never from inside an
   * item.
   */
  async runUntilIdle(): Promise<number> {
    let n = 0;
    await drainHost();
    while (this.runOne()) {
      n++;
      assert(n <= this.maxSteps, () => `SimWorkQueue: more than ${this.maxSteps} steps (seed ${this.seed}): livelock?`);
      await drainHost();
    }
    return n;
  }

  /**
   * Runs `main` to completion while driving the queue: the usual way to run a simulated
   * workload. Fails if `main` is still waiting once nothing is left to run (a lost completion).
   */
  async run<T>(main: () => Promise<T>): Promise<T> {
    let settled = false;
    const p = main().finally(() => {
      settled = true;
    });
    // Keep a rejection from being reported as unhandled before it is awaited below.
    p.catch(() => {});
    await this.runUntilIdle();
    assert(settled, () => `SimWorkQueue.run: workload still waiting with nothing queued (seed ${this.seed})`);
    return p;
  }
}

/**
 * Lets the host run every pending promise continuation: a setImmediate callback runs only after
 * the microtask queue is empty.
 */
function drainHost(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
