/**
 * Checks an image before its time counts: `e2fsck -fn` clean, then its content against the
 * source tree: file, directory and symlink counts and total bytes (through a read-only kernel loop
 * mount where possible, else through ext4ts's reader), and a sample of files' bytes read back with
 * `debugfs cat` (an independent reader: libext2fs). Each failed check throws with the reason.
 */
import { readFileSync, readdirSync, lstatSync, readlinkSync, writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Ext4 } from '../src/index.js';
import { run, loopAvailable, mountLoop, unmount } from './env.js';
import type { TreeInfo } from './workload.js';

/** Throws unless `e2fsck -fn` finds the image clean. */
export function e2fsckClean(img: string): void {
  const r = run('e2fsck', ['-fn', img]);
  if (r.status !== 0) {
    const lines = (r.stdout + r.stderr).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('e2fsck ') && !l.startsWith('Pass '));
    throw new Error(`e2fsck -fn exit ${r.status}: ${lines.slice(0, 4).join(' | ')}`);
  }
}

export interface TreeCount {
  files: number;
  bytes: number;
  dirs: number;
  symlinks: number;
}

/** Counts what a host directory holds (symlinks not followed; lost+found left out). */
export function countHostTree(dir: string): TreeCount {
  const c: TreeCount = { files: 0, bytes: 0, dirs: 0, symlinks: 0 };
  const walk = (d: string, top: boolean): void => {
    for (const n of readdirSync(d)) {
      if (top && n === 'lost+found') continue;
      const p = join(d, n);
      const st = lstatSync(p);
      if (st.isDirectory()) {
        c.dirs++;
        walk(p, false);
      } else if (st.isFile()) {
        c.files++;
        c.bytes += st.size;
      } else if (st.isSymbolicLink()) c.symlinks++;
    }
  };
  walk(dir, true);
  return c;
}

/** Counts what an image holds through ext4ts's read-only reader (where no loop mount exists). */
async function countImageTree(img: string): Promise<TreeCount> {
  const fs = await Ext4.open(img);
  try {
    const c: TreeCount = { files: 0, bytes: 0, dirs: 0, symlinks: 0 };
    const walk = async (d: string): Promise<void> => {
      for (const e of await fs.readdir(d, { withFileTypes: true })) {
        const p = d === '/' ? `/${e.name}` : `${d}/${e.name}`;
        if (p === '/lost+found') continue;
        const st = await fs.lstat(p);
        if (st.isDirectory()) {
          c.dirs++;
          await walk(p);
        } else if (st.isFile()) {
          c.files++;
          c.bytes += st.size;
        } else if (st.isSymbolicLink()) c.symlinks++;
      }
    };
    await walk('/');
    return c;
  } finally {
    await fs.close();
  }
}

export function expectedCount(tree: TreeInfo): TreeCount {
  return { files: tree.files.length, bytes: tree.totalBytes, dirs: tree.dirs, symlinks: tree.symlinks.length };
}

function sameCount(got: TreeCount, want: TreeCount, how: string): void {
  const k = (c: TreeCount): string => `${c.files} files/${c.bytes} bytes/${c.dirs} dirs/${c.symlinks} symlinks`;
  if (got.files !== want.files || got.bytes !== want.bytes || got.dirs !== want.dirs || got.symlinks !== want.symlinks) {
    throw new Error(`content differs (${how}): ${k(got)}, expected ${k(want)}`);
  }
}

/** A deterministic sample: about `n` files spread over the list, plus the largest. */
export function sampleFiles(tree: TreeInfo, n: number): TreeInfo['files'] {
  const step = Math.max(1, Math.floor(tree.files.length / n));
  const out = tree.files.filter((_, i) => i % step === 0).slice(0, n);
  const largest = tree.files.reduce((a, b) => (b.sizeBytes > a.sizeBytes ? b : a), tree.files[0]!);
  if (!out.includes(largest)) out.push(largest);
  return out;
}

/**
 * Reads the sample back with one `debugfs -f` session (it echoes each command, then the file's
 * bytes) and compares it with the source files.
 */
export function debugfsSample(img: string, tree: TreeInfo, sample: TreeInfo['files'], cmdFile: string): void {
  writeFileSync(cmdFile, sample.map((f) => `cat /${f.rel}\n`).join(''));
  // Raw bytes: the files are binary, so stdout must not go through a text decoder.
  const r = spawnSync('debugfs', ['-f', cmdFile, img], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 30 });
  const parts: Uint8Array[] = [];
  for (const f of sample) {
    parts.push(Buffer.from(`debugfs: cat /${f.rel}\n`));
    parts.push(readFileSync(join(tree.root, f.rel)));
  }
  const want = Buffer.concat(parts);
  const got = r.stdout ?? Buffer.alloc(0);
  if (!got.equals(want)) {
    throw new Error(`debugfs cat of ${sample.length} sample files differs from the source (${got.length} bytes read, ${want.length} expected)`);
  }
}

/**
 * Full check of a built image against its source tree: e2fsck, counts, sample bytes (debugfs)
 * and, on a loop mount, the sample's bytes and every symlink's target through the kernel.
 */
export async function checkImage(img: string, tree: TreeInfo, scratchDir: string): Promise<void> {
  e2fsckClean(img);
  const want = expectedCount(tree);
  const sample = sampleFiles(tree, 24);
  if (loopAvailable()) {
    const mnt = join(scratchDir, 'check-mnt');
    mountLoop(img, mnt, 'ro');
    try {
      sameCount(countHostTree(mnt), want, 'kernel loop mount');
      for (const f of sample) {
        if (!readFileSync(join(mnt, f.rel)).equals(readFileSync(join(tree.root, f.rel)))) {
          throw new Error(`file /${f.rel} differs from the source (kernel loop mount)`);
        }
      }
      for (const l of tree.symlinks) {
        if (readlinkSync(join(mnt, l.rel)) !== l.target) throw new Error(`symlink /${l.rel} has the wrong target`);
      }
    } finally {
      unmount(mnt);
    }
  } else {
    sameCount(await countImageTree(img), want, 'ext4ts reader');
  }
  debugfsSample(img, tree, sample, join(scratchDir, 'debugfs-cmds'));
}

/** One leaf extent as `debugfs -R "ex PATH"` prints it. */
export interface ExtentRow {
  lblk: number;
  pblk: number;
  len: number;
  uninit: boolean;
}

/** The leaf extents of a file, from debugfs's `ex` listing (index rows are skipped). */
export function debugfsExtents(img: string, path: string): ExtentRow[] {
  const r = run('debugfs', ['-R', `ex ${path}`, img]);
  const out: ExtentRow[] = [];
  // " 1/ 1   1/  8     0 - 32767  34816 - 67583  32768 Uninit": level/depth, entry/entries,
  // logical range, physical range, length, flags. A leaf's level equals the depth.
  const re = /^\s*(\d+)\/\s*(\d+)\s+\d+\/\s*\d+\s+(\d+)\s+-\s+\d+\s+(\d+)\s+-\s+\d+\s+(\d+)\s*(\S*)/;
  for (const line of r.stdout.split('\n')) {
    const m = re.exec(line);
    if (m === null || m[1] !== m[2]) continue;
    out.push({ lblk: Number(m[3]), pblk: Number(m[4]), len: Number(m[5]), uninit: m[6] === 'Uninit' });
  }
  if (r.status !== 0 || (out.length === 0 && !r.stdout.includes('Level'))) {
    throw new Error(`debugfs ex ${path}: ${r.stderr.trim().slice(0, 200)}`);
  }
  return out;
}

/**
 * Checks a file written by the write bench straight from the image bytes: its extents (from
 * debugfs) cover [0, sizeBytes) with written (not unwritten) blocks, and the 1 MiB chunks at
 * `samplePositions` hold `expected(chunkIndex)`.
 */
export function checkWrittenFile(img: string, path: string, sizeBytes: number, blockBytes: number,
  samplePositions: readonly number[], expected: (chunk: number) => Uint8Array): ExtentRow[] {
  const ext = debugfsExtents(img, path);
  const blocks = ext.reduce((a, e) => a + e.len, 0);
  if (blocks !== Math.ceil(sizeBytes / blockBytes)) throw new Error(`${path}: extents map ${blocks} blocks, expected ${Math.ceil(sizeBytes / blockBytes)}`);
  const uninit = ext.filter((e) => e.uninit).length;
  if (uninit > 0) throw new Error(`${path}: ${uninit} extents still unwritten after close`);
  const fd = openSync(img, 'r');
  try {
    for (const pos of samplePositions) {
      const want = expected(pos / (1 << 20));
      const got = new Uint8Array(want.length);
      for (let off = 0; off < want.length; off += blockBytes) {
        const lblk = (pos + off) / blockBytes;
        const e = ext.find((x) => lblk >= x.lblk && lblk < x.lblk + x.len);
        if (e === undefined) throw new Error(`${path}: block ${lblk} not mapped`);
        readSync(fd, got, off, blockBytes, (e.pblk + lblk - e.lblk) * blockBytes);
      }
      if (!Buffer.from(got).equals(want)) throw new Error(`${path}: bytes at ${pos} differ from what was written`);
    }
  } finally {
    closeSync(fd);
  }
  return ext;
}
