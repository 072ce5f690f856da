/**
 * build(): reproducibility (SOURCE_DATE_EPOCH → byte-identical images, without it a random UUID),
 * automatic sizing and the ENOSPC contract for a too-small SIZE, refusal of hostile or malformed
 * sources (naming the entry, leaving no image behind), files past 4 GiB with holes, a compressed
 * tar's second pass, owner overrides, progress reports, and a canary proving the verifier fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync, readdirSync, mkdirSync, statSync, openSync, readSync, closeSync,
  truncateSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { build, Ext4, PosixError, type BuildProgress } from '../../src/index.js';
import { LARGE_CHUNK_BYTES } from '../../src/build/content.js';
import {
  makeSpec, writeManifest, writeTar, gzip, expectFromSpec, verifyImage, writeHostFile, assertFsckClean, type Expect,
} from './helpers.js';
import { withKernelMount } from '../helpers/check-image.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-build-chk-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const MiB = 1 << 20;
const GiB = 1024 * MiB;
const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
const small = makeSpec({ seed: 3, special: true, bigDir: 50 });
const manifest = writeManifest(small, join(work, 'small'));

/** Nothing but `keep` in `dir`: a failed build leaves no image and no temporary file. */
function assertOnly(dir: string, keep: readonly string[]): void {
  assert.deepEqual(readdirSync(dir).filter((n) => !keep.includes(n)), []);
}

test('build: SOURCE_DATE_EPOCH gives byte-identical images (manifest, tar.gz); without it the UUID is random', async () => {
  const env = { SOURCE_DATE_EPOCH: '1700000000' };
  const tgz = join(work, 'small.tar.gz');
  writeFileSync(tgz, gzip(await writeTar(small)));
  for (const src of [manifest, tgz]) {
    const a = await build({ source: src, image: join(work, 'r1.img'), env });
    const b = await build({ source: src, image: join(work, 'r2.img'), env });
    assert.equal(a.reproducible, true);
    assert.equal(a.uuid, b.uuid);
    assert.equal(sha(join(work, 'r1.img')), sha(join(work, 'r2.img')), `${src}: two reproducible builds differ`);
  }
  const c = await build({ source: manifest, image: join(work, 'n1.img'), env: {} });
  const d = await build({ source: manifest, image: join(work, 'n2.img'), env: {} });
  assert.equal(c.reproducible, false);
  assert.notEqual(c.uuid, d.uuid);
  assert.notEqual(sha(join(work, 'n1.img')), sha(join(work, 'n2.img')));
  // Clamping: times after the epoch become the epoch, earlier ones stay; ctime is the epoch.
  const fs = await Ext4.open(join(work, 'r1.img'));
  try {
    for (const e of small.filter((x) => x.type === 'file' || x.type === 'dir').slice(0, 30)) {
      const st = await fs.lstat(e.path);
      const want = e.mtime.sec >= 1700000000 ? { sec: 1700000000, nsec: 0 } : e.mtime;
      assert.deepEqual(st.mtimeSpec, want, e.path);
      assert.deepEqual(st.ctimeSpec, { sec: 1700000000, nsec: 0 }, e.path);
    }
    assert.equal(fs.info().mkfsTime, 1700000000);
  } finally {
    await fs.close();
  }
  for (const n of ['r1.img', 'r2.img', 'n1.img', 'n2.img']) rmSync(join(work, n));
});

test('build: --reproducible without SOURCE_DATE_EPOCH fixes the clock at the newest mtime not in the future', async () => {
  const a = await build({ source: manifest, image: join(work, 'p1.img'), env: {}, reproducible: true });
  const b = await build({ source: manifest, image: join(work, 'p2.img'), env: {}, reproducible: true });
  const nowSec = Math.floor(Date.now() / 1000);
  assert.ok(small.some((e) => e.mtime.sec > nowSec), 'the spec has mtimes in the future');
  assert.equal(a.epoch, Math.max(...small.map((e) => e.mtime.sec).filter((t) => t <= nowSec)));
  assert.equal(sha(join(work, 'p1.img')), sha(join(work, 'p2.img')));
  assertFsckClean(join(work, 'p1.img'));
  rmSync(join(work, 'p1.img'));
  rmSync(join(work, 'p2.img'));
});

test('build: automatic size fits the content with the margin; a too-small SIZE fails with ENOSPC and leaves nothing', async () => {
  const dir = join(work, 'size');
  mkdirSync(dir);
  const content = 24 * MiB;
  const m = join(dir, 'm.json');
  writeHostFile(join(dir, 'blob'), new Uint8Array(content).fill(1), false);
  writeFileSync(m, JSON.stringify({ entries: [{ path: '/blob', type: 'file', source: 'blob' }, { path: '/d', type: 'dir' }] }));
  const s = await build({ source: m, image: join(dir, 'auto.img') });
  assert.ok(s.autoSized);
  assert.ok(s.sizeBytes >= content && s.sizeBytes <= content * 1.3 + 16 * MiB, `auto size ${s.sizeBytes} for ${content} bytes`);
  const free = (s.freeBlocksCount * s.blockSize) / MiB;
  assert.ok(free >= 2 && free <= 16, `${free} MiB free after the build`);
  assertFsckClean(join(dir, 'auto.img'));
  const wide = await build({ source: m, image: join(dir, 'wide.img'), marginPercent: 100 });
  assert.ok(wide.sizeBytes > s.sizeBytes + 20 * MiB, 'a 100% margin makes a bigger image');
  await assert.rejects(build({ source: m, image: join(dir, 'tiny.img'), sizeBytes: 16 * MiB }), (e: unknown) => {
    assert.ok(e instanceof PosixError && e.code === 'ENOSPC', String(e));
    assert.match(e.message, /needs about 2\d\.\d MiB but an image of 16\.0 MiB offers/);
    return true;
  });
  await assert.rejects(build({ source: manifest, image: join(dir, 'tiny.img'), sizeBytes: 64 * MiB, inodesCount: 40, mkfs: { blockSize: 4096 } }), /ENOSPC: the content needs \d+ inodes/);
  assertOnly(dir, ['m.json', 'blob', 'auto.img', 'wide.img']);
});

test('build: refuses "../" and absolute tar members, bad manifest types and dangling links, naming the entry', async () => {
  const dir = join(work, 'bad');
  mkdirSync(dir);
  const tarOf = async (names: string[], link?: string): Promise<string> => {
    const p = pack();
    const chunks: Buffer[] = [];
    const done = (async () => {
      for await (const c of p) chunks.push(c as Buffer);
    })();
    for (const name of names) p.entry({ name, type: 'file', size: 1 }, Buffer.from('x'));
    if (link !== undefined) p.entry({ name: 'lnk', type: 'link', linkname: link });
    p.finalize();
    await done;
    const path = join(dir, `t${readdirSync(dir).length}.tar`);
    writeFileSync(path, Buffer.concat(chunks));
    return path;
  };
  const refused = async (source: string, re: RegExp): Promise<void> => {
    await assert.rejects(build({ source, image: join(dir, 'out.img') }), (e: unknown) => {
      assert.ok(e instanceof PosixError && e.code === 'EINVAL', String(e));
      assert.match(e.message, re);
      return true;
    });
  };
  await refused(await tarOf(['ok', 'a/../../evil']), /"\.\.".*t\d\.tar: a\/\.\.\/\.\.\/evil'/);
  await refused(await tarOf(['/etc/passwd']), /absolute member name.*: \/etc\/passwd'/);
  await refused(await tarOf(['x'], '../../etc/shadow'), /"\.\.".*: lnk'/);
  await refused(await tarOf(['x'], 'missing'), /hard link target \/missing is not in the source.*: lnk'/);
  const tgz = join(dir, 'evil.tar.gz');
  writeFileSync(tgz, gzipSync(readFileSync(await tarOf(['../up']))));
  await refused(tgz, /: \.\.\/up'/);
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ entries: [{ path: '/a', type: 'dir' }, { path: '/a/x', type: 'pipe' }] }));
  await refused(bad, /bad type "pipe".*entries\[1\] \(\/a\/x\)'/);
  writeFileSync(bad, JSON.stringify([{ path: '/a', type: 'file', mode: '0999' }]));
  await refused(bad, /mode "0999".*entries\[0\] \(\/a\)'/);
  writeFileSync(bad, JSON.stringify([{ path: '/a/../b', type: 'file' }]));
  await refused(bad, /"\.\.".*entries\[0\]/);
  writeFileSync(bad, JSON.stringify([{ path: '/a', type: 'file' }, { path: '/a/b', type: 'file' }]));
  await refused(bad, /parent \/a is a file/);
  writeFileSync(join(dir, 'x.xz'), new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2]));
  await refused(join(dir, 'x.xz'), /xz-compressed/);
  assert.ok(!existsSync(join(dir, 'out.img')));
  assert.deepEqual(readdirSync(dir).filter((n) => n.includes('ext4ts-build')), []);
});

test('build: files past 4 GiB keep data at their offsets and holes as holes (sparse map, hole-only, sparse host file)', async (t) => {
  const dir = join(work, 'huge');
  mkdirSync(dir);
  const far = 4 * GiB + 256 * MiB + 4096;
  const tail = new Uint8Array(8192).fill(0xab);
  writeHostFile(join(dir, 'host.bin'), new Uint8Array(8192).fill(0x5a), true, 5 * GiB);
  const m = join(dir, 'm.json');
  writeFileSync(m, JSON.stringify({
    entries: [
      { path: '/map.bin', type: 'file', size: 5 * GiB, content: [{ offset: 0, utf8: 'head' }, { offset: far, base64: Buffer.from(tail).toString('base64') }] },
      { path: '/hole.bin', type: 'file', size: 6 * GiB },
      { path: '/host.bin', type: 'file', source: 'host.bin' },
    ],
  }));
  const img = join(dir, 'huge.img');
  const s = await build({ source: m, image: img });
  assert.ok(s.sizeBytes < 64 * MiB, `holes cost no space (${s.sizeBytes} bytes)`);
  assertFsckClean(img);
  const fs = await Ext4.open(img);
  try {
    for (const [p, size, maxSectors] of [['/map.bin', 5 * GiB, 40], ['/hole.bin', 6 * GiB, 0], ['/host.bin', 5 * GiB, 24]] as const) {
      const st = await fs.lstat(p);
      assert.equal(st.size, size, p);
      assert.ok(st.blocks <= maxSectors, `${p}: ${st.blocks} sectors allocated`);
    }
    const fh = await fs.open('/map.bin');
    const buf = new Uint8Array(8192 + 8);
    await fh.read(buf, 0, buf.length, far - 4);
    await fh.close();
    assert.deepEqual([...buf.subarray(0, 4)], [0, 0, 0, 0]);
    assert.ok(buf.subarray(4, 8196).every((b) => b === 0xab));
    const hf = await fs.open('/host.bin');
    const first = new Uint8Array(8193);
    await hf.read(first, 0, first.length, 0);
    await hf.close();
    assert.ok(first.subarray(0, 8192).every((b) => b === 0x5a) && first[8192] === 0);
  } finally {
    await fs.close();
  }
  // The same through the kernel: sizes, allocation, and the bytes past 4 GiB.
  await withKernelMount(t, img, join(work, 'mnt-huge'), (mnt) => {
    assert.equal(statSync(join(mnt, 'hole.bin')).blocks, 0);
    assert.equal(statSync(join(mnt, 'map.bin')).size, 5 * GiB);
    const fd = openSync(join(mnt, 'map.bin'), 'r');
    const buf = new Uint8Array(8192 + 8);
    readSync(fd, buf, 0, buf.length, far - 4);
    closeSync(fd);
    assert.ok(buf.subarray(4, 8196).every((b) => b === 0xab) && buf[3] === 0 && buf[8196] === 0);
  });
  rmSync(img);
});

test('build: large files of several read chunks each (direct I/O, read buffers reused) keep every byte (e2fsck, ext4ts, kernel)', async (t) => {
  const dir = join(work, 'large');
  mkdirSync(dir);
  // Each block of each file has its own bytes: a chunk written from a reused buffer holding
  // another chunk would show.
  const size = 2 * LARGE_CHUNK_BYTES + 12345;
  const want = new Map<string, string>();
  for (let f = 0; f < 3; f++) {
    const content = new Uint8Array(size);
    for (let off = 0; off < size; off += 4096) content.fill((f * 31 + off / 4096) & 0xff, off, Math.min(size, off + 4096));
    writeHostFile(join(dir, `big${f}`), content, false);
    want.set(`/big${f}`, createHash('sha256').update(content).digest('hex'));
  }
  const img = join(work, 'large.img');
  await build({ source: dir, image: img });
  assertFsckClean(img);
  const fs = await Ext4.open(img);
  try {
    for (const [p, h] of want) assert.equal(createHash('sha256').update(await fs.readFile(p)).digest('hex'), h, `${p} through ext4ts`);
  } finally {
    await fs.close();
  }
  await withKernelMount(t, img, join(work, 'mnt-large'), (mnt) => {
    for (const [p, h] of want) assert.equal(sha(join(mnt, p)), h, `${p} through the kernel`);
  });
  rmSync(img);
});

test('build: a source that fails half way (a file shrank) leaves no image and no temporary file', async () => {
  const dir = join(work, 'half');
  mkdirSync(dir);
  writeHostFile(join(dir, 'blob'), new Uint8Array(3 * MiB).fill(9), false);
  writeFileSync(join(dir, 'm.json'), JSON.stringify([{ path: '/a', type: 'dir' }, { path: '/a/blob', type: 'file', source: 'blob' }]));
  let shrunk = false;
  const onProgress = (p: BuildProgress): void => {
    if (p.phase === 'write' && !shrunk) {
      shrunk = true;
      truncateSync(join(dir, 'blob'), 1000);
    }
  };
  await assert.rejects(build({ source: join(dir, 'm.json'), image: join(dir, 'out.img'), onProgress }), /ended at 1000 of 3145728 bytes.*\(\/a\/blob\)/);
  assertOnly(dir, ['blob', 'm.json']);
});

test('build: a compressed tar larger than memoryBytes is written by a second pass, in archive order', async (t) => {
  const tgz = join(work, 'stream.tar.gz');
  writeFileSync(tgz, gzip(await writeTar(small)));
  const img = join(work, 'stream.img');
  await build({ source: tgz, image: img, memoryBytes: 0 });
  await verifyImage(t, img, expectFromSpec(small, { xattrs: true, sockets: false, holes: false }));
  rmSync(img);
});

test('build: --all-root, --uid-map/--gid-map and --root-owner', async () => {
  const img = join(work, 'own.img');
  await build({ source: manifest, image: img, uidMap: new Map([[1000, 2000]]), gidMap: new Map([[100, 200]]), rootOwner: { uid: 7, gid: 8 } });
  let fs = await Ext4.open(img);
  try {
    const root = await fs.lstat('/');
    assert.deepEqual([root.uid, root.gid], [7, 8]);
    for (const e of small.filter((x) => x.type === 'file').slice(0, 20)) {
      const st = await fs.lstat(e.path);
      assert.deepEqual([st.uid, st.gid], [e.uid === 1000 ? 2000 : e.uid, e.gid === 100 ? 200 : e.gid], e.path);
    }
  } finally {
    await fs.close();
  }
  await build({ source: manifest, image: img, allRoot: true });
  fs = await Ext4.open(img);
  try {
    for (const e of small.slice(0, 40)) {
      const st = await fs.lstat(e.path);
      assert.deepEqual([st.uid, st.gid], [0, 0], e.path);
    }
  } finally {
    await fs.close();
  }
  rmSync(img);
});

test('build: a source\'s /lost+found takes the place of mkfs\'s (a directory keeps its mode and content; a file replaces it)', async () => {
  const dir = join(work, 'lf');
  mkdirSync(dir);
  const t = { sec: 1000, nsec: 5 };
  writeFileSync(join(dir, 'a.json'), JSON.stringify([
    { path: '/lost+found', type: 'dir', mode: '0750', uid: 5, gid: 6, mtime: t, atime: t },
    { path: '/lost+found/kept', type: 'file', content: 'x', mtime: t, atime: t },
  ]));
  writeFileSync(join(dir, 'b.json'), JSON.stringify([{ path: '/lost+found', type: 'file', content: 'not a dir', mtime: t, atime: t }]));
  for (const [name, want] of [['a', { type: 'dir', perm: 0o750, uid: 5 }], ['b', { type: 'file', perm: 0o644, uid: 0 }]] as const) {
    const img = join(dir, `${name}.img`);
    await build({ source: join(dir, `${name}.json`), image: img });
    assertFsckClean(img);
    const fs = await Ext4.open(img);
    try {
      const st = await fs.lstat('/lost+found');
      assert.deepEqual({ type: st.type, perm: st.mode & 0o7777, uid: st.uid }, want);
      assert.deepEqual(st.mtimeSpec, t);
      if (name === 'a') assert.deepEqual(await fs.readdir('/lost+found'), ['kept']);
    } finally {
      await fs.close();
    }
  }
});

test('build: progress reports advance through the phases to done, bytes never going back', async () => {
  const seen: BuildProgress[] = [];
  await build({ source: manifest, image: join(work, 'prog.img'), onProgress: (p) => seen.push(p) });
  const phases = [...new Set(seen.map((p) => p.phase))];
  assert.deepEqual(phases, ['scan', 'mkfs', 'write', 'flush', 'done']);
  const last = seen[seen.length - 1]!;
  assert.equal(last.bytesDone, last.bytesTotal);
  assert.equal(last.filesDone, last.filesTotal);
  assert.equal(last.entriesDone, last.entriesTotal);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.bytesDone >= seen[i - 1]!.bytesDone);
  rmSync(join(work, 'prog.img'));
});

test('verifyImage canary: a wrong mode, time, xattr or missing entry is reported', async (t) => {
  const img = join(work, 'canary.img');
  await build({ source: manifest, image: img });
  const good = expectFromSpec(small, { xattrs: true, sockets: true, holes: true });
  await verifyImage(t, img, good);
  const mutate = (f: (x: Expect[]) => void): Expect[] => {
    const c = structuredClone(good);
    f(c);
    return c;
  };
  const file = good.findIndex((x) => x.type === 'file');
  const withX = good.findIndex((x) => Object.keys(x.xattrs).length > 0);
  for (const bad of [
    mutate((c) => void (c[file]!.perm ^= 0o001)),
    mutate((c) => void (c[file]!.mtime = c[file]!.mtime.replace(/\d$/, (d) => String((Number(d) + 1) % 10)))),
    mutate((c) => void (c[withX]!.xattrs = {})),
    mutate((c) => void c.splice(file, 1)),
  ]) {
    await assert.rejects(verifyImage(t, img, bad));
  }
  assert.ok(statSync(img).size > 0);
  rmSync(img);
});

test('build: --reproducible without SOURCE_DATE_EPOCH ignores mtimes in the future for its clock (e2fsck would call the superblock times wrong) and clamps them', async () => {
  const dir = join(work, 'future');
  mkdirSync(dir);
  const m = join(dir, 'm.json');
  const later = Math.floor(new Date('2200-01-01T00:00:00Z').getTime() / 1000);
  writeFileSync(m, JSON.stringify({ entries: [
    { path: '/old', type: 'file', content: 'a', mtime: { sec: 1_000_000_000, nsec: 0 } },
    { path: '/newest-past', type: 'file', content: 'b', mtime: { sec: 1_500_000_000, nsec: 7 } },
    { path: '/future', type: 'file', content: 'c', mtime: { sec: later, nsec: 0 } },
  ] }));
  const img = join(dir, 'f.img');
  const a = await build({ source: m, image: img, env: {}, reproducible: true });
  assert.equal(a.epoch, 1_500_000_000);
  assertFsckClean(img);
  const fs = await Ext4.open(img);
  try {
    assert.deepEqual((await fs.lstat('/future')).mtimeSpec, { sec: 1_500_000_000, nsec: 0 });
    assert.deepEqual((await fs.lstat('/old')).mtimeSpec, { sec: 1_000_000_000, nsec: 0 });
    assert.equal(fs.info().mkfsTime, 1_500_000_000);
  } finally {
    await fs.close();
  }
  const b = await build({ source: m, image: join(dir, 'g.img'), env: {}, reproducible: true });
  assert.equal(b.uuid, a.uuid);
  assert.equal(sha(img), sha(join(dir, 'g.img')));
});
