/**
 * Writes on corrupt images: seeded bit flips in the metadata region of kernel-made images (with
 * and without metadata checksums), then a read-write mount and a burst of namespace operations
 * (mkdir, create, slow symlink, rename, recursive removal of everything). Each case must end in
 * success or a typed Ext4Error — never an Ext4Bug (a broken assertion), a TypeError, or a hang.
 * WRITE_FUZZ_CASES / WRITE_FUZZ_SEED replay.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { Ext4, Ext4Error } from '../../src/index.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import { fixturesDir } from '../helpers/fixtures.js';

const CASES = Number(process.env['WRITE_FUZZ_CASES'] ?? '800');
const SEED = Number(process.env['WRITE_FUZZ_SEED'] ?? '7');
const IMAGES = ['ext4-1k', 'ext4-4k', 'oldcsum', 'ext2', 'ext3'];

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 0x1_0000_0000;
  };
}

test(`write fuzz: ${CASES} corrupt images (seed ${SEED}) take namespace operations with success or a typed error, never a bug`, { timeout: 600_000 }, async (t) => {
  const images = IMAGES.map((n) => ({ n, bytes: gunzipSync(readFileSync(join(fixturesDir(), `${n}.img.gz`))) }));
  const rnd = prng(SEED);
  const outcomes: Record<string, number> = {};
  const failures: string[] = [];
  for (let c = 0; c < CASES; c++) {
    // OK to index: c % length is in range.
    const { n, bytes } = images[c % images.length]!;
    const img = Uint8Array.from(bytes);
    const flips = 1 + Math.floor(rnd() * 60);
    for (let k = 0; k < flips; k++) {
      const off = 1024 + Math.floor(rnd() * 300 * 1024);
      img[off] = (img[off] ?? 0) ^ (1 << Math.floor(rnd() * 8));
    }
    let outcome = 'ok';
    try {
      const fs = await Ext4.open(new MemDevice(img), { readOnly: false });
      const ops: (() => Promise<unknown>)[] = [
        () => fs.mkdir('/fz'), () => fs.mknod('/fz/a'), () => fs.symlink('x'.repeat(100), '/fz/l'),
        () => fs.rename('/fz', '/fz2'), () => fs.rm('/fz2', { recursive: true }),
        async () => {
          for (const name of await fs.readdir('/')) if (name !== 'lost+found') await fs.rm(`/${name}`, { recursive: true });
        },
      ];
      for (const op of ops) {
        try {
          await op();
        } catch (e) {
          if (!(e instanceof Ext4Error)) throw e;
          outcomes[`op:${e.code}`] = (outcomes[`op:${e.code}`] ?? 0) + 1;
        }
      }
      await fs.close();
    } catch (e) {
      if (e instanceof Ext4Error) outcome = e.code;
      else {
        outcome = 'FAIL';
        if (failures.length < 10) failures.push(`case ${c} (${n}, seed ${SEED}): ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
      }
    }
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
  }
  t.diagnostic(JSON.stringify(outcomes));
  assert.deepEqual(failures, []);
});
