/**
 * Bio, submitBio and BioBuilder (src/blockdev/bio.ts): segment merging, limits, contiguity,
 * endIo exactly once, status on device errors, and the io_submit_add_bh-style builder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bio, BioBuilder, submitBio, submitBioWait, type BioStatus } from '../../../src/blockdev/bio.js';
import { MemDevice } from '../../../src/blockdev/mem-device.js';
import { SimDevice } from '../../../src/blockdev/sim-device.js';
import { SimWorkQueue } from '../../../src/runtime/work-queue.js';
import { Ext4Bug } from '../../../src/util/assert.js';

const noop = (): void => {};

function bioOn(dev: MemDevice | SimDevice, sector: number, maxVecs = 4, op: 'read' | 'write' = 'write'): Bio<undefined> {
  return new Bio({ dev, op, sector, maxVecs, endIo: noop, private: undefined });
}

test('Bio.add merges adjacent ranges of one page into one segment', () => {
  const bio = bioOn(new MemDevice(new Uint8Array(1 << 16)), 8);
  const page = new Uint8Array(4096);
  assert.equal(bio.add(page, 0, 1024), true);
  assert.equal(bio.add(page, 1024, 1024), true);
  assert.equal(bio.vecs.length, 1);
  assert.equal(bio.sizeBytes, 2048);
  assert.equal(bio.endSector, 12);
  // A gap inside the page needs a new segment (the device range is still contiguous).
  assert.equal(bio.add(page, 3072, 1024), true);
  assert.equal(bio.vecs.length, 2);
});

test('Bio.add refuses when full (maxVecs or maxRequestBytes) or not contiguous, changing nothing', () => {
  const bio = bioOn(new MemDevice(new Uint8Array(1 << 16)), 0, 2);
  const pages = [new Uint8Array(512), new Uint8Array(512), new Uint8Array(512)];
  assert.equal(bio.add(pages[0]!, 0, 512), true);
  assert.equal(bio.add(pages[1]!, 0, 512, 5), false, 'sector 5 is not the end (1)');
  assert.equal(bio.add(pages[1]!, 0, 512), true);
  assert.equal(bio.add(pages[2]!, 0, 512), false, 'third segment exceeds maxVecs 2');
  assert.equal(bio.sizeBytes, 1024);
  const small = new SimDevice({ queue: new SimWorkQueue(1), seed: 1, sizeBytes: 1 << 16, maxRequestBytes: 1024 });
  const b2 = bioOn(small, 0, 8);
  assert.equal(b2.add(new Uint8Array(1024), 0, 1024), true);
  assert.equal(b2.add(new Uint8Array(512), 0, 512), false, 'exceeds maxRequestBytes');
});

test('Bio.add asserts sector-multiple lengths and open state', () => {
  const bio = bioOn(new MemDevice(new Uint8Array(1 << 16)), 0);
  assert.throws(() => bio.add(new Uint8Array(4096), 0, 100), Ext4Bug);
  assert.throws(() => bio.add(new Uint8Array(512), 512, 512), Ext4Bug);
});

test('submitBio writes a multi-segment bio in place and reads it back scattered', async () => {
  const dev = new MemDevice(new Uint8Array(1 << 16));
  const a = new Uint8Array(1024).fill(0xaa);
  const b = new Uint8Array(2048).fill(0xbb);
  const w = bioOn(dev, 4);
  assert.ok(w.add(a, 512, 512) && w.add(b, 0, 2048));
  assert.equal(await submitBioWait(w), 0);
  assert.deepEqual([...dev.data.subarray(2048, 2048 + 2560)], [...new Uint8Array(512).fill(0xaa), ...new Uint8Array(2048).fill(0xbb)]);
  const r1 = new Uint8Array(1024);
  const r2 = new Uint8Array(2048);
  const r = bioOn(dev, 4, 4, 'read');
  assert.ok(r.add(r1, 512, 512) && r.add(r2, 0, 2048));
  assert.equal(await submitBioWait(r), 0);
  assert.equal(r1[511], 0);
  assert.equal(r1[512], 0xaa);
  assert.ok(r2.every((x) => x === 0xbb));
});

test('submitBio: endIo runs exactly once, after submitBio returns; ending again is a bug', async () => {
  const dev = new MemDevice(new Uint8Array(1 << 16));
  const calls: BioStatus[] = [];
  const bio = new Bio({ dev, op: 'write', sector: 0, endIo: (_b, s) => calls.push(s), private: 7 });
  bio.add(new Uint8Array(512), 0, 512);
  submitBio(bio);
  assert.deepEqual(calls, [], 'never inside submitBio');
  assert.equal(await bio.wait(), 0);
  assert.deepEqual(calls, [0]);
  assert.equal(bio.private, 7);
  assert.throws(() => bio.end(0), /already ended/);
  assert.throws(() => submitBio(bio), /submitted twice/);
  assert.deepEqual(calls, [0]);
});

test('submitBio: an injected device EIO becomes status EIO with the error attached', async () => {
  const q = new SimWorkQueue(3);
  const dev = new SimDevice({ queue: q, seed: 3, sizeBytes: 1 << 16, eio: (r) => r.op === 'write' });
  const bio = bioOn(dev, 0);
  bio.add(new Uint8Array(512), 0, 512);
  const status = await q.run(() => submitBioWait(bio));
  assert.equal(status, 'EIO');
  assert.equal(bio.status, 'EIO');
  assert.match(String(bio.error), /injected EIO/);
});

test('BioBuilder merges contiguous blocks, submits on a discontiguity and when a bio is full', async () => {
  const q = new SimWorkQueue(11);
  const dev = new SimDevice({ queue: q, seed: 11, sizeBytes: 1 << 20 });
  const ended: { sector: number; bytes: number; vecs: number }[] = [];
  const b = new BioBuilder<string>({
    dev, op: 'write', blockSizeBytes: 1024,
    alloc: (sector) => new Bio({ dev, op: 'write', sector, maxVecs: 3, private: 'io_end', endIo: (bio, s) => {
      assert.equal(s, 0);
      assert.equal(bio.private, 'io_end');
      ended.push({ sector: bio.sector, bytes: bio.sizeBytes, vecs: bio.vecs.length });
    } }),
  });
  const page = (): Uint8Array => new Uint8Array(4096);
  // Blocks 10..17 on eight separate pages: 3 per bio; then 40 (discontiguous); then 41, 42 on
  // one page, which merge into one segment of the same bio.
  for (let i = 10; i < 18; i++) b.add(i, page(), 0);
  b.add(40, page(), 0);
  const p = page();
  b.add(41, p, 0);
  const last = b.add(42, p, 1024);
  assert.equal(last.vecs.length, 2);
  b.submit();
  b.submit(); // nothing open: a no-op
  await q.runUntilIdle();
  ended.sort((x, y) => x.sector - y.sector);
  assert.deepEqual(ended, [
    { sector: 20, bytes: 3072, vecs: 3 },
    { sector: 26, bytes: 3072, vecs: 3 },
    { sector: 32, bytes: 2048, vecs: 2 },
    { sector: 80, bytes: 3072, vecs: 2 },
  ]);
  assert.equal(b.submitted, 4);
});

test('BioBuilder with a small maxVecs splits one long extent across many bios, all data landing', async () => {
  const q = new SimWorkQueue(5);
  const dev = new SimDevice({ queue: q, seed: 5, sizeBytes: 1 << 20 });
  let bios = 0;
  const b = new BioBuilder<undefined>({
    dev, op: 'write', blockSizeBytes: 4096,
    alloc: (sector) => new Bio({ dev, op: 'write', sector, maxVecs: 2, private: undefined, endIo: () => bios++ }),
  });
  const src = new Uint8Array(64 * 4096);
  for (let i = 0; i < src.length; i++) src[i] = (i * 7 + (i >> 12)) & 0xff;
  for (let blk = 0; blk < 64; blk++) b.add(100 + blk, src.subarray(blk * 4096, (blk + 1) * 4096), 0);
  b.submit();
  await q.runUntilIdle();
  assert.equal(bios, 32);
  assert.deepEqual(dev.durableImage().subarray(100 * 4096, 164 * 4096), new Uint8Array(64 * 4096), 'not durable before flush');
  await q.run(() => dev.flush());
  assert.deepEqual(dev.durableImage().subarray(100 * 4096, 164 * 4096), src);
});
