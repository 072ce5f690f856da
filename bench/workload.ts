/**
 * Seeded benchmark workloads: a rootfs-like tree (many small files with log-normal sizes,
 * directories, symlinks) and a few large files. The same seed always gives the same tree.
 */
import { mkdir, writeFile, symlink } from 'node:fs/promises';
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

export interface TreeSpec {
  files: number;
  dirs: number;
  symlinks: number;
  /** Median file size in bytes (log-normal). */
  medianBytes: number;
  maxBytes: number;
  seed: number;
}

export const WORKLOAD_A: TreeSpec = { files: 20000, dirs: 2000, symlinks: 800, medianBytes: 7168, maxBytes: 1 << 20, seed: 1 };
export const WORKLOAD_A_QUICK: TreeSpec = { files: 2000, dirs: 200, symlinks: 80, medianBytes: 4096, maxBytes: 1 << 20, seed: 1 };

/** Writes the tree under `root` (which must not exist). Returns the bytes of file content. */
export async function makeTree(root: string, spec: TreeSpec): Promise<number> {
  const rnd = prng(spec.seed);
  const dirs = [root];
  await mkdir(root);
  for (let i = 1; i < spec.dirs; i++) {
    const parent = dirs[Math.floor(rnd() * dirs.length)] ?? root;
    const d = join(parent, `d${i}`);
    await mkdir(d);
    dirs.push(d);
  }
  // One pool of random bytes, sliced per file: content differs per file, generation stays cheap.
  const pool = new Uint8Array(spec.maxBytes * 2);
  for (let i = 0; i < pool.length; i += 4) new DataView(pool.buffer).setUint32(i, (rnd() * 0x1_0000_0000) >>> 0);
  let total = 0;
  for (let i = 0; i < spec.files; i++) {
    const u = Math.max(1e-9, rnd());
    const v = rnd();
    const normal = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    const size = Math.min(spec.maxBytes, Math.floor(spec.medianBytes * Math.exp(1.5 * normal)));
    const off = Math.floor(rnd() * spec.maxBytes);
    const dir = dirs[Math.floor(rnd() * dirs.length)] ?? root;
    await writeFile(join(dir, `f${i}.bin`), pool.subarray(off, off + size));
    total += size;
  }
  for (let i = 0; i < spec.symlinks; i++) {
    const dir = dirs[Math.floor(rnd() * dirs.length)] ?? root;
    await symlink(rnd() < 0.5 ? `f${i}.bin` : `/usr/lib/target-${i}`, join(dir, `l${i}`));
  }
  return total;
}
