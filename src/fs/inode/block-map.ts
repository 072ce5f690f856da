/**
 * Block-mapped (indirect) files of ext2/ext3 (fs/ext4/indirect.c: ext4_ind_map_blocks).
 * i_block[0..11] point at data, [12] at a block of pointers, [13] double and [14] triple
 * indirect. A zero pointer is a hole. Every pointer is range-checked before it is followed.
 */
import type { Ext4Super } from '../super.js';
import type { InodeInfo } from './inode.js';
import type { Mapping } from '../extents/extent-read.js';
import { Corrupt } from '../../util/errors.js';

const DIRECT = 12;

/** Maps `lblk` to a run of up to `maxLen` blocks through the indirect tree. */
export async function mapIndirect(s: Ext4Super, info: InodeInfo, lblk: number, maxLen: number): Promise<Mapping> {
  const per = s.blockSize / 4;
  const iblock = new DataView(info.iBlock.buffer, info.iBlock.byteOffset, 60);
  const path = indirectPath(lblk, per);
  if (path === undefined) return { kind: 'hole', lblk, len: maxLen };
  let ptr = iblock.getUint32(path.root * 4, true);
  // Blocks left in this leaf pointer array from `lblk`: a run never crosses into the next one.
  let room = path.root < DIRECT ? DIRECT - path.root : per - (path.offsets[path.offsets.length - 1] ?? 0);
  let ptrs: DataView | undefined;
  for (const off of path.offsets) {
    if (ptr === 0) return { kind: 'hole', lblk, len: Math.min(maxLen, room) };
    checkPtr(s, info, ptr);
    const buf = await s.cache.bread(ptr, 'indirect block');
    ptrs = new DataView(buf.data.buffer, buf.data.byteOffset, s.blockSize);
    ptr = ptrs.getUint32(off * 4, true);
  }
  const len = Math.min(maxLen, room);
  const last = path.offsets[path.offsets.length - 1];
  const at = (k: number): number => ptrs !== undefined && last !== undefined
    ? ptrs.getUint32((last + k) * 4, true)
    : iblock.getUint32((path.root + k) * 4, true);
  // Extend the run while the next pointers are holes too, or physically contiguous.
  let n = 1;
  if (ptr === 0) {
    while (n < len && at(n) === 0) n++;
    return { kind: 'hole', lblk, len: n };
  }
  checkPtr(s, info, ptr);
  while (n < len && at(n) === ptr + n) n++;
  return { kind: 'mapped', lblk, len: n, pblk: ptr };
}

function checkPtr(s: Ext4Super, info: InodeInfo, p: number): void {
  if (p < s.firstDataBlock || p >= s.blocksCount) {
    throw new Corrupt('indirect block pointer', `${p} outside the filesystem`, { ino: info.ino });
  }
}

/** Which i_block slot and which offsets inside indirect blocks lead to `lblk`. */
function indirectPath(lblk: number, per: number): { root: number; offsets: number[] } | undefined {
  if (lblk < DIRECT) return { root: lblk, offsets: [] };
  let b = lblk - DIRECT;
  if (b < per) return { root: 12, offsets: [b] };
  b -= per;
  if (b < per * per) return { root: 13, offsets: [Math.floor(b / per), b % per] };
  b -= per * per;
  if (b < per * per * per) {
    return { root: 14, offsets: [Math.floor(b / (per * per)), Math.floor(b / per) % per, b % per] };
  }
  return undefined;
}

/** All data and indirect blocks of a block-mapped file, for stat output. */
export async function listIndirectBlocks(
  s: Ext4Super, info: InodeInfo, sizeBlocks: number,
): Promise<{ data: Mapping[]; meta: number[] }> {
  const data: Mapping[] = [];
  const meta: number[] = [];
  const iblock = new DataView(info.iBlock.buffer, info.iBlock.byteOffset, 60);
  const per = s.blockSize / 4;
  let budget = s.blocksCount; // Never visit more pointers than the filesystem has blocks.
  const push = (lblk: number, p: number): void => {
    const last = data[data.length - 1];
    if (last !== undefined && last.kind === 'mapped' && last.lblk + last.len === lblk && last.pblk + last.len === p) last.len++;
    else data.push({ kind: 'mapped', lblk, len: 1, pblk: p });
  };
  const visit = async (p: number, level: number, base: number, span: number): Promise<void> => {
    if (p === 0 || base >= sizeBlocks) return;
    checkPtr(s, info, p);
    if (--budget < 0) throw new Corrupt('indirect tree', 'visits more blocks than the filesystem has', { ino: info.ino });
    if (level === 0) return push(base, p);
    meta.push(p);
    const buf = await s.cache.bread(p, 'indirect block');
    const dv = new DataView(buf.data.buffer, buf.data.byteOffset, s.blockSize);
    const child = span / per;
    for (let i = 0; i < per; i++) await visit(dv.getUint32(i * 4, true), level - 1, base + i * child, child);
  };
  for (let i = 0; i < DIRECT; i++) await visit(iblock.getUint32(i * 4, true), 0, i, 1);
  await visit(iblock.getUint32(48, true), 1, DIRECT, per);
  await visit(iblock.getUint32(52, true), 2, DIRECT + per, per * per);
  await visit(iblock.getUint32(56, true), 3, DIRECT + per + per * per, per * per * per);
  return { data, meta };
}
