/**
 * Point lookups in an extent tree (ext4_find_extent): one root-to-leaf path per query instead of
 * collecting every leaf. Directories ask for one block at a time and a large directory's tree
 * holds thousands of extents, so reading the whole list per lookup made namespace operations
 * quadratic. A tree block is validated in full (structure and checksum) the first time it is
 * read; afterwards, while it stays cached as verified, its nodes are binary-searched in place.
 */
import type { Ext4Super } from '../super.js';
import type { InodeInfo } from '../inode/inode.js';
import type { Mapping } from './extent-read.js';
import { parseExtentNode, verifyExtentBlockCsum, extentNodeLookup, ExtentHeader } from '../../format/extent.js';
import { Corrupt } from '../../util/errors.js';

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Validates the extent root in i_block (Corrupt on bad input) before a lookup or a change trusts
 * it. Once per content: i_block changes only when the tree does, and comparing 60 bytes costs
 * less than parsing them on every lookup (a directory's blocks are mapped one by one for each
 * entry added, and every extent change checks the root first).
 */
export function checkExtentRoot(s: Ext4Super, info: InodeInfo): void {
  const root = info.iBlock;
  const seen = info.checkedExtentRoot;
  if (seen !== undefined && sameBytes(seen, root)) return;
  const depth = new ExtentHeader(root, 0).eh_depth;
  const parsed = parseExtentNode(root, {
    ino: info.ino, block: undefined, expectDepth: depth, blocksCount: s.blocksCount, firstDataBlock: s.firstDataBlock,
  });
  if (depth > 0 && parsed.indexes.length === 0) {
    throw new Corrupt('extent header (inode root)', `depth ${depth} with no entries`, { ino: info.ino });
  }
  if (seen === undefined) info.checkedExtentRoot = root.slice();
  else seen.set(root);
}

/** Maps [lblk, lblk + maxLen) to its first run, reading only the path to `lblk`. */
export async function mapExtentPoint(s: Ext4Super, info: InodeInfo, lblk: number, maxLen: number): Promise<Mapping> {
  const ctx = { ino: info.ino, blocksCount: s.blocksCount, firstDataBlock: s.firstDataBlock };
  const root = info.iBlock;
  let depth = new ExtentHeader(root, 0).eh_depth;
  checkExtentRoot(s, info);
  let node: Uint8Array = root;
  let block: number | undefined;
  // Upper bound of the current subtree: the next index key above us.
  let hi = 0x1_0000_0000;
  let lo = 0;
  for (let hops = 0; ; hops++) {
    if (hops > 5) throw new Corrupt('extent tree', 'deeper than 5 levels', { ino: info.ino });
    const hit = extentNodeLookup(node, lblk);
    if (hit.kind === 'index') {
      if (hit.nextLblk !== undefined) hi = Math.min(hi, hit.nextLblk);
      lo = Math.max(lo, hit.lblk);
      const buf = await s.cache.bread(hit.child, 'extent block');
      if (!buf.verified) {
        const parsed = parseExtentNode(buf.data, { ...ctx, block: hit.child, expectDepth: depth - 1 });
        if (s.features.metadataCsum) verifyExtentBlockCsum(buf.data, info.csumSeed, info.ino, hit.child);
        const first = parsed.leaves[0]?.lblk ?? parsed.indexes[0]?.lblk;
        if (first !== undefined && (first < lo || first >= hi)) {
          throw new Corrupt('extent block', `first key ${first} outside its index range [${lo}, ${hi})`, { ino: info.ino, block: hit.child });
        }
        buf.verified = true;
      }
      node = buf.data;
      block = hit.child;
      depth--;
      continue;
    }
    void block;
    if (hit.kind === 'leaf') {
      const off = lblk - hit.lblk;
      const len = Math.min(maxLen, hit.len - off);
      return { kind: hit.unwritten ? 'unwritten' : 'mapped', lblk, len, pblk: hit.pblk + off };
    }
    const end = Math.min(hi, hit.nextLblk ?? hi);
    return { kind: 'hole', lblk, len: Math.max(1, Math.min(maxLen, end - lblk)) };
  }
}
