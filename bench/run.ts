/**
 * `npm run bench [-- --quick] [-- --runs N]`: side-by-side figures, each the median of several
 * runs, with ext4ts's figures also given as a ratio to the anchor measured in the same run.
 * Not a test: nothing here asserts a time. Prints a table and one JSON line per figure.
 *
 * Read direction (issue 2): extract workload A from an image made by `mke2fs -d`, with
 * `ext4ts get` (the CLI, a fresh process like its rival) and with `debugfs -R "rdump / DIR"`.
 * Each extraction is checked (file count and bytes) before its time counts.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { makeTree, WORKLOAD_A, WORKLOAD_A_QUICK } from './workload.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const runsArg = args.indexOf('--runs');
const RUNS = runsArg >= 0 ? Number(args[runsArg + 1]) : quick ? 3 : 5;
const CLI = resolve(import.meta.dirname, '../src/cli/main.js');

interface Figure { name: string; workload: string; seconds: number; anchor?: string; ratio?: number }
const figures: Figure[] = [];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** Runs `fn` RUNS times (after `prep` each time, untimed) and returns the median seconds. */
function timeIt(prep: () => void, fn: () => void, check: () => void): number {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    prep();
    const t0 = performance.now();
    fn();
    const dt = (performance.now() - t0) / 1000;
    check();
    times.push(dt);
  }
  return median(times);
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
  figures.push({ name: 'debugfs rdump', workload: label, seconds: dbg });
  figures.push({ name: 'ext4ts get', workload: label, seconds: ours, anchor: 'debugfs rdump', ratio: ours / dbg });
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'ext4ts-bench-'));
  try {
    await readDirection(work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  console.log(`\n${'figure'.padEnd(22)}${'workload'.padEnd(30)}${'median s'.padStart(10)}  ratio`);
  for (const f of figures) {
    console.log(`${f.name.padEnd(22)}${f.workload.padEnd(30)}${f.seconds.toFixed(3).padStart(10)}  ${f.ratio !== undefined ? `${f.ratio.toFixed(2)} x ${f.anchor}` : '(anchor)'}`);
  }
  for (const f of figures) console.log(JSON.stringify({ bench: f.name, ...f, runs: RUNS }));
}

await main();
