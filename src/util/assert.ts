/**
 * Assertions for bugs (never for bad input). They stay on in production, as TigerBeetle's and
 * the kernel's BUG_ON do: a broken invariant must stop the operation before it writes garbage.
 * Corrupt on-disk data is reported with the Corrupt error class instead (see errors.ts).
 */

/** Thrown when an internal invariant is broken: always a bug in ext4ts, never bad input. */
export class Ext4Bug extends Error {
  override readonly name = 'Ext4Bug';
  constructor(message: string) {
    super(`ext4ts internal bug: ${message}`);
  }
}

/** Asserts `cond`; throws Ext4Bug with `msg` otherwise. */
export function assert(cond: unknown, msg: string | (() => string)): asserts cond {
  if (!cond) throw new Ext4Bug(typeof msg === 'function' ? msg() : msg);
}

/** Marks a switch default or branch that the types say cannot happen. */
export function unreachable(x: never, what: string): never {
  throw new Ext4Bug(`unreachable ${what}: ${String(x)}`);
}
