/**
 * The seeded simulation of the buffered data path (tests/sim/data-sim.ts) in `npm test`: a few
 * hundred seeds, each a random workload of writes, reads, writepages, fsync, truncate and
 * fallocate over 1–4 files on a SimDevice with reordered completions, EIO on data bios and
 * ENOMEM at the writeback fault sites, checked against a model at every operation and at
 * quiescence (IO-DESIGN invariants 5, 6, 8, 14, 18, 19, 23, 24; scenarios S3, S4, S7, S12, S15),
 * then remounted from the durable image and passed through `e2fsck -fn`.
 *
 * DATA_SIM_SEEDS=N DATA_SIM_FIRST=S run seeds S … S+N-1 (default 200 seeds from 1);
 * DATA_SIM_OPS=M sets the operations per seed (default 60). A failing seed prints its replay
 * command and its last operations; a single-seed run prints the whole operation log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KNOWN_BUGS, formatFailure, runDataSeed, type DataSeedResult } from '../sim/data-sim.js';
import { envInt, skipBecause } from '../helpers/env.js';

const SEEDS = envInt('DATA_SIM_SEEDS', 200);
const FIRST = envInt('DATA_SIM_FIRST', 1);
const OPS = envInt('DATA_SIM_OPS', 60);
/** A seed range given on the command line (a replay): only those seeds run, not the canaries. */
const REPLAY = process.env['DATA_SIM_FIRST'] !== undefined || process.env['DATA_SIM_SEEDS'] !== undefined;
const REPLAY_REASON = 'a seed range was given (DATA_SIM_SEEDS / DATA_SIM_FIRST)';
/** Seeds per test: small enough that a failing batch names few seeds, large enough to keep the report short. */
const BATCH = 40;

for (let start = FIRST; start < FIRST + SEEDS; start += BATCH) {
  const end = Math.min(FIRST + SEEDS, start + BATCH) - 1;
  test(`data-sim seeds ${start}–${end} (${OPS} ops each): cache and durable image match the model, invariants 5/6/8/14/18/19 hold, e2fsck clean`, async () => {
    const failures: DataSeedResult[] = [];
    for (let seed = start; seed <= end; seed++) {
      const r = await runDataSeed(seed, { ops: OPS });
      if (!r.ok) failures.push(r);
    }
    if (SEEDS === 1) for (const r of failures) process.stdout.write(`${r.log.join('\n')}\n`);
    assert.equal(failures.length, 0, failures.map((r) => formatFailure(r)).join('\n\n'));
  });
}

test('data-sim: the checker is not vacuous — seeds exercise EIO, FAILED io_ends, ENOMEM and conversions', async (t) => {
  if (REPLAY) return skipBecause(t, REPLAY_REASON);
  // Over the first seeds, every fault kind the checker models must actually occur.
  let eio = 0;
  let failedIoEnds = 0;
  let enomem = 0;
  let conversions = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const r = await runDataSeed(seed, { ops: 40, e2fsck: false });
    eio += r.counters.eioBios;
    failedIoEnds += r.counters.failedIoEnds;
    enomem += r.counters.enomemHits;
    conversions += r.counters.conversions;
  }
  assert.ok(eio > 0, 'some data bio failed with EIO');
  assert.ok(failedIoEnds > 0, 'some io_end was FAILED (invariant 14 is exercised)');
  assert.ok(enomem > 0, 'some fault site failed with ENOMEM');
  assert.ok(conversions > 0, 'some unwritten range was converted');
});

test('data-sim canary: converting FAILED io_ends (S12, the pre-2025 kernel) is caught by the data checks', async (t) => {
  if (REPLAY) return skipBecause(t, REPLAY_REASON);
  let caught = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const clean = await runDataSeed(seed, { ops: 40, e2fsck: false });
    if (clean.counters.failedIoEnds === 0) continue;
    const r = await runDataSeed(seed, { ops: 40, e2fsck: false, canary: 'convertFailedIoEnd' });
    if (!r.ok) {
      caught++;
      assert.match(r.failure!.message, /model allows/, `seed ${seed}: caught by a data comparison`);
    }
  }
  assert.ok(caught > 0, 'a conversion of a FAILED io_end exposed wrong bytes in at least one seed');
});

test('data-sim canary: a bio that fails without the model knowing is caught (fsync EIO or data)', async (t) => {
  if (REPLAY) return skipBecause(t, REPLAY_REASON);
  let seeds = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const clean = await runDataSeed(seed, { ops: 40, e2fsck: false });
    if (clean.counters.eioBios === 0) continue;
    seeds++;
    const r = await runDataSeed(seed, { ops: 40, e2fsck: false, canary: 'hideEio' });
    assert.equal(r.ok, false, `seed ${seed}: a hidden EIO went unnoticed`);
  }
  assert.ok(seeds > 0, 'some seed injected EIO');
});

test('data-sim canary: a dirty page silently cleaned (a lost write, no error) is caught by the cache/disk coherence check', async (t) => {
  if (REPLAY) return skipBecause(t, REPLAY_REASON);
  let caught = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const r = await runDataSeed(seed, { ops: 40, e2fsck: false, canary: 'loseDirty' });
    if (!r.ok) {
      caught++;
      assert.match(r.failure!.message, /data never written back|model allows/, `seed ${seed}`);
    }
  }
  assert.ok(caught >= 5, `lost writes caught in ${caught} of 30 seeds`);
});

test('data-sim: KNOWN_BUGS lists the engine bugs the simulator tolerates (each has a todo scenario test)', () => {
  assert.deepEqual(Object.keys(KNOWN_BUGS).sort(), ['writeAndWaitRangeLeavesDirty']);
});
