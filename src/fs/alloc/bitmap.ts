/**
 * On-disk allocation bitmaps as plain bit arrays: the kernel's ext4_set_bit / ext4_clear_bit /
 * ext4_test_bit / ext4_find_next_zero_bit / ext4_find_next_bit / ext4_mark_bitmap_end
 * (include/asm-generic/bitops/le.h, fs/ext4/ext4.h, fs/ext4/balloc.c) over a block's bytes.
 *
 * Bit order is ext4's little-endian one: bit `i` is bit `i & 7` of byte `i >> 3`, which is also
 * bit `i & 31` of the little-endian 32-bit word `i >> 5`. Searches and counts work a word at a
 * time (a full word of ones or zeros is skipped with one comparison), so scanning a 32768-bit
 * bitmap costs about a thousand word reads. Words are composed from bytes explicitly, so the
 * code is correct on any host byte order.
 *
 * Every range is half-open, [start, end), in bits. Callers pass ranges inside the array; the
 * functions assert it (a range outside is a bug in the allocator, never bad input).
 */
import { assert } from '../../util/assert.js';

/** The little-endian 32-bit word `wi` of `b` as a signed int32 (bytes past the end read 0). */
function word(b: Uint8Array, wi: number): number {
  const o = wi << 2;
  // OK to use `!`: a missing byte (only past the end) is undefined, which `|` turns into 0.
  return b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24);
}

/** Index of the lowest set bit of a nonzero int32. */
function ctz(w: number): number {
  return 31 - Math.clz32(w & -w);
}

/** Number of set bits in an int32 (SWAR popcount). */
function popcount(w: number): number {
  let v = w - ((w >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

function checkRange(b: Uint8Array, start: number, end: number): void {
  assert(Number.isInteger(start) && Number.isInteger(end), () => `bitmap range ${start}..${end}`);
  assert(start >= 0 && end <= b.length * 8, () => `bitmap range ${start}..${end} outside ${b.length * 8} bits`);
}

/** ext4_test_bit. */
export function testBit(b: Uint8Array, i: number): boolean {
  checkRange(b, i, i + 1);
  // OK to use `!`: checkRange put byte i >> 3 inside the array.
  return (b[i >>> 3]! & (1 << (i & 7))) !== 0;
}

/** ext4_set_bit. */
export function setBit(b: Uint8Array, i: number): void {
  checkRange(b, i, i + 1);
  b[i >>> 3]! |= 1 << (i & 7);
}

/** ext4_clear_bit. */
export function clearBit(b: Uint8Array, i: number): void {
  checkRange(b, i, i + 1);
  b[i >>> 3]! &= ~(1 << (i & 7));
}

/**
 * Sets (value true) or clears every bit of [start, end): partial bytes at the edges bit by bit,
 * whole bytes in between with one fill.
 */
function fillBits(b: Uint8Array, start: number, end: number, value: boolean): void {
  checkRange(b, start, end);
  let i = start;
  const one = (k: number): void => {
    if (value) setBit(b, k);
    else clearBit(b, k);
  };
  for (; i < end && (i & 7) !== 0; i++) one(i);
  const wholeEnd = end & ~7;
  if (i < wholeEnd) {
    b.fill(value ? 0xff : 0, i >>> 3, wholeEnd >>> 3);
    i = wholeEnd;
  }
  for (; i < end; i++) one(i);
}

/** Sets every bit of [start, end). */
export function setBits(b: Uint8Array, start: number, end: number): void {
  fillBits(b, start, end, true);
}

/** Clears every bit of [start, end). */
export function clearBits(b: Uint8Array, start: number, end: number): void {
  fillBits(b, start, end, false);
}

/**
 * ext4_mark_bitmap_end: sets the padding bits [startBit, endBit) past the last valid bit, so
 * the unused tail of a bitmap block reads as "in use" (e2fsck checks this).
 */
export function markBitmapEnd(b: Uint8Array, startBit: number, endBit: number): void {
  if (startBit >= endBit) return;
  setBits(b, startBit, endBit);
}

/**
 * First bit in [start, end) equal to `want` (true: a set bit, false: a clear bit), or `end`
 * when there is none (the kernel's convention: the size is returned).
 */
function findNext(b: Uint8Array, start: number, end: number, want: boolean): number {
  checkRange(b, start, end);
  if (start >= end) return end;
  const flip = want ? 0 : -1;
  let wi = start >>> 5;
  const lastWi = (end - 1) >>> 5;
  let w = (word(b, wi) ^ flip) & (-1 << (start & 31));
  for (;;) {
    if (w !== 0) {
      const bit = (wi << 5) + ctz(w);
      return bit < end ? bit : end;
    }
    if (wi === lastWi) return end;
    wi++;
    w = word(b, wi) ^ flip;
  }
}

/** ext4_find_next_zero_bit over [start, end): the first clear bit, or `end`. */
export function findNextZero(b: Uint8Array, start: number, end: number): number {
  return findNext(b, start, end, false);
}

/** ext4_find_next_bit over [start, end): the first set bit, or `end`. */
export function findNextSet(b: Uint8Array, start: number, end: number): number {
  return findNext(b, start, end, true);
}

/** Number of set bits in [start, end). */
export function countSet(b: Uint8Array, start: number, end: number): number {
  checkRange(b, start, end);
  if (start >= end) return 0;
  let n = 0;
  const firstWi = start >>> 5;
  const lastWi = (end - 1) >>> 5;
  for (let wi = firstWi; wi <= lastWi; wi++) {
    let w = word(b, wi);
    if (wi === firstWi) w &= -1 << (start & 31);
    // A mask of the low (end & 31) bits; when end is word-aligned the whole last word counts.
    if (wi === lastWi && (end & 31) !== 0) w &= (1 << (end & 31)) - 1;
    n += popcount(w);
  }
  return n;
}

/** Number of clear bits in [start, end). */
export function countZero(b: Uint8Array, start: number, end: number): number {
  return end - start - countSet(b, start, end);
}

/** True when every bit of [start, end) is set. */
export function allSet(b: Uint8Array, start: number, end: number): boolean {
  return findNextZero(b, start, end) === end;
}

/** True when every bit of [start, end) is clear. */
export function allClear(b: Uint8Array, start: number, end: number): boolean {
  return findNextSet(b, start, end) === end;
}

/** A run of clear bits: `start` and `len` in bits. */
export interface ZeroRun {
  start: number;
  len: number;
}

/**
 * Walks the runs of clear bits in [start, end) in order and returns the first whose length is
 * at least `want` (found: true, its full length), or else the longest one (found: false; the
 * first of equal ones; len 0 when every bit is set). Runs are cut at `start` and `end`. One
 * pass serves both the allocator's "first run long enough" and its per-group "longest run"
 * cache.
 */
export function findZeroRun(b: Uint8Array, start: number, end: number, want: number): ZeroRun & { found: boolean } {
  assert(want >= 1, () => `findZeroRun want ${want}`);
  let best: ZeroRun = { start, len: 0 };
  let p = start;
  while (p < end) {
    const z = findNextZero(b, p, end);
    if (z >= end) break;
    const e = findNextSet(b, z, end);
    if (e - z >= want) return { start: z, len: e - z, found: true };
    if (e - z > best.len) best = { start: z, len: e - z };
    p = e;
  }
  return { ...best, found: false };
}
