/**
 * SmallFileReader (src/build/read-worker.ts): the builder's small source files read on a worker
 * thread come back in job order with their exact bytes, members of an archive at their offsets,
 * an unreadable or shrunk file as an error at its own place (the others still delivered), and
 * the read-ahead bound holds (a limit of one byte makes the worker wait for every take).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SmallFileReader, type ReadJob } from '../../src/build/read-worker.js';
import { seededPrng } from '../../src/runtime/random.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-readworker-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

function bytes(seed: number, n: number): Uint8Array {
  const r = seededPrng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r.below(256);
  return b;
}

for (const limit of [1, 16 << 20]) {
  test(`SmallFileReader: order, archive members, per-file errors (read-ahead limit ${limit} bytes)`, async () => {
    const jobs: ReadJob[] = [];
    const want: (Uint8Array | RegExp)[] = [];
    const archive = bytes(1, 300_000);
    writeFileSync(join(work, 'archive.tar'), archive);
    for (let i = 0; i < 400; i++) {
      const n = 1 + ((i * 7919) % 20_000);
      if (i % 50 === 7) {
        jobs.push({ path: join(work, 'missing'), offset: 0, size: n, archive: false });
        want.push(/cannot read the source: ENOENT/);
      } else if (i % 50 === 9) {
        // Listed with more bytes than the file has (it shrank after the scan).
        writeFileSync(join(work, `short${i}`), bytes(i, 10));
        jobs.push({ path: join(work, `short${i}`), offset: 0, size: 100, archive: false });
        want.push(/the source ended at 10 of 100 bytes/);
      } else if (i % 3 === 0) {
        const off = (i * 131) % 200_000;
        jobs.push({ path: join(work, 'archive.tar'), offset: off, size: n, archive: true });
        want.push(archive.subarray(off, off + n));
      } else {
        const b = bytes(1000 + i, n);
        writeFileSync(join(work, `f${i}`), b);
        jobs.push({ path: join(work, `f${i}`), offset: 0, size: n, archive: false });
        want.push(b);
      }
    }
    const r = new SmallFileReader(limit);
    // Jobs arrive as the builder's walk finds them: at most 100 ahead of the takes, in bursts.
    let added = 0;
    try {
      for (const [i, w] of want.entries()) {
        if (added <= i) while (added < Math.min(jobs.length, i + 100)) r.add(jobs[added++]!);
        if (w instanceof RegExp) await assert.rejects(r.take(), w, `job ${i}`);
        else assert.deepEqual(await r.take(), w, `job ${i}`);
      }
    } finally {
      await r.close();
    }
  });
}
