/**
 * Section 4 (issue 2): the read direction. Extract workload A from an image made by `mke2fs -d`
 * with `ext4ts get` (the CLI, a fresh process like its rival) and with `debugfs -R "rdump / DIR"`,
 * alternating the tools run by run. Each extraction is checked (file count and bytes) before its
 * time counts and deleted after.
 *
 * System time is mostly the host filesystem creating files, the same work for both tools, and it
 * varies with the host (a no-journal ext4 host scans recently deleted inodes on every create, so
 * runs after `rm -rf` of the previous copy pay more).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, sh, type Options } from './env.js';
import { figures, roundRobin, summarize, type Figure } from './stats.js';
import { countHostTree, e2fsckClean } from './verify.js';
import { imageSizeMiB } from './build-bench.js';
import type { TreeInfo } from './workload.js';

export async function readBench(opts: Options, work: string, tree: TreeInfo, label: string, log: (s: string) => void): Promise<void> {
  const img = join(work, 'read.img');
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree.root, img, `${imageSizeMiB(tree.totalBytes)}M`]);
  e2fsckClean(img);
  const out = join(work, 'read-out');
  const clear = (): void => rmSync(out, { recursive: true, force: true });
  const check = (): void => {
    const got = countHostTree(out);
    if (got.files !== tree.files.length || got.bytes !== tree.totalBytes) {
      throw new Error(`extraction incomplete: ${got.files} files/${got.bytes} bytes, expected ${tree.files.length}/${tree.totalBytes}`);
    }
  };
  log(`read: workload ${label}`);
  try {
    const res = await roundRobin([
      { name: 'debugfs rdump', prep: () => { clear(); mkdirSync(out); }, run: () => void sh('debugfs', ['-R', `rdump / ${out}`, img]), check, cleanup: clear },
      { name: 'ext4ts get', prep: clear, run: () => void sh(process.execPath, [CLI, 'get', '-q', img, '/', out]), check, cleanup: clear },
    ], opts.runs, log);
    const anchor = res[0]!.status === 'ok' ? summarize(res[0]!.samples).seconds : undefined;
    for (const o of res) {
      const f: Figure = { section: 'read', name: o.name, workload: label, status: o.status, unit: 's', runs: o.samples.length };
      if (o.status === 'ok' && o.samples.length > 0) {
        const s = summarize(o.samples);
        Object.assign(f, s, { value: s.seconds });
        if (o.name === 'ext4ts get' && anchor !== undefined) f.ratios = [{ label: '× debugfs rdump', value: s.seconds / anchor }];
        else f.notes = ['(anchor)'];
      }
      figures.push(f);
    }
  } finally {
    rmSync(img, { force: true });
  }
}
