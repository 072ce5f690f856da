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
import { Corrupt } from '../../util/errors.js';

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
    if (this.info.hasExtents) return mapInExtentList(await this.extentList(), lblk, maxLen);
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
