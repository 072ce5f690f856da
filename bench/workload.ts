/**
 * Seeded benchmark workloads: a rootfs-like tree (many small files with log-normal sizes,
 * directories, symlinks) and a few large files. The same seed always gives the same bytes, so
 * every run of the bench (and every machine) measures the same content.
 */
import { mkdir, writeFile, symlink, open } from 'node:fs/promises';
import { join } from 'node:path';

/** splitmix32: a small seeded PRNG, enough for reproducible workloads. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 0x1_0000_0000;
  };
}

/** `n` seeded pseudo-random bytes (one PRNG step per 4 bytes). */
export function randomBytes(n: number, rnd: () => number): Uint8Array {
  const out = new Uint8Array(Math.ceil(n / 4) * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < out.length; i += 4) dv.setUint32(i, (rnd() * 0x1_0000_0000) >>> 0, true);
  return out.subarray(0, n);
}

export interface TreeSpec {
  files: number;
  dirs: number;
  symlinks: number;
  /** Median file size in bytes (log-normal, sigma 1.5). */
  medianBytes: number;
  maxBytes: number;
  seed: number;
}

/** ~20,000 files (421 MiB) in 2,000 directories, 800 symlinks. */
export const WORKLOAD_A: TreeSpec = { files: 20000, dirs: 2000, symlinks: 800, medianBytes: 7168, maxBytes: 1 << 20, seed: 1 };
/** The same distribution at a tenth of the count (~41 MiB). */
export const WORKLOAD_A_QUICK: TreeSpec = { files: 2000, dirs: 200, symlinks: 80, medianBytes: 7168, maxBytes: 1 << 20, seed: 1 };

/** What a generated tree holds, for checking a copy of it. */
export interface TreeInfo {
  root: string;
  /** Regular files: path relative to root and size. */
  files: { rel: string; sizeBytes: number }[];
  /** Directories below the root. */
  dirs: number;
  symlinks: { rel: string; target: string }[];
  totalBytes: number;
}

/** Writes the tree under `root` (which must not exist). */
export async function makeTree(root: string, spec: TreeSpec): Promise<TreeInfo> {
  const rnd = prng(spec.seed);
  const dirs = [''];
  await mkdir(root);
  for (let i = 1; i < spec.dirs; i++) {
    const parent = dirs[Math.floor(rnd() * dirs.length)] ?? '';
    const d = join(parent, `d${i}`);
    await mkdir(join(root, d));
    dirs.push(d);
  }
  // One pool of random bytes, sliced per file: content differs per file, generation stays cheap.
  const pool = randomBytes(spec.maxBytes * 2, rnd);
  const info: TreeInfo = { root, files: [], dirs: spec.dirs - 1, symlinks: [], totalBytes: 0 };
  for (let i = 0; i < spec.files; i++) {
    const u = Math.max(1e-9, rnd());
    const v = rnd();
    const normal = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    const size = Math.min(spec.maxBytes, Math.floor(spec.medianBytes * Math.exp(1.5 * normal)));
    const off = Math.floor(rnd() * spec.maxBytes);
    const rel = join(dirs[Math.floor(rnd() * dirs.length)] ?? '', `f${i}.bin`);
    await writeFile(join(root, rel), pool.subarray(off, off + size));
    info.files.push({ rel, sizeBytes: size });
    info.totalBytes += size;
  }
  for (let i = 0; i < spec.symlinks; i++) {
    const rel = join(dirs[Math.floor(rnd() * dirs.length)] ?? '', `l${i}`);
    const target = rnd() < 0.5 ? `f${i}.bin` : `/usr/lib/target-${i}`;
    await symlink(target, join(root, rel));
    info.symlinks.push({ rel, target });
  }
  return info;
}

export interface BigSpec {
  files: number;
  sizeBytes: number;
  seed: number;
}

/** 8 files of 128 MiB (1 GiB). */
export const WORKLOAD_B: BigSpec = { files: 8, sizeBytes: 128 << 20, seed: 2 };
export const WORKLOAD_B_QUICK: BigSpec = { files: 8, sizeBytes: 8 << 20, seed: 2 };

const CHUNK_BYTES = 1 << 20;

/**
 * Writes `spec.files` large files under `root`. Each 1 MiB chunk is a seeded slice of a random
 * pool with its file and chunk number stamped in the first 8 bytes, so every chunk differs and a
 * misplaced block shows up when a copy is compared.
 */
export async function makeBigFiles(root: string, spec: BigSpec): Promise<TreeInfo> {
  const rnd = prng(spec.seed);
  const pool = randomBytes(CHUNK_BYTES * 2, rnd);
  await mkdir(root);
  const info: TreeInfo = { root, files: [], dirs: 0, symlinks: [], totalBytes: 0 };
  const chunk = new Uint8Array(CHUNK_BYTES);
  const dv = new DataView(chunk.buffer);
  for (let i = 0; i < spec.files; i++) {
    const rel = `big${i}.bin`;
    const fh = await open(join(root, rel), 'w');
    try {
      for (let pos = 0, k = 0; pos < spec.sizeBytes; pos += CHUNK_BYTES, k++) {
        const off = Math.floor(rnd() * CHUNK_BYTES);
        chunk.set(pool.subarray(off, off + CHUNK_BYTES));
        dv.setUint32(0, i, true);
        dv.setUint32(4, k, true);
        const len = Math.min(CHUNK_BYTES, spec.sizeBytes - pos);
        await fh.write(chunk, 0, len, pos);
      }
    } finally {
      await fh.close();
    }
    info.files.push({ rel, sizeBytes: spec.sizeBytes });
    info.totalBytes += spec.sizeBytes;
  }
  return info;
}

/** Seed of the write benchmark's content. */
export const WRITE_SEED = 4;

/**
 * The content of the write benchmark: 1 MiB chunk `k` is a fixed seeded random MiB with `k`
 * stamped in its first 8 bytes (so a chunk written to the wrong place is caught).
 */
export function chunkPattern(seed: number): (k: number, into?: Uint8Array) => Uint8Array {
  const base = randomBytes(CHUNK_BYTES, prng(seed));
  return (k, into = new Uint8Array(CHUNK_BYTES)) => {
    into.set(base);
    const dv = new DataView(into.buffer, into.byteOffset, into.byteLength);
    dv.setUint32(0, k, true);
    dv.setUint32(4, 0x65787434, true); // "4txe": marks a chunk of ours
    return into;
  };
}
