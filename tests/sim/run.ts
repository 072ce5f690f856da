/**
 * `npm run sim`: the long seeded runs that do not fit in `npm test`'s time budget. Each lane is
 * one of the seeded tests run with far more cases; every failure prints its seed and the
 * environment that replays it. Options: `--seeds N` (random namespace lanes, default 8),
 * `--ops N` (operations per lane, default 20000), `--fuzz N` (read-fuzz cases, default 50000).
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

const args = process.argv.slice(2);
function opt(name: string, dflt: number): number {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : dflt;
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${name} must be a positive integer`);
  return v;
}
const SEEDS = opt('--seeds', 8);
const OPS = opt('--ops', 20000);
const FUZZ = opt('--fuzz', 50000);
const RUNNER = resolve(import.meta.dirname, '../../../scripts/run-tests.mjs');

interface Lane { name: string; filter: string; env: Record<string, string> }
const lanes: Lane[] = [];
for (let s = 1; s <= SEEDS; s++) {
  lanes.push({ name: `namespace-random seed ${5000 + s}`, filter: 'namespace-random', env: { RANDOM_SEED: String(5000 + s), RANDOM_OPS: String(OPS) } });
}
lanes.push({ name: `read fuzz ${FUZZ} cases`, filter: 'read-fuzz', env: { FUZZ_CASES: String(FUZZ) } });
lanes.push({ name: 'write fuzz 20000 cases', filter: 'write-fuzz', env: { WRITE_FUZZ_CASES: '20000', WRITE_FUZZ_SEED: '99' } });

let failed = 0;
for (const lane of lanes) {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [RUNNER, lane.filter], { env: { ...process.env, ...lane.env }, encoding: 'utf8', maxBuffer: 1 << 28 });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  const ok = r.status === 0;
  if (!ok) failed++;
  const replay = Object.entries(lane.env).map(([k, v]) => `${k}=${v}`).join(' ');
  process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${lane.name} (${secs} s)${ok ? '' : `\n     replay: ${replay} node scripts/run-tests.mjs ${lane.filter}\n${r.stdout.split('\n').filter((l) => /✖|Error|seed/.test(l)).slice(0, 20).join('\n')}`}\n`);
}
process.stdout.write(`${lanes.length - failed}/${lanes.length} lanes passed\n`);
process.exitCode = failed === 0 ? 0 : 1;
