/**
 * The IO-DESIGN.md scenarios and invariants that apply to direct I/O (§2.8, seed 003), each a
 * deterministic run on a SimDevice + SimWorkQueue (seeded completion order):
 *
 *   S1  AIO DIO partial failure: ENOSPC mid-request — the written prefix converted, the rest not.
 *   S2  AIO DIO with zero progress — nothing converted, io_end released once, i_dio_count back.
 *   S9  overwrite DIOs racing an unwritten AIO DIO — the io_end travels with its request.
 *   S12 (with S10's one predicate) EIO on a DIO into unwritten extents — no conversion, zeros.
 *   S16 overlapping AIO into a range whose conversion is pending waits for the conversion.
 *   invariants 15 (error paths), 16 (lazy io_end), 17 (sync conversion range);
 *   truncate waits for direct I/O (inode_dio_wait); a crash during an extending write;
 *   errors reported once (a failed conversion of a direct write is its own EIO, not fsync's);
 *   a failed extending write leaves zeros past EOF (the crash harness's catches).
 *
 * A hang (a counter that never returns to zero, a lost completion) fails the run through
 * SimWorkQueue.run's "workload still waiting" check. Every io_end is released once or IoEnd's
 * assertions throw.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4 } from '../../src/index.js';
import { SimDevice, type SimRequest } from '../../src/blockdev/sim-device.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import type { BlockDevice } from '../../src/blockdev/block-device.js';
import { SimWorkQueue } from '../../src/runtime/work-queue.js';
import { faults, type FaultSite } from '../../src/runtime/faults.js';
import { Ext4Super } from '../../src/fs/super.js';
import { Namespace } from '../../src/fs/namespace.js';
import { iget } from '../../src/fs/inode/icache.js';
import type { InodeInfo } from '../../src/fs/inode/inode.js';
import { ExtentTree, type ExtentRec } from '../../src/fs/extents/extent-tree.js';
import { getBalloc } from '../../src/fs/alloc/balloc.js';
import { FileData } from '../../src/io/file-data.js';
import { DirectIo, DIO_RESERVE_BLOCKS, type DioTraceEvent, type DirectIoOptions } from '../../src/io/direct-io.js';
import { AioContext } from '../../src/io/aio.js';
import { isExt4Error } from '../../src/util/errors.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-dio-scen-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function pattern(seed: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = (x >>> 24) | 1;
  }
  return b;
}

function isCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => isExt4Error(e) && e.code === code;
}

function e2fsckClean(image: Uint8Array, name: string): void {
  const img = join(work, `${name}.img`);
  writeFileSync(img, image);
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  const noise = r.stdout.split('\n').filter((l) => l !== '' && !/^Pass \d|^e2fsck \d|^[^:]+: \d+\/\d+ files/.test(l));
  assert.equal(r.status, 0, `e2fsck -fn exit ${r.status}:\n${r.stdout}${r.stderr}`);
  assert.deepEqual(noise, [], `e2fsck -fn printed:\n${r.stdout}`);
  rmSync(img);
}

interface Rig {
  s: Ext4Super;
  dev: SimDevice;
  ns: Namespace;
  data: FileData;
  dio: DirectIo;
  bs: number;
  eio: ((req: SimRequest) => boolean) | undefined;
  trace: DioTraceEvent[];
  newFile(name: string): Promise<InodeInfo>;
  /** The extents as [lblk, len, unwritten], logically adjacent ones of one kind merged. */
  extents(info: InodeInfo): Promise<[number, number, boolean][]>;
  /** Reads `blocks` blocks from block `first` directly. */
  readBlocks(info: InodeInfo, first: number, blocks: number): Promise<Uint8Array>;
  /** Drains, flushes and unmounts; the durable image is returned by withRig. */
  close(): Promise<void>;
}

/** Runs `body` on a fresh filesystem in a SimDevice; returns the durable image (after close). */
async function withRig(o: { seed: number; sizeBytes?: number; dio?: DirectIoOptions }, body: (r: Rig) => Promise<void>): Promise<Uint8Array> {
  const sizeBytes = o.sizeBytes ?? 8 << 20;
  const bs = 1024;
  const base = new Uint8Array(sizeBytes);
  await Ext4.mkfs(new MemDevice(base), { sizeBytes, blockSize: bs });
  const wq = new SimWorkQueue(o.seed);
  let image: Uint8Array = new Uint8Array(0);
  await wq.run(async () => {
    const rig = {} as Rig;
    const dev = new SimDevice({ queue: wq, seed: o.seed, image: base, maxRequestBytes: 16 << 10, eio: (req) => rig.eio?.(req) === true });
    const s = await Ext4Super.mount(dev, {});
    const ns = new Namespace(s);
    const data = new FileData(s, { wq, maxBioVecs: 2 });
    const trace: DioTraceEvent[] = [];
    const dio = new DirectIo(s, data, { ...o.dio, trace: (e) => trace.push(e) });
    Object.assign(rig, {
      s, dev, ns, data, dio, bs, eio: undefined, trace,
      newFile: async (name: string) => iget(s, (await ns.mknod(`/${name}`, { type: 'file' }, 0o644, { uid: 0, gid: 0 })).ino),
      extents: async (info: InodeInfo) => logical(await data.withTreeLock(info, () => new ExtentTree(s, info, getBalloc(s)).extents())),
      readBlocks: async (info: InodeInfo, first: number, blocks: number) => {
        const b = new Uint8Array(blocks * bs);
        await dio.read(info, first * bs, b);
        return b;
      },
      close: async () => {
        rig.eio = undefined;
        await dio.drain();
        await data.flushAll();
        await s.close();
        image = dev.durableImage();
      },
    });
    await body(rig);
  });
  return image;
}

/** [lblk, len, unwritten] per run, merging logically adjacent extents of one kind (physical layout aside). */
function logical(ext: readonly ExtentRec[]): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  for (const e of ext) {
    const last = out[out.length - 1];
    if (last !== undefined && last[0] + last[1] === e.lblk && last[2] === e.unwritten) last[1] += e.len;
    else out.push([e.lblk, e.len, e.unwritten]);
  }
  return out;
}

/** Invariants 5, 6, 15: io_end and direct-I/O counters back to zero; inode_dio_wait returns. */
async function assertIdle(r: Rig, info: InodeInfo, what: string): Promise<void> {
  const io = r.data.inodeIo(info);
  assert.equal(io.ioendCount, 0, `${what}: i_ioend_count`);
  assert.equal(io.unwritten, 0, `${what}: i_unwritten`);
  assert.ok(io.isIdle(), `${what}: io_ends idle`);
  assert.equal(r.dio.inFlight(info), 0, `${what}: direct requests in flight`);
  // A leaked i_dio_count would hang here; SimWorkQueue.run reports it as a lost completion.
  await r.data.dioWait(info);
}

/** Leaves exactly `avail` blocks a direct write may allocate (fills the rest with a fallocated file). */
async function fillTo(r: Rig, avail: number): Promise<void> {
  const filler = await r.newFile('filler');
  const balloc = getBalloc(r.s);
  const spare = balloc.freeBlocksCount() - r.data.reservedBlocks - DIO_RESERVE_BLOCKS - avail;
  assert.ok(spare > 0);
  await r.data.fallocate(filler, 0, spare * r.bs, {});
  const left = balloc.freeBlocksCount() - r.data.reservedBlocks - DIO_RESERVE_BLOCKS;
  assert.ok(left >= avail && left <= avail + 2, `left ${left}, wanted ${avail}`);
  if (left > avail) await r.data.fallocate(filler, spare * r.bs, (left - avail) * r.bs, { keepSize: true });
  assert.equal(balloc.freeBlocksCount() - r.data.reservedBlocks - DIO_RESERVE_BLOCKS, avail);
}

/** Counts io_end allocations through the named fault site (an injector that never fails). */
function countSites(): { hits(site: FaultSite): number; done(): void } {
  const uninstall = faults.install(() => false);
  return { hits: (site) => faults.hits.get(site) ?? 0, done: uninstall };
}

/** File layout used by several scenarios: [0,8) written, [8,16) fallocated, [16,24) hole; size 24 blocks. */
async function layout(r: Rig, name: string): Promise<InodeInfo> {
  const bs = r.bs;
  const info = await r.newFile(name);
  await r.dio.write(info, 0, pattern(1, 8 * bs));
  await r.data.fallocate(info, 8 * bs, 16 * bs, {});
  await r.data.fallocate(info, 16 * bs, 8 * bs, { punchHole: true, keepSize: true });
  assert.deepEqual(await r.extents(info), [[0, 8, false], [8, 8, true]]);
  assert.equal(r.data.sizeOf(info), 24 * bs);
  return info;
}

test('S1: AIO DIO partial failure — ENOSPC mid-request: the written prefix is converted, the rest is not; one io_end released once; counters zero', async () => {
  const image = await withRig({ seed: 101 }, async (r) => {
    const bs = r.bs;
    const info = await layout(r, 'f');
    await fillTo(r, 4);
    const sites = countSites();
    const data = pattern(2, 24 * bs);
    // [0,8) written, [8,16) unwritten (io_end allocated here, lazily), [16,20) allocated, then ENOSPC.
    const n = await r.dio.write(info, 0, data, { async: true });
    sites.done();
    assert.equal(n, 20 * bs, 'short write: the mapped prefix');
    assert.equal(sites.hits('dio_io_end_alloc'), 1, 'one io_end, allocated at the first unwritten mapping');
    assert.deepEqual(await r.extents(info), [[0, 20, false]], 'the prefix is written; [20,24) stays a hole');
    const back = await r.readBlocks(info, 0, 24);
    assert.deepEqual(back.subarray(0, 20 * bs), data.subarray(0, 20 * bs));
    assert.ok(back.subarray(20 * bs).every((x) => x === 0), 'the rest reads as zeros');
    await assertIdle(r, info, 'S1 async');
    await r.close();
  });
  e2fsckClean(image, 's1');
});

test('S1 (sync twin, invariant 17): ENOSPC after part of a synchronous write converts exactly [offset, offset + ret)', async () => {
  await withRig({ seed: 102 }, async (r) => {
    const bs = r.bs;
    const info = await layout(r, 'f');
    await fillTo(r, 3);
    const data = pattern(3, 16 * bs);
    const n = await r.dio.write(info, 8 * bs, data);
    assert.equal(n, 11 * bs, '[8,16) unwritten + 3 allocated blocks');
    assert.equal(r.dio.stats.ioEnds, 0, 'sync DIO: no io_end');
    assert.deepEqual(await r.extents(info), [[0, 19, false]]);
    const back = await r.readBlocks(info, 8, 16);
    assert.deepEqual(back.subarray(0, 11 * bs), data.subarray(0, 11 * bs));
    assert.ok(back.subarray(11 * bs).every((x) => x === 0));
    await assertIdle(r, info, 'S1 sync');
    await r.close();
  });
});

test('S2: AIO DIO with zero progress — ENOSPC at the first block allocates no io_end, converts nothing, i_dio_count returns (truncate does not hang)', async () => {
  const image = await withRig({ seed: 103 }, async (r) => {
    const bs = r.bs;
    const info = await layout(r, 'f');
    await fillTo(r, 0);
    const sites = countSites();
    await assert.rejects(r.dio.write(info, 16 * bs, pattern(4, 8 * bs), { async: true }), isCode('ENOSPC'));
    assert.equal(sites.hits('dio_io_end_alloc'), 0, 'no unwritten mapping, no io_end (seed 003)');
    assert.equal(sites.hits('dio_bio_alloc'), 0, 'nothing submitted');
    sites.done();
    assert.deepEqual(await r.extents(info), [[0, 8, false], [8, 8, true]], 'nothing changed');
    await assertIdle(r, info, 'S2');
    // truncate waits for i_dio_count (inode_dio_wait): it must return now.
    await r.data.withInodeLock(info, () => r.data.truncate(info, 4 * bs, (i, sz) => r.ns.truncateInode(i, sz)));
    assert.deepEqual(await r.extents(info), [[0, 4, false]]);
    await r.close();
  });
  e2fsckClean(image, 's2');
});

test('S2 (io_end allocated, no bio): the first bio allocation fails — the io_end is released once by the submitter (UNWRITTEN without ranges), nothing converted', async () => {
  await withRig({ seed: 104 }, async (r) => {
    const bs = r.bs;
    const info = await layout(r, 'f');
    const uninstall = faults.install((site) => site === 'dio_bio_alloc');
    try {
      await assert.rejects(r.dio.write(info, 8 * bs, pattern(5, 8 * bs), { async: true }), isCode('ENOMEM'));
      assert.equal(faults.hits.get('dio_io_end_alloc'), 1);
      assert.equal(faults.failures.get('dio_bio_alloc'), 1);
    } finally {
      uninstall();
    }
    assert.equal(r.dio.stats.ioEnds, 1);
    assert.deepEqual(await r.extents(info), [[0, 8, false], [8, 8, true]], 'still unwritten');
    assert.ok((await r.readBlocks(info, 8, 8)).every((x) => x === 0), 'reads zeros');
    await assertIdle(r, info, 'S2 no bio');
    await r.close();
  });
});

for (const seed of [201, 202, 203, 204]) {
  test(`S9 seed ${seed}: overwrite DIOs race an AIO DIO into unwritten extents on one inode — the io_end travels with its request, overwrites allocate none and run in parallel, the conversion is exact`, async () => {
    await withRig({ seed }, async (r) => {
      const bs = r.bs;
      const info = await r.newFile('f');
      await r.dio.write(info, 0, pattern(1, 64 * bs));
      await r.data.fallocate(info, 64 * bs, 64 * bs, {});
      const sites = countSites();
      const ctx = new AioContext(r.dio, info, { depth: 32 });
      const mark = r.trace.length;
      const a = ctx.submit([{ op: 'write', buf: pattern(2, 32 * bs), pos: 64 * bs }])[0]!;
      const overs = ctx.submit(Array.from({ length: 16 }, (_, i) => ({ op: 'write' as const, buf: pattern(10 + i, 2 * bs), pos: i * 4 * bs })));
      assert.equal((await a.done).res, 32 * bs);
      for (const o of overs) assert.equal((await o.done).res, 2 * bs);
      sites.done();
      assert.equal(sites.hits('dio_io_end_alloc'), 1, 'invariant 16: exactly one io_end, for the unwritten request');
      assert.equal(r.dio.stats.overwrites, 16);
      const ev = r.trace.slice(mark);
      const firstDone = ev.findIndex((e) => e.kind === 'complete');
      assert.equal(ev.slice(0, firstDone).filter((e) => e.kind === 'submit').length, 17, 'every request submitted before the first completed: no inode lock across the I/O');
      assert.deepEqual(await r.extents(info), [[0, 96, false], [96, 32, true]], 'exactly the AIO range converted');
      const want = pattern(1, 64 * bs);
      for (let i = 0; i < 16; i++) want.set(pattern(10 + i, 2 * bs), i * 4 * bs);
      assert.deepEqual(await r.readBlocks(info, 0, 64), want);
      assert.deepEqual(await r.readBlocks(info, 64, 32), pattern(2, 32 * bs));
      await assertIdle(r, info, 'S9');
      await r.close();
    });
  });
}

test('S12 with S10 (generic/250, 252): EIO on a direct write into unwritten extents — the request rejects with EIO, nothing is converted, the range reads zeros, fsync does not report it; the FAILED io_end goes through the worker and is released once', async () => {
  const image = await withRig({ seed: 301 }, async (r) => {
    const bs = r.bs;
    const info = await layout(r, 'f');
    const cursor = r.data.openErrCursor(info);
    for (const async of [true, false]) {
      let n = 0;
      r.eio = (req) => req.op === 'write' && n++ === 1;
      await assert.rejects(r.dio.write(info, 8 * bs, pattern(6, 16 * bs), { async }), isCode('EIO'));
      r.eio = undefined;
      assert.deepEqual(await r.extents(info), [[0, 8, false], [8, 16, true]], `${async ? 'async' : 'sync'}: [8,24) allocated, still unwritten`);
      assert.ok((await r.readBlocks(info, 8, 16)).every((x) => x === 0), 'never stale data');
      await assertIdle(r, info, `S12 ${async ? 'async' : 'sync'}`);
    }
    assert.equal(r.dio.stats.ioEnds, 1, 'the async attempt had one io_end');
    await r.data.fsync(info, cursor);
    // A retry succeeds and converts.
    assert.equal(await r.dio.write(info, 8 * bs, pattern(7, 16 * bs), { async: true }), 16 * bs);
    assert.deepEqual(await r.extents(info), [[0, 24, false]]);
    await r.close();
  });
  e2fsckClean(image, 's12');
});

test('a failed conversion of an asynchronous direct write is that request\'s EIO, reported once: fsync does not report it again; a writeback io_end\'s failed conversion is still the next fsync\'s EIO (crash harness seed 41)', async () => {
  const image = await withRig({ seed: 311 }, async (r) => {
    const bs = r.bs;
    const info = await layout(r, 'f');
    const cursor = r.data.openErrCursor(info);
    let uninstall = faults.install((site) => site === 'conversion');
    try {
      await assert.rejects(r.dio.write(info, 8 * bs, pattern(8, 8 * bs), { async: true }), isCode('EIO'));
    } finally {
      uninstall();
    }
    assert.deepEqual(await r.extents(info), [[0, 8, false], [8, 8, true]], 'nothing converted: the range reads zeros');
    await assertIdle(r, info, 'direct');
    await r.data.fsync(info, cursor);
    // The buffered twin: nobody else saw that lost write, so fsync reports it, once.
    await r.data.write(info, 16 * bs, pattern(9, 4 * bs));
    uninstall = faults.install((site) => site === 'conversion');
    try {
      await assert.rejects(r.data.fsync(info, cursor), isCode('EIO'));
    } finally {
      uninstall();
    }
    await r.data.fsync(info, cursor);
    await assertIdle(r, info, 'buffered');
    await r.close();
  });
  e2fsckClean(image, 'conversion-once');
});

test('a failed extending direct write zeroes the block holding EOF past EOF (ext4_truncate_failed_write): the file grown later reads zeros there, not the failed data, even when that block cannot be read (crash harness seed 588)', async () => {
  const image = await withRig({ seed: 312 }, async (r) => {
    const bs = r.bs;
    for (const unreadable of [false, true]) {
      const info = await r.newFile(`f${unreadable ? 1 : 0}`);
      await r.dio.write(info, 0, pattern(10, 4 * bs));
      const eof = 3 * bs + 100;
      await r.data.withInodeLock(info, () => r.data.truncate(info, eof, (i, sz) => r.ns.truncateInode(i, sz)));
      const p3 = (await r.data.withTreeLock(info, () => new ExtentTree(r.s, info, getBalloc(r.s)).lookup(3)))!;
      const at3 = (p3.pblk + 3 - p3.lblk) * bs;
      const hits3 = (req: SimRequest): boolean => req.offsetBytes <= at3 && at3 < req.offsetBytes + req.lenBytes;
      // Blocks 2..11: the bio holding block 3 lands, another one fails; with `unreadable`, so
      // does the read of block 3 that zeroing its tail needs.
      r.eio = (req) => (req.op === 'write' && !hits3(req)) || (unreadable && req.op === 'read' && hits3(req));
      await assert.rejects(r.dio.write(info, 2 * bs, pattern(11, 10 * bs)), isCode('EIO'));
      r.eio = undefined;
      assert.equal(r.data.sizeOf(info), eof, 'size unchanged');
      await assertIdle(r, info, `failed extending write${unreadable ? ', tail unreadable' : ''}`);
      await r.data.withInodeLock(info, () => r.data.truncate(info, 6 * bs, (i, sz) => r.ns.truncateInode(i, sz)));
      const tail = (await r.readBlocks(info, 3, 1)).subarray(100);
      if (!unreadable) assert.ok(tail.every((x) => x === 0), 'past the old EOF: zeros');
    }
    await r.close();
  });
  e2fsckClean(image, 'extending-eof');
});

test('S16: a write overlapping a range whose conversion is pending waits for that conversion before it submits; a disjoint one does not wait', async () => {
  await withRig({ seed: 401 }, async (r) => {
    const bs = r.bs;
    const info = await r.newFile('f');
    await r.data.fallocate(info, 0, 64 * bs, {});
    const mark = r.trace.length;
    const ctx = new AioContext(r.dio, info, { depth: 8 });
    const [a, b, c, d] = ctx.submit([
      { op: 'write', buf: pattern(1, 8 * bs), pos: 0 },
      { op: 'write', buf: pattern(2, 8 * bs), pos: 4 * bs }, // half over A's unwritten range
      { op: 'write', buf: pattern(3, 8 * bs), pos: 32 * bs }, // disjoint
      { op: 'read', buf: new Uint8Array(4 * bs), pos: 10 * bs }, // reads B's range: waits for B
    ]);
    for (const q of [a, b, c, d]) await q!.done;
    const ev = r.trace.slice(mark);
    const at = (kind: string, id: number): number => ev.findIndex((e) => e.kind === kind && e.id === id);
    // Request ids grow in submission order.
    const ids = [...new Set(ev.map((e) => e.id))].sort((x, y) => x - y);
    const [ia, ib, ic, id] = ids as [number, number, number, number];
    assert.ok(at('complete', ia) < at('submit', ib), 'B submitted only after A completed, that is after its conversion');
    assert.ok(at('submit', ic) < at('complete', ia), 'C (disjoint) did not wait');
    assert.ok(at('complete', ib) < at('submit', id), 'the read waited for the overlapping write');
    assert.deepEqual(await r.extents(info), [[0, 12, false], [12, 20, true], [32, 8, false], [40, 24, true]]);
    const want = new Uint8Array(12 * bs);
    want.set(pattern(1, 8 * bs));
    want.set(pattern(2, 8 * bs), 4 * bs);
    assert.deepEqual(await r.readBlocks(info, 0, 12), want, 'the later overlapping write wins');
    const wantRead = new Uint8Array(4 * bs);
    wantRead.set(pattern(2, 8 * bs).subarray(6 * bs));
    assert.deepEqual(d!.iocb.buf, wantRead, 'the read saw B whole: blocks 10-11 from B, 12-13 unwritten zeros');
    await assertIdle(r, info, 'S16');
    await r.close();
  });
});

test('invariant 15: every error path (EIO; ENOMEM at dio_bio_alloc, dio_io_end_alloc, block_alloc, conversion; ENOSPC is S1/S2) on sync, async and extending writes returns i_dio_count and the io_end counters to zero and converts only the prefix', async (t) => {
  const image = await withRig({ seed: 501, sizeBytes: 16 << 20, dio: { maxBioVecs: 1, userPageBytes: 1024 } }, async (r) => {
    const bs = r.bs;
    const failures: (FaultSite | 'EIO')[] = ['dio_bio_alloc', 'dio_io_end_alloc', 'block_alloc', 'conversion', 'EIO'];
    let k = 0;
    const outcomes = new Map<string, Set<string>>();
    for (const fail of failures) {
      for (const mode of ['sync', 'async', 'extending'] as const) {
        for (const nth of [0, 1, 3]) {
          const what = `${fail} #${nth} ${mode}`;
          const info = await layout(r, `f${k++}`);
          const old = await r.readBlocks(info, 0, 24);
          const [pos, len] = mode === 'extending' ? [20, 12] : [4, 16];
          const data = pattern(k, len * bs);
          let hit = 0;
          const uninstall = fail === 'EIO' ? undefined : faults.install((site) => site === fail && hit++ === nth);
          if (fail === 'EIO') r.eio = (req) => req.op === 'write' && hit++ === nth;
          let n = 0;
          let code = '';
          try {
            n = await r.dio.write(info, pos * bs, data, { async: mode === 'async' });
          } catch (e) {
            assert.ok(isExt4Error(e), `${what}: ${String(e)}`);
            code = e.code;
          } finally {
            uninstall?.();
            r.eio = undefined;
          }
          await assertIdle(r, info, what);
          const outcome = code !== '' ? code : n < len * bs ? 'short' : 'ok';
          outcomes.set(fail, (outcomes.get(fail) ?? new Set()).add(outcome));
          const size = r.data.sizeOf(info);
          if (code !== '') {
            assert.equal(size, 24 * bs, `${what}: size unchanged`);
            assert.ok(['EIO', 'ENOMEM'].includes(code), `${what}: ${code}`);
            // A failed conversion leaves its data on disk unwritten (zeros), like a failed write.
          } else {
            assert.equal(size, Math.max(24 * bs, pos * bs + n), `${what}: size`);
          }
          const back = await r.readBlocks(info, 0, 32);
          for (let b = 0; b < 32; b++) {
            const got = back.subarray(b * bs, (b + 1) * bs);
            const inPrefix = b >= pos && (b - pos) * bs < n;
            const want = inPrefix ? data.subarray((b - pos) * bs, (b - pos + 1) * bs)
              : b < 8 ? old.subarray(b * bs, (b + 1) * bs) : new Uint8Array(bs);
            if (code !== '' && b < 8 && b >= pos) continue; // overwritten blocks: old or new
            assert.deepEqual(got, want, `${what}: block ${b}`);
          }
          // Nothing unwritten inside the written prefix; nothing allocated past the size.
          const ext = await r.extents(info);
          for (const [l, len2, unw] of ext) {
            if (unw) assert.ok(l + len2 <= pos || l >= pos + n / bs, `${what}: unwritten extent ${l}+${len2} inside the prefix`);
            assert.ok(l * bs < Math.max(size, 24 * bs), `${what}: extent ${l}+${len2} past the size`);
          }
          await r.data.withInodeLock(info, () => r.data.truncate(info, 0, (i, sz) => r.ns.truncateInode(i, sz)));
        }
      }
    }
    t.diagnostic(JSON.stringify(Object.fromEntries([...outcomes].map(([k2, v]) => [k2, [...v]]))));
    for (const f of failures) assert.ok([...(outcomes.get(f) ?? [])].some((o) => o !== 'ok'), `${f}: never failed a request`);
    await r.close();
  });
  e2fsckClean(image, 'inv15');
});

test('invariant 16: an io_end is allocated at most once per DIO and only when a mapping is unwritten; overwrites, written-only and sync DIOs allocate none', async () => {
  await withRig({ seed: 601 }, async (r) => {
    const bs = r.bs;
    const info = await r.newFile('f');
    await r.dio.write(info, 0, pattern(1, 32 * bs));
    // Alternate written / unwritten pieces: [0,4) w, [4,8) u, [8,12) w, [12,16) u, [16,32) w.
    await r.data.fallocate(info, 4 * bs, 4 * bs, { zeroRange: true });
    await r.data.fallocate(info, 12 * bs, 4 * bs, { zeroRange: true });
    const cases: { what: string; pos: number; len: number; async: boolean; want: number }[] = [
      { what: 'async overwrite', pos: 16, len: 8, async: true, want: 0 },
      { what: 'sync into unwritten', pos: 4, len: 2, async: false, want: 0 },
      { what: 'async across two unwritten extents', pos: 0, len: 16, async: true, want: 1 },
      { what: 'async written-only', pos: 0, len: 16, async: true, want: 0 },
    ];
    for (const c of cases) {
      const sites = countSites();
      await r.dio.write(info, c.pos * bs, pattern(c.pos + c.len, c.len * bs), { async: c.async });
      const hits = sites.hits('dio_io_end_alloc');
      sites.done();
      assert.equal(hits, c.want, c.what);
      await assertIdle(r, info, c.what);
    }
    assert.deepEqual(await r.extents(info), [[0, 32, false]]);
    await r.close();
  });
});

test('invariant 17: sync DIO converts exactly [offset, offset + ret) — a bio allocation failure mid-request leaves the rest unwritten; EIO converts nothing', async () => {
  await withRig({ seed: 701, dio: { maxBioVecs: 1, userPageBytes: 4096 } }, async (r) => {
    const bs = r.bs;
    const info = await r.newFile('f');
    await r.data.fallocate(info, 0, 64 * bs, {});
    assert.equal(await r.dio.write(info, 8 * bs, pattern(1, 8 * bs)), 8 * bs);
    assert.deepEqual(await r.extents(info), [[0, 8, true], [8, 8, false], [16, 48, true]]);
    // 16 blocks at 4 per bio (one 4 KiB user page per bio): the third bio fails to allocate.
    let hit = 0;
    const uninstall = faults.install((site) => site === 'dio_bio_alloc' && hit++ === 2);
    let n: number;
    try {
      n = await r.dio.write(info, 24 * bs, pattern(2, 16 * bs));
    } finally {
      uninstall();
    }
    assert.equal(n, 8 * bs);
    assert.deepEqual(await r.extents(info), [[0, 8, true], [8, 8, false], [16, 8, true], [24, 8, false], [32, 32, true]]);
    let m = 0;
    r.eio = (req) => req.op === 'write' && m++ === 0;
    await assert.rejects(r.dio.write(info, 48 * bs, pattern(3, 8 * bs)), isCode('EIO'));
    r.eio = undefined;
    assert.deepEqual((await r.extents(info)).slice(-1), [[32, 32, true]], 'EIO: nothing converted');
    await assertIdle(r, info, 'invariant 17');
    await r.close();
  });
});

test('truncate waits for in-flight direct I/O (inode_dio_wait): it runs after every request and leaves nothing behind', async () => {
  const image = await withRig({ seed: 801 }, async (r) => {
    const bs = r.bs;
    const info = await r.newFile('f');
    await r.dio.write(info, 0, pattern(1, 32 * bs));
    await r.data.fallocate(info, 32 * bs, 32 * bs, {});
    const ctx = new AioContext(r.dio, info, { depth: 16 });
    const reqs = ctx.submit(Array.from({ length: 16 }, (_, i) => ({ op: 'write' as const, buf: pattern(10 + i, 2 * bs), pos: i * 4 * bs })));
    // Let every request pass its inode-lock phase (dioBegin) before truncate takes the lock.
    await Promise.resolve();
    await new Promise<void>((resolve) => setImmediate(resolve));
    const inflight = r.dio.inFlight(info);
    assert.ok(inflight > 0, 'requests in flight');
    let truncated = false;
    const t = r.data.withInodeLock(info, async () => {
      await r.data.truncate(info, 0, (i, sz) => r.ns.truncateInode(i, sz));
      truncated = true;
    });
    for (const q of reqs) {
      assert.equal((await q.done).res, 2 * bs);
      assert.equal(truncated, false, 'no request completed after the truncate');
    }
    await t;
    assert.equal(r.data.sizeOf(info), 0);
    assert.deepEqual(await r.extents(info), []);
    await assertIdle(r, info, 'truncate');
    await r.close();
  });
  e2fsckClean(image, 'truncate');
});

/**
 * A device in front of the SimDevice that can hold writes forever (they never reach the
 * device), to cut the power while chosen bios are in flight.
 */
class GatedDevice implements BlockDevice {
  hold = false;
  constructor(readonly inner: SimDevice) {}
  get sizeBytes(): number { return this.inner.sizeBytes; }
  get sectorSize(): number { return this.inner.sectorSize; }
  get maxRequestBytes(): number { return this.inner.maxRequestBytes; }
  get readOnly(): boolean { return this.inner.readOnly; }
  read(offsetBytes: number, dst: Uint8Array): Promise<void> { return this.inner.read(offsetBytes, dst); }
  write(offsetBytes: number, src: Uint8Array): Promise<void> {
    return this.hold ? new Promise<void>(() => {}) : this.inner.write(offsetBytes, src);
  }
  flush(): Promise<void> { return this.inner.flush(); }
  close(): Promise<void> { return this.inner.close(); }
}

test('extending write and a crash before the size update: the old size survives, the orphan list frees the blocks past it at the next mount, e2fsck -fn clean', async () => {
  const sizeBytes = 8 << 20;
  const base = new Uint8Array(sizeBytes);
  await Ext4.mkfs(new MemDevice(base), { sizeBytes, blockSize: 1024 });
  const wq = new SimWorkQueue(901);
  let crashed: Uint8Array = new Uint8Array(0);
  const old = pattern(1, 8 * 1024);
  await wq.run(async () => {
    const sim = new SimDevice({ queue: wq, seed: 901, image: base });
    const dev = new GatedDevice(sim);
    const s = await Ext4Super.mount(dev, {});
    const ns = new Namespace(s);
    const data = new FileData(s, { wq });
    let submitted!: () => void;
    const onSubmit = new Promise<void>((resolve) => (submitted = resolve));
    // The extending write's bios are built right after this event, synchronously: hold them.
    const dio = new DirectIo(s, data, {
      trace: (e) => {
        if (e.kind !== 'submit' || e.path !== 'extending' || e.firstLblk < 8) return;
        dev.hold = true;
        submitted();
      },
    });
    const info = await iget(s, (await ns.mknod('/f', { type: 'file' }, 0o644, { uid: 0, gid: 0 })).ino);
    await dio.write(info, 0, old);
    await data.flushAll();
    await s.commit();
    let finished = false;
    void dio.write(info, 8 * 1024, pattern(2, 64 * 1024)).then(() => (finished = true));
    await onSubmit;
    dev.hold = false;
    assert.equal(s.sb.s_last_orphan, info.ino, 'on the orphan list during the write');
    assert.equal(info.size, 8 * 1024, 'size not yet updated');
    // Everything but the data is committed (orphan entry, allocated unwritten extents); then the power goes.
    await s.commit();
    assert.equal(finished, false);
    crashed = sim.crash('random');
  });
  // The next read-write mount processes the orphan list: blocks past i_size are freed.
  const fs = await Ext4.open(new MemDevice(crashed), { readOnly: false });
  const st = await fs.stat('/f');
  assert.equal(st.size, 8 * 1024, 'the old size');
  assert.deepEqual(await fs.readFile('/f'), old);
  await fs.close();
  e2fsckClean(crashed, 'crash');
  const ro = await Ext4.open(new MemDevice(crashed));
  assert.equal((await ro.stat('/f')).blocks * 512, 8 * 1024, 'no block left past EOF');
  await ro.close();
});
