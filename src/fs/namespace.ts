/**
 * Namespace operations on a read-write mount (fs/ext4/namei.c: ext4_mkdir, ext4_rmdir,
 * ext4_create, ext4_mknod, ext4_unlink, ext4_link, ext4_symlink, ext4_rename; inode.c:
 * ext4_setattr for chmod/chown/utimes/truncate). Each operation resolves its paths, checks
 * POSIX preconditions before it changes anything (so an error leaves the filesystem as it was),
 * then changes directories, link counts and times in the kernel's order. Link counts follow
 * dir_nlink: a directory with more than EXT4_LINK_MAX subdirectories has i_links_count 1.
 * The caller (the API) runs one operation at a time.
 */
import type { Ext4Super } from './super.js';
import { resolvePath, splitPath, readSymlink, NAME_MAX } from './namei.js';
import { writeInode, addInodeBlocks, type InodeInfo } from './inode/inode.js';
import { iget, ipeek } from './inode/icache.js';
import { iterateDir } from './dir/dir.js';
import { decodeName, encodeUtf8 } from '../util/bytes.js';
import { newInode, evictInode, freeBlocksFrom, touch } from './inode/inode-life.js';
import { orphanAdd, orphanDel } from './orphan.js';
import { extentDirBlocks } from './dir/dir-blocks.js';
import { dcacheGeneration, dcacheNewDir } from './dir/dcache.js';
import {
  addEntry, removeEntry, replaceEntryIno, initDirBlock0, setDotDot, isEmptyDir, findEntry,
} from './dir/dir-write.js';
import { ExtentTree } from './extents/extent-tree.js';
import { getBalloc } from './alloc/balloc.js';
import { setXattr, removeXattr, type SetXattrFlags } from './xattr/xattr-write.js';
import {
  S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, setInodeUid, setInodeGid,
  setInodeSizeBytes, encodeRdev, EXT4_IMMUTABLE_FL, EXT4_APPEND_FL, type Timespec, type FileType,
} from '../format/inode.js';
import {
  EXT4_FT_REG_FILE, EXT4_FT_DIR, EXT4_FT_CHRDEV, EXT4_FT_BLKDEV, EXT4_FT_FIFO, EXT4_FT_SOCK,
  EXT4_FT_SYMLINK, EXT4_FT_UNKNOWN,
} from '../format/dirent.js';
import { EXT4_ROOT_INO } from '../format/superblock.js';
import { RO_COMPAT } from '../format/features.js';
import { PosixError } from '../util/errors.js';
import { assert } from '../util/assert.js';

/** Most links a non-directory may have, and the point where a directory's count becomes 1. */
export const EXT4_LINK_MAX = 65000;
/** Longest symlink target (PATH_MAX - 1, and it must fit one block). */
const SYMLINK_MAX = 4095;
/** Targets shorter than this live in i_block (a fast symlink). */
const FAST_SYMLINK_MAX = 59;

/** Owner of new inodes. */
export interface Owner {
  uid: number;
  gid: number;
}

/** A node to create: its type and, for devices, the number. */
export type NodeSpec =
  | { type: 'file' | 'fifo' | 'sock' }
  | { type: 'chr' | 'blk'; major: number; minor: number };

const TYPE_BITS: Record<FileType, number> = {
  file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, chr: S_IFCHR, blk: S_IFBLK, fifo: S_IFIFO, sock: S_IFSOCK,
};
const FT_OF: Record<FileType, number> = {
  file: EXT4_FT_REG_FILE, dir: EXT4_FT_DIR, symlink: EXT4_FT_SYMLINK, chr: EXT4_FT_CHRDEV,
  blk: EXT4_FT_BLKDEV, fifo: EXT4_FT_FIFO, sock: EXT4_FT_SOCK,
};

/** The last component of a path and its (resolved) parent directory. */
interface Parent {
  dir: InodeInfo;
  name: Uint8Array;
}

export class Namespace {
  private readonly openCounts = new Map<number, number>();
  /**
   * Called before an inode's blocks are released (last link gone and not open): the data path
   * drops its cached pages and reservations for it (an upward call through a hook, STYLE §1).
   */
  onEvict: ((info: InodeInfo) => Promise<void>) | undefined;
  constructor(readonly s: Ext4Super) {}

  // ---- lookups ---------------------------------------------------------------------------

  /** Resolves a path to its in-core inode. */
  async inode(path: string, followLast: boolean, syscall: string): Promise<InodeInfo> {
    const info = await resolvePath(this.s, path, followLast, syscall);
    return iget(this.s, info.ino);
  }

  /**
   * The directory the last parent() resolved: creating many names in one directory (a build, an
   * untar) walks its path once. Valid while the dcache generation holds (no name went away).
   */
  private lastParent: { path: string; ino: number; generation: number } | undefined;

  /** Resolves everything but the last component (which must be a plain name). */
  private async parent(path: string, syscall: string): Promise<Parent> {
    if (!path.startsWith('/')) throw new PosixError('EINVAL', syscall, path, 'path must be absolute inside the image');
    // The memo's fast path: no trailing slash, the same directory text as last time.
    const last = this.lastParent;
    const cut = path.lastIndexOf('/');
    if (last !== undefined && cut < path.length - 1 && last.generation === dcacheGeneration(this.s)
      && last.path === (cut === 0 ? '/' : path.slice(0, cut))) {
      const name = encodeUtf8(path.slice(cut + 1));
      if (name.length > NAME_MAX) throw new PosixError('ENAMETOOLONG', syscall, path);
      return { dir: await iget(this.s, last.ino), name };
    }
    const comps = splitPath(path);
    const name = comps.pop();
    if (name === undefined) throw new PosixError('EEXIST', syscall, path, 'the root directory');
    if (name.length > NAME_MAX) throw new PosixError('ENAMETOOLONG', syscall, path);
    const dirPath = parentText(path);
    const gen = dcacheGeneration(this.s);
    const dir = await this.inode(dirPath, true, syscall);
    if (dir.type !== 'dir') throw new PosixError('ENOTDIR', syscall, path);
    this.lastParent = { path: dirPath, ino: dir.ino, generation: gen };
    return { dir, name };
  }

  private async find(p: Parent): Promise<{ ino: number; fileType: number } | undefined> {
    return findEntry(this.s, p.dir, this.blocks(p.dir), p.name);
  }

  private blocks(dir: InodeInfo) {
    return extentDirBlocks(this.s, dir, getBalloc(this.s));
  }

  private ft(type: FileType): number {
    return this.s.features.filetype ? FT_OF[type] : EXT4_FT_UNKNOWN;
  }

  private checkWritable(info: InodeInfo, syscall: string, path: string): void {
    if ((info.flags & (EXT4_IMMUTABLE_FL | EXT4_APPEND_FL)) !== 0) throw new PosixError('EPERM', syscall, path, 'immutable or append-only');
    if (info.hasInlineData) {
      throw new PosixError('EOPNOTSUPP', syscall, path, 'changing inline-data inodes is not supported yet');
    }
  }

  // ---- link counts (ext4_inc_count / ext4_dec_count with dir_nlink) ----------------------

  private incDirLinks(dir: InodeInfo): void {
    const v = dir.view;
    if (v.i_links_count === 1) return; // already "many" (dir_nlink)
    if (v.i_links_count + 1 >= EXT4_LINK_MAX) {
      if (!this.s.features.dirNlink) {
        if (v.i_links_count + 1 > EXT4_LINK_MAX) throw new PosixError('EMLINK', 'mkdir');
        v.i_links_count++;
        return;
      }
      v.i_links_count = 1;
      return;
    }
    v.i_links_count++;
  }

  private decDirLinks(dir: InodeInfo): void {
    const v = dir.view;
    if (v.i_links_count > 2) v.i_links_count--;
  }

  private canIncDirLinks(dir: InodeInfo, syscall: string, path: string): void {
    if (!this.s.features.dirNlink && dir.view.i_links_count >= EXT4_LINK_MAX) throw new PosixError('EMLINK', syscall, path);
  }

  // ---- creation --------------------------------------------------------------------------

  /** mkdir: a new directory with '.' and '..' in one block. */
  async mkdir(path: string, perm: number, owner: Owner): Promise<InodeInfo> {
    const p = await this.parent(path, 'mkdir');
    if (await this.find(p)) throw new PosixError('EEXIST', 'mkdir', path);
    this.checkWritable(p.dir, 'mkdir', path);
    this.canIncDirLinks(p.dir, 'mkdir', path);
    const s = this.s;
    const child = await newInode(s, { parentIno: p.dir.ino, mode: S_IFDIR | (perm & 0o7777), ...owner, extents: true });
    await this.orAbandon(child, async () => {
      child.view.i_links_count = 2;
      const buf = await this.blocks(child).append();
      await initDirBlock0(s, child.ino, child.csumSeed, p.dir.ino, buf);
      dcacheNewDir(s, child.ino);
      await writeInode(s, child);
      await addEntry(s, p.dir, this.blocks(p.dir), p.name, child.ino, this.ft('dir'));
    });
    this.incDirLinks(p.dir);
    touch(s, p.dir, ['mtime', 'ctime']);
    await writeInode(s, p.dir);
    if (p.dir.view.i_links_count === 1 && s.features.dirNlink) this.setRoCompat(RO_COMPAT.dir_nlink);
    return child;
  }

  /**
   * Runs the steps that follow a new inode's allocation; if one fails (ENOSPC growing the
   * parent, a full index), the half-made inode is released so nothing leaks and e2fsck stays
   * silent, and the error goes on to the caller.
   */
  private async orAbandon(info: InodeInfo, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      info.view.i_links_count = 0;
      await evictInode(this.s, info);
      throw e;
    }
  }

  private setRoCompat(bit: number): void {
    if ((this.s.sb.s_feature_ro_compat & bit) === 0) {
      this.s.sb.s_feature_ro_compat = (this.s.sb.s_feature_ro_compat | bit) >>> 0;
      this.s.markSuperDirty();
    }
  }

  /** create / mknod: a regular file (empty), FIFO, socket or device node. */
  async mknod(path: string, node: NodeSpec, perm: number, owner: Owner): Promise<InodeInfo> {
    const p = await this.parent(path, 'open');
    if (await this.find(p)) throw new PosixError('EEXIST', 'open', path);
    return this.createNode(p, path, node, perm, owner);
  }

  /**
   * open with O_CREAT: the inode `path` names (a symlink in the last place followed) or, when the
   * name is free, a new empty regular file (`created`); one walk to the parent either way, and
   * no error object made for the miss. `excl` (O_EXCL): an existing name is EEXIST.
   */
  async openCreate(path: string, perm: number, owner: Owner, excl: boolean): Promise<{ info: InodeInfo; created: boolean }> {
    const p = await this.parent(path, 'open');
    if (await this.find(p)) {
      if (excl) throw new PosixError('EEXIST', 'open', path);
      return { info: await this.inode(path, true, 'open'), created: false };
    }
    return { info: await this.createNode(p, path, { type: 'file' }, perm, owner), created: true };
  }

  private async createNode(p: Parent, path: string, node: NodeSpec, perm: number, owner: Owner): Promise<InodeInfo> {
    this.checkWritable(p.dir, 'open', path);
    const s = this.s;
    const info = await newInode(s, {
      parentIno: p.dir.ino, mode: TYPE_BITS[node.type] | (perm & 0o7777), ...owner, extents: node.type === 'file',
    });
    await this.orAbandon(info, async () => {
      if (node.type === 'chr' || node.type === 'blk') {
        encodeRdev(info.view.i_block, node.major, node.minor);
        await writeInode(s, info);
      }
      await addEntry(s, p.dir, this.blocks(p.dir), p.name, info.ino, this.ft(node.type));
    });
    touch(s, p.dir, ['mtime', 'ctime']);
    await writeInode(s, p.dir);
    return info;
  }

  /** symlink: fast (in i_block) below 60 bytes, else one block. */
  async symlink(target: Uint8Array, path: string, owner: Owner): Promise<InodeInfo> {
    if (target.length === 0) throw new PosixError('ENOENT', 'symlink', path, 'empty target');
    if (target.length > SYMLINK_MAX || target.length >= this.s.blockSize) throw new PosixError('ENAMETOOLONG', 'symlink', path);
    const p = await this.parent(path, 'symlink');
    if (await this.find(p)) throw new PosixError('EEXIST', 'symlink', path);
    this.checkWritable(p.dir, 'symlink', path);
    const s = this.s;
    const fast = target.length <= FAST_SYMLINK_MAX;
    const info = await newInode(s, { parentIno: p.dir.ino, mode: S_IFLNK | 0o777, ...owner, extents: !fast });
    await this.orAbandon(info, async () => {
      if (fast) {
        info.view.i_block.set(target);
      } else {
        const balloc = getBalloc(s);
        const run = await balloc.allocBlocks({ goal: balloc.goalForInode(info.ino), maxLen: 1, ino: info.ino, metadata: true });
        try {
          if (info.hasExtents) await new ExtentTree(s, info, balloc).insert({ lblk: 0, len: 1, pblk: run.pblk, unwritten: false });
          else writeDirectBlock(info, 0, run.pblk);
        } catch (e) {
          await balloc.freeBlocks(run.pblk, 1);
          throw e;
        }
        addInodeBlocks(s, info, 1);
        const buf = s.cache.getblk(run.pblk);
        buf.data.fill(0);
        buf.data.set(target);
        s.cache.markDirty(buf);
      }
      setInodeSizeBytes(info.view, target.length);
      await writeInode(s, info);
      await addEntry(s, p.dir, this.blocks(p.dir), p.name, info.ino, this.ft('symlink'));
    });
    touch(s, p.dir, ['mtime', 'ctime']);
    await writeInode(s, p.dir);
    return info;
  }

  /** link: a new name for an existing non-directory. */
  async link(existing: string, newPath: string): Promise<void> {
    const src = await this.inode(existing, false, 'link');
    if (src.type === 'dir') throw new PosixError('EPERM', 'link', existing, 'hard links to directories are not allowed');
    const p = await this.parent(newPath, 'link');
    if (await this.find(p)) throw new PosixError('EEXIST', 'link', newPath);
    this.checkWritable(p.dir, 'link', newPath);
    if (src.linksCount >= EXT4_LINK_MAX) throw new PosixError('EMLINK', 'link', existing);
    const s = this.s;
    await addEntry(s, p.dir, this.blocks(p.dir), p.name, src.ino, this.ft(src.type));
    src.view.i_links_count++;
    touch(s, src, ['ctime']);
    await writeInode(s, src);
    touch(s, p.dir, ['mtime', 'ctime']);
    await writeInode(s, p.dir);
  }

  // ---- removal ---------------------------------------------------------------------------

  /** unlink: removes a non-directory name; the inode goes with its last link (or last close). */
  async unlink(path: string): Promise<void> {
    const p = await this.parent(path, 'unlink');
    const e = await this.find(p);
    if (e === undefined) throw new PosixError('ENOENT', 'unlink', path);
    const victim = await iget(this.s, e.ino);
    if (victim.type === 'dir') throw new PosixError('EISDIR', 'unlink', path);
    this.checkWritable(p.dir, 'unlink', path);
    const s = this.s;
    await removeEntry(s, p.dir, this.blocks(p.dir), p.name);
    touch(s, p.dir, ['mtime', 'ctime']);
    await writeInode(s, p.dir);
    await this.dropLink(victim);
  }

  /** One link fewer; at zero the inode is evicted now, or put on the orphan list while open. */
  private async dropLink(info: InodeInfo): Promise<void> {
    const s = this.s;
    assert(info.linksCount > 0, () => `inode ${info.ino}: dropping a link at count 0`);
    info.view.i_links_count--;
    touch(s, info, ['ctime']);
    if (info.linksCount > 0) {
      await writeInode(s, info);
      return;
    }
    if ((this.openCounts.get(info.ino) ?? 0) > 0) {
      await orphanAdd(s, info);
      return;
    }
    if (this.onEvict !== undefined) await this.onEvict(info);
    await evictInode(s, info);
  }

  /** rmdir: removes an empty directory. */
  async rmdir(path: string): Promise<void> {
    const p = await this.parent(path, 'rmdir');
    const last = p.name;
    if (isDot(last) || isDotDot(last)) throw new PosixError(isDot(last) ? 'EINVAL' : 'ENOTEMPTY', 'rmdir', path);
    const e = await this.find(p);
    if (e === undefined) throw new PosixError('ENOENT', 'rmdir', path);
    const victim = await iget(this.s, e.ino);
    if (victim.type !== 'dir') throw new PosixError('ENOTDIR', 'rmdir', path);
    if (victim.ino === EXT4_ROOT_INO) throw new PosixError('EBUSY', 'rmdir', path);
    if (!(await isEmptyDir(this.s, victim, this.blocks(victim)))) throw new PosixError('ENOTEMPTY', 'rmdir', path);
    this.checkWritable(p.dir, 'rmdir', path);
    const s = this.s;
    await removeEntry(s, p.dir, this.blocks(p.dir), p.name);
    this.decDirLinks(p.dir);
    touch(s, p.dir, ['mtime', 'ctime']);
    await writeInode(s, p.dir);
    victim.view.i_links_count = 1; // '.' goes with the name (clear_nlink after the '..' drop)
    await this.dropLink(victim);
  }

  // ---- rename ----------------------------------------------------------------------------

  /**
   * rename(2): moves `from` to `to`, replacing a compatible target (a non-directory by a
   * non-directory, an empty directory by a directory), updating '..' and the parents' link
   * counts when a directory changes parent. Moving a directory into itself is EINVAL.
   */
  async rename(from: string, to: string): Promise<void> {
    const s = this.s;
    const sp = await this.parent(from, 'rename');
    if (isDot(sp.name) || isDotDot(sp.name)) throw new PosixError('EINVAL', 'rename', from);
    const se = await this.find(sp);
    if (se === undefined) throw new PosixError('ENOENT', 'rename', from);
    const dp = await this.parent(to, 'rename');
    if (isDot(dp.name) || isDotDot(dp.name)) throw new PosixError('EINVAL', 'rename', to);
    const src = await iget(s, se.ino);
    const de = await this.find(dp);
    const target = de !== undefined ? await iget(s, de.ino) : undefined;
    if (target !== undefined && target.ino === src.ino) return; // same file: POSIX says do nothing
    const isDir = src.type === 'dir';
    const moved = sp.dir.ino !== dp.dir.ino;
    // do_renameat2's order: the source may not be an ancestor of the target (EINVAL), the
    // target may not be an ancestor of the source (ENOTEMPTY), then vfs_rename's type checks.
    if (isDir && moved && (await this.isAncestor(src.ino, dp.dir))) {
      throw new PosixError('EINVAL', 'rename', to, 'cannot move a directory into itself');
    }
    if (target !== undefined && target.type === 'dir' && (await this.isAncestor(target.ino, sp.dir))) {
      throw new PosixError('ENOTEMPTY', 'rename', to);
    }
    if (target !== undefined) {
      if (isDir && target.type !== 'dir') throw new PosixError('ENOTDIR', 'rename', to);
      if (!isDir && target.type === 'dir') throw new PosixError('EISDIR', 'rename', to);
      if (target.type === 'dir' && !(await isEmptyDir(s, target, this.blocks(target)))) throw new PosixError('ENOTEMPTY', 'rename', to);
    }
    if (isDir && moved && target === undefined) this.canIncDirLinks(dp.dir, 'rename', to);
    this.checkWritable(sp.dir, 'rename', from);
    this.checkWritable(dp.dir, 'rename', to);
    const ft = this.ft(src.type);
    if (target !== undefined) {
      await replaceEntryIno(s, dp.dir, this.blocks(dp.dir), dp.name, src.ino, ft);
    } else {
      await addEntry(s, dp.dir, this.blocks(dp.dir), dp.name, src.ino, ft);
    }
    await removeEntry(s, sp.dir, this.blocks(sp.dir), sp.name);
    touch(s, src, ['ctime']);
    if (isDir) {
      // ext4_rename: the moved directory's '..' names its new parent; the old parent loses
      // that link, and the new parent gains it unless it replaces an (empty) directory there.
      if (moved) await setDotDot(s, src, this.blocks(src), dp.dir.ino);
      this.decDirLinks(sp.dir);
      if (target === undefined) this.incDirLinks(dp.dir);
    }
    await writeInode(s, src);
    touch(s, sp.dir, ['mtime', 'ctime']);
    await writeInode(s, sp.dir);
    if (moved) {
      touch(s, dp.dir, ['mtime', 'ctime']);
      await writeInode(s, dp.dir);
    }
    if (target !== undefined) {
      // An empty directory has no other parent: clear_nlink, not a decrement.
      if (target.type === 'dir') target.view.i_links_count = 1;
      await this.dropLink(target);
    }
  }

  /** True when directory `ino` is `dir` or one of its ancestors (walks '..' up to the root). */
  private async isAncestor(ino: number, dir: InodeInfo): Promise<boolean> {
    let cur = dir;
    for (let hops = 0; hops < 1 << 16; hops++) {
      if (cur.ino === ino) return true;
      if (cur.ino === EXT4_ROOT_INO) return false;
      const up = await findEntry(this.s, cur, this.blocks(cur), DOTDOT);
      if (up === undefined) return false;
      cur = await iget(this.s, up.ino);
    }
    return false;
  }

  // ---- attributes ------------------------------------------------------------------------

  async chmod(path: string, perm: number): Promise<void> {
    const info = await this.inode(path, true, 'chmod');
    info.view.i_mode = (info.view.i_mode & S_IFMT) | (perm & 0o7777);
    touch(this.s, info, ['ctime']);
    await writeInode(this.s, info);
  }

  /** chown; -1 (or undefined) leaves that id unchanged, like chown(2). */
  async chown(path: string, uid: number | undefined, gid: number | undefined, followLast = true): Promise<void> {
    await this.chownInode(await this.inode(path, followLast, 'chown'), uid, gid);
  }

  /** fchown: chown of an in-core inode (an open file). */
  /** A promise only when the inode's table block must be read first (see writeInode). */
  chownInode(info: InodeInfo, uid: number | undefined, gid: number | undefined): Promise<void> | undefined {
    if (uid !== undefined && uid !== -1) setInodeUid(info.view, uid >>> 0);
    if (gid !== undefined && gid !== -1) setInodeGid(info.view, gid >>> 0);
    touch(this.s, info, ['ctime']);
    return writeInode(this.s, info);
  }

  /** utimes with nanoseconds; ctime becomes now. */
  async utimes(path: string, atime: Timespec | undefined, mtime: Timespec | undefined, followLast = true): Promise<void> {
    await this.utimesInode(await this.inode(path, followLast, 'utimes'), atime, mtime);
  }

  /** futimens: utimes of an in-core inode (an open file); a promise only as chownInode. */
  utimesInode(info: InodeInfo, atime: Timespec | undefined, mtime: Timespec | undefined): Promise<void> | undefined {
    if (atime !== undefined) touch(this.s, info, ['atime'], atime);
    if (mtime !== undefined) touch(this.s, info, ['mtime'], mtime);
    touch(this.s, info, ['ctime']);
    return writeInode(this.s, info);
  }

  /**
   * truncate: shrinking frees every block past the new end and zeroes the rest of the last
   * block on disk (so growing later reads zeros, as the kernel's ext4_block_truncate_page
   * ensures); growing only moves i_size (a hole).
   */
  async truncate(path: string, size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new PosixError('EINVAL', 'truncate', path);
    const info = await this.inode(path, true, 'truncate');
    if (info.type === 'dir') throw new PosixError('EISDIR', 'truncate', path);
    if (info.type !== 'file') throw new PosixError('EINVAL', 'truncate', path);
    this.checkWritable(info, 'truncate', path);
    await this.truncateInode(info, size);
  }

  async truncateInode(info: InodeInfo, size: number): Promise<void> {
    const s = this.s;
    const maxBytes = s.features.extents && info.hasExtents ? 0xffff_ffff * s.blockSize : 0x7fff_ffff_ffff;
    if (size > maxBytes) throw new PosixError('EFBIG', 'truncate', undefined, `size ${size} > ${maxBytes}`);
    const bs = s.blockSize;
    if (size < info.size) {
      const keep = Math.ceil(size / bs);
      await freeBlocksFrom(s, info, keep);
      if (size % bs !== 0 && info.hasExtents) {
        const e = await new ExtentTree(s, info, getBalloc(s)).lookup(keep - 1);
        if (e !== undefined && !e.unwritten) {
          const pblk = e.pblk + (keep - 1 - e.lblk);
          // Whole-block read-modify-write: devices take sector-aligned requests only.
          const block = new Uint8Array(bs);
          await s.readBlocks(pblk, 1, block);
          block.fill(0, size % bs);
          await s.dev.write(pblk * bs, block);
        }
      }
    }
    setInodeSizeBytes(info.view, size);
    touch(s, info, ['mtime', 'ctime']);
    await writeInode(s, info);
  }

  async setxattr(path: string, name: string, value: Uint8Array, flags: SetXattrFlags = {}, followLast = false): Promise<void> {
    const info = await this.inode(path, followLast, 'setxattr');
    this.checkWritable(info, 'setxattr', path);
    // The VFS's rules (fs/xattr.c): values up to 64 KiB; user.* only on files and directories.
    if (value.length > 65536) throw new PosixError('E2BIG', 'setxattr', path);
    if (name.startsWith('user.') && info.type !== 'file' && info.type !== 'dir') throw new PosixError('EPERM', 'setxattr', path);
    await setXattr(this.s, info, getBalloc(this.s), name, value, flags);
    touch(this.s, info, ['ctime']);
    await writeInode(this.s, info);
  }

  async removexattr(path: string, name: string, followLast = false): Promise<void> {
    const info = await this.inode(path, followLast, 'removexattr');
    this.checkWritable(info, 'removexattr', path);
    await removeXattr(this.s, info, getBalloc(this.s), name);
    touch(this.s, info, ['ctime']);
    await writeInode(this.s, info);
  }

  // ---- open files (orphans) --------------------------------------------------------------

  /** An open handle pins the inode: unlinking it defers the release to the last close. */
  pin(ino: number): void {
    this.openCounts.set(ino, (this.openCounts.get(ino) ?? 0) + 1);
  }

  /** Last close of an unlinked inode releases it and takes it off the orphan list. */
  unpin(ino: number): Promise<void> | undefined {
    const n = (this.openCounts.get(ino) ?? 0) - 1;
    assert(n >= 0, () => `inode ${ino}: unpin without pin`);
    if (n > 0) {
      this.openCounts.set(ino, n);
      return undefined;
    }
    this.openCounts.delete(ino);
    // The usual last close (a linked inode, in core): nothing to wait for.
    const cached = ipeek(this.s, ino);
    if (cached !== undefined && cached.linksCount > 0) return undefined;
    return this.releaseLast(ino);
  }

  /** unpin's last close of an inode that may be unlinked: evicted now if it is. */
  private async releaseLast(ino: number): Promise<void> {
    const info = await iget(this.s, ino);
    if (info.linksCount === 0) {
      if (this.onEvict !== undefined) await this.onEvict(info);
      await orphanDel(this.s, info);
      await evictInode(this.s, info);
    }
  }

  /** Open handles now (counters back to zero when idle). */
  get pinned(): number {
    let n = 0;
    for (const v of this.openCounts.values()) n += v;
    return n;
  }

  /** Names in a directory without '.' and '..' (for rm -r). */
  async listNames(path: string): Promise<string[]> {
    const dir = await this.inode(path, true, 'scandir');
    if (dir.type !== 'dir') throw new PosixError('ENOTDIR', 'scandir', path);
    const out: string[] = [];
    for await (const e of iterateDir(this.s, dir)) {
      if (!isDot(e.name) && !isDotDot(e.name)) out.push(decodeName(e.name));
    }
    return out;
  }

  /** Reads a symlink through the write-side inode (tests). */
  async readlink(path: string): Promise<Uint8Array> {
    return readSymlink(this.s, await this.inode(path, false, 'readlink'));
  }
}

const DOTDOT = new Uint8Array([0x2e, 0x2e]);

function isDot(n: Uint8Array): boolean {
  return n.length === 1 && n[0] === 0x2e;
}
function isDotDot(n: Uint8Array): boolean {
  return n.length === 2 && n[0] === 0x2e && n[1] === 0x2e;
}

/** The text of a path without its last component ("/a/b/" → "/a", "/x" → "/"). */
function parentText(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  const i = trimmed.lastIndexOf('/');
  return i <= 0 ? '/' : trimmed.slice(0, i);
}

/** Stores block `pblk` as direct block `i` of a block-mapped inode (i < 12). */
function writeDirectBlock(info: InodeInfo, i: number, pblk: number): void {
  assert(i >= 0 && i < 12, () => `direct block ${i}`);
  new DataView(info.view.i_block.buffer, info.view.i_block.byteOffset, 60).setUint32(i * 4, pblk, true);
}
