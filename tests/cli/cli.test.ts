/**
 * The ext4ts command end to end (child processes): info/ls/cat/stat/get on an image built by
 * `mke2fs -d` from a known tree, compared with what the tree and debugfs say; and the error
 * contract: one line on stderr, exit 1 for filesystem errors, 2 for usage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, writeFileSync, symlinkSync, readFileSync, lstatSync, readlinkSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const CLI = resolve(import.meta.dirname, '../../src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'ext4ts-cli-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function ext4ts(...args: string[]): { code: number | null; out: string; err: string; raw: Buffer } {
  const r = spawnSync(process.execPath, [CLI, ...args], { maxBuffer: 1 << 26 });
  return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString(), raw: r.stdout };
}

const tree = join(work, 'tree');
mkdirSync(join(tree, 'dir/sub'), { recursive: true });
writeFileSync(join(tree, 'hello.txt'), 'hello, ext4\n');
const big = Buffer.alloc(3 << 20);
for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
writeFileSync(join(tree, 'dir/big.bin'), big);
writeFileSync(join(tree, 'dir/sub/empty'), '');
symlinkSync('../hello.txt', join(tree, 'dir/link'));
const img = join(work, 'a.img');
execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-L', 'clitest', '-d', tree, img, '16M'], { stdio: 'pipe' });

test('ext4ts info: label, block size and features agree with dumpe2fs', () => {
  const r = ext4ts('info', '--json', img);
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out) as { label: string; blockSize: number; features: string[]; blocksCount: number };
  const dump = execFileSync('dumpe2fs', ['-h', img], { stdio: 'pipe' }).toString();
  assert.equal(info.label, 'clitest');
  assert.equal(info.blockSize, 4096);
  assert.equal(info.blocksCount, Number(/Block count:\s+(\d+)/.exec(dump)?.[1]));
  assert.deepEqual(info.features.sort(), (/Filesystem features:\s+(.*)/.exec(dump)?.[1] ?? '').trim().split(/\s+/).sort());
});

test('ext4ts ls: lists names like the source tree', () => {
  const r = ext4ts('ls', img, '/dir');
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.out.trim().split('\n').sort(), readdirSync(join(tree, 'dir')).sort());
  const l = ext4ts('ls', '-l', img, '/dir');
  assert.match(l.out, /^lrwxrwxrwx .* link -> \.\.\/hello\.txt$/m);
});

test('ext4ts cat: writes the exact bytes of a 3 MiB file', () => {
  const r = ext4ts('cat', img, '/dir/big.bin');
  assert.equal(r.code, 0, r.err);
  assert.ok(r.raw.equals(big));
});

test('ext4ts stat --json: extents equal debugfs ex', () => {
  const r = ext4ts('stat', '--json', img, '/dir/big.bin');
  assert.equal(r.code, 0, r.err);
  const st = JSON.parse(r.out) as { size: number; layout: string; extents: { lblk: number; len: number; pblk: number }[] };
  assert.equal(st.size, big.length);
  assert.equal(st.layout, 'extents');
  const ex = execFileSync('debugfs', ['-R', 'ex /dir/big.bin', img], { stdio: 'pipe' }).toString();
  const leaves = [...ex.matchAll(/^\s*(\d+)\/\s*(\d+)\s+\d+\/\s*\d+\s+(\d+)\s+-\s+\d+\s+(\d+)\s+-\s+\d+\s+(\d+)/gm)]
    .filter((m) => m[1] === m[2]).map((m) => ({ lblk: Number(m[3]), len: Number(m[5]), pblk: Number(m[4]) }));
  assert.deepEqual(st.extents.map((e) => ({ lblk: e.lblk, len: e.len, pblk: e.pblk })), leaves);
});

test('ext4ts get: copies the tree like cp -a (content, symlinks, modes)', () => {
  const dest = join(work, 'out');
  const r = ext4ts('get', '-q', img, '/', dest);
  assert.equal(r.code, 0, r.err);
  assert.ok(readFileSync(join(dest, 'dir/big.bin')).equals(big));
  assert.equal(readFileSync(join(dest, 'hello.txt'), 'utf8'), 'hello, ext4\n');
  assert.equal(readlinkSync(join(dest, 'dir/link')), '../hello.txt');
  assert.equal(lstatSync(join(dest, 'dir/sub')).mode & 0o7777, lstatSync(join(tree, 'dir/sub')).mode & 0o7777);
  // mke2fs -d stores whole seconds (it drops nanoseconds), so the copy has whole seconds too.
  assert.equal(lstatSync(join(dest, 'hello.txt')).mtimeMs, Math.floor(lstatSync(join(tree, 'hello.txt')).mtimeMs / 1000) * 1000);
  const again = ext4ts('get', img, '/', dest);
  assert.equal(again.code, 1);
  assert.match(again.err, /^ext4ts: EEXIST: destination already exists/);
});

test('ext4ts: errors are one line with exit code 1; usage errors exit 2', () => {
  const missing = ext4ts('cat', img, '/nope');
  assert.equal(missing.code, 1);
  assert.equal(missing.err, "ext4ts: ENOENT: no such file or directory, open '/nope'\n");
  const notImg = join(work, 'zero.img');
  writeFileSync(notImg, Buffer.alloc(1 << 20));
  const bad = ext4ts('info', notImg);
  assert.equal(bad.code, 1);
  assert.equal(bad.err, 'ext4ts: EFSCORRUPTED: superblock magic is 0x0000 at block 0\n');
  const json = ext4ts('info', '--json', notImg);
  assert.equal(JSON.parse(json.err).error.code, 'EFSCORRUPTED');
  assert.equal(ext4ts('frobnicate').code, 2);
  assert.equal(ext4ts('cat', img).code, 2);
});

test('ext4ts demo: builds the sample image with ext4ts mkfs -d, e2fsck passes it, every file reads back identical', () => {
  const r = ext4ts('demo');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /with ext4ts mkfs -d/);
  assert.match(r.out, /e2fsck -fn: clean\./);
  assert.match(r.out, /Read back: all \d+ files are byte-identical to the sample tree\./);
});

test('ext4ts demo without e2fsprogs: still builds with ext4ts and checks every file against the tree', () => {
  // A PATH holding only node: e2fsck cannot be found, the builder needs nothing from the host.
  const r = spawnSync(process.execPath, [CLI, 'demo'], { env: { PATH: resolve(process.execPath, '..') } });
  assert.equal(r.status, 0, r.stderr.toString());
  const out = r.stdout.toString();
  assert.doesNotMatch(out, /e2fsck -fn: clean/);
  assert.match(out, /Read back: all \d+ files are byte-identical to the sample tree\./);
});

test('ext4ts get keeps timestamps before 1970 and after 2038 (node turns negative numbers into "now")', async () => {
  const { loadFixture } = await import('../helpers/fixtures.js');
  const fx = await loadFixture('ext4-4k');
  try {
    const dest = join(work, 'times-out');
    const r = ext4ts('get', '-q', fx.imagePath, '/times', dest);
    assert.equal(r.code, 0, r.err);
    for (const e of fx.manifest.entries.filter((x) => x.path.startsWith('/times/') && x.type === 'file')) {
      const st = lstatSync(join(dest, e.path.slice('/times/'.length)), { bigint: true });
      const sec = Number(st.mtimeNs / 1_000_000_000n) - (st.mtimeNs < 0n && st.mtimeNs % 1_000_000_000n !== 0n ? 1 : 0);
      // Node passes times as doubles, so a time 1 ns before a second boundary may round up.
      assert.ok(Math.abs(sec - e.mtime.sec) <= 1, `${e.path} mtime ${sec}, want ${e.mtime.sec}`);
    }
  } finally {
    await fx.cleanup();
  }
});
