/**
 * runtime/clock.ts: the system clock stamps real time with nanosecond steps. It follows the wall
 * clock when the wall clock is stepped (back or forward) instead of running on from its first
 * reading; a clock anchored once wrote a superblock e2fsck found "in the future" after an NTP
 * step on a fresh CI machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { wallClock, systemClock } from '../../../src/runtime/clock.js';

/** A controllable wall clock (ms) and monotonic counter (ns). */
function fakeHost(startMs: number) {
  const h = { wall: startMs, mono: 5_000_000_000n };
  const clock = wallClock(() => h.wall, () => h.mono);
  const advance = (ns: bigint): void => {
    h.mono += ns;
    h.wall = Math.floor(Number(BigInt(h.wall) * 1_000_000n + ns) / 1e6);
  };
  return { h, clock, advance };
}

test('wallClock: between steps it counts nanoseconds from the monotonic counter', () => {
  const { clock, advance } = fakeHost(1_700_000_000_000);
  assert.deepEqual(clock.now(), { sec: 1_700_000_000, nsec: 0 });
  advance(123_456n);
  assert.deepEqual(clock.now(), { sec: 1_700_000_000, nsec: 123_456 });
  advance(999_876_544n);
  assert.deepEqual(clock.now(), { sec: 1_700_000_001, nsec: 0 });
});

test('wallClock: a wall clock stepped back (or forward) is followed at the next reading', () => {
  const { h, clock, advance } = fakeHost(1_700_000_000_000);
  advance(2_000_000_000n);
  assert.equal(clock.now().sec, 1_700_000_002);
  h.wall -= 5_000; // NTP steps the wall clock back 5 s; the monotonic counter does not move
  assert.deepEqual(clock.now(), { sec: 1_699_999_997, nsec: 0 });
  advance(1_500n);
  assert.deepEqual(clock.now(), { sec: 1_699_999_997, nsec: 1_500 });
  h.wall += 60_000;
  assert.deepEqual(clock.now(), { sec: 1_700_000_057, nsec: 0 });
});

test('wallClock: any sequence of steps keeps the clock within a millisecond of the wall clock', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: -2_000_000_000_000, max: 4_000_000_000_000 }),
      fc.array(fc.oneof(fc.bigInt({ min: 0n, max: 3_000_000_000n }).map((ns) => ({ ns })), fc.integer({ min: -10_000_000, max: 10_000_000 }).map((ms) => ({ ms })))),
      (start, steps) => {
        const { h, clock, advance } = fakeHost(start);
        for (const s of steps) {
          if ('ns' in s) advance(s.ns);
          else h.wall += s.ms;
          const t = clock.now();
          assert.ok(t.nsec >= 0 && t.nsec < 1e9 && Number.isInteger(t.sec), JSON.stringify(t));
          const ms = t.sec * 1000 + Math.floor(t.nsec / 1e6);
          assert.ok(Math.abs(ms - h.wall) <= 1, `${ms} vs wall ${h.wall}`);
        }
      },
    ),
  );
});

test('systemClock: agrees with Date.now within a millisecond', () => {
  for (let i = 0; i < 1000; i++) {
    const before = Date.now();
    const t = systemClock.now();
    const after = Date.now();
    const ms = t.sec * 1000 + Math.floor(t.nsec / 1e6);
    assert.ok(ms >= before - 1 && ms <= after + 1, `${ms} outside [${before}, ${after}]`);
  }
});
