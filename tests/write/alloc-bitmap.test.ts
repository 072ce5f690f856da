/**
 * The bitmap primitives of src/fs/alloc/bitmap.ts against a bit-by-bit reference, on seeded
 * random bitmaps of several densities and on every range edge case within a few words (runs
 * that start and end inside, at and across 32-bit word and byte boundaries).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as bm from '../../src/fs/alloc/bitmap.js';

/** mulberry32: a tiny seeded PRNG, so every failure replays from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function ref(b: Uint8Array, i: number): boolean {
  return ((b[i >> 3]! >> (i & 7)) & 1) === 1;
}

function randomBitmap(bytes: number, density: number, rnd: () => number): Uint8Array {
  const b = new Uint8Array(bytes);
  // Runs rather than independent bits, so long zero and one runs both occur.
  let i = 0;
  while (i < bytes * 8) {
    const len = 1 + Math.floor(rnd() * 70);
    const one = rnd() < density;
    for (let k = i; k < Math.min(i + len, bytes * 8); k++) if (one) b[k >> 3]! |= 1 << (k & 7);
    i += len;
  }
  return b;
}

test('bitmap: findNextZero / findNextSet / countSet / findZeroRun agree with a bit-by-bit reference', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rnd = prng(seed);
    const b = randomBitmap(64, [0.05, 0.5, 0.95][seed % 3]!, rnd);
    const nbits = 512;
    for (let q = 0; q < 60; q++) {
      const start = Math.floor(rnd() * nbits);
      const end = start + Math.floor(rnd() * (nbits - start + 1));
      let z = start;
      while (z < end && ref(b, z)) z++;
      let o = start;
      while (o < end && !ref(b, o)) o++;
      let c = 0;
      for (let i = start; i < end; i++) if (ref(b, i)) c++;
      const ctx = `seed ${seed} range ${start}..${end}`;
      assert.equal(bm.findNextZero(b, start, end), z, ctx);
      assert.equal(bm.findNextSet(b, start, end), o, ctx);
      assert.equal(bm.countSet(b, start, end), c, ctx);
      assert.equal(bm.countZero(b, start, end), end - start - c, ctx);
      const want = 1 + Math.floor(rnd() * 40);
      // Reference runs.
      let first: { start: number; len: number } | undefined;
      let longest = { start, len: 0 };
      for (let i = start; i < end; ) {
        if (ref(b, i)) { i++; continue; }
        let j = i;
        while (j < end && !ref(b, j)) j++;
        if (first === undefined && j - i >= want) first = { start: i, len: j - i };
        if (j - i > longest.len) longest = { start: i, len: j - i };
        i = j;
      }
      const got = bm.findZeroRun(b, start, end, want);
      if (first !== undefined) assert.deepEqual(got, { ...first, found: true }, ctx);
      else assert.deepEqual(got, { ...longest, found: false }, ctx);
    }
  }
});

test('bitmap: setBits / clearBits change exactly their range, at every alignment', () => {
  for (let start = 0; start < 80; start += 3) {
    for (let end = start; end < 100; end += 5) {
      const ones = new Uint8Array(16).fill(0xff);
      bm.clearBits(ones, start, end);
      const zeros = new Uint8Array(16);
      bm.setBits(zeros, start, end);
      for (let i = 0; i < 128; i++) {
        const inside = i >= start && i < end;
        assert.equal(ref(ones, i), !inside, `clear ${start}..${end} bit ${i}`);
        assert.equal(ref(zeros, i), inside, `set ${start}..${end} bit ${i}`);
      }
      assert.equal(bm.allClear(ones, start, end), true);
      assert.equal(bm.allSet(zeros, start, end), true);
    }
  }
});

test('bitmap: markBitmapEnd sets the padding past the last valid bit, as ext4_mark_bitmap_end', () => {
  const b = new Uint8Array(1024);
  bm.markBitmapEnd(b, 8000, 8192);
  assert.equal(bm.countSet(b, 0, 8192), 192);
  assert.equal(bm.findNextSet(b, 0, 8192), 8000);
  bm.markBitmapEnd(b, 8192, 8192);
  assert.equal(bm.countSet(b, 0, 8192), 192);
});

test('bitmap: a range outside the array is an Ext4Bug, not a silent read', () => {
  const b = new Uint8Array(4);
  assert.throws(() => bm.findNextZero(b, 0, 33), /ext4ts internal bug/);
  assert.throws(() => bm.setBit(b, -1), /ext4ts internal bug/);
});
