/**
 * Finds the metadata of a pristine image so the mutator can aim at it: the superblock, every
 * group descriptor, the inode record of every reachable inode, extent tree and indirect blocks,
 * directory blocks (leaf, dx_root, dx_node), xattr blocks, slow-symlink blocks, bitmaps and a
 * few data blocks. It walks the image once with the ext4ts read API (layout() gives tree and
 * indirect blocks, extents give directory blocks) and records, for each structure, its byte
 * range, its owner inode and that inode's checksum seed, which the checksum fix-ups need.
 *
 * A pristine image that cannot be walked is itself a finding (the caller reports it).
 */
import { Ext4, MemDevice } from '../../src/index.js';
import { inodeLocation } from '../../src/fs/inode/inode.js';
import { looksLikeDxNode } from '../../src/format/htree.js';
import { SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE } from '../../src/format/superblock.js';
import type { GdCsumKind } from '../../src/format/group-desc.js';

/** The kinds of structure the mutator aims at. */
export type RegionKind =
  | 'superblock' | 'gdt' | 'inode' | 'extent' | 'dir' | 'dxroot' | 'dxnode' | 'xattr'
  | 'indirect' | 'symlink' | 'bitmap' | 'data';

/** One on-disk structure of the pristine image. */
export interface Region {
  kind: RegionKind;
  /** First byte of the structure in the image. */
  offset: number;
  /** Its length in bytes (a block, an inode record, a descriptor, the superblock). */
  len: number;
  /** The filesystem block that holds it. */
  block: number;
  /** The owning inode (inode records and per-inode blocks). */
  ino?: number;
  /** The owner's metadata checksum seed (extent, directory and dx blocks). */
  inodeSeed?: number;
  /** The group a descriptor describes. */
  group?: number;
  /** The owner inode has the extents flag (its i_block holds an extent root). */
  extentRoot?: boolean;
}

/** What the mutator and the checksum fix-ups need to know about a pristine image. */
export interface ImageMeta {
  name: string;
  sizeBytes: number;
  blockSize: number;
  blocksCount: number;
  firstDataBlock: number;
  inodesCount: number;
  inodeSize: number;
  descSize: number;
  metadataCsum: boolean;
  /** Filesystem checksum seed (0 without metadata_csum). */
  csumSeed: number;
  gdCsum: GdCsumKind;
  regions: Region[];
  /** Inode numbers reached by the walk (interesting values for pointer fields). */
  inos: number[];
  /** Metadata block numbers (interesting values: pointing one structure at another). */
  metaBlocks: number[];
}

/** Caps that keep the scan of a large image short. */
const MAX_DIR_BLOCKS_PER_DIR = 64;
const MAX_DATA_REGIONS = 32;
const MAX_BITMAP_GROUPS = 4;
const MAX_WALK_ENTRIES = 50_000;

/** Walks pristine image `bytes` and returns its metadata map. Throws if the walk fails. */
export async function scanImage(name: string, bytes: Uint8Array): Promise<ImageMeta> {
  const fs = await Ext4.open(new MemDevice(bytes, true), { readOnly: true, noRecovery: true });
  const s = fs.sup;
  const bs = s.blockSize;
  const regions: Region[] = [];
  const blockRegion = (kind: RegionKind, block: number, extra: Partial<Region> = {}): void => {
    regions.push({ kind, offset: block * bs, len: bs, block, ...extra });
  };
  regions.push({ kind: 'superblock', offset: SUPERBLOCK_OFFSET, len: SUPERBLOCK_SIZE, block: Math.floor(SUPERBLOCK_OFFSET / bs) });
  const perBlock = bs / s.descSize;
  for (let g = 0; g < s.groupCount; g++) {
    const block = s.gdBlockOf(g);
    regions.push({ kind: 'gdt', offset: block * bs + (g % perBlock) * s.descSize, len: s.descSize, block, group: g });
    if (g < MAX_BITMAP_GROUPS) {
      blockRegion('bitmap', s.group(g).blockBitmap);
      blockRegion('bitmap', s.group(g).inodeBitmap);
    }
  }
  const inos = new Set<number>();
  const seenBlocks = new Set<number>();
  let dataRegions = 0;
  const addInode = async (path: string | undefined, ino: number): Promise<void> => {
    if (inos.has(ino)) return;
    inos.add(ino);
    const info = await fs.inode(ino);
    const loc = inodeLocation(s, ino);
    regions.push({ kind: 'inode', offset: loc.block * bs + loc.offset, len: s.inodeSize, block: loc.block, ino, extentRoot: info.hasExtents });
    const own = { ino, inodeSeed: info.csumSeed };
    if (info.fileAcl !== 0 && !seenBlocks.has(info.fileAcl)) {
      seenBlocks.add(info.fileAcl);
      blockRegion('xattr', info.fileAcl, own);
    }
    if (path === undefined) return;
    const lay = await fs.layout(path);
    for (const b of lay.metaBlocks) blockRegion(lay.kind === 'extents' ? 'extent' : 'indirect', b, own);
    if (info.type === 'dir') {
      let n = 0;
      for (const e of lay.extents) {
        for (let i = 0; i < e.len && n < MAX_DIR_BLOCKS_PER_DIR; i++, n++) {
          const block = e.pblk + i;
          blockRegion(dirBlockKind(bytes, bs, block, info.isIndexedDir, e.lblk + i), block, own);
        }
      }
    } else if (info.type === 'symlink' && lay.extents.length > 0) {
      // OK to assert: length checked on the same line.
      blockRegion('symlink', (lay.extents[0] as { pblk: number }).pblk, own);
    } else if (info.type === 'file' && lay.extents.length > 0 && dataRegions < MAX_DATA_REGIONS) {
      dataRegions++;
      blockRegion('data', (lay.extents[0] as { pblk: number }).pblk, own);
    }
  };
  // Reserved inodes a reader may touch: the journal (8) and the first non-reserved one.
  await addInode(undefined, 8).catch(() => undefined);
  const queue: string[] = ['/'];
  await addInode('/', 2);
  let visited = 0;
  while (queue.length > 0 && visited < MAX_WALK_ENTRIES) {
    // OK to assert: the queue is non-empty.
    const dir = queue.shift() as string;
    for (const d of await fs.readdir(dir, { withFileTypes: true })) {
      if (++visited > MAX_WALK_ENTRIES) break;
      const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
      const st = await fs.lstat(path);
      const isNew = !inos.has(st.ino);
      await addInode(path, st.ino);
      if (isNew && st.isDirectory()) queue.push(path);
    }
  }
  await fs.close();
  const metaKinds = new Set<RegionKind>(['gdt', 'inode', 'extent', 'dir', 'dxroot', 'dxnode', 'xattr', 'indirect', 'bitmap']);
  return {
    name, sizeBytes: bytes.length, blockSize: bs, blocksCount: s.blocksCount, firstDataBlock: s.firstDataBlock,
    inodesCount: s.sb.s_inodes_count, inodeSize: s.inodeSize, descSize: s.descSize,
    metadataCsum: s.features.metadataCsum, csumSeed: s.csumSeed, gdCsum: s.gdCsum, regions,
    inos: [...inos].sort((a, b) => a - b),
    metaBlocks: [...new Set(regions.filter((r) => metaKinds.has(r.kind)).map((r) => r.block))].sort((a, b) => a - b),
  };
}

/**
 * The role of a directory block in the pristine image: block 0 of an indexed directory is the
 * dx_root; a block whose first entry is an empty one spanning the block is a dx_node (the test
 * the kernel's is_dx_block makes); everything else is a leaf.
 */
function dirBlockKind(bytes: Uint8Array, bs: number, block: number, indexed: boolean, lblk: number): RegionKind {
  if (!indexed) return 'dir';
  if (lblk === 0) return 'dxroot';
  return looksLikeDxNode(bytes.subarray(block * bs, (block + 1) * bs)) ? 'dxnode' : 'dir';
}
