/**
 * `npm run sim`: the long seeded runs that do not fit in `npm test`'s time budget. Each lane is
 * one of the seeded tests run with far more cases; every failure prints its seed and the
 * command that replays it.
 *
 * Options:
 *   --seeds N        seeds of each seeded lane: the buffered-data simulation
 *                    (tests/sim/data-sim.ts) and the crash harness (tests/sim/crash-sim.ts);
 *                    default 1000
 *   --first-seed S   first seed of those lanes (default 1): seeds S … S+N-1
 *   --data-ops N     operations per data-sim seed (default 60, as in npm test)
 *   --jobs N         child processes of a seeded lane (default: available CPUs)
 *   --ns-seeds N     random namespace lanes (default 8)
 *   --ops N          operations per namespace lane (default 20000)
 *   --fuzz N         read-fuzz cases (default 50000)
 *   --only WORD      run only the lanes whose name contains WORD (e.g. `--only data-sim`,
 *                    `--only crash`)
 *   --crash          run only the crash lane (the same as `--only crash`)
 *   --canary NAME    data-sim seeds misbehave on purpose (checks the failure report path)
 *
 * A seeded lane runs its seeds in child processes (`node dist/tests/sim/<lane>.js --first S
 * --count N --stride K`), prints progress, each failure with its seed and replay command, what
 * the seeds exercised, and ends with the line `<lane>: N seeds run, F failures` (`data-sim: …`,
 * `crash: …`); when only one lane runs, that line is the last of the output.
 */
import { spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';

const args = process.argv.slice(2);
function opt(name: string, dflt: number): number {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : dflt;
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${name} must be a positive integer`);
  return v;
}
function optText(name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}
const SEEDS = opt('--seeds', 1000);
const FIRST_SEED = opt('--first-seed', 1);
const DATA_OPS = opt('--data-ops', 60);
const JOBS = opt('--jobs', Math.max(1, availableParallelism()));
const NS_SEEDS = opt('--ns-seeds', 8);
const OPS = opt('--ops', 20000);
const FUZZ = opt('--fuzz', 50000);
const ONLY = args.includes('--crash') ? 'crash' : optText('--only');
const RUNNER = resolve(import.meta.dirname, '../../../scripts/run-tests.mjs');

interface Lane { name: string; filter: string; env: Record<string, string> }
const lanes: Lane[] = [];
for (let s = 1; s <= NS_SEEDS; s++) {
  lanes.push({ name: `namespace-random seed ${5000 + s}`, filter: 'namespace-random', env: { RANDOM_SEED: String(5000 + s), RANDOM_OPS: String(OPS) } });
}
lanes.push({ name: `read fuzz ${FUZZ} cases`, filter: 'read-fuzz', env: { FUZZ_CASES: String(FUZZ) } });
lanes.push({ name: 'write fuzz 20000 cases', filter: 'write-fuzz', env: { WRITE_FUZZ_CASES: '20000', WRITE_FUZZ_SEED: '99' } });

/** Runs one test-file lane in a child process (the existing lanes). */
function runTestLane(lane: Lane): boolean {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [RUNNER, lane.filter], { env: { ...process.env, ...lane.env }, encoding: 'utf8', maxBuffer: 1 << 28 });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  const ok = r.status === 0;
  const replay = Object.entries(lane.env).map(([k, v]) => `${k}=${v}`).join(' ');
  process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${lane.name} (${secs} s)${ok ? '' : `\n     replay: ${replay} node scripts/run-tests.mjs ${lane.filter}\n${r.stdout.split('\n').filter((l) => /✖|Error|seed/.test(l)).slice(0, 20).join('\n')}`}\n`);
  return ok;
}

/** A seeded lane: seed ranges run in child processes through a simulator's command line. */
interface SeedLane {
  /** The lane's name, which starts each of its lines. */
  name: string;
  /** The simulator's compiled command line (data-sim.js, crash-sim.js). */
  script: string;
  /** Arguments every child gets besides --first, --count and --stride. */
  args: string[];
  /** What each seed runs, for the heading. */
  detail: string;
  /** The children's summed EXERCISED numbers as text. */
  exercised(n: readonly number[]): string;
}

const canary = optText('--canary');
const seedLanes: SeedLane[] = [
  {
    name: 'data-sim',
    script: resolve(import.meta.dirname, 'data-sim.js'),
    args: ['--ops', String(DATA_OPS), ...(canary !== undefined ? ['--canary', canary] : [])],
    detail: `${DATA_OPS} ops each`,
    exercised: ([eio = 0, failedIoEnds = 0, enomem = 0, failedConv = 0, conv = 0]) =>
      `${eio} EIO bios, ${failedIoEnds} FAILED io_ends, ${enomem} ENOMEM hits, ${failedConv} failed conversions, ${conv} conversions`,
  },
  {
    name: 'crash',
    script: resolve(import.meta.dirname, 'crash-sim.js'),
    args: [],
    detail: 'a power cut and e2fsck each',
    exercised: ([crashes = 0, eio = 0, enomem = 0, enospc = 0, async = 0, unwritten = 0, conv = 0, claimed = 0]) =>
      `${crashes} power cuts inside a run, ${eio} EIO bios, ${enomem} ENOMEM hits, ${enospc} ENOSPC, ` +
      `${async} async requests (${unwritten} on the unwritten path), ${conv} conversions, ${claimed} fsynced bytes checked`,
  },
];

/** What one child reported. */
interface ChildResult { run: number; failed: number; crashed: string | undefined }

/**
 * Runs seeds first+k, first+k+jobs, … in one child (the lane's command line), echoing each
 * failure report as it arrives.
 */
function runSeedChild(lane: SeedLane, k: number, count: number, onProgress: (n: number) => void, exercised: number[]): Promise<ChildResult> {
  return new Promise((done) => {
    const childArgs = [lane.script, '--first', String(FIRST_SEED + k), '--count', String(count), '--stride', String(JOBS), ...lane.args];
    const child = spawn(process.execPath, childArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let report: string[] | undefined;
    let result: { run: number; failed: number } | undefined;
    let lastProgress = 0;
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (report !== undefined) {
          if (line === 'END') {
            process.stdout.write(`FAIL ${report.join('\n     ')}\n`);
            report = undefined;
          } else report.push(line);
        } else if (line.startsWith('FAIL ')) report = [];
        else if (line.startsWith('PROGRESS ')) {
          const n = Number(line.slice(9));
          onProgress(n - lastProgress);
          lastProgress = n;
        } else if (line.startsWith('EXERCISED ')) {
          line.split(' ').slice(1).forEach((v, i) => {
            exercised[i] = (exercised[i] ?? 0) + Number(v);
          });
        } else if (line.startsWith('DONE ')) {
          const [, run, failed] = line.split(' ');
          onProgress(Number(run) - lastProgress);
          result = { run: Number(run), failed: Number(failed) };
        }
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('close', (code) => {
      if (result !== undefined && code === 0) done({ ...result, crashed: undefined });
      else done({ run: result?.run ?? 0, failed: result?.failed ?? 0, crashed: `child ${k} exited with ${code}: ${stderr.slice(-2000)}` });
    });
  });
}

/** A seeded lane: SEEDS seeds over JOBS children; true when every seed ran and none failed. */
async function runSeedLane(lane: SeedLane): Promise<boolean> {
  const t0 = performance.now();
  const jobs = Math.min(JOBS, SEEDS);
  const name = lane.name;
  process.stdout.write(`${name}: seeds ${FIRST_SEED}–${FIRST_SEED + SEEDS - 1}, ${lane.detail}, ${jobs} processes\n`);
  let done = 0;
  let nextReport = Math.max(100, Math.ceil(SEEDS / 10));
  const exercised: number[] = [];
  const progress = (n: number): void => {
    done += n;
    if (done >= nextReport && done < SEEDS) {
      process.stdout.write(`${name}: ${done}/${SEEDS} seeds (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
      nextReport += Math.max(100, Math.ceil(SEEDS / 10));
    }
  };
  const children: Promise<ChildResult>[] = [];
  for (let k = 0; k < jobs; k++) children.push(runSeedChild(lane, k, Math.ceil((SEEDS - k) / jobs), progress, exercised));
  const results = await Promise.all(children);
  let run = 0;
  let failed = 0;
  for (const r of results) {
    run += r.run;
    failed += r.failed;
    if (r.crashed !== undefined) {
      failed++;
      process.stdout.write(`FAIL ${name} ${r.crashed}\n`);
    }
  }
  process.stdout.write(`${name}: exercised ${lane.exercised(exercised)}\n`);
  process.stdout.write(`${name}: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  process.stdout.write(`${name}: ${run} seeds run, ${failed} failures\n`);
  return failed === 0 && run === SEEDS;
}

async function main(): Promise<void> {
  let failedLanes = 0;
  let ran = 0;
  for (const lane of lanes) {
    if (ONLY !== undefined && !lane.name.includes(ONLY)) continue;
    ran++;
    if (!runTestLane(lane)) failedLanes++;
  }
  for (const lane of seedLanes) {
    if (ONLY !== undefined && !lane.name.includes(ONLY)) continue;
    ran++;
    if (!(await runSeedLane(lane))) failedLanes++;
  }
  // A single lane's own summary stays the last line.
  if (ran !== 1) process.stdout.write(`${ran - failedLanes}/${ran} lanes passed\n`);
  process.exitCode = failedLanes === 0 ? 0 : 1;
}

await main();
