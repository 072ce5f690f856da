/**
 * Time as the engine sees it (STYLE.md §11: nondeterminism goes through runtime/). Inode and
 * superblock timestamps come from a Clock, so a reproducible build passes a fixed one (from
 * SOURCE_DATE_EPOCH) and the simulator a virtual one.
 */
import { PosixError } from '../util/errors.js';

/** A point in time: seconds since the epoch (may be negative) and nanoseconds 0..999,999,999. */
export interface ClockTime {
  sec: number;
  nsec: number;
}

export interface Clock {
  now(): ClockTime;
}

/** The host's wall clock with nanosecond resolution where the host has it. */
export const systemClock: Clock = {
  now(): ClockTime {
    const ns = process.hrtime.bigint() - hrBase + wallBaseNs;
    return { sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) };
  },
};
// hrtime is monotonic; anchor it to the wall clock once so times are both real and ordered.
const hrBase = process.hrtime.bigint();
const wallBaseNs = BigInt(Date.now()) * 1_000_000n;

/** A clock that always says `sec`.`nsec` (reproducible images). */
export function fixedClock(sec: number, nsec = 0): Clock {
  const t = { sec, nsec };
  return { now: () => ({ ...t }) };
}

/**
 * SOURCE_DATE_EPOCH (reproducible-builds.org): a fixed clock at that second when the variable is
 * set to a decimal integer, else undefined. Anything else set there is an error, not ignored.
 */
export function clockFromSourceDateEpoch(env: Record<string, string | undefined>): Clock | undefined {
  const v = env['SOURCE_DATE_EPOCH'];
  if (v === undefined || v === '') return undefined;
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new PosixError('EINVAL', 'SOURCE_DATE_EPOCH', undefined, `${JSON.stringify(v)} is not an integer number of seconds`);
  }
  return fixedClock(Number(v));
}
