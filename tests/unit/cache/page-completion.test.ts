/**
 * The seed-002 page-completion rule (IO-DESIGN.md §3) under every completion order of the bios
 * of one page: pages of 4, 16 and 64 KiB with 1 KiB (and 2/4 KiB) blocks, some buffers not
 * written, adjacent buffers merged into one bio_vec or split, completions running in any order
 * and even inside the submit hook, some bios failing, and submission failing part-way.
 * Invariants 19, 20, 21, 22, 23 and 26 of IO-DESIGN.md §6; scenario S8 as a canary.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AddressSpace } from '../../../src/cache/address-space.js';
import { BH } from '../../../src/cache/buffer-head.js';
import { PG, PAGE_SIZES, type Page } from '../../../src/cache/page.js';
import { endPageWrite, writePageBuffers } from '../../../src/cache/page-completion.js';
import { Ext4Bug } from '../../../src/util/assert.js';
import { pblk } from '../../../src/util/units.js';

const MAX_BUFS = 64; // 64 KiB page / 1 KiB blocks
const PAGE_INDEX = 5;

interface Scenario {
  pageSizeBytes: number;
  blockSizeBytes: number;
  /** Per buffer: written by this writeback. */
  selected: boolean[];
  /** Per buffer: starts a new bio_vec even if the previous buffer was written too. */
  cut: boolean[];
  /** Per buffer: the bio_vec starting here fails with EIO. */
  eio: boolean[];
  /** Completion order: bio_vecs complete in the order of their first buffer's rank here. */
  rank: number[];
  /** Per buffer: how many due completions run inside its submit hook. */
  inline: number[];
  /** Index among the written buffers whose submit fails (ENOMEM), or null. */
  failAt: number | null;
}

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  pageSizeBytes: fc.constantFrom(...PAGE_SIZES),
  blockSizeBytes: fc.constantFrom(1024, 1024, 1024, 2048, 4096),
  selected: fc.array(fc.boolean(), { minLength: MAX_BUFS, maxLength: MAX_BUFS }),
  cut: fc.array(fc.boolean(), { minLength: MAX_BUFS, maxLength: MAX_BUFS }),
  eio: fc.array(fc.integer({ min: 0, max: 5 }).map((n) => n === 0), { minLength: MAX_BUFS, maxLength: MAX_BUFS }),
  rank: fc.shuffledSubarray([...Array(MAX_BUFS).keys()], { minLength: MAX_BUFS, maxLength: MAX_BUFS }),
  inline: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: MAX_BUFS, maxLength: MAX_BUFS }),
  failAt: fc.constant(null),
});

interface Bvec {
  start: number;
  len: number;
  eio: boolean;
  /** Index of its last buffer: the bvec can complete once that buffer joined a bio. */
  last: number;
}

/** A dirty, mapped, locked page cleared for I/O, as write_cache_pages hands it to writepage. */
function dirtyLockedPage(pageSizeBytes: number, blockSizeBytes: number): Page {
  const m = new AddressSpace({ pageSizeBytes, blockSizeBytes });
  const page = m.findOrCreatePage(PAGE_INDEX);
  page.markDirty();
  assert.ok(page.trylock());
  assert.ok(page.clearDirtyForIo());
  for (const bh of page.buffers) {
    BH.setDirty(bh);
    BH.setUptodate(bh);
    bh.map(pblk(1000 + bh.lblk));
  }
  return page;
}

/** Splits the submitted buffers into bio_vecs: runs of adjacent buffers, cut where asked. */
function bvecsOf(sc: Scenario, submitted: boolean[], blockSize: number): Bvec[] {
  const out: Bvec[] = [];
  submitted.forEach((sub, i) => {
    if (!sub) return;
    const prev = out[out.length - 1];
    if (prev !== undefined && prev.last === i - 1 && !sc.cut[i]) {
      prev.len += blockSize;
      prev.last = i;
    } else {
      out.push({ start: i * blockSize, len: blockSize, eio: sc.eio[i]!, last: i });
    }
  });
  return out;
}

/**
 * Runs one page write and all its completions; checks the invariants and returns nothing.
 * Records, at each end of writeback, how many completions had started: it must be exactly one
 * end, at the count of bio_vecs (after the last one), or at 0 when nothing was submitted.
 */
function runScenario(sc: Scenario): void {
  const page = dirtyLockedPage(sc.pageSizeBytes, sc.blockSizeBytes);
  const cursor = page.mapping.openErrCursor();
  const n = page.buffers.length;
  const selected = sc.selected.slice(0, n);
  const selIdx = selected.flatMap((s, i) => (s ? [i] : []));
  const failBuf = sc.failAt === null || selIdx.length === 0 ? -1 : selIdx[sc.failAt % selIdx.length]!;
  const submitted = selected.map((s, i) => s && (failBuf < 0 || i < failBuf));
  const bvecs = bvecsOf(sc, submitted, sc.blockSizeBytes);
  const queue = [...bvecs].sort((a, b) => sc.rank[a.start / sc.blockSizeBytes]! - sc.rank[b.start / sc.blockSizeBytes]!);
  const joined = new Set<number>();

  let started = 0;
  const ends: number[] = [];
  const realEnd = page.endWriteback.bind(page);
  page.endWriteback = () => {
    ends.push(started);
    realEnd();
  };

  const drain = (k: number): void => {
    while (k-- > 0 && queue.length > 0 && joined.has(queue[0]!.last)) {
      const bv = queue.shift()!;
      started++;
      const ended = endPageWrite(page, bv.start, bv.len, bv.eio ? 'EIO' : null);
      assert.equal(ended, ends.length === 1 && ends[0] === started);
      if (started < bvecs.length) assert.ok(PG.testWriteback(page), 'invariant 20: under writeback until the last');
    }
  };

  const res = writePageBuffers(page, {
    prepare: (bh) => selected[bh.indexInPage]!,
    submit: (bh) => {
      // Invariant 20: when the first buffer is submitted, every buffer to write is marked.
      for (const i of selIdx) if (i > bh.indexInPage) assert.ok(BH.testAsyncWrite(page.buffers[i]!), 'marked first');
      if (bh.indexInPage === failBuf) return false;
      joined.add(bh.indexInPage);
      drain(sc.inline[bh.indexInPage]!);
      return true;
    },
  });
  drain(Number.POSITIVE_INFINITY);

  const failed = failBuf >= 0;
  assert.equal(res.failed, failed);
  assert.equal(res.nrSubmitted, submitted.filter(Boolean).length);
  assert.deepEqual(ends, [bvecs.length], 'invariants 19/20/22: writeback ends once, after the last completion');
  assert.equal(PG.testWriteback(page), false);
  assert.equal(page.mapping.isTagged(PAGE_INDEX, 'writeback'), false);
  assert.equal(PG.testLocked(page), false, 'page unlocked');
  assert.equal(PG.testDirty(page), failed, 'invariant 23: redirtied only on a failed submit');
  assert.equal(page.mapping.isTagged(PAGE_INDEX, 'dirty'), failed, 'invariant 22: no stale dirty tag');

  const anyEio = bvecs.some((b) => b.eio);
  for (const bh of page.buffers) {
    const i = bh.indexInPage;
    const bv = bvecs.find((b) => b.start <= bh.offsetInPage && bh.offsetInPage < b.start + b.len);
    assert.equal(BH.testAsyncWrite(bh), false, `buffer ${i} left AsyncWrite`);
    assert.equal(BH.testDirty(bh), !submitted[i], `buffer ${i}: dirty iff not submitted (invariant 23)`);
    assert.equal(BH.testWriteEIO(bh), bv?.eio === true, `buffer ${i}: WriteEIO only inside failed ranges (invariant 21)`);
  }
  assert.equal(PG.testError(page), anyEio);
  assert.equal(page.mapping.fileErrorCheck(cursor), anyEio ? 'EIO' : undefined);
  assert.equal(page.mapping.fileErrorCheck(cursor), undefined);
}

test('page completion (invariants 19, 20, 21, 26): every completion order, 4/16/64 KiB pages, EIO on some bios', () => {
  fc.assert(fc.property(scenarioArb, runScenario), { numRuns: 1500 });
});

test('page completion (invariants 22, 23): submit fails part-way, completions before and after the cleanup', () => {
  const arb = scenarioArb.chain((sc) => fc.nat(MAX_BUFS - 1).map((failAt) => ({ ...sc, failAt })));
  fc.assert(fc.property(arb, runScenario), { numRuns: 1500 });
});

test('page completion (invariants 19, 20): all 24 orders of four 1 KiB bios on a 4 KiB page, every EIO mask', () => {
  const perms = (xs: number[]): number[][] =>
    xs.length <= 1 ? [xs] : xs.flatMap((x) => perms(xs.filter((y) => y !== x)).map((p) => [x, ...p]));
  let runs = 0;
  for (const order of perms([0, 1, 2, 3])) {
    for (let mask = 0; mask < 16; mask++) {
      for (const inline of [0, 1]) {
        const rank = [...Array(MAX_BUFS).keys()];
        order.forEach((b, pos) => (rank[b] = pos));
        runScenario({
          pageSizeBytes: 4096,
          blockSizeBytes: 1024,
          selected: Array(MAX_BUFS).fill(true),
          cut: Array(MAX_BUFS).fill(true),
          eio: [...Array(MAX_BUFS).keys()].map((i) => ((mask >> i) & 1) === 1),
          rank,
          inline: Array(MAX_BUFS).fill(inline * 4),
          failAt: null,
        });
        runs++;
      }
    }
  }
  assert.equal(runs, 24 * 16 * 2);
});

test('page completion (invariant 22): a page with nothing to write ends writeback at once', () => {
  const page = dirtyLockedPage(16384, 1024);
  const res = writePageBuffers(page, { prepare: () => false, submit: () => assert.fail('nothing to submit') });
  assert.deepEqual(res, { nrSubmitted: 0, failed: false });
  assert.equal(PG.testWriteback(page), false);
  assert.equal(PG.testLocked(page), false);
  assert.equal(page.mapping.isTagged(PAGE_INDEX, 'dirty'), false);
});

test('page completion (invariant 21): a range covers whole blocks inside the page, and completes once', () => {
  const page = dirtyLockedPage(4096, 1024);
  const hooks = { prepare: () => true, submit: () => true };
  writePageBuffers(page, hooks);
  assert.throws(() => endPageWrite(page, 512, 1024, null), Ext4Bug, 'unaligned start');
  assert.throws(() => endPageWrite(page, 0, 1000, null), Ext4Bug, 'partial block');
  assert.throws(() => endPageWrite(page, 3072, 2048, null), Ext4Bug, 'past the page');
  assert.equal(endPageWrite(page, 0, 2048, null), false);
  assert.throws(() => endPageWrite(page, 1024, 1024, null), Ext4Bug, 'buffer 1 completed twice');
});

test('page completion (invariant 19): a completion after writeback ended is an Ext4Bug', () => {
  const page = dirtyLockedPage(4096, 4096);
  writePageBuffers(page, { prepare: () => true, submit: () => true });
  assert.equal(endPageWrite(page, 0, 4096, null), true);
  assert.throws(() => endPageWrite(page, 0, 4096, null), Ext4Bug);
});

test('S8 canary: single-pass mark-and-submit ends writeback early (why writePageBuffers marks first)', () => {
  const page = dirtyLockedPage(4096, 1024);
  page.startWriteback();
  const [b0, b1] = page.buffers;
  BH.setAsyncWrite(b0!); // mark b0, submit b0; its bio completes at once
  assert.equal(endPageWrite(page, 0, 1024, null), true, 'writeback ended with b1 not yet written');
  BH.setAsyncWrite(b1!); // b1 marked too late
  assert.throws(() => endPageWrite(page, 1024, 1024, null), Ext4Bug, 'second end_page_writeback');
});
