/**
 * `ext4ts mkfs -d SRC IMAGE [SIZE]` end to end through the command (child processes): the summary
 * line and --json, mkfs options passed through (-L, -b, -U), owner flags, SOURCE_DATE_EPOCH,
 * --quiet, a directory's xattrs (and --no-xattrs), no progress bar when stdout is not a terminal, and the error contract (one line, exit 1,
 * no image left) for a too-small SIZE and a hostile tar; flags that need -d are refused without it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pack } from 'tar-stream';
import { makeSpec, writeHostTree, assertFsckClean } from './helpers.js';
import { haveCommands, requireCommands, skipBecause } from '../helpers/env.js';

const CLI = resolve(import.meta.dirname, '../../src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'ext4ts-build-cli-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const tree = join(work, 'tree');
const hasAttr = haveCommands('getfattr', 'setfattr');
const spec = makeSpec({ seed: 5, bigDir: 20 });
writeHostTree(spec, tree);

function ext4ts(args: string[], env: Record<string, string> = {}): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, SOURCE_DATE_EPOCH: '', ...env }, maxBuffer: 1 << 26 });
  return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
}

const debugfs = (img: string, cmd: string): string =>
  execFileSync('debugfs', ['-R', cmd, img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();

test('ext4ts mkfs -d DIR IMAGE: summary line, no progress bar off a terminal, e2fsck clean', () => {
  const img = join(work, 'a.img');
  const r = ext4ts(['mkfs', '-d', tree, img]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^built .*a\.img: \d+ files, \d+ dirs, 5 symlinks, 2 hard links, 1 fifos, \d+ bytes in \d+\.\d\d s \(\d+\.\d MiB\/s\); \d+ MiB image, \d+ inodes, UUID [0-9a-f-]{36}\n$/);
  assert.doesNotMatch(r.err, /\[|ETA/, 'no progress bar when stdout is a pipe');
  if (hasAttr) assert.doesNotMatch(r.err, /warning/);
  else assert.match(r.err, /warning: extended attributes of a directory source are not copied/);
  assertFsckClean(img);
});

test('ext4ts mkfs -d copies a directory\'s xattrs (getfattr); --no-xattrs copies none', (t) => {
  requireCommands('attr', 'getfattr', 'setfattr');
  const src = join(work, 'xtree');
  mkdirSync(src);
  writeFileSync(join(src, 'tool'), 'x');
  const set = spawnSync('setfattr', ['-n', 'user.note', '-v', 'kept', join(src, 'tool')], { encoding: 'utf8' });
  if (set.status !== 0) {
    skipBecause(t, `the host filesystem of ${tmpdir()} takes no user xattrs: ${set.stderr}`);
    return;
  }
  for (const [name, extra, want] of [['xa.img', [], /user\.note \(4\) = "kept"/], ['xn.img', ['--no-xattrs'], /^$/]] as const) {
    const img = join(work, name);
    const r = ext4ts(['mkfs', '-q', '-d', src, ...extra, img]);
    assert.equal(r.code, 0, r.err);
    assertFsckClean(img);
    assert.match(debugfs(img, 'stat /tool'), /Type: regular/, 'the file is in the image (an empty ea_list proves nothing alone)');
    assert.match(debugfs(img, 'ea_list /tool').trim(), want);
  }
});

test('ext4ts mkfs -d --json with -L, -b, -U, --root-owner, --uid-map, --all-root', () => {
  const img = join(work, 'b.img');
  const uuid = '0b1d6a5e-1f2e-4c3d-8e4f-5a6b7c8d9e0f';
  const r = ext4ts(['mkfs', '-d', tree, '-L', 'rootfs', '-b', '2048', '-U', uuid, '--root-owner', '4321:8765', '--uid-map', '1000:1,65534:2', '--json', img]);
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out) as { uuid: string; blockSize: number; files: number; seconds: number; sourceKind: string };
  assert.equal(s.uuid, uuid);
  assert.equal(s.blockSize, 2048);
  assert.equal(s.sourceKind, 'dir');
  assert.ok(s.seconds > 0);
  const h = execFileSync('dumpe2fs', ['-h', img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  assert.match(h, /Filesystem volume name:\s+rootfs/);
  assert.match(h, /Block size:\s+2048/);
  assert.match(debugfs(img, 'stat /'), /User:\s+4321\s+Group:\s+8765/);
  const mapped = spec.find((e) => e.type === 'file' && e.uid === 1000)!;
  assert.match(debugfs(img, `stat "${mapped.path}"`), new RegExp(`User:\\s+1\\s+Group:\\s+${mapped.gid}\\s`));
  assertFsckClean(img);
  const c = ext4ts(['mkfs', '-d', tree, '--all-root', '-q', img]);
  assert.equal(c.code, 0, c.err);
  assert.equal(c.out + c.err, '', '--quiet prints nothing');
  assert.match(debugfs(img, 'stat /usr/hl-target'), /User:\s+0\s+Group:\s+0/);
});

test('ext4ts mkfs -d under SOURCE_DATE_EPOCH: two builds are byte-identical; --reproducible says so', () => {
  const sums = ['r1.img', 'r2.img'].map((n) => {
    const r = ext4ts(['mkfs', '-d', tree, '-q', join(work, n)], { SOURCE_DATE_EPOCH: '1600000000' });
    assert.equal(r.code, 0, r.err);
    return createHash('sha256').update(readFileSync(join(work, n))).digest('hex');
  });
  assert.equal(sums[0], sums[1]);
  const r = ext4ts(['mkfs', '-d', tree, '--reproducible', join(work, 'r3.img')]);
  assert.match(r.out, /\(reproducible\)\n$/);
});

test('ext4ts mkfs -d: a too-small SIZE and a tar with "../" fail in one line with exit 1 and leave no image', async () => {
  const img = join(work, 'fail.img');
  const r = ext4ts(['mkfs', '-d', tree, img, '2M']);
  assert.equal(r.code, 1, r.out + r.err);
  assert.match(r.err, /^ext4ts: ENOSPC: the content needs about .* MiB but an image of 2\.0 MiB offers/);
  assert.equal(r.err.trim().split('\n').length, 1);
  assert.ok(!existsSync(img));
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  p.entry({ name: '../../etc/cron.d/evil', type: 'file', size: 1 }, Buffer.from('x'));
  p.finalize();
  await done;
  mkdirSync(join(work, 'evil'));
  writeFileSync(join(work, 'evil/e.tar'), Buffer.concat(chunks));
  const t = ext4ts(['mkfs', '-d', join(work, 'evil/e.tar'), img]);
  assert.equal(t.code, 1);
  assert.match(t.err, /^ext4ts: EINVAL: path contains "\.\." .*e\.tar: \.\.\/\.\.\/etc\/cron\.d\/evil'\n$/);
  assert.ok(!existsSync(img));
});

test('ext4ts mkfs: builder flags without -d are usage errors; -d never replaces a non-file', () => {
  const r = ext4ts(['mkfs', '--all-root', join(work, 'x.img'), '8M']);
  assert.equal(r.code, 1);
  assert.match(r.err, /--all-root needs -d SRC/);
  assert.ok(!existsSync(join(work, 'x.img')));
  const nx = ext4ts(['mkfs', '--no-xattrs', join(work, 'x.img'), '8M']);
  assert.equal(nx.code, 1);
  assert.match(nx.err, /--no-xattrs needs -d SRC/);
  const d = ext4ts(['mkfs', '-d', tree, work]);
  assert.equal(d.code, 1);
  assert.match(d.err, /the image must be a regular file/);
});
