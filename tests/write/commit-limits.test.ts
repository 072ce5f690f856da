/**
 * Commit policy of a read-write mount: metadataDirtyLimitBytes makes the end of an operation
 * commit once dirty metadata passes it (bounded memory between syncs), and `barrier: false`
 * (nobarrier) drops the cache flushes of commits but keeps one at close. Oracles: e2fsck and the
 * kernel's view of the image, and the device's own count of flushes and writes.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4 } from '../../src/index.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import { NoBarrierDevice } from '../../src/blockdev/no-barrier-device.js';
import { checkImageBytes } from '../helpers/check-image.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-commit-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

/** A MemDevice that counts flushes and writes. */
class CountingDevice extends MemDevice {
  flushes = 0;
  writes = 0;
  override async write(offsetBytes: number, src: Uint8Array): Promise<void> {
    this.writes++;
    await super.write(offsetBytes, src);
  }
  override async flush(): Promise<void> {
    this.flushes++;
    await super.flush();
  }
}

function checkImage(t: TestContext, dev: MemDevice, name: string, onMount?: (mnt: string) => void): Promise<void> {
  return checkImageBytes(t, dev.data, work, name, onMount);
}

/** 40 directories of 25 files each, 3 KiB of content per file. */
async function fill(fs: Ext4, watch?: () => void): Promise<void> {
  for (let d = 0; d < 40; d++) {
    await fs.mkdir(`/d${d}`, { mode: 0o750, uid: d, gid: 7 });
    for (let f = 0; f < 25; f++) {
      const fh = await fs.open(`/d${d}/f${f}`, 'wx', { mode: 0o640, uid: 1000 + f, gid: 100 });
      await fh.write(new Uint8Array(3000).fill(d * 25 + f), 0, 3000, 0);
      await fh.utimes({ sec: 1_000_000 + f, nsec: 5 }, { sec: 2_000_000 + d, nsec: 7 });
      await fh.close();
      watch?.();
    }
  }
}

test('metadataDirtyLimitBytes: dirty metadata stays near the limit between syncs (commits at operation ends), image clean and kernel-identical', async (t) => {
  const dev = new CountingDevice(new Uint8Array(32 << 20));
  await Ext4.mkfs(dev, { sizeBytes: 32 << 20, blockSize: 1024, inodesCount: 4096 });
  const limit = 64 << 10;
  const fs = await Ext4.open(dev, { readOnly: false, metadataDirtyLimitBytes: limit });
  let most = 0;
  await fill(fs, () => {
    most = Math.max(most, fs.sup.cache.dirtyCount);
  });
  // One operation can dirty a few blocks past the limit before its end commits.
  assert.ok(most * 1024 <= limit + 32 * 1024, `dirty metadata peaked at ${most} KiB with a 64 KiB limit`);
  await fs.close();
  await checkImage(t, dev, 'limit');

  // The same work without the limit holds every changed block until close.
  const dev2 = new CountingDevice(new Uint8Array(32 << 20));
  await Ext4.mkfs(dev2, { sizeBytes: 32 << 20, blockSize: 1024, inodesCount: 4096 });
  const fs2 = await Ext4.open(dev2, { readOnly: false });
  await fill(fs2);
  assert.ok(fs2.sup.cache.dirtyCount * 1024 > 4 * limit, `${fs2.sup.cache.dirtyCount} dirty blocks without a limit`);
  await fs2.close();
  await checkImage(t, dev2, 'nolimit');
});

test('barrier: false flushes the device once, at close; the default flushes at every commit', async (t) => {
  const flushesOf = async (barrier: boolean | undefined): Promise<{ during: number; total: number; dev: CountingDevice }> => {
    const dev = new CountingDevice(new Uint8Array(16 << 20));
    await Ext4.mkfs(dev, { sizeBytes: 16 << 20, blockSize: 4096 });
    const at0 = dev.flushes;
    const fs = await Ext4.open(dev, { readOnly: false, metadataDirtyLimitBytes: 16 << 10, ...(barrier !== undefined ? { barrier } : {}) });
    await fill(fs);
    await fs.sync();
    const during = dev.flushes - at0;
    await fs.close();
    return { during, total: dev.flushes - at0, dev };
  };
  const nb = await flushesOf(false);
  assert.equal(nb.during, 0, 'no flush before close with barrier: false');
  assert.equal(nb.total, 1, 'one flush at close');
  await checkImage(t, nb.dev, 'nobarrier');
  const b = await flushesOf(undefined);
  assert.ok(b.during >= 3, `${b.during} flushes with barriers (mount, commits, sync)`);
  await checkImage(t, b.dev, 'barrier');
});

/** A MemDevice whose flushes wait until released, to watch what overlaps them. */
class SlowFlushDevice extends CountingDevice {
  inFlight = 0;
  most = 0;
  closed = false;
  failNext = false;
  private waiting: Array<() => void> = [];
  override async flush(): Promise<void> {
    this.flushes++;
    this.inFlight++;
    this.most = Math.max(this.most, this.inFlight);
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inFlight--;
    if (this.failNext) {
      this.failNext = false;
      throw new Error('EIO: flush failed');
    }
  }
  release(): void {
    for (const r of this.waiting.splice(0)) r();
  }
  override async close(): Promise<void> {
    this.closed = true;
  }
}

test('barrier: false writes behind: a background flush every writeBehindBytes, one at a time, awaited by close; its failure fails close', async () => {
  const dev = new SlowFlushDevice(new Uint8Array(1 << 20));
  const nb = new NoBarrierDevice(dev, { writeBehindBytes: 64 << 10 });
  const block = new Uint8Array(16 << 10).fill(9);
  for (let i = 0; i < 4; i++) await nb.write(i * block.length, block);
  assert.equal(nb.backgroundFlushes, 1, 'a flush starts once 64 KiB were written');
  assert.equal(dev.inFlight, 1);
  // The next 64 KiB find the first flush still running: no second one piles up.
  for (let i = 4; i < 8; i++) await nb.write(i * block.length, block);
  assert.equal(nb.backgroundFlushes, 1, 'one background flush at a time');
  assert.equal(await nb.flush(), undefined, 'flush() itself is still free');
  dev.release();
  await new Promise((r) => setImmediate(r));
  for (let i = 8; i < 12; i++) await nb.write(i * block.length, block);
  assert.equal(nb.backgroundFlushes, 2, 'the next 64 KiB start another');
  // close waits for the background flush, then flushes once more, then closes the device.
  const closing = nb.close();
  await new Promise((r) => setImmediate(r));
  assert.equal(dev.closed, false, 'close waits for the background flush');
  dev.release();
  await new Promise((r) => setImmediate(r));
  dev.release();
  await closing;
  assert.equal(dev.flushes, 3);
  assert.equal(dev.most, 1, 'flushes never overlapped');
  assert.ok(dev.closed);

  // A failed background flush is the failure of close (once), and the device is still closed.
  const bad = new SlowFlushDevice(new Uint8Array(1 << 20));
  const nb2 = new NoBarrierDevice(bad, { writeBehindBytes: 16 << 10 });
  bad.failNext = true;
  await nb2.write(0, block);
  assert.equal(nb2.backgroundFlushes, 1);
  bad.release();
  await new Promise((r) => setImmediate(r));
  await assert.rejects(nb2.close(), /EIO: flush failed/);
  assert.ok(bad.closed, 'the device is closed even though the flush failed');
  assert.equal(bad.flushes, 1, 'no final flush after a failed one');

  // writeBehindBytes 0: no background flushes at all.
  const quiet = new CountingDevice(new Uint8Array(1 << 20));
  const nb3 = new NoBarrierDevice(quiet, { writeBehindBytes: 0 });
  for (let i = 0; i < 32; i++) await nb3.write(i * block.length, block);
  assert.equal(quiet.flushes, 0);
  await nb3.close();
  assert.equal(quiet.flushes, 1);
});

test('barrier: false writes behind on a real mount: background flushes while 48 MiB are written, image clean and kernel-identical', async (t) => {
  const dev = new CountingDevice(new Uint8Array(96 << 20));
  await Ext4.mkfs(dev, { sizeBytes: 96 << 20, blockSize: 4096 });
  const fs = await Ext4.open(dev, { readOnly: false, barrier: false });
  const at0 = dev.flushes;
  const chunk = new Uint8Array(1 << 20);
  const fh = await fs.open('/big', 'wx', { mode: 0o600 });
  for (let i = 0; i < 48; i++) {
    chunk.fill(i + 1);
    await fh.write(chunk, 0, chunk.length, i * chunk.length);
  }
  await fh.close();
  await fill(fs);
  await fs.sync();
  // barrier: false makes commits flush nothing: every flush so far is a write-behind one.
  const behind = dev.flushes - at0;
  assert.ok(behind >= 1, `${behind} background flushes while 48 MiB went to the device`);
  await fs.close();
  assert.equal(dev.flushes - at0, behind + 1, 'one more flush, at close');
  await checkImage(t, dev, 'writebehind', (mnt) => {
    // The kernel reads back every byte written while the background flushes ran.
    const big = readFileSync(join(mnt, 'big'));
    assert.equal(big.length, 48 << 20);
    for (let i = 0; i < 48; i++) {
      const part = big.subarray(i << 20, (i + 1) << 20);
      assert.ok(part.every((b) => b === i + 1), `MiB ${i} of /big through the kernel`);
    }
  });
});
