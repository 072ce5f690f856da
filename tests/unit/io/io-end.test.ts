/**
 * IoEnd lifecycle under every interleaving fast-check finds: bios of one io_end complete in any
 * order, before or after the submitter's final put, some failing; the deferred worker runs
 * whenever the scheduler picks it. Names the IO-DESIGN §6 invariants each property checks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IoEnd, InodeIo, type IoRange, type WorkQueue } from '../../../src/io/io-end.js';
import { Ext4Bug } from '../../../src/util/assert.js';

/** A work queue whose tasks run only when the test says so (process context, later). */
class ManualQueue implements WorkQueue {
  readonly tasks: (() => void)[] = [];
  queue(fn: () => void): void {
    this.tasks.push(fn);
  }
  /** Runs one task and lets its promise chain settle (the conversion is async). */
  async runOne(): Promise<boolean> {
    const t = this.tasks.shift();
    if (t === undefined) return false;
    t();
    // A macrotask turn: every promise callback of the (async) conversion has run by then.
    await new Promise<void>((resolve) => setImmediate(resolve));
    return true;
  }
}

interface Plan {
  bios: { ranges: IoRange[]; fails: boolean }[];
  unwritten: boolean;
  /** Order of events: bio completions by index, 'put' = submitter's final put, 'work' = run the worker once. */
  order: (number | 'put' | 'work')[];
}

const planArb: fc.Arbitrary<Plan> = fc
  .record({
    n: fc.integer({ min: 1, max: 6 }),
    unwritten: fc.boolean(),
    failMask: fc.integer({ min: 0, max: 63 }),
    failRate: fc.integer({ min: 0, max: 3 }),
    seed: fc.integer(),
    works: fc.integer({ min: 0, max: 3 }),
  })
  .chain(({ n, unwritten, failMask, failRate, works }) => {
    const bios = Array.from({ length: n }, (_, i) => ({
      // Bio i writes blocks [4i, 4i+4) of 1 KiB, with a hole in the middle for odd i (§1.3 G).
      ranges: i % 2 === 1 ? [{ offset: i * 4096, size: 1024 }, { offset: i * 4096 + 2048, size: 2048 }] : [{ offset: i * 4096, size: 4096 }],
      fails: failRate === 0 && ((failMask >> i) & 1) === 1,
    }));
    const events: (number | 'put' | 'work')[] = [...bios.keys(), 'put', ...Array.from({ length: works }, () => 'work' as const)];
    return fc.shuffledSubarray(events, { minLength: events.length, maxLength: events.length }).map((order) => ({ bios, unwritten, order }));
  });

test('io_end: any completion order converts exactly once, exactly the written ranges, after the last bio, never inside a completion (invariants 1, 3, 8, 9, 10, 14, 24, 25)', async () => {
  await fc.assert(
    fc.asyncProperty(planArb, async (plan) => {
      const wq = new ManualQueue();
      const conversions: IoRange[][] = [];
      let inCompletion = false;
      let completedBios = 0;
      const inode = new InodeIo(12, wq, async (ranges) => {
        assert.equal(inCompletion, false, 'conversion inside a bio completion');
        assert.equal(completedBios, plan.bios.length, 'conversion before every bio completed');
        conversions.push(ranges.map((r) => ({ ...r })));
      });
      const io = IoEnd.init(inode);
      const finished: number[] = [];
      // Submission: each bio takes its reference when built; ranges count after joining a bio (11).
      for (const b of plan.bios) {
        io.get();
        if (plan.unwritten) {
          io.setUnwritten();
          for (const r of b.ranges) io.addRange(r.offset, r.size);
        }
      }
      assert.equal(inode.unwritten, plan.unwritten ? 1 : 0, 'i_unwritten counts the io_end once (6)');
      let putDone = false;
      for (const ev of plan.order) {
        if (ev === 'put') {
          putDone = true;
          io.putDefer();
        } else if (ev === 'work') {
          await wq.runOne();
        } else {
          const b = plan.bios[ev]!;
          inCompletion = true;
          completedBios++;
          io.completeBio({ finish: () => finished.push(ev) }, b.fails);
          inCompletion = false;
        }
        // (3) Nothing is released before the submitter's put, however many bios completed.
        if (!putDone) assert.equal(io.isReleased, false);
      }
      while (await wq.runOne()) { /* drain */ }
      const anyFailed = plan.bios.some((b) => b.fails);
      // (1) released exactly once; (8) converted once with exactly its ranges; (14) not after a failure.
      assert.equal(io.isReleased, true);
      if (plan.unwritten && !anyFailed) {
        assert.equal(conversions.length, 1);
        const want = plan.bios.flatMap((b) => b.ranges);
        const merged: IoRange[] = [];
        for (const r of want) {
          const last = merged[merged.length - 1];
          if (last && last.offset + last.size === r.offset) last.size += r.size;
          else merged.push({ ...r });
        }
        assert.deepEqual(conversions[0], merged);
      } else {
        assert.equal(conversions.length, 0);
      }
      // (19/24) every bio's pages finished exactly once; for a converting io_end, only after conversion.
      assert.deepEqual([...finished].sort(), [...plan.bios.keys()]);
      assert.ok(inode.isIdle(), 'counters back to zero when idle (5, 6)');
      assert.equal(inode.ioendCount, 0);
      assert.equal(inode.unwritten, 0);
    }),
    { numRuns: 3000, seed: Number(process.env['IOEND_SEED'] ?? 42) },
  );
});

test('io_end: release happens once; a put after release, or a get on a released io_end, is an Ext4Bug (invariant 1)', async () => {
  const inode = new InodeIo(13, new ManualQueue(), async () => undefined);
  const io = IoEnd.init(inode);
  await io.put();
  assert.equal(io.isReleased, true);
  assert.throws(() => io.get(), Ext4Bug);
  assert.throws(() => io.putDefer(), Ext4Bug);
  await assert.rejects(io.put(), Ext4Bug);
  assert.ok(inode.isIdle());
});

test('io_end: UNWRITTEN with no range (nothing joined a bio) releases without conversion and without tripping the release assertion (invariant 13, §1.3 F)', () => {
  const wq = new ManualQueue();
  const inode = new InodeIo(14, wq, async () => assert.fail('must not convert'));
  const io = IoEnd.init(inode);
  io.setUnwritten();
  io.setUnwritten();
  assert.equal(inode.unwritten, 1);
  io.putDefer();
  assert.equal(io.isReleased, true);
  assert.equal(wq.tasks.length, 0);
  assert.ok(inode.isIdle());
});

test('io_end: the worker is queued only when the completed list goes empty → non-empty (invariant 8)', async () => {
  const wq = new ManualQueue();
  let converted = 0;
  const inode = new InodeIo(15, wq, async () => { converted++; });
  const ios = [0, 1, 2].map(() => IoEnd.init(inode));
  for (const [i, io] of ios.entries()) {
    io.setUnwritten();
    io.addRange(i * 4096, 4096);
    io.putDefer();
  }
  assert.equal(wq.tasks.length, 1, 'one worker for three queued io_ends');
  assert.equal(inode.unwritten, 3);
  await wq.runOne();
  assert.equal(converted, 3);
  assert.ok(inode.isIdle());
  let idle = false;
  const w = inode.waitIdle().then(() => { idle = true; });
  await w;
  assert.ok(idle);
});

test('io_end: a conversion error is recorded for fsync and the io_end still releases (potential data loss is reported, not swallowed)', async () => {
  const wq = new ManualQueue();
  const inode = new InodeIo(16, wq, async () => { throw new Error('ENOSPC in extent split'); });
  const io = IoEnd.init(inode);
  io.setUnwritten();
  io.addRange(0, 4096);
  const err = await io.put();
  assert.match(String(err), /ENOSPC/);
  assert.match(String(inode.conversionError), /ENOSPC/);
  assert.ok(io.isReleased && inode.isIdle());
});
