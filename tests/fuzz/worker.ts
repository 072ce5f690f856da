/**
 * The fuzz worker thread: loads and scans its pristine images, then for each case plans the
 * mutation, applies it in place, runs the exercise, undoes the mutation and reports. The main
 * thread times every case (between 'start' and 'done') and terminates this thread when one
 * runs too long. Unhandled rejections and uncaught exceptions are reported against the case that
 * was running (each case ends with a macrotask turn, so its stray rejections surface before the
 * next case starts).
 */
import { parentPort, workerData, threadId } from 'node:worker_threads';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { loadImage } from './images.js';
import { scanImage, type ImageMeta } from './scan.js';
import { planCase, applyInPlace, describePlan } from './mutate.js';
import { exercise, Crash, describeError } from './exercise.js';
import type { CaseRef, ErrorReport, MemFigures, WorkerInput, WorkerMessage } from './protocol.js';

// A gc() without --expose-gc on the command line: the flag takes effect for new contexts.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const port = parentPort;
if (port === null) throw new Error('worker.ts must run in a worker thread');
const input = workerData as WorkerInput;
const post = (m: WorkerMessage): void => port.postMessage(m);

let current: { c: CaseRef; plan: string } | undefined;

process.on('unhandledRejection', (reason) => {
  if (current !== undefined) post({ t: 'fail', c: current.c, kind: 'unhandled-rejection', error: report(reason), plan: current.plan });
});
process.on('uncaughtException', (err) => {
  if (current !== undefined) post({ t: 'fail', c: current.c, kind: 'uncaught-exception', error: report(err), plan: current.plan });
});

function memFigures(): MemFigures {
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, external: m.external };
}

/** Flattens a thrown value; for a Crash, the stack of the error it wraps. */
function report(e: unknown): ErrorReport {
  if (e instanceof Crash) {
    const inner = e.cause instanceof Error ? e.cause.stack ?? '' : String(e.cause);
    return { summary: describeError(e.cause), stack: inner, op: e.op, path: e.path };
  }
  return { summary: describeError(e), stack: e instanceof Error ? e.stack ?? '' : String(e) };
}

async function main(): Promise<void> {
  const wanted = new Set(input.cases.map((c) => c.image));
  const images = new Map<string, { bytes: Uint8Array; meta: ImageMeta }>();
  const scanned: { image: string; regions: number; ms: number }[] = [];
  for (const src of input.images.filter((s) => wanted.has(s.name))) {
    const t0 = performance.now();
    try {
      const bytes = loadImage(src);
      const meta = await scanImage(src.name, bytes);
      images.set(src.name, { bytes, meta });
      scanned.push({ image: src.name, regions: meta.regions.length, ms: Math.round(performance.now() - t0) });
    } catch (e) {
      post({ t: 'scanFail', image: src.name, error: report(e) });
    }
  }
  const into = join(input.tmpRoot, `w${threadId}`);
  mkdirSync(into, { recursive: true });
  gc();
  post({ t: 'ready', mem: memFigures(), scanned });
  let n = 0;
  for (const c of input.cases) {
    const img = images.get(c.image);
    if (img === undefined) continue;
    await runCase(c, img.bytes, img.meta, into);
    if (++n % input.memCheckEvery === 0) {
      gc();
      post({ t: 'mem', afterSeed: c.seed, mem: memFigures() });
    }
  }
  post({ t: 'end' });
}

async function runCase(c: CaseRef, pristine: Uint8Array, meta: ImageMeta, into: string): Promise<void> {
  post({ t: 'start', c });
  const t0 = performance.now();
  const plan = planCase(meta, pristine, c.seed, { extractChance: input.extractChance });
  const applied = applyInPlace(pristine, meta, plan);
  const text = describePlan(plan, applied.fixups);
  current = { c, plan: text };
  try {
    const canary = input.canary !== undefined && input.canary.seeds.includes(c.seed) ? input.canary.kind : undefined;
    const out = await exercise(applied.bytes, {
      noRecovery: plan.noRecovery, strictExtract: plan.strictExtract, sampleSeed: c.seed,
      ...(plan.extract ? { extractInto: into } : {}), ...(canary !== undefined ? { canary } : {}),
    });
    // One macrotask turn so that rejections nobody awaited are reported against this case.
    await tick();
    post({
      t: 'done', c, ms: performance.now() - t0, result: out.result, codes: out.codes, ops: out.ops,
      fixed: plan.fixCsums, extracted: plan.extract, odd: out.oddMessages, host: out.hostErrors,
      ...(input.verbose ? { plan: text } : {}),
    });
  } catch (e) {
    post({ t: 'fail', c, kind: 'crash', error: report(e), plan: text });
  } finally {
    applied.undo();
    current = undefined;
  }
}

main().catch((e: unknown) => {
  post({ t: 'scanFail', image: '(worker)', error: report(e) });
  post({ t: 'end' });
});
