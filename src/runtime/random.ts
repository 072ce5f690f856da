/**
 * Randomness as the engine sees it (STYLE.md §11: nondeterminism goes through runtime/). mkfs
 * draws the filesystem UUID and the directory hash seed from a Random; production passes
 * cryptoRandom (node:crypto), tests and reproducible builds pass seededRandom(seed), whose
 * output depends only on the seed.
 *
 * The seeded generator is xoshiro128** (Blackman & Vigna), seeded through splitmix32 from the
 * seed bytes. Its output for a given seed is part of what makes reproducible images
 * reproducible: changing the algorithm changes every image derived from it, so don't.
 */
import { randomFillSync } from 'node:crypto';
import { assert } from '../util/assert.js';

export interface Random {
  /** Fills `bytes` with random bytes and returns it. */
  fill(bytes: Uint8Array): Uint8Array;
}

/** The operating system's cryptographic generator. */
export const cryptoRandom: Random = {
  fill(bytes: Uint8Array): Uint8Array {
    return randomFillSync(bytes);
  },
};

/** One splitmix32 step: a well-mixed 32-bit value from a 32-bit state. */
function splitmix32(state: number): number {
  let z = (state + 0x9e3779b9) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * A deterministic generator: the same seed (a number, or bytes such as a UUID) always yields the
 * same byte stream.
 */
export function seededRandom(seed: number | Uint8Array): Random {
  const next = xoshiro128ss(seed);
  return {
    fill(bytes: Uint8Array): Uint8Array {
      for (let i = 0; i < bytes.length; i += 4) {
        const v = next();
        for (let k = 0; k < 4 && i + k < bytes.length; k++) bytes[i + k] = (v >>> (8 * k)) & 0xff;
      }
      return bytes;
    },
  };
}

/**
 * A seeded generator of numbers for the simulator (scheduling order, latencies, fault
 * decisions). It is a Random too; `fill` draws from the same stream as the number methods.
 */
export interface Prng extends Random {
  /** The seed it was made from, printed by failing simulations so they replay. */
  readonly seed: number;
  /** A uniform 32-bit unsigned integer. */
  u32(): number;
  /** A uniform integer in [0, n); n is a positive integer up to 2^32. */
  below(n: number): number;
  /** A uniform integer in [lo, hi] (inclusive). */
  between(lo: number, hi: number): number;
  /** True with probability `p` (0 never, 1 always). */
  chance(p: number): boolean;
  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[];
}

/** A Prng whose every draw depends only on `seed` (an integer; printed to replay a failure). */
export function seededPrng(seed: number): Prng {
  assert(Number.isSafeInteger(seed), () => `seed ${seed} is not a safe integer`);
  const next = xoshiro128ss(seed);
  const below = (n: number): number => {
    assert(Number.isSafeInteger(n) && n > 0 && n <= 0x1_0000_0000, () => `below(${n}): bound out of range`);
    // Rejection sampling: drop the top partial copy of [0, n) so every value is equally likely.
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % n);
    for (;;) {
      const v = next();
      if (v < limit) return v % n;
    }
  };
  return {
    seed,
    u32: next,
    below,
    between(lo: number, hi: number): number {
      assert(Number.isSafeInteger(lo) && Number.isSafeInteger(hi) && lo <= hi, () => `between(${lo}, ${hi})`);
      return lo + below(hi - lo + 1);
    },
    chance(p: number): boolean {
      assert(p >= 0 && p <= 1, () => `chance(${p}): not a probability`);
      if (p === 0) return false;
      if (p === 1) return true;
      return next() / 0x1_0000_0000 < p;
    },
    shuffle<T>(items: T[]): T[] {
      for (let i = items.length - 1; i > 0; i--) {
        const j = below(i + 1);
        // OK to assert non-null: i and j are both < items.length.
        const t = items[i]!;
        items[i] = items[j]!;
        items[j] = t;
      }
      return items;
    },
    fill(bytes: Uint8Array): Uint8Array {
      for (let i = 0; i < bytes.length; i += 4) {
        const v = next();
        for (let k = 0; k < 4 && i + k < bytes.length; k++) bytes[i + k] = (v >>> (8 * k)) & 0xff;
      }
      return bytes;
    },
  };
}

/** xoshiro128** seeded from `seed` through splitmix32; returns the 32-bit output function. */
function xoshiro128ss(seed: number | Uint8Array): () => number {
  const seedBytes = typeof seed === 'number' ? u32Bytes(seed >>> 0, Math.floor(seed / 0x1_0000_0000)) : seed;
  // Fold the seed bytes into four 32-bit words, mixing each step so every byte matters.
  const s = new Uint32Array([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344]);
  let acc = seedBytes.length >>> 0;
  for (let i = 0; i < seedBytes.length; i++) {
    // OK to index: i < seedBytes.length.
    acc = splitmix32((acc ^ (seedBytes[i]! << ((i & 3) * 8))) >>> 0);
    s[i & 3] = (s[i & 3]! ^ acc) >>> 0;
  }
  for (let i = 0; i < 4; i++) s[i] = splitmix32((s[i]! ^ splitmix32(acc + i)) >>> 0);
  if ((s[0]! | s[1]! | s[2]! | s[3]!) === 0) s[0] = 1; // xoshiro's state must not be all zero
  return (): number => {
    // xoshiro128**: result = rotl(s1 * 5, 7) * 9.
    const r = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2] = (s[2]! ^ s[0]!) >>> 0;
    s[3] = (s[3]! ^ s[1]!) >>> 0;
    s[1] = (s[1]! ^ s[2]!) >>> 0;
    s[0] = (s[0]! ^ s[3]!) >>> 0;
    s[2] = (s[2]! ^ t) >>> 0;
    s[3] = rotl(s[3]!, 11);
    return r;
  };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

function u32Bytes(lo: number, hi: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, lo, true);
  dv.setUint32(4, hi >>> 0, true);
  return b;
}
