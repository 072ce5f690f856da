/**
 * FileDevice with several requests in flight (issue 4: completions may arrive out of order):
 * many concurrent writes and reads through the node thread pool land where they should, and
 * bios submitted together through submitBio all complete.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDevice } from '../../../src/blockdev/file-device.js';
import { Bio, submitBioWait } from '../../../src/blockdev/bio.js';

test('FileDevice: 64 concurrent writes and reads (sync and async paths) all land intact', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ext4ts-fdev-'));
  try {
    const path = join(dir, 'img');
    await writeFile(path, new Uint8Array(64 * 65536 * 2));
    // syncReadMaxBytes 4096: the 64 KiB reads below go through the thread pool.
    const dev = await FileDevice.open(path, { syncReadMaxBytes: 4096 });
    const chunk = (i: number): Uint8Array => new Uint8Array(65536).fill(i + 1);
    await Promise.all([...Array(64).keys()].map((i) => dev.write(i * 2 * 65536, chunk(i))));
    await dev.flush();
    const finished: number[] = [];
    const bufs = [...Array(64).keys()].map(() => new Uint8Array(65536));
    await Promise.all(bufs.map((b, i) => dev.read(i * 2 * 65536, b).then(() => finished.push(i))));
    bufs.forEach((b, i) => assert.ok(b.every((x) => x === i + 1), `chunk ${i}`));
    assert.equal(finished.length, 64);
    // Bios in flight together on a FileDevice.
    const statuses = await Promise.all([...Array(16).keys()].map((i) => {
      const bio = new Bio({ dev, op: 'write', sector: i * 8, endIo: () => {}, private: undefined });
      bio.add(new Uint8Array(4096).fill(0xe0 + i), 0, 4096);
      return submitBioWait(bio);
    }));
    assert.deepEqual(statuses, new Array(16).fill(0));
    const r = new Uint8Array(4096);
    await dev.read(5 * 4096, r);
    assert.ok(r.every((x) => x === 0xe5));
    await dev.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
