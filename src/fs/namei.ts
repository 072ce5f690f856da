/**
 * Path resolution (fs/namei.c's walk, with ext4_lookup underneath) and symlink reading
 * (ext4_get_link / ext4_inode_is_fast_symlink). Paths are absolute inside the image; '.' and
 * '..' components are looked up like any name (the entries exist on disk). Symlink hops are
 * capped at 40 like Linux's MAXSYMLINKS, and a symlink body at one block (PATH_MAX).
 */
import type { Ext4Super } from './super.js';
import { readInode as readInodeFromTable, type InodeInfo } from './inode/inode.js';
import { iget } from './inode/icache.js';
import { lookup } from './dir/dir.js';
import { FileMap, readMappedRange } from './inode/file-map.js';
import { inlineBytes } from './inode/inline.js';
import { EXT4_ROOT_INO } from '../format/superblock.js';
import { Corrupt, PosixError } from '../util/errors.js';
import { encodeUtf8, decodeName } from '../util/bytes.js';

export const MAX_SYMLINK_HOPS = 40;
export const NAME_MAX = 255;

/** Splits an absolute path into byte components, ignoring empty ones ("/a//b/" → a, b). */
export function splitPath(path: string): Uint8Array[] {
  return path.split('/').filter((c) => c.length > 0).map((c) => encodeUtf8(c));
}

/**
 * True for a fast symlink: target stored in i_block (ext4_inode_is_fast_symlink). With an
 * xattr block, i_blocks counts that block, so it is subtracted first.
 */
export function isFastSymlink(s: Ext4Super, info: InodeInfo): boolean {
  if (info.hasInlineData) return false;
  const eaBlocks = info.fileAcl !== 0 ? s.blockSize / 512 : 0;
  return info.blocks512(s.features.hugeFile, s.blockSize) - eaBlocks === 0;
}

/** The target bytes of a symlink inode. */
export async function readSymlink(s: Ext4Super, info: InodeInfo): Promise<Uint8Array> {
  if (info.type !== 'symlink') throw new PosixError('EINVAL', 'readlink');
  const size = info.size;
  if (size === 0 || size >= s.blockSize || size > 4095) {
    throw new Corrupt('symlink', `length ${size} out of range 1..${Math.min(4095, s.blockSize - 1)}`, { ino: info.ino });
  }
  if (info.hasInlineData) return inlineBytes(info).slice();
  if (isFastSymlink(s, info)) {
    if (size > 60) throw new Corrupt('fast symlink', `length ${size} > 60`, { ino: info.ino });
    return info.iBlock.slice(0, size);
  }
  const out = new Uint8Array(size);
  await readMappedRange(s, new FileMap(s, info), 0, size, out);
  return out;
}

/**
 * Resolves `path` to an inode. With `followLast`, a symlink in the last component is followed
 * (stat), otherwise returned itself (lstat). Throws ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG.
 */
export async function resolvePath(s: Ext4Super, path: string, followLast: boolean, syscall: string): Promise<InodeInfo> {
  let hops = 0;
  // A read-write mount keeps in-core inodes (iget): no copy and checksum check per component.
  const readInode = s.readOnly ? readInodeFromTable : iget;
  const walk = async (start: InodeInfo, comps: Uint8Array[]): Promise<InodeInfo> => {
    let cur = start;
    for (let i = 0; i < comps.length; i++) {
      // OK to index: i < comps.length.
      const name = comps[i]!;
      if (name.length > NAME_MAX) throw new PosixError('ENAMETOOLONG', syscall, path);
      if (cur.type !== 'dir') throw new PosixError('ENOTDIR', syscall, path);
      const e = await lookup(s, cur, name);
      if (e === undefined) throw new PosixError('ENOENT', syscall, path);
      const next = await readInode(s, e.ino);
      const last = i === comps.length - 1;
      if (next.type === 'symlink' && (!last || followLast)) {
        if (++hops > MAX_SYMLINK_HOPS) throw new PosixError('ELOOP', syscall, path);
        const target = decodeName(await readSymlink(s, next));
        const base = target.startsWith('/') ? await readInode(s, EXT4_ROOT_INO) : cur;
        cur = await walk(base, splitPath(target));
      } else {
        cur = next;
      }
    }
    return cur;
  };
  if (!path.startsWith('/')) throw new PosixError('EINVAL', syscall, path, 'path must be absolute inside the image');
  return walk(await readInode(s, EXT4_ROOT_INO), splitPath(path));
}
