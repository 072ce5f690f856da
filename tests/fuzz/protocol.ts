/**
 * Messages between the fuzz harness (main thread, the watchdog) and its worker threads (which
 * run the cases). Cases run in workers because an infinite synchronous loop would block the
 * timers of the thread it runs on: only another thread can notice and terminate it.
 */
import type { ImageSource } from './images.js';
import type { Canary } from './exercise.js';

/** One case: a seed applied to one pristine image. */
export interface CaseRef {
  seed: number;
  image: string;
}

/** What a worker is given. */
export interface WorkerInput {
  images: ImageSource[];
  cases: CaseRef[];
  /** Probability that a case also extracts to the host. */
  extractChance: number;
  /** A directory the worker may create its extraction directories in. */
  tmpRoot: string;
  /** Post heap figures after a forced GC every this many cases. */
  memCheckEvery: number;
  /** Report the plan and outcome of every case (replay mode). */
  verbose: boolean;
  /** Planted failure (canary test only), applied to the seeds listed. */
  canary?: { kind: Canary; seeds: number[] };
}

export interface MemFigures {
  heapUsed: number;
  arrayBuffers: number;
  external: number;
}

/** A thrown value, flattened for postMessage. */
export interface ErrorReport {
  summary: string;
  stack: string;
  op?: string;
  path?: string;
}

export type WorkerMessage =
  | { t: 'ready'; mem: MemFigures; scanned: { image: string; regions: number; ms: number }[] }
  | { t: 'scanFail'; image: string; error: ErrorReport }
  | { t: 'start'; c: CaseRef }
  | { t: 'done'; c: CaseRef; ms: number; result: string; codes: Record<string, number>; ops: number; fixed: boolean; extracted: boolean; odd: string[]; host: string[]; plan?: string }
  | { t: 'fail'; c: CaseRef; kind: 'crash' | 'unhandled-rejection' | 'uncaught-exception'; error: ErrorReport; plan: string }
  | { t: 'mem'; afterSeed: number; mem: MemFigures }
  | { t: 'end' };
