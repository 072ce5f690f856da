/**
 * Figures and their statistics: medians, CPU accounting of child processes and of this process,
 * a memory sampler, round-robin timing of several contenders, and the printed table plus one JSON
 * line per figure. Nothing here asserts a time.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** One row of the table (and one JSON line). */
export interface Figure {
  /** build | write | dio | read. */
  section: string;
  name: string;
  workload: string;
  /** ok, or why there is no number: "n/a (…)", "skipped (…)", "FAILED: …". */
  status: string;
  /** The median figure, in `unit`. */
  value?: number;
  unit: 's' | 'MiB/s' | 'IOPS';
  /** Timed runs the median is taken over. */
  runs: number;
  /** Median wall seconds (equal to value when unit is s). */
  seconds?: number;
  /** Median CPU seconds in user and kernel mode (children plus this process). */
  userSeconds?: number;
  sysSeconds?: number;
  /** Peak resident set of the measured process, MiB (median over runs). */
  peakRssMiB?: number;
  /** Ratios to anchors measured in the same run, e.g. "ours ÷ mke2fs -d". */
  ratios?: { label: string; value: number }[];
  /** Extra facts printed under the row (counters, extent counts, how it was run). */
  notes?: string[];
  /** Machine-readable extras for the JSON line. */
  extra?: Record<string, unknown>;
}

export const figures: Figure[] = [];

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  // Even counts average the middle pair, so two runs give their mean rather than the larger one.
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
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

/** CPU seconds of waited-for children plus this process, for deltas around a timed run. */
export function cpuNow(): { user: number; sys: number } | undefined {
  const c = childCpu();
  if (c === undefined) return undefined;
  const self = process.cpuUsage();
  return { user: c.user + self.user / 1e6, sys: c.sys + self.system / 1e6 };
}

/** One timed run's measurements. */
export interface Sample {
  seconds: number;
  userSeconds?: number;
  sysSeconds?: number;
  peakRssMiB?: number;
}

/**
 * What a timed function may return: nothing, a peak RSS in MiB it measured, or both that and the
 * seconds of the measured part (a child that times itself, leaving out its start-up).
 */
export type RunResult = void | undefined | number | { seconds?: number; peakRssMiB?: number };

/** Times `fn` (wall and CPU). */
export async function timeOnce(fn: () => Promise<RunResult> | RunResult): Promise<Sample> {
  const c0 = cpuNow();
  const t0 = performance.now();
  const r = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const c1 = cpuNow();
  const out: Sample = { seconds };
  if (c0 !== undefined && c1 !== undefined) {
    out.userSeconds = c1.user - c0.user;
    out.sysSeconds = c1.sys - c0.sys;
  }
  if (typeof r === 'number') out.peakRssMiB = r;
  else if (typeof r === 'object') {
    if (r.seconds !== undefined) out.seconds = r.seconds;
    if (r.peakRssMiB !== undefined) out.peakRssMiB = r.peakRssMiB;
  }
  return out;
}

/** Medians of a list of samples (CPU and RSS only where every sample has them). */
export function summarize(samples: readonly Sample[]): Omit<Sample, 'seconds'> & { seconds: number } {
  const pick = (k: keyof Sample): number | undefined =>
    samples.length > 0 && samples.every((s) => s[k] !== undefined) ? median(samples.map((s) => s[k]!)) : undefined;
  const out: Sample = { seconds: median(samples.map((s) => s.seconds)) };
  const u = pick('userSeconds');
  const sy = pick('sysSeconds');
  const r = pick('peakRssMiB');
  if (u !== undefined) out.userSeconds = u;
  if (sy !== undefined) out.sysSeconds = sy;
  if (r !== undefined) out.peakRssMiB = r;
  return out;
}

/** Thrown by a contender that cannot run in this build or on this machine (row shows n/a). */
export class NotAvailable extends Error {}

/**
 * One contender of a round-robin comparison. `run` is timed; `prep` (before), `check` (after:
 * throws to mark the row FAILED) and `cleanup` (always, e.g. delete the output) are not.
 */
export interface Contender {
  name: string;
  /** Runs for this contender (default: all rounds), e.g. 1 for a slow tool. */
  maxRuns?: number;
  /** Why the contender is not run at all (row shows this status). */
  skip?: string;
  prep?: () => Promise<void> | void;
  run: () => Promise<RunResult> | RunResult;
  check?: () => Promise<void> | void;
  cleanup?: () => Promise<void> | void;
}

export interface Outcome {
  name: string;
  status: string;
  samples: Sample[];
}

/**
 * Runs the contenders `rounds` times, alternating them run by run (the starting contender rotates
 * each round) so a drift in the host (page cache, other load) spreads over all of them rather than
 * landing on one. A contender that fails or is not available stops being run.
 */
/**
 * Untimed, before every timed run: writes out whatever the previous step left dirty in the
 * host's page cache (a generated workload, the last contender's image, a deleted file), so no
 * run pays for another's writeback. Without it the first runs after generating 1 GiB of
 * workload B took up to 1.5x their later times, raw writes included.
 */
function settle(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

export async function roundRobin(contenders: readonly Contender[], rounds: number, log: (s: string) => void): Promise<Outcome[]> {
  const out = contenders.map((c): Outcome => ({ name: c.name, status: c.skip ?? 'ok', samples: [] }));
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < contenders.length; k++) {
      const i = (k + r) % contenders.length;
      const c = contenders[i]!;
      const o = out[i]!;
      if (o.status !== 'ok' || o.samples.length >= (c.maxRuns ?? rounds)) continue;
      // A macrotask turn: most steps are synchronous (spawnSync), and without this the event
      // loop would never run the Ctrl-C handler until the section ends.
      await new Promise((r) => setImmediate(r));
      try {
        await c.prep?.();
        settle();
        const s = await timeOnce(c.run);
        await c.check?.();
        o.samples.push(s);
        log(`  ${c.name}: run ${o.samples.length}: ${s.seconds.toFixed(3)} s`);
      } catch (e) {
        o.status = e instanceof NotAvailable ? `n/a (${e.message})` : `FAILED: ${firstLine(e)}`;
        log(`  ${c.name}: ${o.status}`);
      } finally {
        try {
          await c.cleanup?.();
        } catch (e) {
          log(`  ${c.name}: cleanup failed: ${firstLine(e)}`);
        }
      }
    }
  }
  return out;
}

export function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n').find((l) => l.trim() !== '')?.slice(0, 300) ?? msg.slice(0, 300);
}

/**
 * Samples this process's memory every `periodMs` (rss and arrayBuffers, the latter being where
 * page-cache pages of Uint8Arrays live). The kernel's high-water mark (resourceUsage().maxRSS)
 * catches peaks between samples.
 */
export class MemSampler {
  peakRssBytes = 0;
  peakArrayBuffersBytes = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(periodMs = 50) {
    this.sample();
    this.timer = setInterval(() => this.sample(), periodMs);
  }
  sample(): void {
    const m = process.memoryUsage();
    this.peakRssBytes = Math.max(this.peakRssBytes, m.rss);
    this.peakArrayBuffersBytes = Math.max(this.peakArrayBuffersBytes, m.arrayBuffers);
  }
  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}

const MiB = 1 << 20;
export const mib = (bytes: number): number => bytes / MiB;

function fmtValue(f: Figure): string {
  if (f.value === undefined) return f.status;
  const v = f.unit === 's' ? f.value.toFixed(3) : f.value.toFixed(f.value >= 100 ? 0 : 1);
  return `${v} ${f.unit}`;
}

const NAME_W = 48;
const WL_W = 38;

/** Prints the table (one row per figure, notes indented under it) and then the JSON lines. */
export function printTable(runsNote: string): void {
  const cpu = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(2)).padStart(8);
  const head = `${'section'.padEnd(8)}${'figure'.padEnd(NAME_W)}${'workload'.padEnd(WL_W)}${'median'.padStart(14)}${'user s'.padStart(8)}${'sys s'.padStart(8)}${'RSS MiB'.padStart(9)}  ratio`;
  console.log(`\n${head}\n${'-'.repeat(head.length + 20)}`);
  let section = '';
  for (const f of figures) {
    if (f.section !== section && section !== '') console.log('');
    section = f.section;
    const value = fmtValue(f);
    const ratio = (f.ratios ?? []).map((r) => `${r.value.toFixed(2)} ${r.label}`).join('; ');
    const runs = f.value !== undefined && f.runs === 1 ? ' [1 run]' : '';
    const rss = f.peakRssMiB === undefined ? '-' : f.peakRssMiB.toFixed(0);
    if (f.value === undefined) {
      console.log(`${f.section.padEnd(8)}${f.name.padEnd(NAME_W)}${f.workload.padEnd(WL_W)}  ${value}`);
    } else {
      console.log(`${f.section.padEnd(8)}${(f.name + runs).padEnd(NAME_W)}${f.workload.padEnd(WL_W)}${value.padStart(14)}${cpu(f.userSeconds)}${cpu(f.sysSeconds)}${rss.padStart(9)}  ${ratio}`);
    }
    for (const n of f.notes ?? []) console.log(`${''.padEnd(10)}${n}`);
  }
  console.log(`\n${runsNote}`);
  for (const f of figures) {
    const { notes: _notes, extra, ...rest } = f;
    console.log(JSON.stringify({ bench: `${f.section}/${f.name}`, ...rest, ...(extra ?? {}) }));
  }
}
