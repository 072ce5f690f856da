/**
 * Namespace edge cases with real oracles: kernel-populated fixture images modified by ext4ts
 * (half the files deleted, directories renamed, files truncated) stay clean under e2fsck and the
 * kernel; ENOSPC and out-of-inodes leave a clean filesystem; an inode unlinked while open is on
 * the orphan list and is reclaimed by the next read-write mount (ours and the kernel's); the
 * superblock says "not clean" while a read-write mount is open.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, copyFileSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4, PosixError } from '../../src/index.js';
import { SuperBlock } from '../../src/format/superblock.js';
import { DCACHE_MAX, dcacheSize, dcacheKnownAbsent } from '../../src/fs/dir/dcache.js';
import { loadFixture } from '../helpers/fixtures.js';
import { withKernelMount } from '../helpers/check-image.js';
import { describeExt4, describeMount, type Described } from '../helpers/model-fs.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-nsedge-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function e2fsck(img: string): { status: number | null; out: string } {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

function assertClean(img: string): void {
  const r = e2fsck(img);
  const noise = r.out.split('\n').filter((l) => l !== '' && !/^Pass \d|^e2fsck \d|^[^:]+: \d+\/\d+ files/.test(l));
  assert.equal(r.status, 0, r.out);
  assert.deepEqual(noise, [], r.out);
}

/** The kernel's view of `img` (read-only loop mount); undefined, said on the test output, without loop mounts. */
function kernelView(t: TestContext, img: string, name: string): Promise<Described[] | undefined> {
  return withKernelMount(t, img, join(work, `mnt-${name}`), (mnt) => describeMount(mnt));
}

function superOf(img: string) {
  return new SuperBlock(Uint8Array.from(readFileSync(img).subarray(1024, 2048)), 0);
}

/** Compares two views entry by entry, reporting the first difference briefly. */
function assertSameView(kern: Described[], ours: Described[]): void {
  const k = new Map(kern.map((d) => [d.path, d]));
  const o = new Map(ours.map((d) => [d.path, d]));
  const onlyK = [...k.keys()].filter((p) => !o.has(p));
  const onlyO = [...o.keys()].filter((p) => !k.has(p));
  assert.deepEqual({ onlyKernel: onlyK.slice(0, 10), onlyExt4ts: onlyO.slice(0, 10) }, { onlyKernel: [], onlyExt4ts: [] });
  for (const [p, d] of k) assert.deepEqual(o.get(p), d, `${p}: ext4ts vs kernel`);
}

function strip(d: Described[]): Described[] {
  return d.map(({ mtimeSec: _m, ...rest }) => rest);
}

for (const name of ['ext4-4k', 'ext4-1k', 'ext4-2k', 'features']) {
  test(`kernel-made ${name} modified by ext4ts (delete half, rename dirs, truncate) stays clean for e2fsck and the kernel`, async (t) => {
    const fx = await loadFixture(name);
    const img = join(work, `${name}.img`);
    copyFileSync(fx.imagePath, img);
    await fx.cleanup();
    const fs = await Ext4.open(img, { readOnly: false });
    const all = (await describeExt4(fs)).filter((d) => d.path !== '/');
    let deleted = 0;
    let renamed = 0;
    let truncated = 0;
    let i = 0;
    for (const d of all) {
      i++;
      try {
        await fs.lstat(d.path);
      } catch {
        continue; // under a directory renamed or removed earlier
      }
      if (d.type === 'dir') {
        if (i % 3 === 0) {
          await fs.rename(d.path, `${d.path}-renamed`);
          renamed++;
        }
      } else if (i % 2 === 0) {
        await fs.unlink(d.path);
        deleted++;
      } else if (d.type === 'file' && (d.size ?? 0) > 0 && i % 5 === 1) {
        await fs.truncate(d.path, Math.floor((d.size ?? 0) / 3));
        truncated++;
      }
    }
    await fs.close();
    assertClean(img);
    const ro = await Ext4.open(img);
    const ours = await describeExt4(ro);
    await ro.close();
    const kern = await kernelView(t, img, name);
    if (kern !== undefined) assertSameView(strip(kern), strip(ours));
    t.diagnostic(`${deleted} unlinked, ${renamed} directories renamed, ${truncated} truncated; ${ours.length} entries remain`);
  });
}

test('ENOSPC: filling the image with directories and long symlinks ends in ENOSPC and stays clean', async (t) => {
  const img = join(work, 'full.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '1024', '-N', '4096', img, '4M'], { stdio: 'pipe' });
  const fs = await Ext4.open(img, { readOnly: false });
  let made = 0;
  let err: unknown;
  try {
    for (let i = 0; i < 100000; i++) {
      await fs.mkdir(`/d${i}`);
      await fs.symlink('x'.repeat(200), `/d${i}/l`);
      made++;
    }
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PosixError, String(err));
  assert.equal(err.code, 'ENOSPC');
  // The filesystem still works after ENOSPC: removing makes room again.
  await fs.rm('/d0', { recursive: true });
  await fs.mkdir('/after-enospc');
  await fs.close();
  assertClean(img);
  t.diagnostic(`${made} directories with symlinks before ENOSPC`);
});

test('out of inodes: ENOSPC from inode allocation, clean afterwards', async (t) => {
  const img = join(work, 'noinodes.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-N', '64', img, '16M'], { stdio: 'pipe' });
  const fs = await Ext4.open(img, { readOnly: false });
  let made = 0;
  let err: unknown;
  try {
    for (let i = 0; i < 1000; i++) {
      await fs.mknod(`/f${i}`);
      made++;
    }
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PosixError && err.code === 'ENOSPC', String(err));
  await fs.close();
  assertClean(img);
  t.diagnostic(`${made} files before running out of inodes`);
});

test('orphans: an inode unlinked while open is released at close, or by the next mount after a crash (ours and the kernel\'s)', async (t) => {
  const img = join(work, 'orphan.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '1024', img, '16M'], { stdio: 'pipe' });
  // 1. Normal: unlink while open, close the handle: the inode goes at the last close.
  let fs = await Ext4.open(img, { readOnly: false });
  await fs.mknod('/f');
  await fs.truncate('/f', 100000);
  const h = await fs.open('/f');
  await fs.unlink('/f');
  assert.equal((await h.stat()).nlink, 0);
  await h.close();
  await fs.close();
  assertClean(img);
  // 2. Crash: unlink while open, sync, never close. The chain is on disk.
  fs = await Ext4.open(img, { readOnly: false });
  await fs.mknod('/g');
  await fs.symlink('y'.repeat(300), '/g-link');
  const h2 = await fs.open('/g');
  await fs.unlink('/g');
  await fs.sync();
  const crashed = join(work, 'orphan-crashed.img');
  copyFileSync(img, crashed);
  await h2.close();
  await fs.close();
  const sb = superOf(crashed);
  assert.notEqual(sb.s_last_orphan, 0, 's_last_orphan is set in the crashed image');
  assert.equal(sb.s_state & 1, 0, 'the crashed image is marked not clean');
  // Our next read-write mount releases it.
  const ours = join(work, 'orphan-ours.img');
  copyFileSync(crashed, ours);
  fs = await Ext4.open(ours, { readOnly: false });
  await fs.close();
  assertClean(ours);
  // So does the kernel's (a read-write mount processes the orphan list).
  const kernelMounted = await withKernelMount(t, crashed, join(work, 'mnt-orphan'), () => true, { rw: true });
  if (kernelMounted === true) assertClean(crashed);
});

test('a read-write mount marks the superblock not clean until close', async () => {
  const img = join(work, 'state.img');
  execFileSync('mkfs.ext4', ['-q', '-F', img, '8M'], { stdio: 'pipe' });
  const fs = await Ext4.open(img, { readOnly: false });
  await fs.mkdir('/x');
  await fs.sync();
  assert.equal(superOf(img).s_state & 1, 0, 'VALID_FS cleared while mounted');
  await fs.close();
  assert.equal(superOf(img).s_state & 1, 1, 'VALID_FS set by close');
  assertClean(img);
});

test('Ext4.mkfs on a MemDevice, then namespace operations on it, image clean for e2fsck', async () => {
  const { MemDevice } = await import('../../src/blockdev/mem-device.js');
  const { writeFileSync } = await import('node:fs');
  const dev = new MemDevice(new Uint8Array(16 << 20));
  await Ext4.mkfs(dev, { sizeBytes: 16 << 20, blockSize: 4096, label: 'mem' });
  const fs = await Ext4.open(dev, { readOnly: false });
  await fs.mkdir('/a/b', { recursive: true });
  await fs.symlink('b', '/a/c');
  await fs.close();
  const img = join(work, 'mem.img');
  writeFileSync(img, dev.data);
  assertClean(img);
  const ro = await Ext4.open(img);
  assert.equal(ro.info().label, 'mem');
  assert.deepEqual((await ro.readdir('/a')).sort(), ['b', 'c']);
  await ro.close();
});

test('memoised parent lookups: creating in a directory after it was renamed, removed and remade, or replaced by a symlink, goes where a fresh walk goes', async (t) => {
  const img = join(work, 'memo.img');
  execFileSync('mkfs.ext4', ['-q', '-F', img, '16M'], { stdio: 'pipe' });
  const fs = await Ext4.open(img, { readOnly: false });
  await fs.mkdir('/d');
  await fs.writeFile('/d/one', 'x');
  // Renamed away: the old path no longer names a directory; the new one gets the next file.
  await fs.rename('/d', '/e');
  await assert.rejects(fs.writeFile('/d/two', 'y'), (e: unknown) => e instanceof PosixError && e.code === 'ENOENT');
  await fs.writeFile('/e/two', 'y');
  // Removed and made again under the same name: a new inode, empty.
  await fs.mkdir('/f');
  await fs.writeFile('/f/a', 'a');
  await fs.unlink('/f/a');
  await fs.rmdir('/f');
  await fs.mkdir('/g');
  await fs.mkdir('/f');
  await fs.writeFile('/f/b', 'b');
  assert.deepEqual(await fs.readdir('/f'), ['b']);
  assert.deepEqual(await fs.readdir('/g'), []);
  // Replaced by a symlink to another directory: creation follows the link.
  await fs.writeFile('/e/three', 'z');
  await fs.rename('/e', '/h');
  await fs.symlink('/g', '/e');
  await fs.writeFile('/e/four', '4');
  assert.deepEqual(await fs.readdir('/g'), ['four']);
  assert.deepEqual((await fs.readdir('/h')).sort(), ['one', 'three', 'two']);
  await fs.close();
  assertClean(img);
  const kern = await kernelView(t, img, 'memo');
  if (kern !== undefined) {
    const ro = await Ext4.open(img);
    assertSameView(kern, await describeExt4(ro));
    await ro.close();
  }
});

test('dentry cache: past DCACHE_MAX names the least recently used directories are forgotten; every name still resolves (from disk) and duplicates are still refused; the kernel sees every name once', async (t) => {
  const img = join(work, 'dcache.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-N', '80000', img, '160M'], { stdio: 'pipe' });
  const fs = await Ext4.open(img, { readOnly: false });
  const dirs = Math.ceil((DCACHE_MAX * 1.1) / 100);
  // /hot gets a name after every directory: used all along, it must stay cached and complete.
  await fs.mkdir('/hot');
  let most = 0;
  for (let d = 0; d < dirs; d++) {
    await fs.mkdir(`/d${d}`);
    for (let f = 0; f < 100; f++) await fs.mknod(`/d${d}/f${f}`, { mode: 0o644 });
    await fs.mknod(`/hot/h${d}`, { mode: 0o644 });
    most = Math.max(most, dcacheSize(fs.sup));
  }
  assert.ok(most <= DCACHE_MAX, `${most} names cached (bound ${DCACHE_MAX})`);
  // Only the least recently used part went: the cache is still mostly full.
  assert.ok(dcacheSize(fs.sup) >= DCACHE_MAX / 2, `${dcacheSize(fs.sup)} names cached after the overflow`);
  const hot = (await fs.stat('/hot')).ino;
  assert.equal(dcacheKnownAbsent(fs.sup, hot, new TextEncoder().encode('nope')), true, 'a directory in use stays complete');
  // The directory being filled stays complete: a new name there is known absent without a scan.
  const last = (await fs.stat(`/d${dirs - 1}`)).ino;
  assert.equal(dcacheKnownAbsent(fs.sup, last, new TextEncoder().encode('nope')), true);
  // The first directories were forgotten: their names come from disk, exactly.
  const first = (await fs.stat('/d0')).ino;
  assert.equal(dcacheKnownAbsent(fs.sup, first, new TextEncoder().encode('nope')), false, 'an evicted directory is no longer complete');
  for (let f = 0; f < 100; f++) assert.equal((await fs.stat(`/d0/f${f}`)).isFile(), true);
  await assert.rejects(fs.mknod('/d0/f7', { mode: 0o644 }), (e: unknown) => e instanceof PosixError && e.code === 'EEXIST');
  await assert.rejects(fs.stat('/d0/f100'), (e: unknown) => e instanceof PosixError && e.code === 'ENOENT');
  await fs.mknod('/d0/f100', { mode: 0o600 });
  assert.equal((await fs.readdir('/d0')).length, 101);
  await fs.close();
  assertClean(img);
  // The kernel lists exactly the names made, each once (a name lost or doubled by a cache miss
  // would show here even where e2fsck's checks pass).
  const names = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`).sort();
  await withKernelMount(t, img, join(work, 'mnt-dcache'), (mnt) => {
    assert.deepEqual(readdirSync(mnt).sort(), ['hot', 'lost+found', ...names(dirs, 'd')].sort());
    assert.deepEqual(readdirSync(join(mnt, 'hot')).sort(), names(dirs, 'h'));
    assert.deepEqual(readdirSync(join(mnt, 'd0')).sort(), names(101, 'f'));
    for (let d = 1; d < dirs; d++) assert.deepEqual(readdirSync(join(mnt, `d${d}`)).sort(), names(100, 'f'), `/d${d}`);
    assert.equal(statSync(join(mnt, 'd0/f100')).mode & 0o7777, 0o600);
  });
});
