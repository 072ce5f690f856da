/**
 * `node write-child.js IMG SIZE_BYTES MAX_BIO_VECS`: the buffered-write benchmark of issue 4,
 * through the public API in a process of its own (so each file size's peak memory is its own):
 * open the image read-write, create /f, write SIZE_BYTES sequentially in 1 MiB writes, close the
 * file and the filesystem. Prints one JSON line: seconds, memory peaks and the engine counters.
 */
import { peakRssKiB } from './peak-rss.js';
import { performance } from 'node:perf_hooks';
import { Ext4 } from '../src/index.js';
import { MemSampler } from './stats.js';
import { chunkPattern, WRITE_SEED } from './workload.js';

const CHUNK_BYTES = 1 << 20;

const [img, sizeArg, vecsArg] = process.argv.slice(2);
if (img === undefined || sizeArg === undefined || vecsArg === undefined) throw new Error('usage: write-child IMG SIZE_BYTES MAX_BIO_VECS');
const sizeBytes = Number(sizeArg);
const pattern = chunkPattern(WRITE_SEED);
const buf = new Uint8Array(CHUNK_BYTES);
const base = process.memoryUsage();
const mem = new MemSampler(50);
const t0 = performance.now();
const fs = await Ext4.open(img, { readOnly: false, maxBioVecs: Number(vecsArg) });
await fs.mknod('/f', { mode: 0o644 });
// 'r+': writable (the one-argument open is read-only, like node's).
const fh = await fs.open('/f', 'r+');
for (let pos = 0, k = 0; pos < sizeBytes; pos += CHUNK_BYTES, k++) {
  // The engine copies into its page cache, so refilling the one buffer after write() is safe.
  pattern(k, buf);
  const len = Math.min(CHUNK_BYTES, sizeBytes - pos);
  const { bytesWritten } = await fh.write(buf, 0, len, pos);
  if (bytesWritten !== len) throw new Error(`short write at ${pos}: ${bytesWritten} of ${len}`);
}
const tWritten = performance.now();
await fh.close();
await fs.close();
// After close: the unmount writes the remaining dirty pages and waits for their conversions.
const stats = fs.data !== undefined ? { ...fs.data.stats } : undefined;
const seconds = (performance.now() - t0) / 1000;
mem.stop();
process.stdout.write(JSON.stringify({
  seconds,
  writeCallsSeconds: (tWritten - t0) / 1000,
  baseRssBytes: base.rss,
  peakRssBytes: mem.peakRssBytes,
  maxRssBytes: peakRssKiB() * 1024,
  peakArrayBuffersBytes: mem.peakArrayBuffersBytes,
  stats,
}) + '\n');
