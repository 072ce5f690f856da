/**
 * The fuzz harness on the main thread: splits the cases over worker threads (by image, so each
 * worker loads only its own pristine images), and watches them.
 *
 * - Time: a case that runs longer than `caseTimeoutMs` is a hang. Its worker is terminated
 *   (an infinite synchronous loop can be stopped no other way), the case is recorded as failed,
 *   and a fresh worker continues with the next case.
 * - Memory, three ways: each worker's JS heap is capped (`resourceLimits`, an overrun ends the
 *   worker with ERR_WORKER_OUT_OF_MEMORY and fails the case); the process RSS is sampled and may
 *   not exceed the level after loading by more than `rssSlackMb` (the cases running at that moment
 *   are re-run one at a time to find the one that does it); and after a forced GC every
 *   `memCheckEvery` cases the live heap and ArrayBuffer bytes may not have grown by more than
 *   `leakLimitMb` since the worker was ready (memory kept across cases).
 * - Crashes, unhandled rejections and uncaught exceptions come from the worker as messages.
 *
 * Every failure carries the seed, the image and the mutation, and the command that replays it.
 */
import { Worker } from 'node:worker_threads';
import type { ImageSource } from './images.js';
import type { Canary } from './exercise.js';
import type { CaseRef, WorkerInput, WorkerMessage } from './protocol.js';

export interface HarnessOptions {
  images: ImageSource[];
  cases: CaseRef[];
  workers: number;
  caseTimeoutMs: number;
  rssSlackMb: number;
  leakLimitMb: number;
  heapLimitMb: number;
  memCheckEvery: number;
  extractChance: number;
  tmpRoot: string;
  verbose?: boolean;
  canary?: { kind: Canary; seeds: number[] };
  /** Progress and replay output. */
  log?: (line: string) => void;
}

export type FailureKind =
  | 'crash' | 'unhandled-rejection' | 'uncaught-exception' | 'timeout' | 'worker-exit' | 'rss' | 'leak' | 'scan';

export interface Failure {
  kind: FailureKind;
  seed: number;
  image: string;
  detail: string;
  stack?: string;
  plan?: string;
}

export interface RunReport {
  failures: Failure[];
  /** RSS suspects that did not exceed the bound when re-run alone. */
  warnings: string[];
  casesRun: number;
  /** Outcome ('ok' or the first error code) → number of cases. */
  results: Map<string, number>;
  /** Error code → number of operations that ended in it, over all cases. */
  codes: Map<string, number>;
  fixedCases: number;
  extractedCases: number;
  slowest: { ms: number; c?: CaseRef };
  oddMessages: string[];
  hostErrors: string[];
  elapsedMs: number;
  peakRssMb: number;
}

const MB = 1 << 20;
const WATCH_MS = 10;

/** The command that replays one case. */
export function replayCommand(c: CaseRef): string {
  return `FUZZ_SEED=${c.seed} FUZZ_IMAGE=${c.image} node scripts/run-tests.mjs fuzz`;
}

/** Formats a failure for the test's assertion message. */
export function formatFailure(f: Failure): string {
  const lines = [`[${f.kind}] image ${f.image} seed ${f.seed}: ${f.detail}`, `  replay: ${replayCommand({ seed: f.seed, image: f.image })}`];
  if (f.plan !== undefined) lines.push(f.plan.split('\n').map((l) => `  | ${l}`).join('\n'));
  if (f.stack !== undefined && f.stack !== '') lines.push(f.stack.split('\n').slice(0, 12).map((l) => `  ! ${l}`).join('\n'));
  return lines.join('\n');
}

/** Runs every case and returns what happened. Never throws for a failing case. */
export async function runCases(opts: HarnessOptions): Promise<RunReport> {
  const t0 = performance.now();
  const rep: RunReport = {
    failures: [], warnings: [], casesRun: 0, results: new Map(), codes: new Map(), fixedCases: 0, extractedCases: 0,
    slowest: { ms: 0 }, oddMessages: [], hostErrors: [], elapsedMs: 0, peakRssMb: 0,
  };
  const suspects = await runParallel(opts, rep);
  for (const s of suspects) {
    // Re-run alone: only then is the RSS growth this case's own.
    const solo: RunReport = { ...rep, failures: [], warnings: [] };
    const again = await runParallel({ ...opts, cases: [s], workers: 1 }, solo);
    const confirmed = again.length > 0 || solo.failures.length > 0;
    if (again.length > 0) {
      rep.failures.push({ kind: 'rss', seed: s.seed, image: s.image, detail: `process RSS grew by more than ${opts.rssSlackMb} MiB while this case ran alone` });
    }
    rep.failures.push(...solo.failures);
    if (!confirmed) rep.warnings.push(`RSS bound exceeded while seed ${s.seed} (${s.image}) ran next to another case; not reproduced alone`);
  }
  rep.elapsedMs = performance.now() - t0;
  return rep;
}

interface Lane {
  /** Cases of this lane not yet started, in order. */
  todo: CaseRef[];
  worker: Worker | undefined;
  current: { c: CaseRef; since: number } | undefined;
  ready: boolean;
  base?: { heapUsed: number; arrayBuffers: number };
  lastMemSeed: number;
  done: boolean;
}

/**
 * Runs the cases on `opts.workers` lanes (images dealt round-robin to lanes). Returns the cases
 * that were running when the RSS bound was exceeded (to be confirmed one by one).
 */
function runParallel(opts: HarnessOptions, rep: RunReport): Promise<CaseRef[]> {
  const names = [...new Set(opts.cases.map((c) => c.image))].sort();
  const nLanes = Math.max(1, Math.min(opts.workers, names.length));
  const laneOf = new Map(names.map((n, i) => [n, i % nLanes]));
  const lanes: Lane[] = Array.from({ length: nLanes }, () => ({ todo: [], worker: undefined, current: undefined, ready: false, lastMemSeed: 0, done: false }));
  for (const c of opts.cases) lanes[laneOf.get(c.image) ?? 0]?.todo.push(c);
  const suspects: CaseRef[] = [];
  let rssBase = 0;
  const log = opts.log ?? (() => undefined);

  return new Promise((resolve) => {
    const finishIfDone = (): void => {
      if (lanes.every((l) => l.done)) {
        clearInterval(timer);
        resolve(suspects);
      }
    };
    const fail = (lane: Lane, kind: FailureKind, detail: string, extra: Partial<Failure> = {}): void => {
      const c = lane.current?.c ?? { seed: 0, image: '?' };
      rep.failures.push({ kind, seed: c.seed, image: c.image, detail, ...extra });
    };
    /** Stops a lane's worker; the lane continues after its current case with a fresh worker. */
    const restart = (lane: Lane): void => {
      const w = lane.worker;
      lane.worker = undefined;
      lane.current = undefined;
      lane.ready = false;
      if (w !== undefined) {
        w.removeAllListeners();
        w.on('error', () => undefined);
        void w.terminate();
      }
      spawn(lane);
    };
    const spawn = (lane: Lane): void => {
      if (lane.todo.length === 0) {
        lane.done = true;
        finishIfDone();
        return;
      }
      const input: WorkerInput = {
        images: opts.images, cases: lane.todo.slice(), extractChance: opts.extractChance, tmpRoot: opts.tmpRoot,
        memCheckEvery: opts.memCheckEvery, verbose: opts.verbose ?? false, ...(opts.canary ? { canary: opts.canary } : {}),
      };
      const w = new Worker(new URL('./worker.js', import.meta.url), {
        workerData: input, resourceLimits: { maxOldGenerationSizeMb: opts.heapLimitMb }, stdout: false, stderr: false,
      });
      lane.worker = w;
      lane.lastMemSeed = 0;
      w.on('message', (m: WorkerMessage) => onMessage(lane, m));
      w.on('error', (e: Error) => {
        fail(lane, 'worker-exit', `worker died: ${e.name}${(e as { code?: string }).code ? ` [${(e as { code?: string }).code}]` : ''}: ${e.message}`, { stack: e.stack ?? '' });
        restart(lane);
      });
      w.on('exit', (code) => {
        if (lane.worker !== w) return;
        if (!lane.done) {
          fail(lane, 'worker-exit', `worker exited with code ${code} before finishing`);
          restart(lane);
        }
      });
    };
    const onMessage = (lane: Lane, m: WorkerMessage): void => {
      switch (m.t) {
        case 'ready':
          lane.ready = true;
          lane.base = { heapUsed: m.mem.heapUsed, arrayBuffers: m.mem.arrayBuffers };
          rssBase = Math.max(rssBase, process.memoryUsage.rss());
          for (const s of m.scanned) log(`fuzz: scanned ${s.image}: ${s.regions} structures in ${s.ms} ms`);
          return;
        case 'scanFail':
          rep.failures.push({ kind: 'scan', seed: 0, image: m.image, detail: `the pristine image cannot be walked: ${m.error.summary}`, stack: m.error.stack });
          lane.todo = lane.todo.filter((c) => c.image !== m.image);
          return;
        case 'start':
          lane.current = { c: m.c, since: performance.now() };
          lane.todo.shift();
          return;
        case 'done':
          rep.casesRun++;
          rep.results.set(m.result, (rep.results.get(m.result) ?? 0) + 1);
          for (const [k, v] of Object.entries(m.codes)) rep.codes.set(k, (rep.codes.get(k) ?? 0) + v);
          if (m.fixed) rep.fixedCases++;
          if (m.extracted) rep.extractedCases++;
          if (m.ms > rep.slowest.ms) rep.slowest = { ms: m.ms, c: m.c };
          for (const o of m.odd) if (rep.oddMessages.length < 20) rep.oddMessages.push(`seed ${m.c.seed} (${m.c.image}): ${o}`);
          for (const h of m.host) if (rep.hostErrors.length < 20) rep.hostErrors.push(`seed ${m.c.seed} (${m.c.image}): ${h}`);
          if (m.plan !== undefined) log(`${m.plan}\n  => ${m.result} after ${m.ops} operations in ${m.ms.toFixed(1)} ms ${JSON.stringify(m.codes)}`);
          lane.current = undefined;
          return;
        case 'fail':
          rep.failures.push({
            kind: m.kind, seed: m.c.seed, image: m.c.image, plan: m.plan, stack: m.error.stack,
            detail: `${m.error.op !== undefined ? `${m.error.op}(${JSON.stringify(m.error.path)}) threw ` : ''}${m.error.summary}`,
          });
          return;
        case 'mem': {
          const base = lane.base;
          if (base === undefined) return;
          const heap = m.mem.heapUsed - base.heapUsed;
          const bufs = m.mem.arrayBuffers - base.arrayBuffers;
          if (heap > opts.leakLimitMb * MB || bufs > opts.leakLimitMb * MB) {
            rep.failures.push({
              kind: 'leak', seed: m.afterSeed, image: lane.current?.c.image ?? '?',
              detail: `after GC, heap grew by ${(heap / MB).toFixed(1)} MiB and ArrayBuffers by ${(bufs / MB).toFixed(1)} MiB ` +
                `(limit ${opts.leakLimitMb} MiB) over the cases after seed ${lane.lastMemSeed} up to seed ${m.afterSeed}`,
            });
            // Re-base so that one leak is reported once, not at every later check.
            lane.base = { heapUsed: m.mem.heapUsed, arrayBuffers: m.mem.arrayBuffers };
          }
          lane.lastMemSeed = m.afterSeed;
          return;
        }
        case 'end':
          lane.done = true;
          lane.current = undefined;
          lane.worker?.removeAllListeners();
          void lane.worker?.terminate();
          lane.worker = undefined;
          finishIfDone();
          return;
      }
    };
    const timer = setInterval(() => {
      const now = performance.now();
      const rss = process.memoryUsage.rss();
      rep.peakRssMb = Math.max(rep.peakRssMb, rss / MB);
      for (const lane of lanes) {
        if (lane.current !== undefined && now - lane.current.since > opts.caseTimeoutMs) {
          fail(lane, 'timeout', `case did not finish within ${opts.caseTimeoutMs} ms (worker terminated)`);
          restart(lane);
        }
      }
      const allReady = lanes.every((l) => l.ready || l.done);
      if (allReady && rssBase > 0 && rss > rssBase + opts.rssSlackMb * MB) {
        const running = lanes.filter((l) => l.current !== undefined);
        log(`fuzz: RSS ${(rss / MB).toFixed(0)} MiB exceeds ${(rssBase / MB).toFixed(0)} + ${opts.rssSlackMb} MiB; suspects: ${running.map((l) => l.current?.c.seed).join(', ')}`);
        for (const l of running) if (l.current !== undefined) suspects.push(l.current.c);
        for (const l of lanes) if (!l.done) restart(l);
        rssBase = 0;
      }
    }, WATCH_MS);
    for (const lane of lanes) spawn(lane);
  });
}
