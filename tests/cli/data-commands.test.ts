/**
 * The data-path commands end to end through the built CLI (child processes): `ext4ts put` of a
 * host tree into images with 1 KiB and 4 KiB blocks, compared with the source through the kernel
 * (a read-only loop mount, where this machine allows one) and through `ext4ts get`; holes of
 * sparse sources kept (also sub-page ones); `--stats` and its engine facts; the fallocate modes;
 * `truncate` with the data flags; page sizes that must not change the bytes; usage errors.
 * Every image written is checked with `e2fsck -fn`.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  mkdtempSync, rmSync, mkdirSync, writeFileSync, symlinkSync, linkSync, openSync, writeSync, closeSync,
  readFileSync, readdirSync, lstatSync, readlinkSync, chownSync, chmodSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { withKernelMount } from '../helpers/check-image.js';
import { BAD_DIR, BAD_FILE, BAD_LINK, bytePath } from '../helpers/byte-names.js';

const CLI = resolve(import.meta.dirname, '../../src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'ext4ts-data-'));
after(() => rmSync(work, { recursive: true, force: true }));
const isRoot = process.getuid?.() === 0;

function ext4ts(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { maxBuffer: 1 << 26 });
  return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
}

/** Runs the CLI and asserts success; returns stdout. */
function ok(...args: string[]): string {
  const r = ext4ts(args);
  assert.equal(r.code, 0, `ext4ts ${args.join(' ')}: ${r.err}`);
  return r.out;
}

function cat(img: string, path: string): Buffer {
  const r = spawnSync(process.execPath, [CLI, 'cat', img, path], { maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

function mkimg(name: string, blockSize: number, size = '64M'): string {
  const img = join(work, name);
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', String(blockSize), img, size], { stdio: 'pipe' });
  return img;
}

function assertClean(img: string): void {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  assert.equal(r.status, 0, `e2fsck -fn ${img}: ${r.stdout}${r.stderr}`);
}

/** Deterministic pseudo-random bytes (xorshift32), so failures replay. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Writes `data` at `pos` of an existing file (no truncation: holes stay). */
function pwrite(path: string, pos: number, data: Buffer): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, data, 0, data.length, pos);
  closeSync(fd);
}

/** Sets atime and mtime with nanoseconds (node's utimes takes floats and loses them). */
function touchNs(path: string, epoch: string): void {
  execFileSync('touch', ['-h', '-d', `@${epoch}`, path]);
}

/** Number of blocks of `bs` bytes of `data` that hold a non-zero byte. */
function nonZeroBlocks(data: Buffer, bs: number): number {
  let n = 0;
  for (let off = 0; off < data.length; off += bs) if (data.subarray(off, off + bs).some((b) => b !== 0)) n++;
  return n;
}

const SPARSE_SIZE = 300_000;
/** The data pieces of the sparse file: sub-page holes between the first two (1 KiB blocks 1-2). */
const SPARSE_PIECES: [pos: number, len: number][] = [[0, 100], [3072, 30], [20_000, 5000], [131_072, 4096]];

/**
 * The host tree: nested directories, files of several sizes (empty, one byte, across block and
 * page edges, more than one 1 MiB chunk), a symlink, a hard link, a FIFO, a sparse file ending
 * in a hole, owners and modes, and times with nanoseconds (set last, directories after children).
 */
function makeTree(root: string): void {
  mkdirSync(join(root, 'a/b/c'), { recursive: true });
  mkdirSync(join(root, 'empty-dir'));
  const sizes: [string, number][] = [['empty', 0], ['one', 1], ['a/k1', 1000], ['a/p1', 4097], ['a/b/100k', 100_000], ['a/b/c/big', 1_572_869]];
  sizes.forEach(([p, n], i) => writeFileSync(join(root, p), bytes(n, i + 1)));
  symlinkSync('b/100k', join(root, 'a/sym'));
  linkSync(join(root, 'a/k1'), join(root, 'a/b/hard'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  const sparse = join(root, 'sparse');
  execFileSync('truncate', ['-s', String(SPARSE_SIZE), sparse]);
  SPARSE_PIECES.forEach(([pos, len], i) => pwrite(sparse, pos, bytes(len, 100 + i)));
  chmodSync(join(root, 'a/p1'), 0o4750);
  chmodSync(join(root, 'a/b'), 0o2770);
  if (isRoot) {
    chownSync(join(root, 'a/p1'), 1234, 5678);
    chownSync(join(root, 'a/b'), 42, 43);
    execFileSync('chown', ['-h', '7:8', join(root, 'a/sym')]);
  }
  setTimes(root);
}

/**
 * Gives every entry of the tree its own atime and mtime with nanoseconds (children before their
 * directories). Reading the source moves its atimes (relatime), so each put starts from here.
 */
function setTimes(root: string): void {
  const all = walk(root).map((e) => e.rel).sort().reverse();
  all.forEach((rel, i) => touchNs(join(root, rel), `${1_600_000_000 + i * 1001}.${String(123_456_789 + i).padStart(9, '0')}`));
}

interface Entry {
  rel: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  blocks: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ino: bigint;
  nlink: number;
  target?: string;
  sha?: string;
}

/**
 * Every entry under `root` (root itself as '.'), as lstat shows it, with file hashes. All stats
 * are taken before any file is read: reading moves atimes (also of a later hard link's path).
 */
function walk(root: string): Entry[] {
  const entries = statTree(root);
  for (const e of entries) if (e.type === 'file') e.sha = createHash('sha256').update(readFileSync(join(root, e.rel))).digest('hex');
  return entries;
}

function statTree(root: string, rel = '.'): Entry[] {
  const p = join(root, rel);
  const st = lstatSync(p, { bigint: true });
  const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : 'other';
  const e: Entry = {
    rel, type, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size),
    blocks: Number(st.blocks), atimeNs: st.atimeNs, mtimeNs: st.mtimeNs, ino: st.ino, nlink: Number(st.nlink),
  };
  if (type === 'symlink') e.target = readlinkSync(p);
  const out = [e];
  if (type === 'dir') for (const n of readdirSync(p).sort()) out.push(...statTree(root, rel === '.' ? n : `${rel}/${n}`));
  return out;
}

/** Hard-link groups: the sets of paths that share an inode (size > 1 only). */
function linkGroups(entries: Entry[]): string[][] {
  const m = new Map<bigint, string[]>();
  for (const e of entries) if (e.type !== 'dir') m.set(e.ino, [...(m.get(e.ino) ?? []), e.rel]);
  return [...m.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort();
}

/** What must be equal between the source and a copy (sizes of directories excepted). */
function comparable(e: Entry, opts: { atime: boolean; nsExact: boolean }): Record<string, unknown> {
  const t = (ns: bigint): bigint => (opts.nsExact ? ns : ns / 1000n); // extract restores microseconds
  return {
    rel: e.rel, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.type === 'dir' ? 0 : e.size,
    mtime: e.type === 'symlink' && !opts.nsExact ? 0 : t(e.mtimeNs), atime: opts.atime ? t(e.atimeNs) : 0,
    nlink: e.type === 'dir' ? 0 : e.nlink, target: e.target, sha: e.sha,
  };
}

/** How the tests mount images through the kernel: read-only and noatime (atimes are compared to the nanosecond). */
const KERNEL_MOUNT = { options: ['noatime'] };

const src = join(work, 'tree');
mkdirSync(src);
makeTree(src);
const srcEntries = walk(src); // each entry's times are taken before it is read
const sparseData = readFileSync(join(src, 'sparse'));

for (const bs of [1024, 4096]) {
  test(`ext4ts put: a host tree into a ${bs}-byte-block image equals the source (kernel mount, ext4ts get), holes kept`, async (t) => {
    const img = mkimg(`put-${bs}.img`, bs);
    setTimes(src);
    ok('put', '-q', img, src, '/');
    assertClean(img);
    // Through ext4ts get (owners restored as root; times to the microsecond).
    const got = join(work, `got-${bs}`);
    ok('get', '-q', img, '/tree', got);
    const gotEntries = walk(got);
    const opts = { atime: false, nsExact: false };
    assert.deepEqual(gotEntries.map((e) => comparable(e, opts)), srcEntries.map((e) => comparable(e, opts)));
    assert.deepEqual(linkGroups(gotEntries), linkGroups(srcEntries));
    // Holes: the image's inode holds exactly the non-zero blocks of the sparse source.
    const stat = JSON.parse(ok('stat', '--json', img, '/tree/sparse')) as { size: number; blocks: number };
    assert.equal(stat.size, SPARSE_SIZE);
    assert.equal(stat.blocks, (nonZeroBlocks(sparseData, bs) * bs) / 512, 'allocated blocks of /tree/sparse');
    await withKernelMount(t, img, join(work, `mnt-put-${bs}`), (mnt) => {
      const kernel = walk(join(mnt, 'tree'));
      const exact = { atime: true, nsExact: true };
      assert.deepEqual(kernel.map((e) => comparable(e, exact)), srcEntries.map((e) => comparable(e, exact)));
      assert.deepEqual(linkGroups(kernel), linkGroups(srcEntries));
      const sp = kernel.find((e) => e.rel === 'sparse');
      assert.ok(sp !== undefined && sp.blocks * 512 < SPARSE_SIZE, `sparse file allocates ${sp?.blocks} sectors`);
      assert.equal(sp.blocks, (nonZeroBlocks(sparseData, bs) * bs) / 512);
    }, KERNEL_MOUNT);
  });
}

test('ext4ts put: into an existing directory, over an existing file (replaced), with --json', () => {
  const img = mkimg('put-replace.img', 4096, '16M');
  const host = join(work, 'replace');
  mkdirSync(host);
  const f = join(host, 'f');
  writeFileSync(f, bytes(50_000, 7));
  ok('mkdir', img, '/d');
  const sum = JSON.parse(ok('put', '--json', img, f, '/d')) as Record<string, unknown>;
  assert.deepEqual(sum, { dest: '/d/f', files: 1, dirs: 0, symlinks: 0, hardlinks: 0, special: 0, bytes: 50_000, sparse: 0 });
  assert.deepEqual(cat(img, '/d/f'), readFileSync(f));
  writeFileSync(f, bytes(3000, 8)); // smaller: the old tail must be gone
  ok('put', '-q', img, f, '/d/f');
  assert.deepEqual(cat(img, '/d/f'), readFileSync(f));
  const r = ext4ts(['put', img, join(host, 'missing'), '/x']);
  assert.equal(r.code, 1);
  assert.match(r.err, /^ext4ts: ENOENT/);
  assert.equal(r.err.trim().split('\n').length, 1, 'one line');
  assertClean(img);
});

test('ext4ts put: host names that are not UTF-8 keep their bytes (kernel, ext4ts get); the image is e2fsck-clean', async (t) => {
  const host = join(work, 'bytes-src');
  const content = bytes(70_000, 11);
  mkdirSync(host);
  mkdirSync(bytePath(host, BAD_DIR));
  writeFileSync(bytePath(host, BAD_DIR, BAD_FILE), content);
  symlinkSync(bytePath('', BAD_DIR, BAD_FILE).subarray(1), bytePath(host, BAD_LINK)); // "d\xff/f\xe9"
  const img = mkimg('put-bytes.img', 4096, '16M');
  const sum = JSON.parse(ok('put', '--json', img, host, '/')) as Record<string, unknown>;
  assert.deepEqual([sum.files, sum.dirs, sum.symlinks, sum.bytes], [1, 2, 1, content.length]);
  assertClean(img);
  // ext4ts get writes the names back byte for byte.
  const got = join(work, 'bytes-got');
  ok('get', '-q', img, '/bytes-src', got);
  assert.deepEqual(readdirSync(got, { encoding: 'buffer' }).map((b) => b.toString('hex')).sort(), [BAD_DIR, BAD_LINK].map((b) => b.toString('hex')).sort());
  assert.deepEqual(readFileSync(bytePath(got, BAD_DIR, BAD_FILE)), content);
  assert.deepEqual(readlinkSync(bytePath(got, BAD_LINK), { encoding: 'buffer' }), readlinkSync(bytePath(host, BAD_LINK), { encoding: 'buffer' }));
  await withKernelMount(t, img, join(work, 'mnt-put-bytes'), (mnt) => {
    const top = join(mnt, 'bytes-src');
    assert.deepEqual(readdirSync(top, { encoding: 'buffer' }).map((b) => b.toString('hex')).sort(), [BAD_DIR, BAD_LINK].map((b) => b.toString('hex')).sort());
    assert.deepEqual(readFileSync(bytePath(top, BAD_DIR, BAD_FILE)), content);
    assert.deepEqual(readFileSync(bytePath(top, BAD_LINK)), content, 'the symlink resolves through the byte names');
  }, KERNEL_MOUNT);
});

test('ext4ts put --stats: one JSON line with the six keys; --max-bio-kib 128 splits an extent into many bios', () => {
  const host = join(work, 'big.bin');
  writeFileSync(host, bytes(4 << 20, 99));
  for (const bs of [1024, 4096]) {
    const img = mkimg(`stats-${bs}.img`, bs, '32M');
    const out = ok('put', '-q', '--stats', '--max-bio-kib', '128', img, host, '/big');
    const lines = out.trim().split('\n');
    assert.equal(lines.length, 1, out);
    const st = JSON.parse(lines[0]!) as Record<string, number>;
    assert.deepEqual(Object.keys(st), ['bios', 'ioEnds', 'unwrittenIoEnds', 'conversions', 'pagesWritten', 'bytesWritten']);
    assert.ok(st['bios']! > st['ioEnds']!, `bios ${st['bios']} > ioEnds ${st['ioEnds']} (${bs})`);
    assert.equal(st['conversions'], st['unwrittenIoEnds'], `conversions == unwrittenIoEnds (${bs}): ${out}`);
    assert.equal(st['bytesWritten'], Math.ceil((4 << 20) / bs) * bs);
    assertClean(img);
    assert.deepEqual(cat(img, '/big'), readFileSync(host));
  }
});

test('data flags: bad --max-bio-kib and --page-size are usage errors (exit 2, one line)', () => {
  const img = mkimg('usage.img', 4096, '8M');
  const host = join(work, 'one-byte');
  writeFileSync(host, 'x');
  for (const args of [['--max-bio-kib', '6'], ['--max-bio-kib', '0'], ['--max-bio-kib', 'x'], ['--page-size', '8192']]) {
    const r = ext4ts(['put', ...args, img, host, '/f']);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    assert.match(r.err, new RegExp(`^ext4ts: ${args[0]}`));
  }
  const r = ext4ts(['fallocate', img, '/f', '-l', '4K', '--punch-hole', '--zero-range']);
  assert.equal(r.code, 2, r.err);
  assertClean(img);
});

test('ext4ts put --page-size 16384 and 65536: the same bytes as the source', () => {
  for (const ps of ['16384', '65536']) {
    const img = mkimg(`page-${ps}.img`, 1024, '32M');
    ok('put', '-q', '--page-size', ps, '--max-bio-kib', '64', img, src, '/');
    assertClean(img);
    for (const e of srcEntries.filter((x) => x.type === 'file')) {
      assert.deepEqual(cat(img, `/tree/${e.rel}`), readFileSync(join(src, e.rel)), `${e.rel} with ${ps}-byte pages`);
    }
    const stat = JSON.parse(ok('stat', '--json', img, '/tree/sparse')) as { blocks: number };
    assert.equal(stat.blocks, (nonZeroBlocks(sparseData, 1024) * 1024) / 512, `holes with ${ps}-byte pages`);
  }
});

test('ext4ts fallocate: default, --keep-size, --punch-hole, --zero-range; ext4ts truncate with the data flags', async (t) => {
  for (const bs of [1024, 4096]) {
    const img = mkimg(`falloc-${bs}.img`, bs, '16M');
    const host = join(work, `falloc-src-${bs}`);
    const data = bytes(100_000, 5);
    writeFileSync(host, data);
    ok('put', '-q', img, host, '/f');
    const expect = Buffer.alloc(260_000);
    data.copy(expect);
    const step = (args: string[], size: number, note: string): { size: number; blocks: number } => {
      const s = JSON.parse(ok('fallocate', '--json', img, '/f', ...args)) as { size: number; blocks: number };
      assert.equal(s.size, size, note);
      assertClean(img);
      assert.deepEqual(cat(img, '/f'), expect.subarray(0, size), note);
      return s;
    };
    const s0 = JSON.parse(ok('stat', '--json', img, '/f')) as { blocks: number };
    const s1 = step(['-o', '200000', '-l', '50000'], 250_000, 'preallocate past the end grows the size');
    assert.ok(s1.blocks > s0.blocks);
    const s2 = step(['-o', '250000', '-l', '10000', '--keep-size'], 250_000, '--keep-size');
    assert.ok(s2.blocks > s1.blocks, 'blocks preallocated past EOF');
    expect.fill(0, 1000, 9000);
    const s3 = step(['-o', '1000', '-l', '8000', '--punch-hole'], 250_000, '--punch-hole (sub-block edges)');
    assert.ok(s3.blocks < s2.blocks, 'blocks freed');
    expect.fill(0, 30_000, 70_123);
    step(['-o', '30000', '-l', '40123', '--zero-range'], 250_000, '--zero-range');
    // truncate (data flags accepted): shrink into the zeroed range, then grow.
    const tr = JSON.parse(ok('truncate', '--json', '--page-size', '16384', img, '50000', '/f')) as { size: number };
    assert.equal(tr.size, 50_000);
    ok('truncate', '-q', img, '60K', '/f');
    expect.fill(0, 50_000);
    assert.deepEqual(cat(img, '/f'), expect.subarray(0, 61_440));
    const created = JSON.parse(ok('fallocate', '--json', '-l', '1M', img, '/new')) as { size: number; blocks: number };
    assert.deepEqual(created, { path: '/new', size: 1 << 20, blocks: (1 << 20) / 512 });
    assertClean(img);
    await withKernelMount(t, img, join(work, `mnt-falloc-${bs}`), (mnt) => {
      assert.deepEqual(readFileSync(join(mnt, 'f')), expect.subarray(0, 61_440));
      assert.deepEqual(readFileSync(join(mnt, 'new')), Buffer.alloc(1 << 20));
    }, KERNEL_MOUNT);
  }
});
