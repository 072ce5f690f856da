/**
 * Section 3 (issue 5): 4 KiB random direct writes into a preallocated 1 GiB file, queue depth 1
 * and 32, duration-bounded, as IOPS:
 * - ext4ts with O_DIRECT through the API (depth 1: awaited writes; depth 32: its asynchronous
 *   queue), on a fresh 2 GiB mkfs.ext4 image; all ext4ts calls sit in `openDirect` below, so they
 *   are easy to adjust when the real interface lands;
 * - the same pattern with plain node:fs on a raw host file (the anchor; buffered: node cannot
 *   align buffers for O_DIRECT; depth 32 means 32 writes in flight on libuv's thread pool);
 * - fio (libaio, O_DIRECT) on a kernel loop mount of the same kind of image, for reference.
 */
import { open, type FileHandle as NodeFileHandle } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Ext4 } from '../src/index.js';
import { ensureFio, loopAvailable, mountLoop, unmount, run, sh, type Options } from './env.js';
import { figures, median, NotAvailable, firstLine, roundRobin, type Contender, type Figure, type Outcome } from './stats.js';
import { e2fsckClean } from './verify.js';
import { prng } from './workload.js';

const MiB = 1 << 20;
/**
 * The preallocated file: 1 GiB on a 2 GiB image; --quick uses 256 MiB on 512 MiB, because
 * deleting a large, randomly written image is slow on hosts mounted with `discard`.
 */
let FILE_BYTES = 1024 * MiB;
let IMAGE_SIZE = '2G';
const IO_BYTES = 4096;
const DEPTHS = [1, 32] as const;

/** A direct-I/O file as the bench drives it. */
interface DirectFile {
  /** One write of `IO_BYTES` at `pos`; resolves when the write is done. */
  write(buf: Uint8Array, pos: number): Promise<unknown>;
  /** Same, through the asynchronous queue (many in flight). */
  writeAsync(buf: Uint8Array, pos: number): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * The ext4ts direct-I/O calls, in one place: open with `{ direct: true }`, preallocate, then
 * `fh.write(buf, 0, 4096, pos)` (awaited) and `fh.aio({ depth }).write(buf, pos)` (a promise per
 * write; an io_submit-shaped queue's `submit([iocb])[0].done` is taken as well).
 * A build whose open rejects `direct`, or whose handle has no `fallocate` or `aio`, has no
 * O_DIRECT yet (an open that ignored the option would give a buffered handle without `aio`).
 */
async function openDirect(fs: Ext4, path: string): Promise<DirectFile> {
  const fh = await fs.open(path, 'r+', { direct: true });
  await fh.fallocate(0, FILE_BYTES);
  const q = fh.aio({ depth: Math.max(...DEPTHS) });
  return {
    write: (buf, pos) => fh.write(buf, 0, IO_BYTES, pos),
    writeAsync: (buf: Uint8Array, pos: number): Promise<unknown> => q.submit([{ op: 'write', buf, pos }])[0]!.done,
    close: () => fh.close(),
  };
}

/** Random 4 KiB-aligned positions inside the file, seeded. */
function positions(seed: number): () => number {
  const rnd = prng(seed);
  const slots = FILE_BYTES / IO_BYTES;
  return () => Math.floor(rnd() * slots) * IO_BYTES;
}

/**
 * Issues writes for `seconds` with `depth` in flight (each in-flight slot has its own buffer);
 * returns the number of completed writes and the elapsed seconds.
 */
async function drive(depth: number, seconds: number, seed: number, write: (buf: Uint8Array, pos: number) => Promise<unknown>): Promise<{ ops: number; seconds: number }> {
  const next = positions(seed);
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let ops = 0;
  const worker = async (slot: number): Promise<void> => {
    const buf = new Uint8Array(IO_BYTES).fill(slot + 1);
    while (performance.now() < end) {
      await write(buf, next());
      ops++;
    }
  };
  await Promise.all(Array.from({ length: depth }, (_, i) => worker(i)));
  return { ops, seconds: (performance.now() - t0) / 1000 };
}

/** A contender with lazy setup (first run), teardown at the end, and IOPS per run. */
interface Rig {
  name: string;
  setup(): Promise<void>;
  once(depth: number, seconds: number, seed: number): Promise<{ ops: number; seconds: number }>;
  teardown(): Promise<void>;
  skip?: string;
}

function nodeRig(work: string): Rig {
  const path = join(work, 'dio.raw');
  let fh: NodeFileHandle | undefined;
  return {
    name: 'node:fs raw file',
    async setup() {
      rmSync(path, { force: true });
      // Preallocated like the others; a host without fallocate(1) gets a written file instead.
      if (run('fallocate', ['-l', String(FILE_BYTES), path]).status !== 0) {
        const f = await open(path, 'w');
        const z = new Uint8Array(1 << 20);
        for (let p = 0; p < FILE_BYTES; p += z.length) await f.write(z, 0, z.length, p);
        await f.close();
      }
      fh = await open(path, 'r+');
    },
    once: (depth, seconds, seed) => drive(depth, seconds, seed, (buf, pos) => fh!.write(buf, 0, IO_BYTES, pos)),
    async teardown() {
      await fh?.close();
      rmSync(path, { force: true });
    },
  };
}

function ext4tsRig(work: string): Rig & { checkError?: string } {
  const img = join(work, 'dio.img');
  let fs: Ext4 | undefined;
  let f: DirectFile | undefined;
  const rig: Rig & { checkError?: string } = {
    name: 'ext4ts O_DIRECT (API)',
    async setup() {
      rmSync(img, { force: true });
      sh('mkfs.ext4', ['-q', '-F', '-b', '4096', img, IMAGE_SIZE]);
      fs = await Ext4.open(img, { readOnly: false });
      await fs.mknod('/f', { mode: 0o644 });
      f = await openDirect(fs, '/f');
    },
    once: (depth, seconds, seed) => drive(depth, seconds, seed, depth === 1 ? f!.write : f!.writeAsync),
    async teardown() {
      try {
        await f?.close();
        await fs?.close();
        if (fs !== undefined && f !== undefined) e2fsckClean(img);
      } catch (e) {
        rig.checkError = firstLine(e);
      } finally {
        rmSync(img, { force: true });
      }
    },
  };
  return rig;
}

function fioRig(work: string): Rig {
  const img = join(work, 'dio-fio.img');
  const mnt = join(work, 'dio-mnt');
  const fio = loopAvailable() ? ensureFio() : { ok: false as const, why: 'needs root and loop devices' };
  return {
    name: 'fio libaio O_DIRECT (kernel loop)',
    ...(fio.ok ? {} : { skip: `n/a (${fio.why})` }),
    async setup() {
      rmSync(img, { force: true });
      sh('mkfs.ext4', ['-q', '-F', '-b', '4096', img, IMAGE_SIZE]);
      mountLoop(img, mnt);
    },
    async once(depth, seconds, seed) {
      const out = sh('fio', ['--name=dio', `--filename=${mnt}/f`, '--ioengine=libaio', '--direct=1', '--rw=randwrite',
        '--bs=4k', `--iodepth=${depth}`, `--size=${FILE_BYTES / MiB}M`, '--fallocate=native', '--time_based', `--runtime=${seconds}`,
        `--randseed=${seed}`, '--output-format=json']);
      const j = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { write: { total_ios: number; runtime: number } }[] };
      const w = j.jobs[0]!.write;
      return { ops: w.total_ios, seconds: w.runtime / 1000 };
    },
    async teardown() {
      unmount(mnt);
      rmSync(img, { force: true });
    },
  };
}

export async function dioBench(opts: Options, work: string, log: (s: string) => void): Promise<void> {
  const seconds = opts.quick ? 1 : 5;
  FILE_BYTES = (opts.quick ? 256 : 1024) * MiB;
  IMAGE_SIZE = opts.quick ? '512M' : '2G';
  const rounds = opts.quick ? 1 : Math.min(opts.runs, 3);
  const rigs = [nodeRig(work), ext4tsRig(work), fioRig(work)];
  /** Setup done per rig: its outcome, so a failed setup fails every depth alike. */
  const ready = new Map<Rig, Promise<void>>();
  const iops = new Map<string, number[]>();
  const contenders: Contender[] = [];
  for (const depth of DEPTHS) {
    for (const rig of rigs) {
      const key = `${rig.name}|${depth}`;
      iops.set(key, []);
      contenders.push({
        name: key,
        ...(rig.skip !== undefined ? { skip: rig.skip } : {}),
        prep: async () => {
          if (!ready.has(rig)) ready.set(rig, rig.setup());
          await ready.get(rig);
        },
        run: async () => {
          const r = await rig.once(depth, seconds, 1000 + (iops.get(key)?.length ?? 0));
          iops.get(key)!.push(r.ops / r.seconds);
          return { seconds: r.seconds };
        },
      });
    }
  }
  log(`dio: ${seconds} s per run, ${rounds} run(s)`);
  let out: Outcome[];
  try {
    out = await roundRobin(contenders, rounds, log);
  } finally {
    for (const rig of rigs) if (ready.has(rig)) await rig.teardown();
  }
  const ours = rigs[1] as ReturnType<typeof ext4tsRig>;
  figures.push(...toFigures(out, iops, seconds, ours.checkError));
}

function toFigures(out: Outcome[], iops: Map<string, number[]>, seconds: number, oursCheckError: string | undefined): Figure[] {
  const med = (key: string): number | undefined => {
    const xs = iops.get(key) ?? [];
    const o = out.find((x) => x.name === key);
    return o?.status === 'ok' && xs.length > 0 ? median(xs) : undefined;
  };
  return out.map((o): Figure => {
    const [name, depthStr] = o.name.split('|') as [string, string];
    const depth = Number(depthStr);
    const status = name.startsWith('ext4ts') && o.status === 'ok' && oursCheckError !== undefined ? `FAILED: ${oursCheckError}` : o.status;
    const file = FILE_BYTES >= 1 << 30 ? `${FILE_BYTES / (1 << 30)} GiB` : `${FILE_BYTES / MiB} MiB`;
    const f: Figure = { section: 'dio', name: `${name} qd${depth}`, workload: `4 KiB randwrite, ${file} file, ${seconds} s`, status, unit: 'IOPS', runs: o.samples.length };
    const v = med(o.name);
    if (status !== 'ok' || v === undefined) return f;
    f.value = v;
    const cpu = o.samples.every((s) => s.userSeconds !== undefined) ? { userSeconds: median(o.samples.map((s) => s.userSeconds!)), sysSeconds: median(o.samples.map((s) => s.sysSeconds!)) } : {};
    Object.assign(f, cpu);
    const nodeV = med(`node:fs raw file|${depth}`);
    const fioV = med(`fio libaio O_DIRECT (kernel loop)|${depth}`);
    f.ratios = [];
    if (name.startsWith('node')) f.notes = ['(anchor; buffered writes, node cannot align buffers for O_DIRECT)'];
    else if (nodeV !== undefined) f.ratios.push({ label: '× node:fs', value: v / nodeV });
    if (name.startsWith('ext4ts') && fioV !== undefined) f.ratios.push({ label: '× fio', value: v / fioV });
    if (name.startsWith('fio')) f.notes = ['reference: kernel ext4 on a loop device, fallocate=native'];
    return f;
  });
}
