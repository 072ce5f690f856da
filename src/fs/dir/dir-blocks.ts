/**
 * The blocks of a directory as the directory writer sees them (DirBlocks): existing blocks
 * through the buffer cache, new ones allocated next to the last (ext4_append), mapped in the
 * directory's extent tree, counted in i_blocks and i_size. Block-mapped directories (ext2/3)
 * can grow only inside their 12 direct blocks.
 */
import type { Ext4Super } from '../super.js';
import type { MetaBuffer } from '../../cache/buffer-cache.js';
import { writeInode, addInodeBlocks, type InodeInfo } from '../inode/inode.js';
import { FileMap } from '../inode/file-map.js';
import { ExtentTree } from '../extents/extent-tree.js';
import type { Balloc } from '../alloc/balloc.js';
import type { DirBlocks } from './dir-write.js';
import { setInodeSizeBytes } from '../../format/inode.js';
import { Corrupt, PosixError } from '../../util/errors.js';

/** Largest directory: 2^32 blocks would overflow; the kernel's limit with large_dir is far below. */
const MAX_DIR_BLOCKS = 1 << 24;

export function extentDirBlocks(s: Ext4Super, dir: InodeInfo, balloc: Balloc): DirBlocks {
  const bs = s.blockSize;
  let tree: ExtentTree | undefined;
  const treeOf = (): ExtentTree => (tree ??= new ExtentTree(s, dir, balloc));
  return {
    count: () => Math.floor(dir.size / bs),
    async get(lblk: number): Promise<MetaBuffer> {
      const m = await new FileMap(s, dir).map(lblk, 1);
      if (m.kind !== 'mapped') {
        throw new Corrupt('directory', `logical block ${lblk} is a ${m.kind === 'hole' ? 'hole' : 'unwritten extent'}`, { ino: dir.ino });
      }
      return s.cache.bread(m.pblk, 'directory block');
    },
    async append(): Promise<MetaBuffer> {
      const lblk = Math.floor(dir.size / bs);
      if (lblk >= MAX_DIR_BLOCKS) throw new PosixError('ENOSPC', 'link', undefined, `directory inode ${dir.ino} has ${lblk} blocks`);
      let goal = balloc.goalForInode(dir.ino);
      if (lblk > 0) {
        const prev = await new FileMap(s, dir).map(lblk - 1, 1);
        if (prev.kind === 'mapped') goal = prev.pblk + 1;
      }
      const run = await balloc.allocBlocks({ goal, maxLen: 1, ino: dir.ino, metadata: true });
      try {
        if (dir.hasExtents) {
          await treeOf().insert({ lblk, len: 1, pblk: run.pblk, unwritten: false });
        } else if (lblk < 12) {
          new DataView(dir.view.i_block.buffer, dir.view.i_block.byteOffset, 60).setUint32(lblk * 4, run.pblk, true);
        } else {
          throw new PosixError('EOPNOTSUPP', 'link', undefined, `block-mapped directory inode ${dir.ino} cannot grow past 12 blocks in ext4ts`);
        }
      } catch (e) {
        await balloc.freeBlocks(run.pblk, 1);
        throw e;
      }
      addInodeBlocks(s, dir, 1);
      setInodeSizeBytes(dir.view, (lblk + 1) * bs);
      await writeInode(s, dir);
      const buf = s.cache.getblk(run.pblk);
      buf.data.fill(0);
      return buf;
    },
  };
}
