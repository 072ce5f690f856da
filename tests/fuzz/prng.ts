/**
 * A small seeded PRNG for the fuzzers (STYLE.md §11: every run replays from its seed; no
 * Math.random). The generator is splitmix32: a 32-bit state advanced by the golden-ratio
 * increment and finalised with two xor-shift-multiply rounds. It is not cryptographic; it only
 * needs to be deterministic, fast and well spread over small ranges.
 */

/** A deterministic stream of numbers derived from one 32-bit seed. */
export class Prng {
  private state: number;

  constructor(seed: number) {
    // Mix the seed once so that consecutive seeds (1, 2, 3, ...) start far apart.
    this.state = (seed ^ 0x9e3779b9) >>> 0;
    this.u32();
  }

  /** The next 32-bit unsigned integer (splitmix32). */
  u32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  }

  /** A uniform integer in [0, n) for 0 < n <= 2^32 (n = 0 or less returns 0). */
  below(n: number): number {
    if (n <= 1) return 0;
    if (n <= 0x1_0000_0000) return Math.floor((this.u32() / 0x1_0000_0000) * n);
    // Wider ranges (byte offsets of very large images): combine two draws.
    return Math.floor(((this.u32() * 0x1_0000_0000 + this.u32()) / 2 ** 64) * n);
  }

  /** A uniform integer in [lo, hi] (inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('Prng.pick: empty array');
    // OK to assert: the index is inside the array.
    return items[this.below(items.length)] as T;
  }

  /** One key of a weight table, chosen with probability proportional to its weight. */
  weighted<K extends string>(weights: Readonly<Partial<Record<K, number>>>): K {
    const entries = Object.entries(weights) as [K, number][];
    const total = entries.reduce((a, [, w]) => a + Math.max(0, w), 0);
    if (total <= 0) throw new Error('Prng.weighted: no positive weight');
    let r = this.u32() / 0x1_0000_0000 * total;
    for (const [k, w] of entries) {
      r -= Math.max(0, w);
      if (r < 0) return k;
    }
    // OK: rounding can leave r at exactly 0 after the last entry.
    return (entries[entries.length - 1] as [K, number])[0];
  }
}
