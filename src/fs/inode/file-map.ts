/**
 * One way to ask "where is logical block N of this inode" for every layout: extent trees
 * (read once per inode and cached here), block maps of ext2/3, and inline data (no blocks).
 * This is the read side of ext4_map_blocks(); the write path adds allocation behind the same
 * Mapping type.
 */
import type { Ext4Super } from '../super.js';
import type { InodeInfo } from './inode.js';
import { readExtentTree, mapInExtentList, type ExtentList, type Mapping } from '../extents/extent-read.js';
import { mapIndirect } from './block-map.js';
import { mapExtentPoint } from '../extents/extent-lookup.js';
import { Corrupt } from '../../util/errors.js';
import { assert } from '../../util/assert.js';

/** Highest logical block + 1 an ext4 file can have (32-bit lblk). */
export const MAX_LBLK = 0x1_0000_0000;

export class FileMap {
  private extents: ExtentList | undefined;
  constructor(private readonly s: Ext4Super, readonly info: InodeInfo) {}

  /** The extent list (extent-mapped inodes only), read on first use. */
  async extentList(): Promise<ExtentList> {
    if (!this.info.hasExtents) throw new Corrupt('inode', 'is not extent-mapped', { ino: this.info.ino });
    this.extents ??= await readExtentTree(this.s, this.info);
    return this.extents;
  }

  /** Maps [lblk, lblk + maxLen) to its first run of one kind. */
  async map(lblk: number, maxLen: number): Promise<Mapping> {
    if (this.info.hasInlineData) return { kind: 'hole', lblk, len: maxLen };
    if (this.info.hasExtents) {
      // One-block questions (directory blocks) walk one path instead of loading every leaf.
      if (this.extents === undefined && maxLen === 1) return mapExtentPoint(this.s, this.info, lblk, maxLen);
      return mapInExtentList(this.extents ?? (await this.extentList()), lblk, maxLen);
    }
    return mapIndirect(this.s, this.info, lblk, maxLen);
  }
}

/**
 * Reads `length` bytes at byte `pos` of a block-backed file into `dst` (which it fills from 0),
 * stopping at i_size. Holes and unwritten extents read as zeros. Contiguous blocks are read in
 * one device request up to the device's maximum. Returns the number of bytes read.
 */
export async function readMappedRange(
  s: Ext4Super, fmap: FileMap, pos: number, length: number, dst: Uint8Array,
): Promise<number> {
  const size = fmap.info.size;
  if (pos >= size || length <= 0) return 0;
  const end = Math.min(size, pos + length);
  const bs = s.blockSize;
  const maxBlocks = Math.max(1, Math.floor(s.dev.maxRequestBytes / bs));
  let cur = pos;
  while (cur < end) {
    const lblk = Math.floor(cur / bs);
    const lastLblk = Math.floor((end - 1) / bs);
    const m = await fmap.map(lblk, Math.min(maxBlocks, lastLblk - lblk + 1));
    const runStart = lblk * bs;
    const runEnd = Math.min(end, (lblk + m.len) * bs);
    const out = dst.subarray(cur - pos, runEnd - pos);
    if (m.kind === 'mapped') {
      const inRun = cur - runStart;
      if (inRun === 0 && out.length === m.len * bs) {
        await s.readBlocks(m.pblk, m.len, out);
      } else {
        const tmp = new Uint8Array(m.len * bs);
        await s.readBlocks(m.pblk, m.len, tmp);
        out.set(tmp.subarray(inRun, inRun + out.length));
      }
    } else {
      out.fill(0);
    }
    cur = runEnd;
  }
  return end - pos;
}

/**
 * Hands the written data of a block-backed file to `sink`, in file order, without allocating
 * per chunk: each mapped run (holes and unwritten extents are skipped; they read as zeros) is
 * read into `scratch`, at most `scratch.length` bytes and one device request at a time, and
 * `sink(pos, bytes)` gets a view of `scratch` that is valid only until the sink returns (or its
 * promise settles). The last chunk stops at i_size. This is `dataRuns` + `readMappedRange`
 * fused for bulk copies (extraction): one FileMap, so the extent tree is parsed once per file,
 * and one map lookup per run. Holes are mapped in steps of up to 2^20 blocks, as dataRuns
 * does, so a huge sparse file costs a few thousand lookups, not one per scratch buffer.
 */
export async function forEachDataChunk(
  s: Ext4Super, fmap: FileMap, scratch: Uint8Array,
  sink: (pos: number, data: Uint8Array) => void | Promise<void>,
): Promise<void> {
  assert(!fmap.info.hasInlineData, () => `inode ${fmap.info.ino}: forEachDataChunk on inline data`);
  const size = fmap.info.size;
  if (size === 0) return;
  const bs = s.blockSize;
  const chunkBlocks = Math.floor(Math.min(scratch.length, s.dev.maxRequestBytes) / bs);
  assert(chunkBlocks >= 1, () => `scratch buffer of ${scratch.length} bytes holds no ${bs}-byte block`);
  const lastBlock = Math.ceil(size / bs);
  for (let lblk = 0; lblk < lastBlock; ) {
    const m = await fmap.map(lblk, Math.min(lastBlock - lblk, 1 << 20));
    if (m.kind === 'mapped') {
      for (let done = 0; done < m.len; done += chunkBlocks) {
        const n = Math.min(chunkBlocks, m.len - done);
        const pos = (lblk + done) * bs;
        await s.readBlocks(m.pblk + done, n, scratch);
        const r = sink(pos, scratch.subarray(0, Math.min(size, pos + n * bs) - pos));
        if (r !== undefined) await r;
      }
    }
    lblk += m.len;
  }
}
