/**
 * Reading extent trees (fs/ext4/extents.c: ext4_find_extent, ext4_ext_check). The whole leaf
 * list of an inode is collected once into a sorted array and then searched in memory: files
 * have few extents, and the list makes mapping a range O(log n). The walk is bounded: each
 * child must have depth = parent - 1 (so at most 5 levels), each tree block may appear once
 * (a crafted tree whose indexes all point at one block would otherwise cost entries^depth
 * reads), and each child's keys must lie inside the range its parent index gives it.
 */
import type { Ext4Super } from '../super.js';
import type { InodeInfo } from '../inode/inode.js';
import {
  parseExtentNode, verifyExtentBlockCsum, ExtentHeader, type ExtentLeafEntry,
} from '../../format/extent.js';
import { Corrupt } from '../../util/errors.js';

/** The leaves of an inode's extent tree, in logical order. */
export interface ExtentList {
  readonly leaves: readonly ExtentLeafEntry[];
  /** Depth of the tree (0: all extents in the inode). */
  readonly depth: number;
  /** Physical blocks of the tree's internal and leaf nodes (not the inode root). */
  readonly nodeBlocks: readonly number[];
}

/** Reads and validates the full extent tree of `info`. */
export async function readExtentTree(s: Ext4Super, info: InodeInfo): Promise<ExtentList> {
  const root = info.iBlock;
  const rootDepth = new ExtentHeader(root, 0).eh_depth;
  const ctx = { ino: info.ino, blocksCount: s.blocksCount, firstDataBlock: s.firstDataBlock };
  const top = parseExtentNode(root, { ...ctx, block: undefined, expectDepth: rootDepth });
  // A root without indexes (depth 0, all extents in the inode: most files) has nothing to
  // walk, and parseExtentNode returned a fresh array, so it becomes the list as is.
  if (top.indexes.length === 0) return { leaves: top.leaves, depth: top.depth, nodeBlocks: [] };
  const leaves: ExtentLeafEntry[] = [...top.leaves];
  const nodeBlocks: number[] = [];
  const seen = new Set<number>();

  const walk = async (indexes: readonly { lblk: number; child: number }[], depth: number, hi: number): Promise<void> => {
    for (let i = 0; i < indexes.length; i++) {
      // OK to index: i < indexes.length.
      const ix = indexes[i]!;
      const end = i + 1 < indexes.length ? indexes[i + 1]!.lblk : hi;
      if (seen.has(ix.child)) {
        throw new Corrupt('extent index', `block ${ix.child} referenced twice in one tree`, { ino: info.ino, block: ix.child });
      }
      seen.add(ix.child);
      nodeBlocks.push(ix.child);
      const buf = await s.cache.bread(ix.child, 'extent block');
      const node = parseExtentNode(buf.data, { ...ctx, block: ix.child, expectDepth: depth - 1 });
      if (!buf.verified && s.features.metadataCsum) verifyExtentBlockCsum(buf.data, info.csumSeed, info.ino, ix.child);
      buf.verified = true;
      const first = node.leaves[0]?.lblk ?? node.indexes[0]?.lblk;
      if (first !== undefined && (first < ix.lblk || first >= end)) {
        throw new Corrupt('extent block', `first key ${first} outside its index range [${ix.lblk}, ${end})`, { ino: info.ino, block: ix.child });
      }
      for (const l of node.leaves) {
        if (l.lblk + l.len > end) {
          throw new Corrupt('extent', `lblk ${l.lblk} len ${l.len} crosses the next index at ${end}`, { ino: info.ino, block: ix.child });
        }
        leaves.push(l);
      }
      if (node.indexes.length > 0) await walk(node.indexes, depth - 1, end);
    }
  };
  await walk(top.indexes, top.depth, 0x1_0000_0000);
  return { leaves, depth: top.depth, nodeBlocks };
}

/** What one logical block range maps to. */
export type Mapping =
  | { kind: 'mapped'; lblk: number; len: number; pblk: number }
  | { kind: 'unwritten'; lblk: number; len: number; pblk: number }
  | { kind: 'hole'; lblk: number; len: number };

/**
 * Maps [lblk, lblk + maxLen) to the first run of one kind: a written extent piece, an
 * unwritten piece, or a hole up to the next extent.
 */
export function mapInExtentList(list: ExtentList, lblk: number, maxLen: number): Mapping {
  const leaves = list.leaves;
  let lo = 0;
  let hi = leaves.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    // OK to index: lo <= mid <= hi < leaves.length.
    if (leaves[mid]!.lblk <= lblk) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  const e = found >= 0 ? leaves[found] : undefined;
  if (e !== undefined && lblk < e.lblk + e.len) {
    const off = lblk - e.lblk;
    const len = Math.min(maxLen, e.len - off);
    return { kind: e.unwritten ? 'unwritten' : 'mapped', lblk, len, pblk: e.pblk + off };
  }
  const next = leaves[found + 1];
  const len = next === undefined ? maxLen : Math.min(maxLen, next.lblk - lblk);
  return { kind: 'hole', lblk, len };
}
