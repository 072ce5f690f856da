/**
 * runtime/mutex.ts: the engine's sleeping locks (i_rwsem, i_data_sem, the allocator's lock, the
 * operation queue). Sections never overlap, run in arrival order, start at once on a free lock,
 * release on failure, and the release hook runs inside the section.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mutex } from '../../../src/runtime/mutex.js';

/** A promise and its resolver, to hold a section open. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open: () => void = () => {};
  const wait = new Promise<void>((r) => {
    open = r;
  });
  return { wait, open };
}

test('Mutex: a free lock starts the section in the same call; a held one queues callers in order', async () => {
  const m = new Mutex('test');
  const log: string[] = [];
  const g = gate();
  const a = m.run(async () => {
    log.push('a start');
    await g.wait;
    log.push('a end');
    return 1;
  });
  assert.deepEqual(log, ['a start'], 'started without a turn of the event loop');
  assert.equal(m.locked, true);
  const b = m.run(async () => {
    log.push('b');
    return 2;
  });
  const c = m.run(async () => {
    log.push('c');
    return 3;
  });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(log, ['a start'], 'b and c wait for a');
  g.open();
  assert.deepEqual(await Promise.all([a, b, c]), [1, 2, 3]);
  assert.deepEqual(log, ['a start', 'a end', 'b', 'c']);
  assert.equal(m.locked, false, 'free once idle');
});

test('Mutex: sections never overlap under random interleavings, and a failed section releases the lock', async () => {
  const m = new Mutex('test');
  let inside = 0;
  let most = 0;
  const order: number[] = [];
  let x = 12345;
  const rnd = (): number => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x;
  };
  const runs: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) {
    const turns = rnd() % 4;
    const fail = rnd() % 7 === 0;
    runs.push(m.run(async () => {
      inside++;
      most = Math.max(most, inside);
      order.push(i);
      for (let t = 0; t < turns; t++) await Promise.resolve();
      inside--;
      if (fail) throw new Error(`section ${i} failed`);
      return i;
    }).catch((e: unknown) => e));
    if (rnd() % 3 === 0) await Promise.resolve();
  }
  const results = await Promise.all(runs);
  assert.equal(most, 1, 'one section at a time');
  assert.deepEqual(order, [...order].sort((p, q) => p - q), 'first come, first served');
  assert.equal(order.length, 200);
  assert.ok(results.some((r) => r instanceof Error), 'some sections failed');
  assert.equal(m.locked, false);
});

test('Mutex: the release hook runs inside the section and is awaited before the next one starts', async () => {
  const log: string[] = [];
  let hookGate = gate();
  const m = new Mutex('test', () => {
    log.push('hook');
    return hookGate.wait;
  });
  const a = m.run(async () => {
    log.push('a');
  });
  const b = m.run(async () => {
    log.push('b');
  });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(log, ['a', 'hook'], 'b waits for the hook of a');
  const first = hookGate;
  hookGate = gate();
  first.open();
  await a;
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(log, ['a', 'hook', 'b', 'hook']);
  hookGate.open();
  await b;
  // A section that throws synchronously still releases.
  await assert.rejects(m.run(() => {
    throw new Error('sync throw');
  }), /sync throw/);
  assert.equal(m.locked, false);
});

test('Mutex: thousands of waiters, some queued while the queue drains, run in arrival order; the lock is free after', async () => {
  const m = new Mutex('test');
  const order: number[] = [];
  const g = gate();
  const runs: Promise<void>[] = [m.run(() => g.wait)];
  // Past the queue's compaction threshold (1,024 consumed waiters) more than once.
  for (let i = 0; i < 5000; i++) {
    runs.push(m.run(() => {
      order.push(i);
      // Late arrivals join the queue's end while its front is being consumed.
      if (i % 1000 === 999) runs.push(m.run(() => void order.push(10_000 + i)));
    }));
  }
  g.open();
  // Late runs are pushed while earlier ones settle: wait until no new one appears.
  for (let n = 0; n !== runs.length; ) {
    n = runs.length;
    await Promise.all(runs);
  }
  const late = [999, 1999, 2999, 3999, 4999].map((i) => 10_000 + i);
  assert.deepEqual(order, [...Array.from({ length: 5000 }, (_, i) => i), ...late]);
  assert.equal(m.locked, false);
  // And the lock still works from empty.
  assert.equal(await m.run(() => 7), 7);
  assert.equal(m.locked, false);
});
