/**
 * `npm run bench [-- --quick] [-- --runs N]`: side-by-side figures, each the median of several
 * runs, with ext4ts's figures also given as a ratio to the anchor measured in the same run.
 * Not a test: nothing here asserts a time. Prints a table and one JSON line per figure.
 *
 * Read direction (issue 2): extract workload A from an image made by `mke2fs -d`, with
 * `ext4ts get` (the CLI, a fresh process like its rival) and with `debugfs -R "rdump / DIR"`.
 * Each extraction is checked (file count and bytes) before its time counts.
 *
 * Besides wall time, each figure gives the median user and system CPU seconds of the child
 * process (Linux: the cutime/cstime of /proc/self/stat, in clock ticks of 10 ms). They show
 * where the time goes: system time is mostly the host filesystem creating files, the same work
 * for both tools, and it varies with the host (a no-journal ext4 host scans recently deleted
 * inodes on every create, so runs after `rm -rf` of the previous copy pay more).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync, lstatSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { makeTree, WORKLOAD_A, WORKLOAD_A_QUICK } from './workload.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const runsArg = args.indexOf('--runs');
const RUNS = runsArg >= 0 ? Number(args[runsArg + 1]) : quick ? 3 : 5;
const CLI = resolve(import.meta.dirname, '../src/cli/main.js');

interface Figure {
  name: string;
  workload: string;
  seconds: number;
  /** Median CPU seconds of the child in user and kernel mode (absent where unknown). */
  userSeconds?: number;
  sysSeconds?: number;
  anchor?: string;
  ratio?: number;
}
const figures: Figure[] = [];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/**
 * CPU seconds (user, system) used so far by waited-for children of this process, from fields
 * 16 and 17 of /proc/self/stat (after the command name, which may contain spaces), or
 * undefined off Linux. Clock ticks are taken as 100 per second (USER_HZ on every Linux port).
 */
function childCpu(): { user: number; sys: number } | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After ')' field 3 (state) is f[0], so field N is f[N - 3].
    return { user: Number(f[13]) / 100, sys: Number(f[14]) / 100 };
  } catch {
    return undefined;
  }
}

interface Timing { seconds: number; userSeconds?: number; sysSeconds?: number }

/** Runs `fn` RUNS times (after `prep` each time, untimed); medians of wall and child CPU time. */
function timeIt(prep: () => void, fn: () => void, check: () => void): Timing {
  const times: number[] = [];
  const user: number[] = [];
  const sys: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    prep();
    const c0 = childCpu();
    const t0 = performance.now();
    fn();
    const dt = (performance.now() - t0) / 1000;
    const c1 = childCpu();
    check();
    times.push(dt);
    if (c0 !== undefined && c1 !== undefined) {
      user.push(c1.user - c0.user);
      sys.push(c1.sys - c0.sys);
    }
  }
  const cpu = user.length === RUNS ? { userSeconds: median(user), sysSeconds: median(sys) } : {};
  return { seconds: median(times), ...cpu };
}

/** Counts regular files and their bytes under `dir` (symlinks not followed). */
function countTree(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) { files++; bytes += st.size; }
    }
  };
  walk(dir);
  return { files, bytes };
}

function sh(cmd: string, argv: string[]): void {
  const r = spawnSync(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${r.stderr?.toString().slice(0, 500)}`);
}

async function readDirection(work: string): Promise<void> {
  const spec = quick ? WORKLOAD_A_QUICK : WORKLOAD_A;
  const src = join(work, 'tree');
  const bytes = await makeTree(src, spec);
  const img = join(work, 'a.img');
  const sizeMiB = Math.ceil((bytes * 1.6) / (1 << 20)) + 64;
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, img, `${sizeMiB}M`], { stdio: 'pipe' });
  execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' });
  const expect = countTree(src);
  const out = join(work, 'out');
  const prep = (): void => rmSync(out, { recursive: true, force: true });
  const check = (root: string) => (): void => {
    const got = countTree(root);
    if (got.files !== expect.files || got.bytes !== expect.bytes) {
      throw new Error(`extraction incomplete: ${got.files} files/${got.bytes} bytes, expected ${expect.files}/${expect.bytes}`);
    }
  };
  const label = `A (${spec.files} files, ${(bytes / (1 << 20)).toFixed(0)} MiB)`;
  const dbg = timeIt(() => { prep(); sh('mkdir', [out]); }, () => sh('debugfs', ['-R', `rdump / ${out}`, img]), check(out));
  const ours = timeIt(prep, () => sh(process.execPath, [CLI, 'get', '-q', img, '/', out]), check(out));
  figures.push({ name: 'debugfs rdump', workload: label, ...dbg });
  figures.push({ name: 'ext4ts get', workload: label, ...ours, anchor: 'debugfs rdump', ratio: ours.seconds / dbg.seconds });
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'ext4ts-bench-'));
  try {
    await readDirection(work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const cpu = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(2)).padStart(8);
  console.log(`\n${'figure'.padEnd(22)}${'workload'.padEnd(30)}${'median s'.padStart(10)}${'user s'.padStart(8)}${'sys s'.padStart(8)}  ratio`);
  for (const f of figures) {
    console.log(`${f.name.padEnd(22)}${f.workload.padEnd(30)}${f.seconds.toFixed(3).padStart(10)}${cpu(f.userSeconds)}${cpu(f.sysSeconds)}  ${f.ratio !== undefined ? `${f.ratio.toFixed(2)} x ${f.anchor}` : '(anchor)'}`);
  }
  for (const f of figures) console.log(JSON.stringify({ bench: f.name, ...f, runs: RUNS }));
}

await main();
