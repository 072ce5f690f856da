/**
 * Mutex: the sleeping locks of the engine (i_rwsem, i_data_sem, the allocator's group lock, the
 * mount's operation queue, a commit's exclusion of metadata updates), one definition for all.
 *
 * A free lock is taken at once and `fn` starts in the same call; a held one queues the caller,
 * first come first served, and hands the lock straight to the next waiter on release (no
 * barging: the lock is never free while someone waits). A promise chain (`tail = tail.then(fn)`)
 * gave the same order but cost about five promises and two extra turns of the microtask queue
 * per section even when nobody else wanted the lock, and a small-file build takes these locks
 * a dozen times per file (measured: 227 promises per file created).
 *
 * `fn` may return a value instead of a promise (a section with nothing to wait for). It must
 * not take the same mutex again (it would wait for itself); it may throw, and the
 * lock is released either way.
 */
import { assert } from '../util/assert.js';

export class Mutex {
  private held = false;
  /**
   * Callers waiting, in arrival order from `head` on; each one starts its section when called.
   * A head index, not shift(): shift moves every later element, and thousands of io_end
   * conversions can wait on one lock (measured: 9 % of a writeback of 20,000 small files).
   */
  private waiters: ((() => void) | undefined)[] = [];
  private head = 0;

  /**
   * @param name for assertion messages
   * @param beforeRelease runs at the end of every section, still holding the lock (its promise,
   *   if any, is awaited before the next section starts); it must not throw or reject.
   */
  constructor(
    private readonly name: string,
    private readonly beforeRelease?: () => Promise<void> | undefined,
  ) {}

  /** True while a section runs. */
  get locked(): boolean {
    return this.held;
  }

  /** Runs `fn` holding the lock; its result (or error) is the result. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    if (!this.held) {
      this.held = true;
      return this.section(fn);
    }
    return new Promise<T>((resolve, reject) => {
      this.waiters.push(() => {
        this.section(fn).then(resolve, reject);
      });
    });
  }

  private async section<T>(fn: () => Promise<T> | T): Promise<T> {
    try {
      return await fn();
    } finally {
      const before = this.beforeRelease?.();
      if (before !== undefined) await before;
      this.release();
    }
  }

  private release(): void {
    assert(this.held, () => `${this.name}: released while free`);
    if (this.head === this.waiters.length) {
      this.held = false;
      if (this.head > 0) {
        this.waiters = [];
        this.head = 0;
      }
      return;
    }
    // OK to index: head < length.
    const next = this.waiters[this.head]!;
    this.waiters[this.head++] = undefined;
    // Drop the consumed front once it is most of the array (amortised O(1) per waiter).
    if (this.head >= 1024 && this.head * 2 >= this.waiters.length) {
      this.waiters = this.waiters.slice(this.head);
      this.head = 0;
    }
    // Handed over: the lock stays held.
    next();
  }
}
