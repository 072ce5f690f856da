/**
 * The orphan list (fs/ext4/orphan.c, the s_last_orphan chain): an inode whose last link went
 * while it was still open is put on a list rooted in the superblock and threaded through
 * i_dtime, so that if the process never closes it (a crash) the next read-write mount — ours,
 * the kernel's or e2fsck — releases it. ext4ts always uses the chain, also on filesystems with
 * orphan_file, whose readers process the chain too.
 */
import type { Ext4Super } from './super.js';
import { writeInode, type InodeInfo } from './inode/inode.js';
import { iget } from './inode/icache.js';
import { evictInode, freeBlocksFrom } from './inode/inode-life.js';
import { Corrupt } from '../util/errors.js';

/** Puts `info` (links 0, still open) at the head of the orphan chain (ext4_orphan_add). */
export async function orphanAdd(s: Ext4Super, info: InodeInfo): Promise<void> {
  info.view.i_dtime = s.sb.s_last_orphan;
  s.sb.s_last_orphan = info.ino;
  s.markSuperDirty();
  await writeInode(s, info);
}

/** Takes `info` off the orphan chain (ext4_orphan_del). */
export async function orphanDel(s: Ext4Super, info: InodeInfo): Promise<void> {
  const next = info.view.i_dtime;
  if (s.sb.s_last_orphan === info.ino) {
    s.sb.s_last_orphan = next;
    s.markSuperDirty();
  } else {
    let cur = s.sb.s_last_orphan;
    for (let n = 0; cur !== 0; n++) {
      if (n > s.sb.s_inodes_count) throw new Corrupt('orphan list', 'has a cycle');
      const c = await iget(s, cur);
      if (c.view.i_dtime === info.ino) {
        c.view.i_dtime = next;
        await writeInode(s, c);
        break;
      }
      cur = c.view.i_dtime;
    }
  }
  info.view.i_dtime = 0;
  await writeInode(s, info);
}

/**
 * Releases every inode on the chain (ext4_orphan_cleanup), at a read-write mount: inodes without
 * links are evicted; inodes that still have links were mid-truncate, so their blocks past i_size
 * are freed. Returns the numbers of inodes released and truncated.
 */
export async function orphanCleanup(s: Ext4Super): Promise<{ released: number; truncated: number }> {
  let released = 0;
  let truncated = 0;
  let cur = s.sb.s_last_orphan;
  const seen = new Set<number>();
  while (cur !== 0) {
    if (seen.has(cur) || seen.size > s.sb.s_inodes_count) throw new Corrupt('orphan list', `inode ${cur} appears twice`);
    seen.add(cur);
    const info = await iget(s, cur);
    const next = info.view.i_dtime;
    s.sb.s_last_orphan = next;
    s.markSuperDirty();
    info.view.i_dtime = 0;
    if (info.linksCount === 0) {
      await evictInode(s, info);
      released++;
    } else {
      if (info.type === 'file') await freeBlocksFrom(s, info, Math.ceil(info.size / s.blockSize));
      await writeInode(s, info);
      truncated++;
    }
    cur = next;
  }
  return { released, truncated };
}
