/**
 * SimDevice (src/blockdev/sim-device.ts): reordered completions, the volatile write cache and
 * flush barrier, crash() modes (flushed data survives, unflushed may vanish or tear, never bytes
 * nobody wrote), injected EIO, and the overlap detector with its canary.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice, type SimDeviceOptions } from '../../../src/blockdev/sim-device.js';
import { SimWorkQueue } from '../../../src/runtime/work-queue.js';
import { IoError, PosixError } from '../../../src/util/errors.js';
import { Ext4Bug } from '../../../src/util/assert.js';

const SS = 512;
function setup(seed: number, extra: Partial<SimDeviceOptions> = {}): { q: SimWorkQueue; dev: SimDevice } {
  const q = new SimWorkQueue(seed);
  return { q, dev: new SimDevice({ queue: q, seed, sizeBytes: 64 * SS, ...extra }) };
}
const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

test('SimDevice: concurrent requests complete out of submission order, deterministically per seed', async () => {
  async function order(seed: number): Promise<number[]> {
    const { q, dev } = setup(seed);
    const done: number[] = [];
    await q.run(() => Promise.all([...Array(16).keys()].map((i) => dev.write(i * SS, fill(SS, i)).then(() => done.push(i)))));
    return done;
  }
  const a = await order(1);
  assert.deepEqual(a, await order(1));
  assert.notDeepEqual(a, [...Array(16).keys()], 'some reordering');
  assert.notDeepEqual(a, await order(2));
});

test('SimDevice: a completed write is visible to reads at once but durable only after flush', async () => {
  const { q, dev } = setup(4);
  await q.run(async () => {
    await dev.write(2 * SS, fill(SS, 0x11));
    const r = new Uint8Array(SS);
    await dev.read(2 * SS, r);
    assert.ok(r.every((x) => x === 0x11));
    assert.ok(dev.durableImage().subarray(2 * SS, 3 * SS).every((x) => x === 0));
    assert.equal(dev.unflushedCount, 1);
    await dev.flush();
    assert.ok(dev.durableImage().subarray(2 * SS, 3 * SS).every((x) => x === 0x11));
    assert.equal(dev.unflushedCount, 0);
  });
});

test('SimDevice.flush: only writes completed before the flush was submitted become durable', async () => {
  const { q, dev } = setup(6, { latencyTicks: { min: 0, max: 0 } });
  await q.run(async () => {
    await dev.write(0, fill(SS, 1));
    const f = dev.flush();
    const w = dev.write(SS, fill(SS, 2)); // submitted after the barrier
    await Promise.all([f, w]);
    const img = dev.durableImage();
    assert.equal(img[0], 1);
    assert.equal(img[SS], 0);
  });
});

test('SimDevice.crash: flushed data survives every mode; lose-unflushed drops the rest, keep-unflushed keeps it', async () => {
  for (const mode of ['lose-unflushed', 'keep-unflushed', 'random'] as const) {
    const { q, dev } = setup(8);
    await q.run(async () => {
      await dev.write(0, fill(2 * SS, 0xaa));
      await dev.flush();
      await dev.write(0, fill(SS, 0xbb)); // overwrites flushed data, unflushed
      await dev.write(4 * SS, fill(SS, 0xcc));
    });
    const img = dev.crash(mode);
    assert.ok(img.subarray(SS, 2 * SS).every((x) => x === 0xaa), `${mode}: flushed sector`);
    if (mode === 'lose-unflushed') {
      assert.ok(img.subarray(0, SS).every((x) => x === 0xaa));
      assert.ok(img.subarray(4 * SS, 5 * SS).every((x) => x === 0));
    }
    if (mode === 'keep-unflushed') {
      assert.ok(img.subarray(0, SS).every((x) => x === 0xbb));
      assert.ok(img.subarray(4 * SS, 5 * SS).every((x) => x === 0xcc));
    }
    assert.throws(() => dev.write(0, fill(SS, 1)), /after crash/);
  }
});

test('SimDevice.crash(random): never bytes nobody wrote; tears only at sector boundaries; replays from the seed', async () => {
  let sawPartial = false;
  let sawLoss = false;
  for (let seed = 1; seed <= 40; seed++) {
    const run = async (): Promise<{ img: Uint8Array; written: Map<number, Set<number>> }> => {
      const { q, dev } = setup(seed);
      const written = new Map<number, Set<number>>(); // sector -> values written there (plus 0)
      const note = (sector: number, v: number): void => {
        const s = written.get(sector) ?? new Set([0]);
        s.add(v);
        written.set(sector, s);
      };
      await q.run(async () => {
        for (let round = 0; round < 4; round++) {
          // Four non-overlapping multi-sector writes in flight at once, then maybe a flush.
          const ws = [0, 1, 2, 3].map((k) => {
            const start = k * 16 + ((seed + round) % 4);
            const len = 2 + ((seed * 3 + k + round) % 6);
            const v = 1 + round * 4 + k;
            for (let s = start; s < start + len; s++) note(s, v);
            // Each sector of a write gets a distinct byte pattern based on v.
            return dev.write(start * SS, fill(len * SS, v));
          });
          await Promise.all(ws);
          if ((seed + round) % 3 === 0) await dev.flush();
        }
        // And one write left in flight at the crash.
        void dev.write(60 * SS, fill(2 * SS, 99));
        note(60, 99);
        note(61, 99);
      });
      return { img: dev.crash('random'), written };
    };
    const a = await run();
    const b = await run();
    assert.deepEqual(a.img, b.img, `seed ${seed} replays`);
    for (let s = 0; s < 64; s++) {
      const sector = a.img.subarray(s * SS, (s + 1) * SS);
      const v = sector[0]!;
      assert.ok(sector.every((x) => x === v), `seed ${seed}: sector ${s} torn inside a sector`);
      assert.ok((a.written.get(s) ?? new Set([0])).has(v), `seed ${seed}: sector ${s} holds ${v}, never written there`);
    }
    // The write in flight at the crash (sectors 60, 61, nothing else there): lost, kept or torn.
    const kept = [a.img[60 * SS], a.img[61 * SS]].filter((x) => x === 99).length;
    if (kept === 0) sawLoss = true;
    if (kept === 1) sawPartial = true;
  }
  assert.ok(sawLoss && sawPartial, 'random crashes exercise loss and tearing');
});

test('SimDevice: injected EIO by predicate fails exactly the chosen request and changes nothing', async () => {
  const { q, dev } = setup(12, { eio: (r) => r.op === 'write' && r.id === 1 });
  await q.run(async () => {
    await dev.write(0, fill(SS, 1)); // request #0
    await assert.rejects(dev.write(SS, fill(SS, 2)), (e: unknown) => e instanceof IoError && /injected EIO/.test(e.message));
    const r = new Uint8Array(2 * SS);
    await dev.read(0, r);
    assert.equal(r[0], 1);
    assert.equal(r[SS], 0, 'the failed write changed nothing');
  });
  assert.equal(dev.stats.eio, 1);
});

test('SimDevice: EIO by probability is seeded; failed reads and flushes reject with IoError', async () => {
  async function failures(seed: number): Promise<number[]> {
    const { q, dev } = setup(seed, { eioProbability: { read: 0.3, flush: 1 } });
    const failed: number[] = [];
    await q.run(async () => {
      await Promise.all([...Array(32).keys()].map((i) => dev.read((i % 64) * SS, new Uint8Array(SS)).catch((e: unknown) => {
        assert.ok(e instanceof IoError);
        failed.push(i);
      })));
      await assert.rejects(dev.flush(), IoError);
    });
    return failed.sort((a, b) => a - b);
  }
  const f = await failures(21);
  assert.ok(f.length > 0 && f.length < 32);
  assert.deepEqual(f, await failures(21));
});

test('SimDevice overlap detector (canary): overlapping in-flight writes, or a read under a write, are bugs', async () => {
  const { q, dev } = setup(13);
  await q.run(async () => {
    const w = dev.write(0, fill(4 * SS, 1));
    assert.throws(() => dev.write(3 * SS, fill(2 * SS, 2)), (e: unknown) => e instanceof Ext4Bug && /overlaps write #0/.test(e.message));
    assert.throws(() => dev.read(SS, new Uint8Array(SS)), Ext4Bug);
    // Adjacent is fine; concurrent reads of the same range are fine.
    const w2 = dev.write(4 * SS, fill(SS, 3));
    const r1 = dev.read(8 * SS, new Uint8Array(SS));
    const r2 = dev.read(8 * SS, new Uint8Array(SS));
    // A write under an in-flight read is also a bug.
    assert.throws(() => dev.write(8 * SS, fill(SS, 4)), Ext4Bug);
    await Promise.all([w, w2, r1, r2]);
    // Once completed, the same range may be written again.
    await dev.write(3 * SS, fill(2 * SS, 2));
  });
});

test('SimDevice: the BlockDevice contract is asserted (alignment, size, EROFS, close with I/O in flight)', async () => {
  const { q, dev } = setup(14, { maxRequestBytes: 4 * SS });
  assert.throws(() => dev.read(100, new Uint8Array(SS)), /not aligned/);
  assert.throws(() => dev.read(0, new Uint8Array(8 * SS)), /maxRequestBytes/);
  assert.throws(() => dev.read(64 * SS, new Uint8Array(SS)), Ext4Bug);
  const p = dev.read(0, new Uint8Array(SS));
  await assert.rejects(dev.close(), /in flight/);
  await q.runUntilIdle();
  await p;
  await dev.close();
  const ro = setup(15, { readOnly: true }).dev;
  await assert.rejects(ro.write(0, fill(SS, 1)), PosixError);
  const loose = setup(16, { allowUnaligned: true });
  await loose.q.run(() => loose.dev.write(100, fill(10, 7)));
  assert.equal(loose.dev.crash('keep-unflushed')[105], 7);
});
