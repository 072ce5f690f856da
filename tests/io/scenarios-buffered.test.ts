/**
 * IO-DESIGN.md §7's historical scenarios, replayed on the buffered data path (FileData over a
 * SimDevice + SimWorkQueue), one named test per scenario that applies to buffered I/O, plus
 * targeted tests for invariants that a scenario does not show clearly. Each test drives the
 * exact event sequence of its scenario (fault sites, EIO on chosen bios, completions stepped
 * one at a time) and checks the expected behaviour, usually ending with a remount of the
 * durable image.
 *
 * Out of scope here (direct I/O, covered by the direct-I/O engineer's tests):
 *   S1  AIO DIO partial failure double put (iocb->private error path);
 *   S2  AIO DIO with zero progress, inode_dio_done twice;
 *   S9  competing overwrite DIO overwriting an inode-global io_end pointer;
 *   S16 unaligned AIO DIO vs an overlapping aligned AIO DIO.
 *
 * The last group reproduces engine bugs the data simulator found (tests/sim/data-sim.ts); a test
 * marked `todo: 'bug: …'` is one not fixed yet (KNOWN_BUGS there) and fails until it is.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4 } from '../../src/api/ext4.js';
import { fixedClock, seededRandom } from '../../src/api/mkfs.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import { SimDevice, type SimRequest } from '../../src/blockdev/sim-device.js';
import { BH } from '../../src/cache/buffer-head.js';
import { PG, type Page } from '../../src/cache/page.js';
import { getBalloc } from '../../src/fs/alloc/balloc.js';
import { ExtentTree, type ExtentRec } from '../../src/fs/extents/extent-tree.js';
import { iget } from '../../src/fs/inode/icache.js';
import type { InodeInfo } from '../../src/fs/inode/inode.js';
import { Namespace } from '../../src/fs/namespace.js';
import { Ext4Super } from '../../src/fs/super.js';
import { FileData } from '../../src/io/file-data.js';
import type { IoRange } from '../../src/io/io-end.js';
import { faults, type FaultSite } from '../../src/runtime/faults.js';
import { SimWorkQueue } from '../../src/runtime/work-queue.js';
import { PosixError } from '../../src/util/errors.js';

// ---------------------------------------------------------------------------------------------
// The rig: an image on a SimDevice, a SimWorkQueue, FileData, and helpers to step completions
// ---------------------------------------------------------------------------------------------

const IMAGE_BYTES = 8 << 20;

interface RigOptions {
  blockSize: number;
  pageSize: number;
  seed?: number;
  maxBioVecs?: number;
  maxRequestBytes?: number;
  dirtyLimitBytes?: number;
  /** Latency range of the device in ticks (default 1..8). */
  latency?: { min: number; max: number };
}

interface Rig {
  readonly wq: SimWorkQueue;
  readonly dev: SimDevice;
  readonly s: Ext4Super;
  readonly ns: Namespace;
  readonly data: FileData;
  readonly bs: number;
  /** Fails the write requests for which it returns true (set by a test, default none). */
  failWrite: (req: SimRequest) => boolean;
  /** Write requests that failed. */
  readonly failed: SimRequest[];
}

/** Free space starts as non-zero garbage, so exposed stale blocks cannot pass for zeros. */
function garbageImage(): Uint8Array {
  const img = new Uint8Array(IMAGE_BYTES);
  for (let i = 0; i < img.length; i++) img[i] = ((Math.imul(i, 0x9e3779b1) >>> 24) | 0x01) & 0xff;
  return img;
}

async function makeRig(o: RigOptions): Promise<Rig> {
  const base = garbageImage();
  await Ext4.mkfs(new MemDevice(base), { sizeBytes: IMAGE_BYTES, blockSize: o.blockSize, random: seededRandom(7), clock: fixedClock(1_700_000_000) });
  const wq = new SimWorkQueue(o.seed ?? 1);
  const failed: SimRequest[] = [];
  const holder: { rig?: Rig } = {};
  const dev = new SimDevice({
    queue: wq, seed: o.seed ?? 1, image: base, maxRequestBytes: o.maxRequestBytes ?? 1 << 20, latencyTicks: o.latency ?? { min: 1, max: 8 },
    eio: (req) => {
      if (req.op !== 'write' || holder.rig === undefined || !holder.rig.failWrite(req)) return false;
      failed.push(req);
      return true;
    },
  });
  return wq.run(async () => {
    const s = await Ext4Super.mount(dev, { clock: fixedClock(1_700_000_000) });
    const data = new FileData(s, { pageSizeBytes: o.pageSize, wq, maxBioVecs: o.maxBioVecs, dirtyLimitBytes: o.dirtyLimitBytes });
    const rig: Rig = { wq, dev, s, ns: new Namespace(s), data, bs: o.blockSize, failWrite: () => false, failed };
    holder.rig = rig;
    return rig;
  });
}

async function mkfile(r: Rig, name: string): Promise<InodeInfo> {
  const created = await r.ns.mknod(`/${name}`, { type: 'file' }, 0o644, { uid: 0, gid: 0 });
  return iget(r.s, created.ino);
}

/** One macrotask turn: every promise continuation queued so far has run. */
function drain(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Runs queue items one at a time until `p` settles, calling `check` after each item; returns
 * p's value. Completions the test did not ask for stay queued.
 */
async function settle<T>(r: Rig, p: Promise<T>, check: () => void = () => undefined): Promise<T> {
  let done = false;
  const q = p.finally(() => {
    done = true;
  });
  q.catch(() => undefined);
  await drain();
  while (!done) {
    assert.ok(r.wq.runOne(), 'workload waiting with nothing queued (a lost completion or a hang)');
    await drain();
    check();
  }
  return q;
}

/** Runs every queued item, one at a time, calling `check` after each. */
async function runAll(r: Rig, check: () => void = () => undefined): Promise<void> {
  await drain();
  while (r.wq.runOne()) {
    await drain();
    check();
  }
}

function pattern(n: number, salt: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = ((i * 31 + salt * 17) % 251) + 1;
  return b;
}

/** Installs a fault injector failing `site` on the hits whose 1-based numbers are in `nth`. */
function failAt(site: FaultSite, nth: number[]): () => void {
  const counts = new Map<FaultSite, number>();
  return faults.install((s) => {
    const n = (counts.get(s) ?? 0) + 1;
    counts.set(s, n);
    return s === site && nth.includes(n);
  });
}

function pagesOf(r: Rig, info: InodeInfo): Page[] {
  return r.data.mappingOf(info).pagesInOrder();
}

/** Invariant 18: nothing left locked, under writeback or AsyncWrite (call when idle). */
function assertClean(r: Rig, info: InodeInfo, what: string): void {
  for (const p of pagesOf(r, info)) {
    assert.equal(PG.testLocked(p), false, `${what}: ${p.describe()} left locked`);
    assert.equal(PG.testWriteback(p), false, `${what}: ${p.describe()} left under writeback`);
    for (const bh of p.buffers) assert.equal(BH.testAsyncWrite(bh), false, `${what}: ${bh.describe()} left AsyncWrite`);
  }
}

function assertIdle(r: Rig, info: InodeInfo, what: string): void {
  const io = r.data.inodeIo(info);
  assert.equal(io.ioendCount, 0, `${what}: i_ioend_count (invariant 5)`);
  assert.equal(io.unwritten, 0, `${what}: i_unwritten (invariant 6)`);
  assert.equal(io.completed.length, 0, `${what}: completed list empty`);
  assert.ok(io.isIdle(), `${what}: InodeIo idle`);
}

/** Closes the mount and returns the named files as a fresh mount of the durable image reads them. */
async function remount(r: Rig, names: string[]): Promise<Map<string, Uint8Array>> {
  await r.wq.run(async () => {
    await r.data.flushAll();
    await r.s.close();
  });
  const img = r.dev.durableImage();
  const path = join(tmpdir(), `ext4ts-scenarios-${process.pid}.img`);
  writeFileSync(path, img);
  try {
    const fsck = spawnSync('e2fsck', ['-fn', path], { encoding: 'utf8' });
    assert.equal(fsck.status, 0, `e2fsck -fn:\n${fsck.stdout}${fsck.stderr}`);
  } finally {
    rmSync(path, { force: true });
  }
  const fs = await Ext4.open(new MemDevice(img), {});
  try {
    const out = new Map<string, Uint8Array>();
    for (const n of names) out.set(n, await fs.readFile(`/${n}`));
    return out;
  } finally {
    await fs.close();
  }
}

async function extentsOf(r: Rig, info: InodeInfo): Promise<ExtentRec[]> {
  return r.wq.run(() => new ExtentTree(r.s, info, getBalloc(r.s)).extents());
}

/** Is logical block `lblk` mapped by an unwritten extent? */
function unwrittenAt(ext: ExtentRec[], lblk: number): boolean {
  const e = ext.find((x) => lblk >= x.lblk && lblk < x.lblk + x.len);
  assert.ok(e !== undefined, `lblk ${lblk} is mapped`);
  return e.unwritten;
}

function isEnomem(e: unknown): boolean {
  return e instanceof PosixError && e.code === 'ENOMEM';
}

// ---------------------------------------------------------------------------------------------
// S3, S4, S7, S15: allocation failures in writeback (IO-DESIGN §1.3 C/D, §2.7, invariant 18)
// ---------------------------------------------------------------------------------------------

test('S3: ENOMEM at io_end allocation leaves no page locked or under writeback; the page stays dirty and the next writepages writes it', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const data = pattern(3 * 4096, 3);
  await r.wq.run(() => r.data.write(info, 0, data));
  const off = failAt('io_end_alloc', [1]);
  try {
    await r.wq.run(() => assert.rejects(r.data.writepages(info), isEnomem));
    assert.equal(faults.failures.get('io_end_alloc'), 1, 'the io_end allocation was reached and failed');
  } finally {
    off();
  }
  assertClean(r, info, 'after the failed pass');
  const pages = pagesOf(r, info);
  assert.ok(pages.length === 3 && pages.every((p) => PG.testDirty(p)), 'every page redirtied (none written, none invalidated)');
  assertIdle(r, info, 'after the failed pass');
  await r.wq.run(() => r.data.fsync(info));
  assertClean(r, info, 'after fsync');
  assert.equal(r.data.reservedBlocks, 0);
  assert.deepEqual((await remount(r, ['f'])).get('f'), data, 'the retry wrote every byte');
});

test('S4: ENOMEM at the second io_end of a pass: pages already submitted complete, later pages stay dirty and unlocked, the next pass writes them', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 4 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  // Two runs of pages (a hole between them): two io_ends in one pass.
  const a = pattern(4 * 4096, 1);
  const b = pattern(4 * 4096, 2);
  await r.wq.run(async () => {
    await r.data.write(info, 0, a);
    await r.data.write(info, 8 * 4096, b);
  });
  const off = failAt('io_end_alloc', [2]);
  let submitted: Page[] = [];
  try {
    await settle(r, assert.rejects(r.data.writepages(info), isEnomem));
    submitted = r.data.mappingOf(info).findTagged('writeback');
  } finally {
    off();
  }
  assert.equal(submitted.length, 4, 'the first run is under writeback');
  for (const p of pagesOf(r, info)) {
    assert.equal(PG.testLocked(p), false, `${p.describe()}: unlocked`);
    if (p.index >= 8) assert.ok(PG.testDirty(p) && !PG.testWriteback(p), `${p.describe()}: second run left dirty, not under writeback`);
  }
  await runAll(r);
  assertClean(r, info, 'after the first run completed');
  assertIdle(r, info, 'after the first run completed');
  await r.wq.run(() => r.data.fsync(info));
  const want = new Uint8Array(12 * 4096);
  want.set(a, 0);
  want.set(b, 8 * 4096);
  assert.deepEqual((await remount(r, ['f'])).get('f'), want);
});

test('S7: ENOMEM at bio allocation after set_page_writeback: writeback ends at once, the io_end is released, the page stays dirty', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 7 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const data = pattern(2 * 4096, 7);
  await r.wq.run(() => r.data.write(info, 0, data));
  const off = failAt('bio_alloc', [1]);
  try {
    await settle(r, assert.rejects(r.data.writepages(info), isEnomem));
    assert.equal(faults.failures.get('bio_alloc'), 1, 'the bio allocation was reached and failed');
  } finally {
    off();
  }
  // Before any completion runs: nothing was submitted, so nothing may stay under writeback.
  assert.equal(r.dev.inFlightCount, 0, 'no request reached the device');
  assertClean(r, info, 'right after the failed pass');
  assertIdle(r, info, 'right after the failed pass');
  assert.ok(pagesOf(r, info).every((p) => PG.testDirty(p)), 'pages redirtied');
  await r.wq.run(() => r.data.fsync(info));
  assert.deepEqual((await remount(r, ['f'])).get('f'), data);
});

test('S15: ENOMEM at io_end range (io_end_vec) allocation is propagated; pages unlocked and redirtied; no io_end or unwritten count leaks', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 16384, seed: 15 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const data = pattern(2 * 16384, 15);
  await r.wq.run(() => r.data.write(info, 0, data));
  const off = failAt('io_range_alloc', [1]);
  try {
    await settle(r, assert.rejects(r.data.writepages(info), isEnomem));
    assert.equal(faults.failures.get('io_range_alloc'), 1, 'the range allocation was reached and failed');
  } finally {
    off();
  }
  assertClean(r, info, 'right after the failed pass');
  assertIdle(r, info, 'right after the failed pass');
  assert.ok(pagesOf(r, info).every((p) => PG.testDirty(p)), 'pages redirtied');
  await r.wq.run(() => r.data.fsync(info));
  assert.deepEqual((await remount(r, ['f'])).get('f'), data);
});

/**
 * Page 0 with blocks 0–1 and 3 dirty (two io_ends: a logical gap) whose writeback fails to
 * allocate the second io_end: the page is redirtied with blocks 0–1 still in flight (invariant 23).
 */
async function redirtiedUnderWriteback(seed: number) {
  const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  await r.wq.run(async () => {
    await r.data.write(info, 0, pattern(2048, 1));
    await r.data.write(info, 3072, pattern(1024, 2));
  });
  const off = failAt('io_end_alloc', [2]);
  try {
    await settle(r, assert.rejects(r.data.writepages(info), isEnomem));
  } finally {
    off();
  }
  const page = pagesOf(r, info)[0]!;
  assert.ok(PG.testWriteback(page) && PG.testDirty(page), 'page 0: blocks 0–1 in flight, block 3 redirtied');
  return { r, info, page };
}

test('invariant 23: ENOMEM after k buffers of a page: the k complete, the rest stay dirty, and the next pass (fsync) writes them without resubmitting a page under writeback', async () => {
  const { r, info, page } = await redirtiedUnderWriteback(23);
  // A second pass before the first completes (background writeback, fsync) must not fail.
  await r.wq.run(() => r.data.fsync(info));
  assertClean(r, info, 'after fsync');
  const want = new Uint8Array(4096);
  want.set(pattern(2048, 1), 0);
  want.set(pattern(1024, 2), 3072);
  assert.deepEqual((await remount(r, ['f'])).get('f'), want);
});

// ---------------------------------------------------------------------------------------------
// S5, S14: eviction vs conversion work
// ---------------------------------------------------------------------------------------------

test('S5: forgetting or discarding an inode waits for its conversion work; no conversion runs on it afterwards', async () => {
  for (const how of ['forget', 'discard'] as const) {
    const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed: 5, maxBioVecs: 2 });
    const info = await r.wq.run(() => mkfile(r, 'f'));
    await r.wq.run(() => r.data.write(info, 0, pattern(16 * 1024, 5)));
    const io = r.data.inodeIo(info);
    let gone = false;
    const convert = io.convert;
    (io as unknown as { convert: (x: readonly IoRange[]) => Promise<void> }).convert = (ranges) => {
      assert.equal(gone, false, `${how}: conversion work ran on an inode already forgotten (S5)`);
      return convert(ranges);
    };
    await settle(r, r.data.writepages(info));
    assert.ok(io.unwritten > 0, 'unwritten io_ends in flight when eviction starts');
    await r.wq.run(async () => {
      await (how === 'forget' ? r.data.forget(info) : r.data.discard(info));
      gone = true;
      assert.ok(io.isIdle() && io.completed.length === 0, `${how}: returned with conversion work pending or running`);
    });
    assert.equal(r.data.has(info.ino), false, `${how}: the inode's cache state is gone`);
  }
});

test('S14: a task holding inode A\'s lock can evict inode B and wait for B\'s conversion, and A\'s own conversion needs no inode lock', async () => {
  const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed: 14, maxBioVecs: 1 });
  const [a, b] = await r.wq.run(async () => [await mkfile(r, 'a'), await mkfile(r, 'b')]);
  await r.wq.run(async () => {
    await r.data.write(a, 0, pattern(8192, 1));
    await r.data.write(b, 0, pattern(8192, 2));
  });
  // Both inodes' conversions are queued on the same work queue.
  await settle(r, (async () => {
    await r.data.writepages(a);
    await r.data.writepages(b);
  })());
  assert.ok(r.data.inodeIo(a).unwritten > 0 && r.data.inodeIo(b).unwritten > 0);
  await r.wq.run(() => r.data.withInodeLock(a, async () => {
    await r.data.forget(b);
    await r.data.inodeIo(a).waitIdle();
  }));
  assertIdle(r, a, 'inode A');
  const got = await remount(r, ['a', 'b']);
  assert.deepEqual(got.get('a'), pattern(8192, 1));
  assert.deepEqual(got.get('b'), pattern(8192, 2));
});

// ---------------------------------------------------------------------------------------------
// S6: the unwritten counter
// ---------------------------------------------------------------------------------------------

test('S6: i_unwritten counts each UNWRITTEN io_end once however many bios share it, and returns to zero', async () => {
  const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed: 6, maxBioVecs: 1 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  await r.wq.run(() => r.data.write(info, 0, pattern(16 * 1024, 6)));
  const st = { ...r.data.stats };
  await settle(r, r.data.writepages(info));
  const io = r.data.inodeIo(info);
  const ioEnds = r.data.stats.ioEnds - st.ioEnds;
  const bios = r.data.stats.bios - st.bios;
  // maxBioVecs 1: a bio holds one page's segment, so the 16 blocks need at least 4 bios.
  assert.ok(bios >= 4 && ioEnds < bios, `one io_end shared by several bios (${ioEnds} io_ends, ${bios} bios)`);
  assert.equal(io.unwritten, r.data.stats.unwrittenIoEnds - st.unwrittenIoEnds, 'i_unwritten = live UNWRITTEN io_ends');
  assert.equal(io.ioendCount, ioEnds, 'i_ioend_count = live io_ends');
  await runAll(r, () => assert.ok(io.unwritten >= 0 && io.ioendCount >= 0, 'never below zero'));
  assertIdle(r, info, 'after completion');
});

test('invariant 12: rewriting converted blocks does not make the new io_end UNWRITTEN (Uninit is consumed)', async () => {
  const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed: 12 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  await r.wq.run(async () => {
    await r.data.write(info, 0, pattern(8192, 1));
    await r.data.fsync(info);
  });
  const st = { ...r.data.stats };
  await r.wq.run(async () => {
    await r.data.write(info, 1024, pattern(4096, 2));
    await r.data.fsync(info);
  });
  assert.ok(r.data.stats.ioEnds > st.ioEnds, 'the rewrite went through an io_end');
  assert.equal(r.data.stats.unwrittenIoEnds, st.unwrittenIoEnds, 'no UNWRITTEN io_end for written blocks');
  assert.equal(r.data.stats.conversions, st.conversions, 'nothing converted again');
});

// ---------------------------------------------------------------------------------------------
// S8, S10, S11: page completion
// ---------------------------------------------------------------------------------------------

test('S8: a page whose buffers go out in two bios ends writeback exactly once, after the last buffer and its conversion, in every completion order (invariants 19, 20, 24)', async () => {
  for (let seed = 1; seed <= 12; seed++) {
    const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed, latency: { min: 0, max: 12 } });
    const info = await r.wq.run(() => mkfile(r, 'f'));
    // Blocks 0 and 2 of page 0: logically apart, so two io_ends and two bios for one page.
    await r.wq.run(async () => {
      await r.data.write(info, 0, pattern(1024, 1));
      await r.data.write(info, 2048, pattern(1024, 2));
    });
    const page = pagesOf(r, info)[0]!;
    const convBefore = r.data.stats.conversions;
    let ends = 0;
    const end = page.endWriteback.bind(page);
    page.endWriteback = () => {
      ends++;
      assert.ok(page.buffers.every((bh) => !BH.testAsyncWrite(bh)), `seed ${seed}: writeback ended with a buffer still under I/O (S8)`);
      assert.equal(r.data.stats.conversions - convBefore, 2, `seed ${seed}: writeback ended before both conversions (invariant 24)`);
      end();
    };
    const st = { ...r.data.stats };
    await settle(r, r.data.writepages(info));
    assert.equal(r.data.stats.bios - st.bios, 2, 'two bios for the page');
    await runAll(r, () => {
      if (page.buffers.some((bh) => BH.testAsyncWrite(bh))) assert.ok(PG.testWriteback(page), `seed ${seed}: a buffer under I/O on a page not under writeback (invariant 20)`);
    });
    assert.equal(ends, 1, `seed ${seed}: end_page_writeback exactly once (invariant 19)`);
    assertIdle(r, info, `seed ${seed}`);
  }
});

test('S10: a FAILED UNWRITTEN io_end is queued only with its bio linked; page writeback ends at its release; nothing is converted (invariants 14, 24, 25)', async () => {
  for (let seed = 1; seed <= 6; seed++) {
    // One block per request: the page's four blocks go out in four bios of one io_end.
    const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed, maxRequestBytes: 1024 });
    const info = await r.wq.run(() => mkfile(r, 'f'));
    await r.wq.run(() => r.data.write(info, 0, pattern(4096, seed)));
    let n = 0;
    r.failWrite = () => ++n === 2; // the second of the page's four bios
    const io = r.data.inodeIo(info);
    const page = pagesOf(r, info)[0]!;
    const st = { ...r.data.stats };
    await settle(r, r.data.writepages(info));
    r.failWrite = () => false;
    assert.equal(r.data.stats.ioEnds - st.ioEnds, 1, 'one io_end');
    assert.equal(r.data.stats.bios - st.bios, 4, 'four bios');
    let sawQueued = false;
    await runAll(r, () => {
      if (io.completed.length > 0) {
        sawQueued = true;
        assert.ok(PG.testWriteback(page), `seed ${seed}: io_end queued for the worker but its page already finished writeback (S10)`);
      }
    });
    assert.ok(sawQueued, `seed ${seed}: the FAILED UNWRITTEN io_end went through the worker`);
    assert.equal(r.failed.length, 1);
    assertClean(r, info, `seed ${seed}`);
    assertIdle(r, info, `seed ${seed}`);
    const ext = await extentsOf(r, info);
    for (let b = 0; b < 4; b++) assert.ok(unwrittenAt(ext, b), `seed ${seed}: lblk ${b} of the FAILED io_end stays unwritten`);
  }
});

test('S11: a write into a page under writeback waits for the writeback to end before it changes the page or its buffers (invariant 26)', async () => {
  const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed: 11, maxBioVecs: 1 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const first = pattern(4096, 1);
  await r.wq.run(() => r.data.write(info, 0, first));
  await settle(r, r.data.writepages(info));
  const page = pagesOf(r, info)[0]!;
  assert.ok(PG.testWriteback(page));
  let done = false;
  const w = r.data.write(info, 1024, pattern(1024, 2)).then(() => {
    done = true;
  });
  await runAll(r, () => {
    if (PG.testWriteback(page)) {
      assert.equal(done, false);
      assert.deepEqual(page.data.subarray(1024, 2048), first.subarray(1024, 2048), 'page changed under writeback');
      assert.ok(page.buffers.every((bh) => !BH.testDirty(bh)), 'a buffer dirtied under writeback');
    }
  });
  await w;
  await r.wq.run(() => r.data.fsync(info));
  const want = first.slice();
  want.set(pattern(1024, 2), 1024);
  assert.deepEqual((await remount(r, ['f'])).get('f'), want);
});

// ---------------------------------------------------------------------------------------------
// S12: no conversion after a failed write; EIO reported once
// ---------------------------------------------------------------------------------------------

test('S12: fallocate, buffered write, EIO: the failed io_end is not converted, reads give zeros (never the old disk contents), fsync reports EIO once', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 12, maxBioVecs: 2 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const len = 16 * 4096;
  const data = pattern(len, 12);
  const cursor = r.data.openErrCursor(info);
  await r.wq.run(async () => {
    await r.data.fallocate(info, 0, len);
    await r.data.fsync(info, cursor);
    await r.data.write(info, 0, data);
  });
  r.failWrite = (req) => r.failed.length === 0 && req.lenBytes <= 2 * 4096;
  await r.wq.run(async () => {
    await assert.rejects(r.data.fsync(info, cursor), (e: unknown) => e instanceof PosixError && e.code === 'EIO');
    await r.data.fsync(info, cursor);
  });
  assert.equal(r.failed.length, 1, 'one data bio failed');
  const failedBlock = r.failed[0]!.offsetBytes / 4096;
  const ext = await extentsOf(r, info);
  const fe = ext.find((e) => failedBlock >= e.pblk && failedBlock < e.pblk + e.len);
  assert.ok(fe !== undefined && fe.unwritten, 'the failed bio\'s extent stays unwritten');
  // After the cache is dropped, and after a remount, the failed range reads as zeros.
  await r.wq.run(async () => {
    await r.data.flushAll();
    r.data.dropCaches();
  });
  const lblk = fe.lblk + (failedBlock - fe.pblk);
  const readBack = await r.wq.run(() => r.data.read(info, 0, len));
  const got = (await remount(r, ['f'])).get('f')!;
  for (const view of [readBack, got]) {
    assert.equal(view.length, len);
    const blocks = r.failed[0]!.lenBytes / 4096;
    assert.ok(view.subarray(lblk * 4096, (lblk + blocks) * 4096).every((x) => x === 0), 'failed blocks read as zeros, not stale disk contents');
    for (let b = 0; b < 16; b++) {
      const blk = view.subarray(b * 4096, (b + 1) * 4096);
      const ok = blk.every((x) => x === 0) || Buffer.from(blk).equals(Buffer.from(data.subarray(b * 4096, (b + 1) * 4096)));
      assert.ok(ok, `block ${b} is either the data written or zeros (FAILED io_end), never anything else`);
    }
  }
});

test('conversion near a full filesystem: fallocate leaves the blocks a later conversion needs to split the unwritten extent, so buffered writes into it convert and fsync succeeds (crash harness seed 4672)', async () => {
  const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed: 21 });
  const [info, filler] = await r.wq.run(async () => [await mkfile(r, 'f'), await mkfile(r, 'filler')]);
  const cursor = r.data.openErrCursor(info);
  const balloc = getBalloc(r.s);
  const isEnospc = (e: unknown): boolean => e instanceof PosixError && e.code === 'ENOSPC';
  await r.wq.run(async () => {
    await r.data.fallocate(filler, 0, (balloc.freeBlocksCount() - 64) * 1024);
    // Preallocate as much as fallocate allows (it used to take every free block).
    for (let n = balloc.freeBlocksCount(); ; n--) {
      try {
        await r.data.fallocate(info, 0, n * 1024);
        break;
      } catch (e) {
        if (!isEnospc(e)) throw e;
      }
    }
    await r.data.fsync(info, cursor);
    // Every other block written: each conversion splits the unwritten extent, and past the four
    // extents of the inode the tree needs a block.
    for (let b = 1; b < 24; b += 2) await r.data.write(info, b * 1024, pattern(1024, b));
    await r.data.fsync(info, cursor);
    await r.data.flushAll();
    r.data.dropCaches();
  });
  const got = await r.wq.run(() => r.data.read(info, 0, 24 * 1024));
  for (let b = 0; b < 24; b++) {
    const want = b % 2 === 1 ? pattern(1024, b) : new Uint8Array(1024);
    assert.deepEqual(got.subarray(b * 1024, (b + 1) * 1024), want, `block ${b}`);
  }
  assertIdle(r, info, 'after the conversions');
});

// ---------------------------------------------------------------------------------------------
// S13: conversion never needs what a writeback waiter holds
// ---------------------------------------------------------------------------------------------

test('S13: a writer holding the inode lock waits on writeback of an UNWRITTEN io_end, and the conversion still completes', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 13 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  await r.wq.run(() => r.data.write(info, 0, pattern(8192, 1)));
  await settle(r, r.data.writepages(info));
  assert.ok(r.data.inodeIo(info).unwritten > 0, 'conversion pending');
  // Page writeback ends only after conversion (invariant 24), so this write waits on it.
  const before = r.data.stats.conversions;
  let convertedWhenWritten = -1;
  await r.wq.run(() => r.data.withInodeLock(info, async () => {
    await r.data.write(info, 100, pattern(10, 2));
    convertedWhenWritten = r.data.stats.conversions - before;
  }));
  assert.ok(convertedWhenWritten > 0, 'the writer went on only after the conversion it waited for');
  assertIdle(r, info, 'after the locked writer finished');
});

// ---------------------------------------------------------------------------------------------
// S17 / invariant 10: sub-page gaps convert exactly the written blocks
// ---------------------------------------------------------------------------------------------

test('S17: with 1 KiB blocks, a page with written and preallocated blocks converts exactly the blocks written (invariant 10), and stale blocks are never exposed', async () => {
  const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed: 17 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  await r.wq.run(async () => {
    await r.data.fallocate(info, 0, 4096); // blocks 0–3 unwritten, their disk blocks garbage
    await r.data.fsync(info);
    r.data.dropCaches();
  });
  // Hooked after the cache drop, which made a new InodeIo.
  const ranges: IoRange[] = [];
  const io = r.data.inodeIo(info);
  const convert = io.convert;
  (io as unknown as { convert: (x: readonly IoRange[]) => Promise<void> }).convert = (rs) => {
    ranges.push(...rs.map((x) => ({ ...x })));
    return convert(rs);
  };
  await r.wq.run(async () => {
    await r.data.write(info, 0, pattern(1024, 1)); // block 0
    await r.data.write(info, 3072, pattern(1024, 2)); // block 3
    await r.data.write(info, 4096, pattern(4096, 3)); // blocks 4–7, delayed
    await r.data.fsync(info);
  });
  const blocks = new Set<number>();
  for (const x of ranges) for (let b = x.offset / 1024; b < (x.offset + x.size) / 1024; b++) blocks.add(b);
  assert.deepEqual([...blocks].sort((a, b) => a - b), [0, 3, 4, 5, 6, 7], 'converted exactly the written blocks');
  const ext = await extentsOf(r, info);
  assert.ok(unwrittenAt(ext, 1) && unwrittenAt(ext, 2), 'blocks 1–2 (never written) stay unwritten');
  const want = new Uint8Array(8192);
  want.set(pattern(1024, 1), 0);
  want.set(pattern(1024, 2), 3072);
  want.set(pattern(4096, 3), 4096);
  assert.deepEqual((await remount(r, ['f'])).get('f'), want, 'blocks 1–2 read as zeros, not garbage');
});

// ---------------------------------------------------------------------------------------------
// Engine bugs found by the data simulator: regression tests for the fixed ones, a todo test for
// the one still open (KNOWN_BUGS in tests/sim/data-sim.ts)
// ---------------------------------------------------------------------------------------------

test('invariant 14: each open file sees a write error once, also after the page cache was dropped (the errseq outlives the pages)', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 21 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const c1 = r.data.openErrCursor(info);
  const c2 = r.data.openErrCursor(info);
  const eio = (e: unknown): boolean => e instanceof PosixError && e.code === 'EIO';
  /** Writes `salt`'s data and writes it back with its data bio failing (metadata writes succeed). */
  const failedWrite = async (salt: number): Promise<void> => {
    await r.wq.run(() => r.data.write(info, 0, pattern(4096, salt)));
    r.failWrite = () => true;
    await settle(r, r.data.writepages(info));
    r.failWrite = () => false;
  };
  await failedWrite(1);
  await r.wq.run(async () => {
    await assert.rejects(r.data.fsync(info, c1), eio);
    await assert.rejects(r.data.fsync(info, c2), eio);
  });
  // A metadata operation elsewhere drops the caches (the API's dataBarrier does).
  await r.wq.run(async () => {
    await r.data.flushAll();
    r.data.dropCaches();
  });
  await failedWrite(2);
  await r.wq.run(async () => {
    await assert.rejects(r.data.fsync(info, c1), eio, 'file 1 sees the second error');
    await assert.rejects(r.data.fsync(info, c2), eio, 'file 2 sees the second error');
  });
});

test('device contract: buffered reads (readahead runs) are split at BlockDevice.maxRequestBytes', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 22, maxRequestBytes: 8192 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const data = pattern(64 * 1024, 22);
  await r.wq.run(async () => {
    await r.data.write(info, 0, data);
    await r.data.fsync(info);
    r.data.dropCaches();
  });
  assert.deepEqual(await r.wq.run(() => r.data.read(info, 0, data.length)), data);
});

test('fsync of one inode while another inode\'s conversion runs: no assertion, no lost metadata update, no stale checksum (e2fsck clean)', async () => {
  for (let seed = 1; seed <= 16; seed++) {
    const r = await makeRig({ blockSize: 1024, pageSize: 4096, seed, maxBioVecs: 1, latency: { min: 0, max: 20 } });
    const [a, b] = await r.wq.run(async () => [await mkfile(r, 'a'), await mkfile(r, 'b')]);
    // Many small extents in A (every other block), so its conversions change extent blocks.
    await r.wq.run(async () => {
      for (let i = 0; i < 200; i += 2) await r.data.write(a, i * 1024, pattern(1024, i));
      await r.data.write(b, 0, pattern(1024, 1));
    });
    await settle(r, r.data.writepages(a));
    await r.wq.run(() => r.data.fsync(b));
    const got = await remount(r, ['a', 'b']);
    assert.equal(got.get('b')!.length, 1024, `seed ${seed}`);
  }
});

test('filemap_write_and_wait_range: an allocation failure is returned, never a range left dirty for invalidate_inode_pages2_range', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 25 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  await r.wq.run(() => r.data.write(info, 0, pattern(2 * 4096, 25)));
  const off = failAt('io_end_alloc', [1]);
  let failed = false;
  try {
    await r.wq.run(() => r.data.writeAndWaitRange(info, 0, 8192)).catch((e: unknown) => {
      assert.ok(isEnomem(e), `writeAndWaitRange threw ${String(e)}`);
      failed = true;
    });
  } finally {
    off();
  }
  assert.equal(faults.failures.get('io_end_alloc'), 1, 'the io_end allocation was reached and failed');
  const dirty = pagesOf(r, info).filter((p) => PG.testDirty(p));
  assert.ok(failed || dirty.length === 0, `writeAndWaitRange succeeded with ${dirty.length} dirty page(s) left in the range`);
  if (!failed) await r.wq.run(() => r.data.invalidateRange(info, 0, 8192));
});

test('filemap_write_and_wait_range writes a page redirtied while under writeback (a pass that failed part-way), so invalidate finds it clean', async () => {
  const { r, info, page } = await redirtiedUnderWriteback(26);
  // What direct I/O does before it reads or writes the range.
  await r.wq.run(async () => {
    await r.data.writeAndWaitRange(info, 0, 4096);
    assert.equal(PG.testDirty(page), false, 'writeAndWaitRange left the page dirty');
    await r.data.invalidateRange(info, 0, 4096);
  });
  const want = new Uint8Array(4096);
  want.set(pattern(2048, 1), 0);
  want.set(pattern(1024, 2), 3072);
  assert.deepEqual((await remount(r, ['f'])).get('f'), want);
});

test('write() returns the bytes it copied even when the background writeback it starts fails with ENOMEM (balance_dirty_pages never fails a write)', async () => {
  const r = await makeRig({ blockSize: 4096, pageSize: 4096, seed: 24, dirtyLimitBytes: 4 * 4096 });
  const info = await r.wq.run(() => mkfile(r, 'f'));
  const data = pattern(8 * 4096, 24);
  const off = faults.install((site) => site === 'io_end_alloc');
  try {
    const n = await r.wq.run(() => r.data.write(info, 0, data));
    assert.equal(n, data.length);
  } finally {
    off();
  }
});
