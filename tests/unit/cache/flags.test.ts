/**
 * Generated flag accessors (BUFFER_FNS/TAS_BUFFER_FNS style) of BufferHead, Page and
 * AddressSpace against a model set of flags; BufferHead geometry and mapping; Page lock and
 * writeback verbs asserting correct use (IO-DESIGN.md invariant 19).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BH, BH_BITS, type BhFlag } from '../../../src/cache/buffer-head.js';
import { PG, PG_BITS, PAGE_SIZES } from '../../../src/cache/page.js';
import { AddressSpace, AS } from '../../../src/cache/address-space.js';
import { defineFlagFns } from '../../../src/cache/flag-fns.js';
import { Ext4Bug } from '../../../src/util/assert.js';
import { pblk } from '../../../src/util/units.js';

const BH_FLAGS = Object.keys(BH_BITS) as BhFlag[];
const OPS = ['test', 'set', 'clear', 'testSet', 'testClear'] as const;

function newPage(pageSizeBytes = 4096, blockSizeBytes = 1024, index = 0) {
  return new AddressSpace({ pageSizeBytes, blockSizeBytes }).findOrCreatePage(index);
}

test('BH: generates test/set/clear/testSet/testClear for every buffer flag', () => {
  const want = ['Uptodate', 'Dirty', 'Mapped', 'New', 'Delay', 'Unwritten', 'Uninit', 'AsyncWrite', 'WriteEIO'];
  assert.deepEqual([...BH_FLAGS].sort(), [...want].sort());
  for (const f of want) for (const op of OPS) assert.equal(typeof (BH as Record<string, unknown>)[`${op}${f}`], 'function', `${op}${f}`);
  assert.ok(Object.isFrozen(BH));
});

test('BH: any sequence of accessor calls matches a model set of flags, one bit per flag', () => {
  const bh = newPage().buffers[1]!;
  const fns = BH as unknown as Record<string, (b: typeof bh) => boolean | undefined>;
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom(...OPS), fc.constantFrom(...BH_FLAGS)), { maxLength: 60 }), (ops) => {
      bh.state = 0;
      const model = new Set<BhFlag>();
      for (const [op, f] of ops) {
        const had = model.has(f);
        const r = fns[`${op}${f}`]!(bh);
        if (op === 'test' || op === 'testSet' || op === 'testClear') assert.equal(r, had, `${op}${f}`);
        else assert.equal(r, undefined);
        if (op === 'set' || op === 'testSet') model.add(f);
        if (op === 'clear' || op === 'testClear') model.delete(f);
        assert.deepEqual(bh.flagNames().sort(), [...model].sort());
      }
    }),
  );
});

test('defineFlagFns: rejects two flags on one bit and bits outside the word', () => {
  assert.throws(() => defineFlagFns<{ state: number }>()('T', { A: 1, B: 1 }), Ext4Bug);
  assert.throws(() => defineFlagFns<{ state: number }>()('T', { A: 30 }), Ext4Bug);
  assert.throws(() => defineFlagFns<{ state: number }>()('T', { A: -1 }), Ext4Bug);
});

test('PG: full accessors for Dirty/Error/Uptodate, only tests for Locked and Writeback', () => {
  const fns = PG as Record<string, unknown>;
  for (const f of ['Dirty', 'Error', 'Uptodate']) for (const op of OPS) assert.equal(typeof fns[`${op}${f}`], 'function');
  for (const f of ['Locked', 'Writeback']) {
    assert.equal(typeof fns[`test${f}`], 'function');
    for (const op of ['set', 'clear', 'testSet', 'testClear']) assert.equal(fns[`${op}${f}`], undefined, `${op}${f}`);
  }
  const page = newPage();
  PG.setError(page);
  PG.setUptodate(page);
  assert.equal(page.state, (1 << PG_BITS.Error) | (1 << PG_BITS.Uptodate));
  assert.equal(PG.testClearError(page), true);
  assert.deepEqual(page.flagNames(), ['Uptodate']);
});

test('AS: generated accessors for the legacy AS_EIO / AS_ENOSPC bits', () => {
  const m = new AddressSpace({ blockSizeBytes: 4096 });
  assert.equal(AS.testSetEIO(m), false);
  assert.equal(AS.testEIO(m), true);
  assert.equal(AS.testENOSPC(m), false);
  assert.equal(AS.testClearEIO(m), true);
  assert.equal(m.state, 0);
});

test('BufferHead: one per block, logical block from the page index, offsets in the page', () => {
  for (const pageSize of PAGE_SIZES) {
    for (const blockSize of [1024, 2048, 4096]) {
      const page = newPage(pageSize, blockSize, 3);
      const per = pageSize / blockSize;
      assert.equal(page.buffers.length, per);
      page.buffers.forEach((bh, i) => {
        assert.equal(bh.page, page);
        assert.equal(bh.indexInPage, i);
        assert.equal(bh.sizeBytes, blockSize);
        assert.equal(bh.offsetInPage, i * blockSize);
        assert.equal(bh.lblk, 3 * per + i);
      });
    }
  }
});

test('BufferHead: pblk is readable only while Mapped; unmap clears the mapping bits', () => {
  const bh = newPage().buffers[2]!;
  assert.throws(() => bh.pblk, Ext4Bug);
  bh.map(pblk(1234));
  assert.equal(bh.pblk, 1234);
  assert.ok(BH.testMapped(bh));
  BH.setNew(bh);
  BH.setUnwritten(bh);
  BH.setDirty(bh);
  bh.unmap();
  assert.deepEqual(bh.flagNames(), ['Dirty']);
  assert.throws(() => bh.pblk, Ext4Bug);
  BH.setAsyncWrite(bh);
  assert.throws(() => bh.unmap(), Ext4Bug);
});

test('Page: geometry is asserted (page 4..64 KiB, block 1 KiB..page size, powers of two)', () => {
  assert.throws(() => newPage(2048, 1024), Ext4Bug);
  assert.throws(() => newPage(131072, 1024), Ext4Bug);
  assert.throws(() => newPage(4096, 8192), Ext4Bug);
  assert.throws(() => newPage(4096, 1536), Ext4Bug);
  assert.throws(() => new AddressSpace({ pageSizeBytes: 12288, blockSizeBytes: 1024 }), Ext4Bug);
  assert.equal(new AddressSpace({ blockSizeBytes: 1024 }).pageSizeBytes, 4096);
});

test('Page: unlock asserts the page is locked; lock hands the page to waiters in order', async () => {
  const page = newPage();
  assert.throws(() => page.unlock(), Ext4Bug);
  assert.ok(page.trylock());
  assert.equal(page.trylock(), false);
  const got: number[] = [];
  const a = page.lock().then(() => got.push(1));
  const b = page.lock().then(() => got.push(2));
  page.unlock();
  assert.ok(PG.testLocked(page), 'handed over, never free in between');
  await a;
  assert.equal(page.trylock(), false);
  page.unlock();
  await b;
  page.unlock();
  assert.deepEqual(got, [1, 2]);
  assert.equal(PG.testLocked(page), false);
});

test('Page: writeback starts only locked and once, and ends exactly once (invariant 19)', async () => {
  const page = newPage();
  assert.throws(() => page.startWriteback(), Ext4Bug, 'unlocked');
  page.trylock();
  page.startWriteback();
  assert.ok(page.mapping.isTagged(0, 'writeback'));
  assert.throws(() => page.startWriteback(), Ext4Bug, 'twice');
  page.unlock();
  let woke = false;
  const w = page.waitOnWriteback().then(() => (woke = true));
  await Promise.resolve();
  assert.equal(woke, false);
  page.endWriteback();
  await w;
  assert.ok(woke);
  assert.equal(page.mapping.isTagged(0, 'writeback'), false);
  assert.throws(() => page.endWriteback(), Ext4Bug, 'second end');
});
