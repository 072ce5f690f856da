/**
 * Proves the fixture corpus itself is right, independently of ext4ts: for every fixture the
 * image passes `e2fsck -fn`, and debugfs (e2fsprogs' own reader) agrees with the manifest that
 * was recorded from the kernel's view on inode number, type, permission bits, owner, size, link
 * count, all four timestamps, device numbers and fast-symlink targets, for every entry.
 * Images whose manifest says replayRequired get their journal replayed by e2fsck first.
 * When root + loop + ext4 are available, ext4-4k is also mounted read-only (and journal-replay
 * read-write, so the kernel can replay it) and re-walked with scripts/manifest.mjs; the walk
 * must equal the stored manifest exactly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rmdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withKernelMount } from '../helpers/check-image.js';
import {
  canLoopMount,
  listFixtures,
  loadFixture,
  repoRoot,
  type ManifestEntry,
  type TimeSpec,
} from '../helpers/fixtures.js';
import { requireCommands, skipBecause } from '../helpers/env.js';

function run(cmd: string, args: string[], input?: string): { status: number | null; out: string; err: string } {
  const r = spawnSync(cmd, args, { input, maxBuffer: 1 << 28, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout, err: r.stderr };
}


interface DebugfsStat {
  ino: number;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  times: Partial<Record<'atime' | 'mtime' | 'ctime' | 'crtime', TimeSpec>>;
  rdev?: { major: number; minor: number };
  fastLink?: string;
}

const TYPE_NAMES: Record<string, ManifestEntry['type']> = {
  regular: 'file',
  directory: 'dir',
  symlink: 'symlink',
  FIFO: 'fifo',
  'character special': 'chr',
  'block special': 'blk',
  socket: 'sock',
};

/** The kernel's reading of an on-disk timestamp (ext4_decode_extra_time). */
function decodeTime(lo: number, extra: number | undefined): TimeSpec {
  const sec32 = lo | 0; // signed 32-bit
  if (extra === undefined) return { sec: sec32, nsec: 0 };
  return { sec: sec32 + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
}

function parseStat(text: string): DebugfsStat {
  const num = (re: RegExp, what: string): number => {
    const m = re.exec(text);
    if (!m) throw new Error(`debugfs stat: no ${what} in:\n${text}`);
    return Number(m[1]);
  };
  const typeMatch = /Type: (.+?)\s{2,}Mode:/.exec(text);
  const modeMatch = /Mode:\s+([0-7]+)/.exec(text);
  const st: DebugfsStat = {
    ino: num(/^Inode: (\d+)/m, 'Inode'),
    type: TYPE_NAMES[typeMatch?.[1]?.trim() ?? ''] ?? `?${typeMatch?.[1] ?? ''}`,
    mode: parseInt(modeMatch?.[1] ?? 'NaN', 8),
    uid: num(/^User:\s+(-?\d+)/m, 'User') >>> 0,
    gid: num(/Group:\s+(-?\d+)/, 'Group') >>> 0,
    size: num(/Size: (\d+)/, 'Size'),
    links: num(/^Links: (\d+)/m, 'Links'),
    times: {},
  };
  for (const m of text.matchAll(/^\s*(atime|mtime|ctime|crtime): 0x([0-9a-f]{8})(?::([0-9a-f]{8}))? --/gm)) {
    st.times[m[1] as 'atime'] = decodeTime(parseInt(m[2]!, 16), m[3] === undefined ? undefined : parseInt(m[3], 16));
  }
  const dev = /Device major\/minor number: (\d+):(\d+)/.exec(text);
  if (dev) st.rdev = { major: Number(dev[1]), minor: Number(dev[2]) };
  const fl = /^Fast link dest: "(.*)"$/m.exec(text);
  if (fl?.[1] !== undefined) st.fastLink = fl[1];
  return st;
}

/** `stat` of many paths in one debugfs process; returns path -> raw stat text. */
function debugfsStats(image: string, paths: string[]): Map<string, string> {
  const cmds = paths.map((p) => `stat "${p}"`).join('\n') + '\n';
  const r = run('debugfs', ['-f', '-', image], cmds);
  const res = new Map<string, string>();
  let cur: string | undefined;
  let buf: string[] = [];
  const flush = (): void => {
    if (cur !== undefined) res.set(cur, buf.join('\n'));
  };
  for (const line of r.out.split('\n')) {
    const m = /^debugfs: stat "(.*)"$/.exec(line);
    if (m) {
      flush();
      cur = m[1];
      buf = [];
    } else buf.push(line);
  }
  flush();
  return res;
}

for (const name of listFixtures()) {
  test(`fixture ${name}: e2fsck -fn is clean and debugfs agrees with the manifest`, async (t) => {
    requireCommands('e2fsprogs', 'e2fsck', 'debugfs');
    const fx = await loadFixture(name);
    try {
      const m = fx.manifest;
      assert.equal(m.image, name);
      assert.equal(m.populatedBy, 'kernel');
      assert.ok([1024, 2048, 4096].includes(m.blockSize), 'blockSize');
      const paths = m.entries.map((e) => e.path);
      assert.deepEqual(paths, [...paths].sort(), 'entries sorted by path');
      assert.equal(new Set(paths).size, paths.length, 'paths unique');
      assert.ok(paths.includes('/') && paths.includes('/lost+found'), 'has / and /lost+found');
      assert.ok(!paths.some((p) => p.startsWith('/lost+found/')), 'lost+found contents skipped');

      if (m.replayRequired) {
        const r = run('e2fsck', ['-E', 'journal_only', '-y', fx.imagePath]);
        assert.ok(r.status === 0 || r.status === 1, `journal replay by e2fsck: ${r.status}\n${r.out}${r.err}`);
        t.diagnostic('journal replayed with e2fsck -E journal_only before checking');
      }
      const fsck = run('e2fsck', ['-fn', fx.imagePath]);
      assert.equal(fsck.status, 0, `e2fsck -fn exit status\n${fsck.out}${fsck.err}`);

      const stats = debugfsStats(fx.imagePath, paths);
      const inodes = new Map<number, ManifestEntry[]>();
      for (const e of m.entries) {
        const where = `${name}:${e.path}`;
        const text = stats.get(e.path);
        assert.ok(text !== undefined, `${where}: debugfs printed nothing`);
        const st = parseStat(text);
        assert.equal(st.ino, e.ino, `${where}: ino`);
        assert.equal(st.type, e.type, `${where}: type`);
        assert.equal(st.mode, e.mode, `${where}: mode`);
        assert.equal(st.uid, e.uid, `${where}: uid`);
        assert.equal(st.gid, e.gid, `${where}: gid`);
        assert.equal(st.size, e.size, `${where}: size`);
        assert.equal(st.links, e.nlink, `${where}: links`);
        assert.deepEqual(st.times.atime, e.atime, `${where}: atime`);
        assert.deepEqual(st.times.mtime, e.mtime, `${where}: mtime`);
        assert.deepEqual(st.times.ctime, e.ctime, `${where}: ctime`);
        assert.deepEqual(st.times.crtime, e.crtime, `${where}: crtime`);
        if (e.type === 'chr' || e.type === 'blk') assert.deepEqual(st.rdev, e.rdev, `${where}: rdev`);
        if (st.fastLink !== undefined && e.targetHex === undefined) assert.equal(st.fastLink, e.target, `${where}: fast link`);
        if (e.type === 'symlink') assert.equal(e.size, Buffer.from(e.targetHex ?? e.target ?? '', e.targetHex ? 'hex' : 'utf8').length, `${where}: target length`);
        inodes.set(e.ino, [...(inodes.get(e.ino) ?? []), e]);
      }
      // Hard links: every name of a non-directory inode is listed and says the same thing.
      for (const [ino, names] of inodes) {
        const first = names[0]!;
        if (first.type === 'dir') {
          assert.equal(names.length, 1, `inode ${ino}: directory with several names`);
          continue;
        }
        assert.equal(names.length, first.nlink, `inode ${ino} (${first.path}): names found vs nlink`);
        for (const n of names) assert.deepEqual({ ...n, path: first.path }, first, `${n.path}: same inode as ${first.path}`);
      }
      t.diagnostic(`${m.entries.length} entries agree with debugfs (${m.mkfs.split(' ').slice(0, 1)}, ${m.blockSize}-byte blocks)`);
    } finally {
      await fx.cleanup();
    }
  });
}

test('kernel re-walk: a fresh mount of the fixtures equals the stored manifests', async (t) => {
  const can = canLoopMount();
  if (!can.ok) {
    skipBecause(t, `the kernel re-walk needs loop mounts: ${can.reason}`);
    return;
  }
  requireCommands('attr', 'getfattr');
  const manifestJs = join(repoRoot(), 'scripts', 'manifest.mjs');
  const wanted: Array<{ name: string; rw: boolean }> = [
    { name: 'ext4-4k', rw: false },
    // the kernel must replay this journal, which a read-only loop device would forbid
    { name: 'journal-replay', rw: true },
  ];
  for (const { name, rw } of wanted.filter((w) => listFixtures().includes(w.name))) {
    const fx = await loadFixture(name);
    const mnt = await mkdtemp(join(tmpdir(), `ext4ts-mnt-${name}-`));
    try {
      const how = { rw, options: ['noatime'], type: fx.manifest.fsType ?? 'ext4' };
      await withKernelMount(t, fx.imagePath, mnt, (root) => {
        const r = run(process.execPath, [manifestJs, root, '--entries-only']);
        assert.equal(r.status, 0, `manifest.mjs: ${r.err}`);
        const entries = JSON.parse(r.out) as ManifestEntry[];
        assert.deepEqual(entries, fx.manifest.entries, `${name}: kernel view on remount vs stored manifest`);
        t.diagnostic(`${name}: ${entries.length} entries re-walked through the kernel (mount -o ${rw ? 'loop,noatime' : 'loop,ro,noatime'}) equal the manifest`);
      }, how);
    } finally {
      if (existsSync(mnt)) await rmdir(mnt); // never recursive: withKernelMount has unmounted it (or detached it lazily)
      await fx.cleanup();
    }
  }
});
