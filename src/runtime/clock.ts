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

/**
 * A wall clock with nanosecond steps: the monotonic counter gives the digits below the
 * millisecond, the wall clock gives the time. Whenever the two part by more than a millisecond
 * (the wall clock was stepped, as NTP does on a freshly booted machine, or slewed), the clock
 * re-anchors to the wall clock. The kernel stamps real time too; a clock anchored once ran
 * seconds ahead after a step back, and e2fsck saw a superblock written in the future.
 */
export function wallClock(wallMs: () => number, monoNs: () => bigint): Clock {
  let monoBase = monoNs();
  let wallBaseNs = BigInt(wallMs()) * 1_000_000n;
  return {
    now(): ClockTime {
      const mono = monoNs();
      const ms = wallMs();
      let ns = mono - monoBase + wallBaseNs;
      const est = Number(ns / 1_000_000n);
      if (est < ms - 1 || est > ms + 1) {
        monoBase = mono;
        wallBaseNs = BigInt(ms) * 1_000_000n;
        ns = wallBaseNs;
      }
      const sec = ns / 1_000_000_000n;
      const nsec = ns % 1_000_000_000n;
      // BigInt division truncates toward zero: a time before 1970 borrows a second.
      return nsec < 0n ? { sec: Number(sec) - 1, nsec: Number(nsec + 1_000_000_000n) } : { sec: Number(sec), nsec: Number(nsec) };
    },
  };
}

/** The host's wall clock with nanosecond resolution where the host has it. */
export const systemClock: Clock = wallClock(() => Date.now(), () => process.hrtime.bigint());

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
