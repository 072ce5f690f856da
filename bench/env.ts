/**
 * The bench's environment: options, machine facts, the scratch directory (chosen by free space),
 * child-process helpers, kernel loop mounts where root and loop devices allow, and one cleanup
 * registry run on every exit path (normal end, failure, Ctrl-C), so no mount, loop device or
 * scratch file outlives the run.
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, statfsSync, existsSync } from 'node:fs';
import { availableParallelism, cpus, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';

export type Section = 'build' | 'write' | 'dio' | 'read';
export const SECTIONS: readonly Section[] = ['build', 'write', 'dio', 'read'];

export interface Options {
  quick: boolean;
  /** Timed runs per figure (median taken). */
  runs: number;
  only: Section | undefined;
  ext2fs: boolean;
}

/** A bad command line: printed without a stack, exit status 2. */
export class UsageError extends Error {}

export const USAGE = 'usage: npm run bench -- [--quick] [--runs N] [--only build|write|dio|read] [--no-ext2fs]';

export function parseOptions(rawArgv: readonly string[]): Options {
  // Accept both "--only build" and "--only=build".
  const argv = rawArgv.flatMap((a) => (/^--(only|runs)=/.test(a) ? a.split(/=(.*)/s, 2) : [a]));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only' || a === '--runs') i++;
    else if (a !== '--quick' && a !== '--no-ext2fs') throw new UsageError(`unknown argument ${a}\n${USAGE}`);
  }
  const quick = argv.includes('--quick');
  const runsAt = argv.indexOf('--runs');
  const runs = runsAt >= 0 ? Number(argv[runsAt + 1]) : quick ? 3 : 5;
  if (!Number.isInteger(runs) || runs < 1) throw new UsageError(`--runs needs a positive integer, got ${argv[runsAt + 1]}`);
  const onlyAt = argv.indexOf('--only');
  const only = onlyAt >= 0 ? argv[onlyAt + 1] : undefined;
  if (only !== undefined && !SECTIONS.includes(only as Section)) {
    throw new UsageError(`--only takes one of ${SECTIONS.join('|')}, got ${only}`);
  }
  return { quick, runs, only: only as Section | undefined, ext2fs: !argv.includes('--no-ext2fs') };
}

/** The repository root (bench compiles to dist/bench). */
export const ROOT = resolve(import.meta.dirname, '../..');
export const CLI = join(ROOT, 'dist/src/cli/main.js');
/** A compiled helper script of the bench (children run these). */
export const benchScript = (name: string): string => join(import.meta.dirname, name);

export interface ShResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and returns its exit status and output (never throws on a non-zero exit). */
export function run(cmd: string, argv: readonly string[], opts: SpawnSyncOptions = {}): ShResult {
  const r = spawnSync(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30, ...opts });
  if (r.error !== undefined) return { status: 127, stdout: '', stderr: r.error.message };
  return { status: r.status ?? 128, stdout: r.stdout?.toString() ?? '', stderr: r.stderr?.toString() ?? '' };
}

/** Runs a command; throws with its stderr on a non-zero exit. */
export function sh(cmd: string, argv: readonly string[], opts: SpawnSyncOptions = {}): string {
  const r = run(cmd, argv, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} exited ${r.status}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  return r.stdout;
}

export function have(cmd: string): boolean {
  return run('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

// ---- cleanup --------------------------------------------------------------------------------

const mounts = new Set<string>();
const scratch = new Set<string>();
const loopImages = new Set<string>();
/** The fallback scratch base, if this run created it. */
let madeBase: string | undefined;

/**
 * Undoes everything the bench set up, synchronously (it also runs from signal handlers):
 * unmounts (lazily if busy), detaches loop devices still bound to our images, removes scratch.
 */
export function cleanupAll(): void {
  for (const m of [...mounts]) unmount(m);
  for (const img of loopImages) {
    const r = run('losetup', ['-j', img]);
    for (const line of r.stdout.split('\n')) {
      const dev = line.split(':')[0];
      if (dev !== undefined && dev.startsWith('/dev/loop')) run('losetup', ['-d', dev]);
    }
  }
  loopImages.clear();
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
  scratch.clear();
  // The fallback base in the repository goes too once empty (git would not track it anyway).
  if (madeBase !== undefined) {
    try {
      rmdirSync(madeBase);
    } catch {
      // not empty: another bench run is using it
    }
    madeBase = undefined;
  }
}

let installed = false;
/** Installs the exit paths once: Ctrl-C and SIGTERM clean up and exit 130/143. */
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  const onSignal = (sig: NodeJS.Signals, code: number) => (): void => {
    process.stderr.write(`\nbench: ${sig}, cleaning up\n`);
    cleanupAll();
    process.exit(code);
  };
  process.once('SIGINT', onSignal('SIGINT', 130));
  process.once('SIGTERM', onSignal('SIGTERM', 143));
  process.once('exit', () => cleanupAll());
}

// ---- scratch directory ----------------------------------------------------------------------

export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * A fresh scratch directory in the OS temp dir if it has `needBytes` free, else under
 * /work/main/.bench-tmp (the repository's disk; /tmp may be a small tmpfs). Removed at exit.
 */
export function makeScratch(needBytes: number): string {
  let base = tmpdir();
  if (freeBytes(base) < needBytes) {
    base = join(ROOT, '.bench-tmp');
    if (!existsSync(base)) {
      mkdirSync(base, { recursive: true });
      madeBase = base;
    }
  }
  const dir = mkdtempSync(join(base, 'ext4ts-bench-'));
  scratch.add(dir);
  return dir;
}

// ---- kernel loop mounts ---------------------------------------------------------------------

let loopOk: boolean | undefined;
/** Whether this process may loop-mount images: root, and `losetup -f` finds a free device. */
export function loopAvailable(): boolean {
  loopOk ??= process.getuid?.() === 0 && have('losetup') && run('losetup', ['-f']).status === 0;
  return loopOk;
}

/** Loop-mounts `img` on `mnt` (created), with extra mount options such as "ro". */
export function mountLoop(img: string, mnt: string, options = ''): void {
  mkdirSync(mnt, { recursive: true });
  loopImages.add(img);
  sh('mount', ['-o', options === '' ? 'loop' : `loop,${options}`, img, mnt]);
  mounts.add(mnt);
}

/** Unmounts `mnt` (the loop device, set up by mount with autoclear, goes with it). */
export function unmount(mnt: string): void {
  if (!mounts.has(mnt)) return;
  if (run('umount', [mnt]).status !== 0) run('umount', ['-l', mnt]);
  mounts.delete(mnt);
}

// ---- tools ----------------------------------------------------------------------------------

/** fio, installed from Debian if missing and we are root; undefined (with why) if not possible. */
export function ensureFio(): { ok: true } | { ok: false; why: string } {
  if (have('fio')) return { ok: true };
  if (process.getuid?.() !== 0 || !have('apt-get')) return { ok: false, why: 'fio not installed' };
  process.stderr.write('bench: installing fio (apt-get install -y fio)\n');
  let r = run('apt-get', ['install', '-y', '-q', 'fio'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.status !== 0) {
    run('apt-get', ['update', '-q']);
    r = run('apt-get', ['install', '-y', '-q', 'fio'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
  return have('fio') ? { ok: true } : { ok: false, why: `apt-get install fio failed: ${r.stderr.trim().slice(0, 200)}` };
}

// ---- machine facts --------------------------------------------------------------------------

/** The facts printed at the top: CPU, cores, memory, Node, kernel, e2fsprogs, host fs of scratch. */
export function machineFacts(scratchDir: string): Record<string, string | number | boolean> {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1] !== undefined) cpu = m[1];
  } catch {
    // not Linux: os.cpus() already gave a model
  }
  const e2 = run('mke2fs', ['-V']);
  const e2fsprogs = /mke2fs\s+(\S+)/.exec(e2.stderr + e2.stdout)?.[1] ?? 'not found';
  const fm = run('findmnt', ['-n', '-T', scratchDir, '-o', 'FSTYPE,SOURCE,OPTIONS']);
  const hostFs = fm.status === 0 ? fm.stdout.trim().replace(/\s+/g, ' ') : 'unknown';
  return {
    cpu,
    cores: availableParallelism(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    kernel: release(),
    e2fsprogs,
    scratch: scratchDir,
    scratchFs: hostFs,
    scratchFreeGiB: Math.round(freeBytes(scratchDir) / 2 ** 30),
    root: process.getuid?.() === 0,
    loopMounts: loopAvailable(),
    timeCmd: existsSync('/usr/bin/time'),
  };
}
