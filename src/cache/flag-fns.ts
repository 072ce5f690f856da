/**
 * Generated flag accessors: the kernel's BUFFER_FNS / TAS_BUFFER_FNS
 * (include/linux/buffer_head.h) and PAGEFLAG / TESTPAGEFLAG (include/linux/page-flags.h) in
 * TypeScript. A state word is one `number` holding one bit per flag; for each flag name `X` the
 * generator makes `testX`, `setX`, `clearX`, `testSetX` and `testClearX` (or only `testX` for
 * flags that change through asserting verbs, like a page's Locked and Writeback bits).
 *
 * Invariants kept: every flag is a distinct bit below 2^30 (so `|`, `&` and `~` stay exact on a
 * 32-bit word); the state word is changed only by the generated functions or by a verb of the
 * owning class; there are no ad-hoc boolean fields (STYLE.md §8). JavaScript runs each
 * function to completion, so a generated test-and-set is atomic with respect to every other
 * state change, which the kernel gets from `test_and_set_bit` (IO-DESIGN.md invariant 26).
 */
import { assert } from '../util/assert.js';

/** An object whose flags live in one word (the kernel's `b_state`, `page->flags`, `mapping->flags`). */
export interface StateWord {
  /** The flag bits. Change them only through the generated accessors or the owner's verbs. */
  state: number;
}

/** `testX(o)`: is flag X set? */
export type TestFns<T, N extends string> = { readonly [K in N as `test${K}`]: (o: T) => boolean };

/** The full set for each name: test, set, clear, testSet (returns the old value), testClear. */
export type FlagFns<T, N extends string> = TestFns<T, N> & {
  readonly [K in N as `set${K}`]: (o: T) => void;
} & {
  readonly [K in N as `clear${K}`]: (o: T) => void;
} & {
  readonly [K in N as `testSet${K}`]: (o: T) => boolean;
} & {
  readonly [K in N as `testClear${K}`]: (o: T) => boolean;
};

/**
 * Asserts that `bits` maps each flag name to its own bit number in [0, 30), so two names can
 * never alias one bit. Called once per table when the module loads.
 */
export function checkBitTable(what: string, bits: Readonly<Record<string, number>>): void {
  const seen = new Set<number>();
  for (const [name, bit] of Object.entries(bits)) {
    assert(Number.isInteger(bit) && bit >= 0 && bit < 30, () => `${what}: bit ${bit} of ${name} out of range`);
    assert(!seen.has(bit), () => `${what}: bit ${bit} of ${name} used twice`);
    seen.add(bit);
  }
}

/**
 * Makes the five accessors for every flag of `bits` (a table of bit numbers), typed for owner
 * `T`. Curried so that `T` is given explicitly while the names are inferred:
 * `defineFlagFns<BufferHead>()('BH', BH_BITS)`.
 */
export function defineFlagFns<T extends StateWord>() {
  return <const N extends string>(what: string, bits: Readonly<Record<N, number>>): FlagFns<T, N> => {
    checkBitTable(what, bits);
    const fns: Record<string, (o: T) => boolean | void> = {};
    for (const name of Object.keys(bits) as N[]) {
      const mask = 1 << bits[name];
      fns[`test${name}`] = (o) => (o.state & mask) !== 0;
      fns[`set${name}`] = (o) => {
        o.state |= mask;
      };
      fns[`clear${name}`] = (o) => {
        o.state &= ~mask;
      };
      fns[`testSet${name}`] = (o) => {
        const old = (o.state & mask) !== 0;
        o.state |= mask;
        return old;
      };
      fns[`testClear${name}`] = (o) => {
        const old = (o.state & mask) !== 0;
        o.state &= ~mask;
        return old;
      };
    }
    // OK to cast: the loop above created exactly the keys the mapped type names.
    return Object.freeze(fns) as unknown as FlagFns<T, N>;
  };
}

/**
 * Makes only the `testX` accessors, for flags whose changes must go through a verb that
 * asserts correct use (the kernel's TESTPAGEFLAG: `PageWriteback` is tested directly but set
 * only by `set_page_writeback` and cleared only by `end_page_writeback`).
 */
export function defineTestFns<T extends StateWord>() {
  return <const N extends string>(what: string, bits: Readonly<Record<N, number>>): TestFns<T, N> => {
    checkBitTable(what, bits);
    const fns: Record<string, (o: T) => boolean> = {};
    for (const name of Object.keys(bits) as N[]) {
      const mask = 1 << bits[name];
      fns[`test${name}`] = (o) => (o.state & mask) !== 0;
    }
    // OK to cast: the loop above created exactly the keys the mapped type names.
    return Object.freeze(fns) as unknown as TestFns<T, N>;
  };
}
