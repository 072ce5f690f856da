/**
 * The completion scheduler (src/runtime/work-queue.ts): SimWorkQueue replays one order per seed,
 * different seeds give different orders, delays are honoured in virtual time, awaiting code that
 * queues more work stays deterministic; HostWorkQueue runs items later, in order. Also the Prng
 * added to src/runtime/random.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HostWorkQueue, SimWorkQueue } from '../../../src/runtime/work-queue.js';
import { seededPrng } from '../../../src/runtime/random.js';

async function orderFor(seed: number, n = 20): Promise<number[]> {
  const q = new SimWorkQueue(seed);
  const order: number[] = [];
  for (let i = 0; i < n; i++) q.queue(() => order.push(i));
  assert.equal(await q.runUntilIdle(), n);
  return order;
}

test('SimWorkQueue: the same seed replays the same order', async () => {
  for (const seed of [1, 2, 42, 2 ** 40 + 7]) assert.deepEqual(await orderFor(seed), await orderFor(seed));
});

test('SimWorkQueue: different seeds give different orders, each a permutation', async () => {
  const seen = new Set<string>();
  for (let seed = 1; seed <= 10; seed++) {
    const o = await orderFor(seed);
    assert.deepEqual([...o].sort((a, b) => a - b), [...Array(20).keys()]);
    seen.add(o.join(','));
  }
  assert.equal(seen.size, 10);
});

test('SimWorkQueue: an item never runs before its delay has passed in virtual time', async () => {
  const q = new SimWorkQueue(9);
  const log: string[] = [];
  q.queue(() => log.push(`late@${q.now}`), 100);
  for (let i = 0; i < 5; i++) q.queue(() => log.push('now'));
  await q.runUntilIdle();
  assert.deepEqual(log, ['now', 'now', 'now', 'now', 'now', 'late@100']);
});

test('SimWorkQueue: async workloads that await completions and queue more replay from the seed', async () => {
  async function trace(seed: number): Promise<string> {
    const q = new SimWorkQueue(seed);
    const log: string[] = [];
    const io = (tag: string): Promise<void> => new Promise((resolve) => q.queue(() => {
      log.push(tag);
      resolve();
    }, q.prng.below(3)));
    const worker = async (w: number): Promise<void> => {
      for (let step = 0; step < 5; step++) await io(`w${w}.${step}`);
    };
    await q.run(() => Promise.all([0, 1, 2, 3].map(worker)));
    return log.join(' ');
  }
  assert.equal(await trace(77), await trace(77));
  assert.notEqual(await trace(77), await trace(78));
});

test('SimWorkQueue.run: a workload still waiting when nothing is queued is reported with its seed', async () => {
  const q = new SimWorkQueue(5);
  await assert.rejects(q.run(() => new Promise<void>(() => {})), /seed 5/);
});

test('SimWorkQueue: an exception from an item propagates (work items do not fail)', async () => {
  const q = new SimWorkQueue(1);
  q.queue(() => {
    throw new Error('boom');
  });
  await assert.rejects(q.runUntilIdle(), /boom/);
});

test('HostWorkQueue: items run later, first in first out, and idle() waits for them', async () => {
  const q = new HostWorkQueue();
  const log: number[] = [];
  for (let i = 0; i < 5; i++) q.queue(() => log.push(i), 50);
  assert.deepEqual(log, []);
  assert.equal(q.pending, 5);
  await q.idle();
  assert.deepEqual(log, [0, 1, 2, 3, 4]);
  assert.equal(q.pending, 0);
  await q.idle();
});

test('seededPrng: deterministic, bounded, and chance() honours 0 and 1', () => {
  const a = seededPrng(123);
  const b = seededPrng(123);
  for (let i = 0; i < 1000; i++) assert.equal(a.u32(), b.u32());
  const p = seededPrng(5);
  const counts = new Array<number>(7).fill(0);
  for (let i = 0; i < 7000; i++) {
    const v = p.below(7);
    assert.ok(v >= 0 && v < 7);
    counts[v]!++;
  }
  for (const c of counts) assert.ok(c > 800 && c < 1200, `roughly uniform: ${counts.join(',')}`);
  for (let i = 0; i < 100; i++) {
    const v = p.between(-3, 3);
    assert.ok(v >= -3 && v <= 3);
    assert.equal(p.chance(0), false);
    assert.equal(p.chance(1), true);
  }
  assert.deepEqual(p.shuffle([1, 2, 3, 4, 5]).sort(), [1, 2, 3, 4, 5]);
});
