/**
 * The buffered data path (issue 4) against real oracles: seeded random writes (sparse, overwrites,
 * appends) through the API on images made by ext4ts mkfs and mkfs.ext4 (1 KiB and 4 KiB blocks;
 * 4/16/64 KiB pages), then close(): `e2fsck -fn` must be clean, ext4ts must read back exactly the
 * model, and the kernel (loop mount, when root) must too. A SimDevice + SimWorkQueue run reorders
 * completions and fails one bio with EIO: the failed io_end's range is not converted (reads as
 * zeros after remount), fsync reports EIO exactly once, the rest is intact, counters are zero.
 * RANDOM_SEED=<n> replays one seed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4, PosixError } from '../../src/index.js';
import { withKernelMount } from '../helpers/check-image.js';
import { SimDevice } from '../../src/blockdev/sim-device.js';
import { SimWorkQueue } from '../../src/runtime/work-queue.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import { Ext4Super } from '../../src/fs/super.js';
import { FileData } from '../../src/io/file-data.js';
import { Namespace } from '../../src/fs/namespace.js';
import { iget } from '../../src/fs/inode/icache.js';
import { ExtentTree } from '../../src/fs/extents/extent-tree.js';
import { getBalloc } from '../../src/fs/alloc/balloc.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-data-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const ONLY_SEED = process.env['RANDOM_SEED'] !== undefined ? Number(process.env['RANDOM_SEED']) : undefined;

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

function e2fsckClean(img: string): void {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  const noise = r.stdout.split('\n').filter((l) => l !== '' && !/^Pass \d|^e2fsck \d|^[^:]+: \d+\/\d+ files/.test(l));
  assert.equal(r.status, 0, `e2fsck -fn exit ${r.status}:\n${r.stdout}${r.stderr}`);
  assert.deepEqual(noise, [], `e2fsck -fn printed:\n${r.stdout}`);
}

/** Applies a write to the model, growing it with zeros. */
function modelWrite(model: Map<string, Uint8Array>, name: string, pos: number, data: Uint8Array): void {
  const cur = model.get(name) ?? new Uint8Array(0);
  const next = new Uint8Array(Math.max(cur.length, pos + data.length));
  next.set(cur);
  next.set(data, pos);
  model.set(name, next);
}

function randomBytes(r: (n: number) => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r(256) || 1;
  return b;
}

interface Variant {
  name: string;
  mkfs: 'ext4ts' | 'mkfs.ext4';
  blockSize: number;
  pageSizeBytes: number;
  maxBioVecs: number;
}
const VARIANTS: Variant[] = [
  { name: 'ext4ts-1k-page4k', mkfs: 'ext4ts', blockSize: 1024, pageSizeBytes: 4096, maxBioVecs: 4 },
  { name: 'ext4ts-4k-page16k', mkfs: 'ext4ts', blockSize: 4096, pageSizeBytes: 16384, maxBioVecs: 256 },
  { name: 'mkfs.ext4-1k-page64k', mkfs: 'mkfs.ext4', blockSize: 1024, pageSizeBytes: 65536, maxBioVecs: 2 },
  { name: 'mkfs.ext4-4k-page4k', mkfs: 'mkfs.ext4', blockSize: 4096, pageSizeBytes: 4096, maxBioVecs: 8 },
];

async function makeImage(v: Variant, img: string, sizeBytes: number): Promise<void> {
  if (v.mkfs === 'ext4ts') {
    await Ext4.mkfs(img, { sizeBytes, blockSize: v.blockSize });
  } else {
    writeFileSync(img, new Uint8Array(0));
    execFileSync('mkfs.ext4', ['-q', '-F', '-b', String(v.blockSize), img, `${sizeBytes / 1024}K`], { stdio: 'pipe' });
  }
}

for (const [vi, v] of VARIANTS.entries()) {
  test(`buffered writes ${v.name}: e2fsck clean, ext4ts and the kernel read back the model (invariants 3, 10, 11, 19, 20)`, async (t) => {
    const seeds = ONLY_SEED !== undefined ? [ONLY_SEED] : [1000 + vi];
    for (const seed of seeds) {
      const r = prng(seed);
      const img = join(work, `${v.name}-${seed}.img`);
      await makeImage(v, img, 32 << 20);
      const model = new Map<string, Uint8Array>();
      const names = ['a', 'b', 'sparse', 'big'];
      // Two sessions: the second overwrites and appends to files the first wrote and closed.
      for (let session = 0; session < 2; session++) {
        const fs = await Ext4.open(img, { readOnly: false, pageSizeBytes: v.pageSizeBytes, maxBioVecs: v.maxBioVecs });
        for (const n of names) if (!model.has(n)) await fs.mknod('/' + n, { mode: 0o644 });
        for (const n of names) if (!model.has(n)) model.set(n, new Uint8Array(0));
        const handles = new Map(await Promise.all(names.map(async (n) => [n, await fs.open('/' + n, 'r+')] as const)));
        for (let op = 0; op < 40; op++) {
          const n = names[r(names.length)]!;
          const cur = model.get(n)!;
          const kind = r(4);
          const len = n === 'big' ? 1 + r(600_000) : 1 + r(20_000);
          const pos = kind === 0 ? cur.length // append
            : kind === 1 ? r(cur.length + 1) // overwrite
              : kind === 2 ? cur.length + r(3 * v.pageSizeBytes) // sparse past EOF (sub-page holes)
                : r(2_000_000); // far sparse
          const data = randomBytes(r, len);
          const { bytesWritten } = await handles.get(n)!.write(data, 0, len, pos);
          assert.equal(bytesWritten, len);
          modelWrite(model, n, pos, data);
          if (r(10) === 0) await handles.get(n)!.sync();
          // The cache serves reads of data not yet written back.
          if (r(5) === 0) {
            const back = new Uint8Array(len);
            await handles.get(n)!.read(back, 0, len, pos);
            assert.deepEqual(back, data, `seed ${seed}: read-back through the cache`);
          }
        }
        for (const h of handles.values()) await h.close();
        if (session === 1) {
          await fs.writeFile('/whole', 'written by writeFile\n', { mode: 0o600 });
          // Before close, readFile sees the data through the page cache (not yet on disk).
          assert.equal(new TextDecoder().decode(await fs.readFile('/whole')), 'written by writeFile\n');
          const a = model.get('a')!;
          assert.ok(Buffer.from(await fs.readFile('/a')).equals(Buffer.from(a)), `seed ${seed}: readFile before close`);
        }
        await fs.close();
        e2fsckClean(img);
      }
      model.set('whole', new TextEncoder().encode('written by writeFile\n'));
      const ro = await Ext4.open(img);
      for (const [n, want] of model) {
        const got = await ro.readFile('/' + n);
        assert.equal(got.length, want.length, `seed ${seed}: size of ${n}`);
        assert.ok(Buffer.from(got).equals(Buffer.from(want)), `seed ${seed}: content of ${n}`);
      }
      await ro.close();
      await withKernelMount(t, img, join(work, `mnt-${v.name}-${seed}`), (mnt) => {
        for (const [n, want] of model) {
          const got = readFileSync(join(mnt, n));
          assert.ok(got.equals(Buffer.from(want)), `seed ${seed}: kernel content of ${n}`);
        }
      });
      rmSync(img);
    }
  });
}

/**
 * Page memory is recycled without being cleared (PagePool.alloc): the bytes of a new page
 * that a write does not cover must come from disk or be zeros, never from the page's last owner.
 * A 1 MiB file of 0xEE runs through a cache of 32 pages first, so every later page is one of its
 * pages; then small writes at unaligned offsets (inside a block, across blocks and pages, past
 * EOF with holes, over written data) must read back as the model, before and after close, in
 * ext4ts and in the kernel.
 */
for (const blockSize of [1024, 4096]) {
  test(`recycled page memory never shows through (${blockSize}-byte blocks, 4 KiB pages): uncovered bytes are read or zeroed`, async (t) => {
    const img = join(work, `recycle-${blockSize}.img`);
    await Ext4.mkfs(img, { sizeBytes: 16 << 20, blockSize });
    const r = prng(77 + blockSize);
    const POISON = 0xee;
    const fs = await Ext4.open(img, { readOnly: false, pageSizeBytes: 4096, dirtyLimitBytes: 64 << 10, cacheLimitBytes: 128 << 10 });
    await fs.writeFile('/poison', new Uint8Array(1 << 20).fill(POISON));
    await fs.sync();
    const model = new Map<string, Uint8Array>();
    const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => 1 + r(200));
    for (let f = 0; f < 12; f++) {
      const name = `f${f}`;
      await fs.mknod('/' + name, { mode: 0o644 });
      model.set(name, new Uint8Array(0));
      const h = await fs.open('/' + name, 'r+');
      for (let op = 0; op < 10; op++) {
        const cur = model.get(name)!;
        const len = 1 + r(op % 3 === 0 ? 9000 : 300);
        const pos = op % 4 === 0 ? r(cur.length + 1) : cur.length + r(6000);
        const data = bytes(len);
        await h.write(data, 0, len, pos);
        modelWrite(model, name, pos, data);
        if (r(3) === 0) await h.sync();
      }
      await h.close();
      const back = await fs.readFile('/' + name);
      assert.ok(Buffer.from(back).equals(Buffer.from(model.get(name)!)), `${name}: read back through the cache`);
    }
    await fs.close();
    e2fsckClean(img);
    const ro = await Ext4.open(img);
    for (const [n, want] of model) assert.ok(Buffer.from(await ro.readFile('/' + n)).equals(Buffer.from(want)), `${n}: read back after close`);
    await ro.close();
    await withKernelMount(t, img, join(work, `mnt-recycle-${blockSize}`), (mnt) => {
      for (const [n, want] of model) assert.ok(readFileSync(join(mnt, n)).equals(Buffer.from(want)), `${n}: kernel content`);
    });
    rmSync(img);
  });
}

test('delayed allocation: ENOSPC at write time when free blocks minus reservations cannot hold the data', async () => {
  const img = join(work, 'enospc.img');
  await Ext4.mkfs(img, { sizeBytes: 4 << 20, blockSize: 1024 });
  const fs = await Ext4.open(img, { readOnly: false });
  await fs.mknod('/f');
  const h = await fs.open('/f', 'r+');
  const free = fs.info().freeBlocksCount;
  await h.write(new Uint8Array(1024 * Math.floor(free / 2)).fill(7), 0, undefined, 0);
  // Linux semantics: a write that runs out of space part-way is short; the next one fails.
  const big = new Uint8Array(1024 * free).fill(8);
  const isEnospc = (e: unknown): boolean => e instanceof PosixError && e.code === 'ENOSPC';
  let expectLen = 1024 * Math.floor(free / 2);
  try {
    const { bytesWritten } = await h.write(big, 0, undefined, 1 << 22);
    assert.ok(bytesWritten > 0 && bytesWritten < big.length, `short write, got ${bytesWritten}`);
    expectLen = (1 << 22) + bytesWritten;
    await assert.rejects(h.write(big, bytesWritten, undefined, expectLen), isEnospc);
  } catch (e) {
    if (!isEnospc(e)) throw e;
  }
  await h.close();
  await fs.close();
  e2fsckClean(img);
  const ro = await Ext4.open(img);
  assert.equal((await ro.readFile('/f')).length, expectLen);
  await ro.close();
});

/**
 * The simulated run: SimDevice + SimWorkQueue (seeded completion order and latency), EIO injected
 * on the first data bio of one writeback pass. Checked: invariant 14 (the failed io_end is not
 * converted: its blocks stay unwritten and read as zeros after remount), fsync reports EIO exactly
 * once, the other data is intact, and invariants 5/6 (every io_end released, counters zero).
 */
for (const seed of ONLY_SEED !== undefined ? [ONLY_SEED] : [1, 2, 3, 4, 5, 6]) {
  test(`sim seed ${seed}: reordered completions + EIO on one bio — invariant 14 no conversion of the failed io_end, fsync EIO once, invariants 5/6 counters zero`, async () => {
    const blockSize = seed % 2 === 0 ? 4096 : 1024;
    const pageSizeBytes = [4096, 16384, 65536][seed % 3]!;
    const base = new Uint8Array(16 << 20);
    await Ext4.mkfs(new MemDevice(base), { sizeBytes: 16 << 20, blockSize });
    const wq = new SimWorkQueue(seed);
    const r = prng(seed * 7919);
    const files = 3;
    const model: Uint8Array[] = [];
    let durable: Uint8Array | undefined;
    const failedFile = r(files);
    let failedLblk = -1;
    await wq.run(async () => {
      let failNextWrite = false;
      let failedAt = -1;
      const dev = new SimDevice({
        queue: wq, seed, image: base, maxRequestBytes: 64 << 10,
        eio: (req) => {
          if (!failNextWrite || req.op !== 'write') return false;
          failNextWrite = false;
          failedAt = req.offsetBytes;
          return true;
        },
      });
      const s = await Ext4Super.mount(dev, {});
      const ns = new Namespace(s);
      const data = new FileData(s, { pageSizeBytes, wq, maxBioVecs: 3 });
      const infos = [];
      for (let i = 0; i < files; i++) {
        const created = await ns.mknod(`/f${i}`, { type: 'file' }, 0o644, { uid: 0, gid: 0 });
        const info = await iget(s, created.ino);
        infos.push(info);
        const len = 20_000 + r(200_000);
        const bytes = randomBytes(r, len);
        const hole = r(3) * blockSize + r(blockSize);
        await data.write(info, hole, bytes);
        const m = new Uint8Array(hole + len);
        m.set(bytes, hole);
        model.push(m);
      }
      const cursors = infos.map((i) => data.openErrCursor(i));
      // The failing file: its whole first pass runs with the first data bio failing.
      const victim = infos[failedFile]!;
      failNextWrite = true;
      await data.writepages(victim);
      assert.equal(failNextWrite, false, 'a data bio was submitted and failed');
      const ext = await new ExtentTree(s, victim, getBalloc(s)).extents();
      assert.ok(ext.every((e) => e.unwritten), 'delayed blocks are mapped as unwritten extents before their I/O completes');
      for (let i = 0; i < files; i++) if (i !== failedFile) await data.writepages(infos[i]!);
      // fsync reports EIO once for the failing file, never for the others.
      await assert.rejects(data.fsync(victim, cursors[failedFile]), (e: unknown) => e instanceof PosixError && e.code === 'EIO');
      await data.fsync(victim, cursors[failedFile]);
      for (let i = 0; i < files; i++) if (i !== failedFile) await data.fsync(infos[i]!, cursors[i]);
      for (const info of infos) {
        const io = data.inodeIo(info);
        assert.ok(io.isIdle(), 'invariant 5/6: every io_end released');
        assert.equal(io.ioendCount, 0);
        assert.equal(io.unwritten, 0);
        assert.equal(data.mappingOf(info).findTagged('writeback').length, 0, 'invariant 19: no page left under writeback');
      }
      assert.equal(data.reservedBlocks, 0, 'every reservation consumed');
      assert.ok(data.stats.conversions >= files - 1 && data.stats.bios > data.stats.ioEnds, 'io_ends are shared by several bios');
      const failedPblk = failedAt / blockSize;
      const final = await new ExtentTree(s, victim, getBalloc(s)).extents();
      const fe = final.find((e) => failedPblk >= e.pblk && failedPblk < e.pblk + e.len);
      assert.ok(fe !== undefined && fe.unwritten, 'invariant 14: the failed io_end was not converted');
      failedLblk = fe.lblk + (failedPblk - fe.pblk);
      // Every extent is either converted, or part of the failed io_end (same unwritten run).
      for (const e of final) if (e !== fe) assert.ok(!e.unwritten, `extent ${e.lblk}+${e.len} converted`);
      // The failed io_end covered the run [fe.lblk, fe.lblk + fe.len): all of it reads as zeros.
      model[failedFile]!.fill(0, fe.lblk * blockSize, Math.min(model[failedFile]!.length, (fe.lblk + fe.len) * blockSize));
      await s.close();
      durable = dev.durableImage();
    });
    assert.ok(failedLblk >= 0);
    // Remount the durable image: the failed range reads as zeros, everything else as written.
    const fs = await Ext4.open(new MemDevice(durable!), {});
    for (let i = 0; i < files; i++) {
      const got = await fs.readFile(`/f${i}`);
      assert.equal(got.length, model[i]!.length, `seed ${seed}: size of f${i}`);
      assert.ok(Buffer.from(got).equals(Buffer.from(model[i]!)), `seed ${seed}: content of f${i}`);
    }
    await fs.close();
    const img = join(work, `sim-${seed}.img`);
    writeFileSync(img, durable!);
    e2fsckClean(img);
    rmSync(img);
  });
}
