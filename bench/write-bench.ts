/**
 * Section 2 (issue 4): buffered sequential write of one large file through the API, in 1 MiB
 * writes on a fresh mkfs.ext4 image with a 128 KiB bio limit (maxBioVecs 32), against the
 * raw-write limit of the host (the same bytes to a host file, 1 MiB writes + fdatasync). The
 * ext4ts write runs in a child (bench/write-child.ts) so each size's peak memory is its own.
 * Also reported: the engine counters (conversions must equal unwritten io_ends; bios per io_end
 * shows how many bios one extent's io_end spans), and the file's extent count next to what the
 * kernel makes for the same write on the same kind of fresh image (loop mount + dd).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { benchScript, freeBytes, loopAvailable, mountLoop, unmount, run, sh, type Options } from './env.js';
import { figures, roundRobin, summarize, median, mib, type Contender, type Figure, type Outcome } from './stats.js';
import { e2fsckClean, checkWrittenFile, debugfsExtents } from './verify.js';
import { rawWrite } from './build-bench.js';
import { chunkPattern, WRITE_SEED } from './workload.js';

const MiB = 1 << 20;
const GiB = 1 << 30;
/** 32 × 4 KiB pages: a 128 KiB bio, so one 1 MiB-or-larger extent needs several bios. */
const MAX_BIO_VECS = 32;

interface SizeCase {
  fileBytes: number;
  imageSize: string;
  /** Why this size is not run (row shows it). */
  skip?: string;
  maxRuns?: number;
}

/** What one ext4ts child reported. */
interface ChildResult {
  seconds: number;
  writeCallsSeconds: number;
  baseRssBytes: number;
  peakRssBytes: number;
  maxRssBytes: number;
  peakArrayBuffersBytes: number;
  stats?: { bios: number; ioEnds: number; unwrittenIoEnds: number; conversions: number; pagesWritten: number; bytesWritten: number };
}

const label = (bytes: number): string => (bytes >= GiB ? `${bytes / GiB} GiB file` : `${bytes / MiB} MiB file`);

function sizeCases(opts: Options, work: string): SizeCase[] {
  if (opts.quick) {
    return [
      { fileBytes: 32 * MiB, imageSize: '512M' },
      { fileBytes: 128 * MiB, imageSize: '512M' },
      { fileBytes: 4 * GiB, imageSize: '8G', skip: 'skipped (--quick)' },
    ];
  }
  // The 4 GiB case holds one 4 GiB image or raw file at a time, plus headroom.
  const room = freeBytes(work) >= 6 * GiB;
  return [
    { fileBytes: 256 * MiB, imageSize: '2G' },
    { fileBytes: GiB, imageSize: '2G' },
    { fileBytes: 4 * GiB, imageSize: '8G', maxRuns: Math.min(opts.runs, 3), ...(room ? {} : { skip: 'skipped (under 6 GiB free in the scratch dir)' }) },
  ];
}

/** Chunk indices whose bytes are read back from the image: first, second, middle, last. */
function sampleChunks(fileBytes: number): number[] {
  const n = Math.ceil(fileBytes / MiB);
  return [...new Set([0, 1, Math.floor(n / 2), n - 1])].filter((k) => k >= 0 && k < n).map((k) => k * MiB);
}

export async function writeBench(opts: Options, work: string, log: (s: string) => void): Promise<void> {
  const peaks: string[] = [];
  for (const c of sizeCases(opts, work)) {
    const wl = `${label(c.fileBytes)}, ${c.imageSize} image`;
    if (c.skip !== undefined) {
      for (const name of ['raw write limit (node:fs)', 'ext4ts write (API)', 'kernel (loop mount, dd)']) {
        figures.push({ section: 'write', name, workload: wl, status: c.skip, unit: 'MiB/s', runs: 0 });
      }
      continue;
    }
    log(`write: ${wl}`);
    const r = await oneSize(opts, work, c, log);
    figures.push(...r.figures);
    if (r.peakRssMiB !== undefined) peaks.push(`${label(c.fileBytes)} → ${r.peakRssMiB.toFixed(0)} MiB`);
  }
  const last = [...figures].reverse().find((f) => f.section === 'write' && f.name.startsWith('ext4ts') && f.value !== undefined);
  if (last !== undefined && peaks.length > 1) (last.notes ??= []).push(`peak RSS by file size: ${peaks.join(', ')}`);
}

async function oneSize(opts: Options, work: string, c: SizeCase, log: (s: string) => void): Promise<{ figures: Figure[]; peakRssMiB?: number }> {
  const img = join(work, 'write.img');
  const rawPath = join(work, 'write.raw');
  const kimg = join(work, 'write-kernel.img');
  const mnt = join(work, 'write-mnt');
  const pattern = chunkPattern(WRITE_SEED);
  const children: ChildResult[] = [];
  let oursExtents: number | undefined;
  let kernelExtents: number | undefined;
  const rm = (p: string) => (): void => rmSync(p, { force: true });
  const list: Contender[] = [
    {
      name: 'raw write limit (node:fs)',
      ...(c.maxRuns !== undefined ? { maxRuns: c.maxRuns } : {}),
      prep: rm(rawPath),
      run: () => rawWrite(rawPath, c.fileBytes),
      cleanup: rm(rawPath),
    },
    {
      name: 'ext4ts write (API)',
      ...(c.maxRuns !== undefined ? { maxRuns: c.maxRuns } : {}),
      prep: () => {
        rmSync(img, { force: true });
        sh('mkfs.ext4', ['-q', '-F', '-b', '4096', img, c.imageSize]);
      },
      run: () => {
        const out = run(process.execPath, [benchScript('write-child.js'), img, String(c.fileBytes), String(MAX_BIO_VECS)]);
        if (out.status !== 0) throw new Error(`write child exited ${out.status}: ${out.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
        const j = JSON.parse(out.stdout.trim().split('\n').pop() ?? '{}') as ChildResult;
        children.push(j);
        return { seconds: j.seconds, peakRssMiB: mib(j.maxRssBytes) };
      },
      check: () => {
        e2fsckClean(img);
        oursExtents = checkWrittenFile(img, '/f', c.fileBytes, 4096, sampleChunks(c.fileBytes), (k) => pattern(k)).length;
      },
      cleanup: rm(img),
    },
    {
      name: 'kernel (loop mount, dd)',
      maxRuns: 1,
      ...(loopAvailable() ? {} : { skip: 'n/a (needs root and loop devices)' }),
      prep: () => {
        rmSync(kimg, { force: true });
        sh('mkfs.ext4', ['-q', '-F', '-b', '4096', kimg, c.imageSize]);
      },
      run: () => {
        mountLoop(kimg, mnt);
        try {
          sh('dd', ['if=/dev/zero', `of=${mnt}/f`, 'bs=1M', `count=${c.fileBytes / MiB}`, 'conv=fdatasync', 'status=none']);
        } finally {
          unmount(mnt);
        }
      },
      check: () => {
        e2fsckClean(kimg);
        kernelExtents = debugfsExtents(kimg, '/f').length;
      },
      cleanup: rm(kimg),
    },
  ];
  const out = await roundRobin(list, opts.runs, log);
  return toFigures(out, c, children, oursExtents, kernelExtents);
}

function toFigures(out: Outcome[], c: SizeCase, children: ChildResult[], oursExtents: number | undefined,
  kernelExtents: number | undefined): { figures: Figure[]; peakRssMiB?: number } {
  const wl = `${label(c.fileBytes)}, ${c.imageSize} image`;
  const rate = (s: number): number => mib(c.fileBytes) / s;
  const raw = out[0]!;
  const rawSec = raw.status === 'ok' && raw.samples.length > 0 ? summarize(raw.samples).seconds : undefined;
  let peakRssMiB: number | undefined;
  const figs = out.map((o): Figure => {
    const f: Figure = { section: 'write', name: o.name, workload: wl, status: o.status, unit: 'MiB/s', runs: o.samples.length };
    if (o.status !== 'ok' || o.samples.length === 0) return f;
    const s = summarize(o.samples);
    Object.assign(f, s, { value: rate(s.seconds) });
    f.notes = [`${s.seconds.toFixed(3)} s`];
    if (o === raw) f.notes.push('(anchor: 1 MiB writes + fdatasync to a host file)');
    if (rawSec !== undefined && o !== raw) f.ratios = [{ label: 'of raw bandwidth', value: rawSec / s.seconds }];
    if (o.name.startsWith('kernel') && kernelExtents !== undefined) f.notes.push(`extents of /f: ${kernelExtents}`);
    if (o.name.startsWith('ext4ts') && children.length > 0) {
      peakRssMiB = s.peakRssMiB;
      f.notes.push(...ourNotes(children, oursExtents, kernelExtents));
      const st = children[children.length - 1]!.stats;
      const checks = st === undefined ? {} : { conversionsEqualUnwrittenIoEnds: st.conversions === st.unwrittenIoEnds, biosPerIoEnd: st.bios / st.ioEnds };
      f.extra = { children, extents: oursExtents, kernelExtents, ...checks };
    }
    return f;
  });
  return { figures: figs, ...(peakRssMiB !== undefined ? { peakRssMiB } : {}) };
}

/** The ext4ts row's notes: memory, counters and their two checks, extent counts. */
function ourNotes(children: ChildResult[], oursExtents: number | undefined, kernelExtents: number | undefined): string[] {
  const med = (f: (j: ChildResult) => number): string => mib(median(children.map(f))).toFixed(0);
  const notes = [
    `peak RSS ${med((j) => j.maxRssBytes)} MiB (sampled every 50 ms: ${med((j) => j.peakRssBytes)}; at start ${med((j) => j.baseRssBytes)}), ` +
      `peak arrayBuffers ${med((j) => j.peakArrayBuffersBytes)} MiB; write() calls took ${median(children.map((j) => j.writeCallsSeconds)).toFixed(2)} s of it`,
  ];
  const st = children[children.length - 1]!.stats;
  if (st !== undefined) {
    notes.push(`counters: bios ${st.bios}, ioEnds ${st.ioEnds}, unwrittenIoEnds ${st.unwrittenIoEnds}, conversions ${st.conversions}, ` +
      `pagesWritten ${st.pagesWritten}, bytesWritten ${st.bytesWritten}`);
    const ratio = st.ioEnds > 0 ? st.bios / st.ioEnds : NaN;
    notes.push(`conversions == unwrittenIoEnds: ${st.conversions === st.unwrittenIoEnds ? 'yes' : 'NO'}; ` +
      `bios / ioEnds = ${ratio.toFixed(1)} (≥ 8 wanted: ${ratio >= 8 ? 'yes' : 'no'})`);
  }
  notes.push(`extents of /f: ext4ts ${oursExtents ?? '?'}, kernel ${kernelExtents ?? 'n/a'}`);
  return notes;
}
