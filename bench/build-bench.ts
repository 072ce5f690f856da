/**
 * Section 1 (issue 6): building an image from a directory tree. Contenders, each timed from
 * nothing to a finished image on the host disk:
 * - `ext4ts mkfs -d SRC IMG SIZE` through the CLI (a fresh process like its rivals; its peak RSS
 *   is read by bench/rss-wrap.ts);
 * - `mke2fs -t ext4 -d SRC IMG SIZE` (the anchor);
 * - the npm `ext2fs` package (libext2fs in WASM) copying into an image mke2fs formatted (the
 *   format is inside the time); slow, so run once per workload and not in --quick;
 * - the Linux kernel: mkfs.ext4, loop mount, `cp -a`, sync, umount (root + loop devices only);
 * - the raw-write limit: the same number of bytes written to one host file in 1 MiB writes plus
 *   fdatasync (content does not change the cost on a host fs that does not compress).
 * Every image is checked (verify.ts) before its time counts and deleted after.
 */
import { openSync, writeSync, fdatasyncSync, closeSync, rmSync, statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, benchScript, loopAvailable, mountLoop, unmount, run, sh, type Options } from './env.js';
import { figures, roundRobin, summarize, NotAvailable, mib, type Contender, type Figure, type Outcome } from './stats.js';
import { checkImage } from './verify.js';
import type { TreeInfo } from './workload.js';

const MiB = 1 << 20;

/** The image size every contender gets: content + 30% + 64 MiB, rounded up to MiB. */
export function imageSizeMiB(contentBytes: number): number {
  return Math.ceil((contentBytes * 1.3) / MiB) + 64;
}

/** Writes `totalBytes` to a new host file in 1 MiB writes and fdatasyncs it. */
export function rawWrite(path: string, totalBytes: number): void {
  const buf = new Uint8Array(MiB).fill(0xa5);
  const fd = openSync(path, 'w');
  try {
    for (let pos = 0; pos < totalBytes; pos += MiB) writeSync(fd, buf, 0, Math.min(MiB, totalBytes - pos), pos);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The contenders for one workload; `img` is the output path each uses (deleted after each run). */
function contenders(opts: Options, tree: TreeInfo, work: string): Contender[] {
  const img = join(work, 'build.img');
  const size = `${imageSizeMiB(tree.totalBytes)}M`;
  const rm = (): void => rmSync(img, { force: true });
  const check = (): Promise<void> => checkImage(img, tree, work);
  const rssFile = join(work, 'rss.txt');
  const mnt = join(work, 'build-mnt');
  const list: Contender[] = [
    {
      name: 'ext4ts mkfs -d',
      prep: rm,
      run: () => {
        rmSync(rssFile, { force: true });
        const r = run(process.execPath, [benchScript('rss-wrap.js'), rssFile, CLI, 'mkfs', '-d', tree.root, img, size, '--quiet']);
        if (r.status !== 0) {
          if (/unknown option '-d'|unknown option "-d"/.test(r.stderr)) throw new NotAvailable('not built');
          throw new Error(`ext4ts mkfs -d exited ${r.status}: ${r.stderr.trim().slice(0, 300)}`);
        }
        return Number(readFileSync(rssFile, 'utf8')) / 1024;
      },
      check,
      cleanup: rm,
    },
    { name: 'mke2fs -d', prep: rm, run: () => void sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree.root, img, size]), check, cleanup: rm },
    {
      name: 'ext2fs (npm, WASM)',
      maxRuns: 1,
      ...(opts.quick ? { skip: 'skipped (--quick)' } : !opts.ext2fs ? { skip: 'skipped (--no-ext2fs)' } : {}),
      prep: rm,
      run: () => {
        sh('mke2fs', ['-q', '-F', '-t', 'ext4', img, size]);
        sh(process.execPath, [benchScript('ext2fs-child.js'), tree.root, img]);
      },
      check,
      cleanup: rm,
    },
    {
      name: 'kernel (loop mount, cp -a)',
      ...(loopAvailable() ? {} : { skip: 'n/a (needs root and loop devices)' }),
      prep: rm,
      run: () => {
        sh('mkfs.ext4', ['-q', '-F', img, size]);
        mountLoop(img, mnt);
        try {
          sh('cp', ['-a', `${tree.root}/.`, `${mnt}/`]);
          // syncfs of the loop filesystem only: a global sync would also wait for other work.
          sh('sync', ['-f', mnt]);
        } finally {
          unmount(mnt);
        }
      },
      check,
      cleanup: rm,
    },
    {
      name: 'raw write limit (node:fs)',
      prep: rm,
      run: () => rawWrite(img, tree.totalBytes),
      check: () => {
        if (statSync(img).size !== tree.totalBytes) throw new Error('raw file has the wrong size');
      },
      cleanup: rm,
    },
  ];
  return list;
}

/** Turns the outcomes of one workload into figures with their ratios. */
function toFigures(out: Outcome[], label: string, totalBytes: number): Figure[] {
  const by = new Map(out.map((o) => [o.name, o]));
  const sec = (name: string): number | undefined => {
    const o = by.get(name);
    return o !== undefined && o.status === 'ok' && o.samples.length > 0 ? summarize(o.samples).seconds : undefined;
  };
  const anchor = sec('mke2fs -d');
  const raw = sec('raw write limit (node:fs)');
  return out.map((o): Figure => {
    const f: Figure = { section: 'build', name: o.name, workload: label, status: o.status, unit: 's', runs: o.samples.length };
    if (o.status !== 'ok' || o.samples.length === 0) return f;
    const s = summarize(o.samples);
    Object.assign(f, s, { value: s.seconds });
    f.ratios = [];
    if (o.name === 'mke2fs -d') f.notes = ['(anchor)'];
    else if (anchor !== undefined && o.name !== 'raw write limit (node:fs)') f.ratios.push({ label: '× mke2fs -d', value: s.seconds / anchor });
    if (o.name === 'ext4ts mkfs -d' && raw !== undefined) f.ratios.push({ label: 'of raw bandwidth', value: raw / s.seconds });
    if (o.name === 'raw write limit (node:fs)') f.notes = [`${(mib(totalBytes) / s.seconds).toFixed(0)} MiB/s`];
    if (o.name === 'ext4ts mkfs -d') f.notes = ['the CLI in a fresh process; RSS is its peak (VmHWM)'];
    if (o.name.startsWith('ext2fs')) f.notes = ['run once per workload (slow); mke2fs format + copy through its fs API'];
    if (o.name.startsWith('kernel')) f.notes = ['mkfs.ext4 + mount -o loop + cp -a + sync -f + umount'];
    return f;
  });
}

export async function buildBench(opts: Options, work: string, trees: { a: TreeInfo; aLabel: string; b: TreeInfo; bLabel: string },
  log: (s: string) => void): Promise<void> {
  for (const [tree, label] of [[trees.a, trees.aLabel], [trees.b, trees.bLabel]] as const) {
    log(`build: workload ${label}`);
    const out = await roundRobin(contenders(opts, tree, work), opts.runs, log);
    figures.push(...toFigures(out, label, tree.totalBytes));
  }
}
