/**
 * The read-path fuzzer (STYLE.md §13 "per-module fuzzers ... that include a canary"): seeded
 * mutations of every pristine image (the golden fixtures that exist plus images built here
 * with mkfs + debugfs) must each end in success or an Ext4Error, within a time bound per case
 * and bounded memory. See harness.ts for how hangs, crashes and memory are caught, mutate.ts for
 * what a case does to an image and exercise.ts for what is then done with it.
 *
 * Environment:
 *   FUZZ_CASES=<n>        number of cases (default 3000), seeds 1..n
 *   FUZZ_SEED=<n>         replay one case (with FUZZ_IMAGE=<name>, else the image seed n maps to)
 *   FUZZ_WORKERS=<n>      worker threads (default: 2, at most the CPUs)
 *   FUZZ_TIMEOUT_MS=<n>   per-case time bound (default 2000)
 *   FUZZ_EXTRACT=<p>      probability that a case also extracts to the host (default 0.1)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImages, canBuildImages, fixtureSources, type ImageSource } from './images.js';
import { runCases, formatFailure, type HarnessOptions, type RunReport, type FailureKind } from './harness.js';
import { forceRemove, type Canary } from './exercise.js';
import type { CaseRef } from './protocol.js';

const env = process.env;
const CASES = intEnv('FUZZ_CASES', 3000);
const REPLAY_SEED = env['FUZZ_SEED'] !== undefined ? intEnv('FUZZ_SEED', 1) : undefined;
const WORKERS = intEnv('FUZZ_WORKERS', Math.max(1, Math.min(2, availableParallelism())));
const TIMEOUT_MS = intEnv('FUZZ_TIMEOUT_MS', 2000);
const EXTRACT = Number(env['FUZZ_EXTRACT'] ?? '0.1');

function intEnv(name: string, dflt: number): number {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v} is not a non-negative integer`);
  return n;
}

let tmpRoot = '';
let images: ImageSource[] = [];
let buildNote = '';

before(async () => {
  tmpRoot = mkdtempSync(join(tmpdir(), 'ext4ts-fuzz-'));
  const built = canBuildImages() ? buildImages(tmpRoot) : [];
  if (built.length === 0) buildNote = 'e2fsprogs not available: only fixture images are fuzzed';
  images = [...(await fixtureSources()), ...built].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
});

after(() => {
  if (tmpRoot !== '') forceRemove(tmpRoot);
});

/** The image seed `seed` runs on: images are dealt to seeds round-robin. */
function imageForSeed(seed: number): string {
  // OK to assert: the caller checked that images is non-empty.
  return (images[(seed - 1) % images.length] as ImageSource).name;
}

function baseOptions(cases: CaseRef[]): HarnessOptions {
  return {
    images, cases, workers: WORKERS, caseTimeoutMs: TIMEOUT_MS, rssSlackMb: 768, leakLimitMb: 64, heapLimitMb: 1024,
    memCheckEvery: 100, extractChance: EXTRACT, tmpRoot,
  };
}

function summary(rep: RunReport): string[] {
  const top = (m: Map<string, number>): string => [...m].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, v]) => `${k} ${v}`).join(', ');
  const lines = [
    `${rep.casesRun} cases in ${(rep.elapsedMs / 1000).toFixed(1)} s over ${images.length} images; peak RSS ${rep.peakRssMb.toFixed(0)} MiB`,
    `case outcomes: ${top(rep.results)}`,
    `operation errors: ${top(rep.codes)}`,
    `${rep.fixedCases} cases with recomputed checksums, ${rep.extractedCases} with extraction`,
    `slowest case: ${rep.slowest.ms.toFixed(0)} ms (seed ${rep.slowest.c?.seed}, ${rep.slowest.c?.image})`,
  ];
  for (const w of rep.warnings) lines.push(`warning: ${w}`);
  for (const o of rep.oddMessages) lines.push(`error message mentions NaN/undefined: ${o}`);
  for (const h of rep.hostErrors) lines.push(`extract ended with an allowed host error: ${h}`);
  if (buildNote !== '') lines.push(buildNote);
  return lines;
}

if (REPLAY_SEED !== undefined) {
  test(`read fuzz replay of seed ${REPLAY_SEED}`, async (t) => {
    assert.ok(images.length > 0, 'no pristine images (no fixtures and no e2fsprogs)');
    const c = { seed: REPLAY_SEED, image: env['FUZZ_IMAGE'] ?? imageForSeed(REPLAY_SEED) };
    assert.ok(images.some((i) => i.name === c.image), `no image named ${c.image}; have ${images.map((i) => i.name).join(', ')}`);
    const rep = await runCases({ ...baseOptions([c]), workers: 1, verbose: true, log: (l) => console.log(l) });
    for (const l of summary(rep)) t.diagnostic(l);
    assert.equal(rep.failures.length, 0, rep.failures.map(formatFailure).join('\n\n'));
  });
} else {
  test('read fuzz canary: planted crashes, hangs, rejections, leaks and allocations are caught and named by seed', async (t) => {
    assert.ok(images.length > 0, 'no pristine images (no fixtures and no e2fsprogs)');
    // The smallest image keeps the canary quick.
    const image = images.find((i) => i.name === 'gen-ext4-1k')?.name ?? imageForSeed(1);
    const cases = [1, 2, 3, 4, 5, 6].map((seed) => ({ seed, image }));
    const plant: { kind: Canary; expect: FailureKind; seeds: number[]; tweak?: Partial<HarnessOptions> }[] = [
      { kind: 'crash', expect: 'crash', seeds: [3] },
      { kind: 'bug', expect: 'crash', seeds: [3] },
      { kind: 'reject', expect: 'unhandled-rejection', seeds: [3] },
      { kind: 'hang', expect: 'timeout', seeds: [3], tweak: { caseTimeoutMs: 500 } },
      { kind: 'leak', expect: 'leak', seeds: [1, 2, 3, 4, 5, 6], tweak: { memCheckEvery: 2, leakLimitMb: 12 } },
      { kind: 'alloc', expect: 'rss', seeds: [3], tweak: { rssSlackMb: 128 } },
    ];
    for (const p of plant) {
      const rep = await runCases({ ...baseOptions(cases), workers: 1, extractChance: 0, canary: { kind: p.kind, seeds: p.seeds }, ...p.tweak });
      const hit = rep.failures.filter((f) => f.kind === p.expect && (p.kind === 'leak' || f.seed === 3));
      t.diagnostic(`canary ${p.kind}: ${hit.length > 0 ? `caught as ${p.expect}: ${hit[0]?.detail}` : 'MISSED'}`);
      assert.ok(hit.length > 0, `canary ${p.kind} was not caught as ${p.expect}; failures: ${rep.failures.map(formatFailure).join('\n') || 'none'}`);
      if (p.kind === 'crash') assert.match(hit[0]?.detail ?? '', /TypeError/);
      if (p.kind === 'bug') assert.match(hit[0]?.detail ?? '', /Ext4Bug/);
      // Every other case of the lane still ran: a failure does not end the run.
      if (p.kind !== 'hang' && p.kind !== 'alloc') assert.equal(rep.casesRun, p.kind === 'leak' || p.kind === 'reject' ? 6 : 5);
    }
  });

  test(`read fuzz: ${CASES} seeded corruptions end in success or an Ext4Error within ${TIMEOUT_MS} ms and bounded memory`, async (t) => {
    assert.ok(images.length > 0, 'no pristine images (no fixtures and no e2fsprogs)');
    const cases = Array.from({ length: CASES }, (_, i) => ({ seed: i + 1, image: imageForSeed(i + 1) }));
    const rep = await runCases(baseOptions(cases));
    for (const l of summary(rep)) t.diagnostic(l);
    const shown = rep.failures.slice(0, 40).map(formatFailure).join('\n\n');
    const more = rep.failures.length > 40 ? `\n\n... and ${rep.failures.length - 40} more` : '';
    assert.equal(rep.failures.length, 0, `${rep.failures.length} failing case(s):\n\n${shown}${more}`);
    assert.ok(rep.casesRun >= CASES * 0.9, `only ${rep.casesRun} of ${CASES} cases ran`);
  });
}
