/**
 * The node:fs-shaped file API over the buffered data path (issue 4), against real oracles:
 * open flags, append, truncate through the cache, fallocate (default, keep size, punch hole,
 * zero range), unlink of an open file with cached data, and a tiny dirty/cache limit that forces
 * writeback and eviction in the middle of random writes and reads. Every image passes
 * `e2fsck -fn`, reads back through ext4ts after remount, and through the kernel (loop mount).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4, PosixError } from '../../src/index.js';
import { withKernelMount } from '../helpers/check-image.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-fapi-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function e2fsckClean(img: string): void {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  assert.equal(r.status, 0, `e2fsck -fn exit ${r.status}:\n${r.stdout}${r.stderr}`);
}

function prng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n: number) => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return Math.floor((((z ^ (z >>> 16)) >>> 0) / 0x1_0000_0000) * n);
  };
}

/** Reads every file of `model` through the kernel (read-only loop mount) and compares. */
async function kernelCompare(t: TestContext, img: string, model: Map<string, Uint8Array>, what: string): Promise<void> {
  await withKernelMount(t, img, join(work, `mnt-${what}`), (mnt) => {
    for (const [n, want] of model) {
      const got = readFileSync(join(mnt, n));
      assert.equal(got.length, want.length, `${what}: kernel size of ${n}`);
      assert.ok(got.equals(Buffer.from(want)), `${what}: kernel content of ${n}`);
    }
  });
}

async function ext4tsCompare(img: string, model: Map<string, Uint8Array>, what: string): Promise<void> {
  const ro = await Ext4.open(img);
  for (const [n, want] of model) {
    const got = await ro.readFile('/' + n);
    assert.equal(got.length, want.length, `${what}: size of ${n}`);
    assert.ok(Buffer.from(got).equals(Buffer.from(want)), `${what}: content of ${n}`);
  }
  await ro.close();
}

test('open flags like node:fs: r is read-only, wx refuses an existing file, w truncates, a appends, r+ needs the file', async () => {
  const img = join(work, 'flags.img');
  await Ext4.mkfs(img, { sizeBytes: 8 << 20, blockSize: 1024 });
  const fs = await Ext4.open(img, { readOnly: false });
  await assert.rejects(fs.open('/none', 'r+'), (e: unknown) => e instanceof PosixError && e.code === 'ENOENT');
  const w = await fs.open('/f', 'wx', 0o600);
  await w.write('hello world');
  // fchown / futimens on the open handle (pre-1970 with nanoseconds).
  await w.chown(1234, 5678);
  await w.utimes({ sec: -86_400, nsec: 5 }, { sec: 4_102_444_800, nsec: 999_999_999 });
  await w.close();
  const st0 = await fs.stat('/f');
  assert.equal(st0.uid, 1234);
  assert.equal(st0.gid, 5678);
  assert.deepEqual([st0.atimeSpec, st0.mtimeSpec], [{ sec: -86_400, nsec: 5 }, { sec: 4_102_444_800, nsec: 999_999_999 }]);
  await assert.rejects(fs.open('/f', 'wx'), (e: unknown) => e instanceof PosixError && e.code === 'EEXIST');
  const r = await fs.open('/f');
  await assert.rejects(r.write('x'), (e: unknown) => e instanceof PosixError && e.code === 'EBADF');
  const buf = new Uint8Array(32);
  assert.equal((await r.read(buf, 0, 32, 0)).bytesRead, 11);
  await r.close();
  await fs.appendFile('/f', '!!');
  const a = await fs.open('/f', 'a');
  await a.write('?', 0, 1, 0); // position ignored: appends
  await a.close();
  assert.equal(new TextDecoder().decode(await fs.readFile('/f')), 'hello world!!?');
  assert.equal((await fs.stat('/f')).size, 14, 'stat sees the in-memory size before writeback');
  assert.equal((await fs.stat('/f')).mode & 0o777, 0o600);
  const t = await fs.open('/f', 'w');
  await t.close();
  assert.equal((await fs.stat('/f')).size, 0, "'w' truncates");
  await assert.rejects(fs.open('/', 'r+'), (e: unknown) => e instanceof PosixError && e.code === 'EISDIR');
  await fs.writeFile('/g', new Uint8Array(5000).fill(3));
  await fs.close();
  e2fsckClean(img);
  await ext4tsCompare(img, new Map([['f', new Uint8Array(0)], ['g', new Uint8Array(5000).fill(3)]]), 'flags');
});

for (const blockSize of [1024, 4096]) {
  test(`fallocate default / keep size / punch hole / zero range and truncate through the cache (${blockSize}-byte blocks): kernel reads the model, e2fsck clean`, async (ctx) => {
    const img = join(work, `falloc-${blockSize}.img`);
    await Ext4.mkfs(img, { sizeBytes: 32 << 20, blockSize });
    const fs = await Ext4.open(img, { readOnly: false, pageSizeBytes: 16384 });
    const model = new Map<string, Uint8Array>();
    const r = prng(blockSize);
    const pattern = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => 1 + r(255));

    // Default mode: size grows, contents read as zeros, blocks are unwritten extents.
    const fh = await fs.open('/pre', 'w+');
    await fh.fallocate(0, 300_000);
    assert.equal((await fh.stat()).size, 300_000);
    const layout = await fs.layout('/pre');
    assert.ok(layout.extents.length > 0 && layout.extents.every((e) => e.unwritten), 'preallocated extents are unwritten');
    // Writing into preallocated space converts only what was written.
    const mid = pattern(10_000);
    await fh.write(mid, 0, mid.length, 123_457);
    await fh.sync();
    const pre = new Uint8Array(300_000);
    pre.set(mid, 123_457);
    // Keep size: preallocation past EOF leaves the size.
    await fh.fallocate(300_000, 100_000, { keepSize: true });
    assert.equal((await fh.stat()).size, 300_000);
    await fh.close();
    model.set('pre', pre);

    // Punch hole and zero range over written data, with unaligned edges.
    const data = pattern(200_000);
    await fs.writeFile('/punch', data);
    await fs.fallocate('/punch', 5_000, 70_001, { punchHole: true, keepSize: true });
    const punched = data.slice();
    punched.fill(0, 5_000, 75_001);
    const blocksBefore = (await fs.stat('/punch')).blocks;
    await fs.fallocate('/punch', 100_003, 50_000, { zeroRange: true });
    punched.fill(0, 100_003, 150_003);
    // Zero range past EOF grows the size (no keepSize).
    await fs.fallocate('/punch', 199_000, 11_000, { zeroRange: true });
    const grown = new Uint8Array(210_000);
    grown.set(punched.subarray(0, 199_000));
    model.set('punch', grown);
    assert.equal((await fs.stat('/punch')).size, 210_000);
    assert.ok(blocksBefore < (data.length / 512), 'punch hole freed blocks');
    await assert.rejects(fs.fallocate('/punch', 0, 10, { punchHole: true }), (e: unknown) => e instanceof PosixError && e.code === 'EOPNOTSUPP');

    // Truncate with dirty pages past the new end, then grow again: the tail reads zeros.
    const t = pattern(90_000);
    const th = await fs.open('/trunc', 'w+');
    await th.write(t);
    await th.truncate(33_333);
    await th.write(pattern(0));
    await th.truncate(50_000);
    const tm = new Uint8Array(50_000);
    tm.set(t.subarray(0, 33_333));
    assert.deepEqual(await fs.readFile('/trunc'), tm);
    await th.close();
    model.set('trunc', tm);

    await fs.close();
    e2fsckClean(img);
    await ext4tsCompare(img, model, `falloc-${blockSize}`);
    await kernelCompare(ctx, img, model, `falloc-${blockSize}`);
  });
}

test('writeFile: a new file is made, written, owned and stamped in one operation; wx refuses an existing name; w replaces; e2fsck, ext4ts and the kernel agree', async (t) => {
  const img = join(work, 'writefile.img');
  await Ext4.mkfs(img, { sizeBytes: 16 << 20, blockSize: 4096 });
  const fs = await Ext4.open(img, { readOnly: false, pageSizeBytes: 16384, dirtyLimitBytes: 1 << 16 });
  const model = new Map<string, Uint8Array>();
  const rnd = prng(42);
  await fs.mkdir('/d');
  const atime = { sec: -86_400, nsec: 5 };
  const mtime = { sec: 4_102_444_800, nsec: 999_999_999 };
  // Sizes around block and page edges, and empty; enough files to pass the tiny dirty limit.
  const sizes = [0, 1, 4095, 4096, 4097, 16383, 16384, 16385, 50_000];
  for (let i = 0; i < 60; i++) {
    const bytes = Uint8Array.from({ length: sizes[i % sizes.length]! }, () => rnd(256));
    await fs.writeFile(`/d/f${i}`, bytes, { flag: 'wx', mode: 0o640, uid: 1000 + i, gid: 2000 + i, atime, mtime });
    model.set(`d/f${i}`, bytes);
  }
  for (let i = 0; i < 60; i++) {
    const st = await fs.stat(`/d/f${i}`);
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.size], [0o640, 1000 + i, 2000 + i, model.get(`d/f${i}`)!.length], `/d/f${i}`);
    assert.deepEqual([st.atimeSpec, st.mtimeSpec], [atime, mtime], `/d/f${i}: times after the write`);
  }
  // wx: EEXIST and nothing changes.
  await assert.rejects(fs.writeFile('/d/f3', 'x', { flag: 'wx' }), (e: unknown) => e instanceof PosixError && e.code === 'EEXIST');
  assert.equal((await fs.stat('/d/f3')).size, model.get('d/f3')!.length);
  // w on an existing file: truncated and rewritten, owner kept (open does not chown), times set.
  await fs.writeFile('/d/f8', 'short', { uid: 7, mtime: 1000 });
  model.set('d/f8', new TextEncoder().encode('short'));
  const st8 = await fs.stat('/d/f8');
  assert.deepEqual([st8.size, st8.uid, st8.mtimeSpec], [5, 1008, { sec: 1000, nsec: 0 }]);
  await assert.rejects(fs.writeFile('/d', 'x'), (e: unknown) => e instanceof PosixError && e.code === 'EISDIR');
  await assert.rejects(fs.writeFile('/none/f', 'x'), (e: unknown) => e instanceof PosixError && e.code === 'ENOENT');
  await assert.rejects(fs.writeFile('/d/g', 'x', { flag: 'a' as 'w' }), (e: unknown) => e instanceof PosixError && e.code === 'EINVAL');
  await fs.close();
  e2fsckClean(img);
  await ext4tsCompare(img, model, 'writeFile');
  await kernelCompare(t, img, model, 'writeFile');
});

test('unlink of an open file with dirty cached data: the handle keeps working, the blocks go at close, e2fsck clean', async () => {
  const img = join(work, 'unlink.img');
  await Ext4.mkfs(img, { sizeBytes: 16 << 20, blockSize: 4096 });
  const fs = await Ext4.open(img, { readOnly: false });
  const free0 = fs.info().freeBlocksCount;
  const fh = await fs.open('/victim', 'w+');
  await fh.write(new Uint8Array(1 << 20).fill(9));
  await fs.unlink('/victim');
  const back = new Uint8Array(10);
  await fh.read(back, 0, 10, 500_000);
  assert.deepEqual(back, new Uint8Array(10).fill(9));
  await fh.close();
  // A second file written and unlinked while closed: discarded without writeback.
  await fs.writeFile('/gone', new Uint8Array(300_000).fill(1));
  await fs.unlink('/gone');
  await fs.close();
  e2fsckClean(img);
  const ro = await Ext4.open(img);
  assert.equal(ro.info().freeBlocksCount, free0);
  await ro.close();
});

for (const [blockSize, pageSizeBytes] of [[1024, 4096], [4096, 65536]] as const) {
  test(`tiny dirty and cache limits (${blockSize}-byte blocks, ${pageSizeBytes}-byte pages): writeback and eviction mid-workload keep contents exact`, async (t) => {
    const img = join(work, `limits-${blockSize}.img`);
    await Ext4.mkfs(img, { sizeBytes: 48 << 20, blockSize });
    const fs = await Ext4.open(img, { readOnly: false, pageSizeBytes, dirtyLimitBytes: 4 * pageSizeBytes, cacheLimitBytes: 8 * pageSizeBytes, maxBioVecs: 4 });
    const r = prng(pageSizeBytes + blockSize);
    const model = new Map<string, Uint8Array>();
    const handles = new Map<string, Awaited<ReturnType<typeof fs.open>>>();
    for (const n of ['a', 'b', 'c']) {
      handles.set(n, await fs.open('/' + n, 'w+'));
      model.set(n, new Uint8Array(0));
    }
    for (let op = 0; op < 150; op++) {
      const n = ['a', 'b', 'c'][r(3)]!;
      const cur = model.get(n)!;
      const h = handles.get(n)!;
      if (r(4) === 0 && cur.length > 0) {
        const pos = r(cur.length);
        const len = 1 + r(40_000);
        const buf = new Uint8Array(len);
        const { bytesRead } = await h.read(buf, 0, len, pos);
        assert.equal(bytesRead, Math.min(len, cur.length - pos));
        assert.ok(Buffer.from(buf.subarray(0, bytesRead)).equals(Buffer.from(cur.subarray(pos, pos + bytesRead))), `op ${op}: read ${n} @${pos}`);
        continue;
      }
      const pos = r(2) === 0 ? cur.length : r(cur.length + 200_000);
      const len = 1 + r(r(5) === 0 ? 400_000 : 9_000);
      const data = Uint8Array.from({ length: len }, () => r(256));
      await h.write(data, 0, len, pos);
      const next = new Uint8Array(Math.max(cur.length, pos + len));
      next.set(cur);
      next.set(data, pos);
      model.set(n, next);
      assert.ok(fs.data!.nrPages * pageSizeBytes <= 8 * pageSizeBytes + 2 * Math.max(1 << 20, pageSizeBytes) + 400_000 + pageSizeBytes * 4,
        `op ${op}: cache holds ${fs.data!.nrPages} pages`);
    }
    for (const h of handles.values()) await h.close();
    assert.ok(fs.dataStats().bios > 0);
    await fs.close();
    e2fsckClean(img);
    await ext4tsCompare(img, model, `limits-${blockSize}`);
    await kernelCompare(t, img, model, `limits-${blockSize}`);
    assert.ok(statSync(img).size > 0);
  });
}

test('O_DIRECT through the public API: sync and asynchronous (depth 32) writes into fallocated space and holes, mixed with buffered I/O; kernel and e2fsck agree', async (t) => {
  const img = join(work, 'direct.img');
  await Ext4.mkfs(img, { sizeBytes: 64 << 20, blockSize: 4096 });
  const fs = await Ext4.open(img, { readOnly: false });
  const bs = 4096;
  const r = prng(77);
  const size = 8 << 20;
  const model = new Uint8Array(size);
  // Buffered data first: direct I/O must write it back and see it.
  const buffered = Uint8Array.from({ length: 300_000 }, () => r(256));
  await fs.writeFile('/d', buffered);
  model.set(buffered, 0);
  const fh = await fs.open('/d', 'r+', { direct: true });
  await fh.fallocate(0, size);
  await assert.rejects(fh.write(new Uint8Array(100), 0, 100, 0), (e: unknown) => e instanceof PosixError && e.code === 'EINVAL');
  // Sync direct writes, aligned.
  for (let i = 0; i < 20; i++) {
    const pos = r(size / bs) * bs;
    const n = Math.min(size - pos, (1 + r(8)) * bs);
    const buf = Uint8Array.from({ length: n }, () => r(256));
    const { bytesWritten } = await fh.write(buf, 0, n, pos);
    assert.equal(bytesWritten, n);
    model.set(buf, pos);
  }
  // 32 asynchronous writes in flight at once, to distinct blocks (overlapping requests have no order).
  const ctx = fh.aio({ depth: 32 });
  const used = new Set<number>();
  const iocbs = [];
  while (iocbs.length < 32) {
    const blk = r(size / bs);
    if (used.has(blk)) continue;
    used.add(blk);
    const buf = Uint8Array.from({ length: bs }, () => r(256));
    iocbs.push({ op: 'write' as const, buf, pos: blk * bs });
    model.set(buf, blk * bs);
  }
  const reqs = ctx.submit(iocbs);
  assert.equal(reqs.length, 32);
  await Promise.all(reqs.map((q) => q.done));
  // Direct reads see it all; a buffered handle too.
  const back = new Uint8Array(size);
  const { bytesRead } = await fh.read(back, 0, size, 0);
  assert.equal(bytesRead, size);
  assert.ok(Buffer.from(back).equals(Buffer.from(model)), 'direct read-back');
  await fh.close();
  assert.ok(Buffer.from(await fs.readFile('/d')).equals(Buffer.from(model)), 'buffered read-back');
  await fs.close();
  e2fsckClean(img);
  await ext4tsCompare(img, new Map([['d', model]]), 'direct');
  await kernelCompare(t, img, new Map([['d', model]]), 'direct');
});
