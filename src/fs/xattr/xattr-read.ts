/**
 * Reading extended attributes (fs/ext4/xattr.c: ext4_xattr_ibody_get, ext4_xattr_block_get):
 * in-inode entries after i_extra_isize, then the shared xattr block named by i_file_acl, whose
 * checksum is verified (ext4_xattr_block_csum_verify). Values stored in separate inodes
 * (ea_inode) are refused by the format layer.
 */
import type { Ext4Super } from '../super.js';
import type { InodeInfo } from '../inode/inode.js';
import { parseXattrIbody, parseXattrBlock, parseExt4Acl, encodePosixAclXattr, XATTR_LISTED_INDEXES, type XattrEntry } from '../../format/xattr.js';
import { Corrupt } from '../../util/errors.js';

/** All xattrs of an inode: in-inode ones first, then the block's. */
export async function readXattrs(s: Ext4Super, info: InodeInfo): Promise<XattrEntry[]> {
  const out: XattrEntry[] = [];
  const area = info.ibodyXattrArea;
  if (area.length >= 4) out.push(...parseXattrIbody(area, { ino: info.ino }));
  const blk = info.fileAcl;
  if (blk !== 0) {
    if (blk < s.firstDataBlock || blk >= s.blocksCount) {
      throw new Corrupt('inode', `xattr block ${blk} outside the filesystem`, { ino: info.ino });
    }
    const buf = await s.cache.bread(blk, 'xattr block');
    // A block checked once (or changed by us, its checksum stamped at commit) is not re-summed.
    const ctx = s.features.metadataCsum
      ? { blockNr: blk, csumSeed: s.csumSeed, ino: info.ino, skipCsum: buf.verified }
      : { blockNr: blk, ino: info.ino };
    out.push(...parseXattrBlock(buf.data, ctx));
    buf.verified = true;
  }
  return out;
}

/** The value of the in-inode `system.data` xattr (the tail of inline data), if any. */
export function inlineDataXattr(info: InodeInfo): Uint8Array | undefined {
  const area = info.ibodyXattrArea;
  if (area.length < 4) return undefined;
  for (const e of parseXattrIbody(area, { ino: info.ino })) if (e.name === 'system.data') return e.value;
  return undefined;
}

/**
 * What getxattr(2) returns for a stored value: POSIX ACLs are kept on disk in ext4's compact
 * format and handed out in the VFS's posix_acl_xattr format, as the kernel does.
 */
export function visibleXattrValue(name: string, value: Uint8Array, ino: number): Uint8Array {
  if (name === 'system.posix_acl_access' || name === 'system.posix_acl_default') {
    return encodePosixAclXattr(parseExt4Acl(value, { ino }));
  }
  return value;
}

/**
 * True for an entry listxattr(2) shows and getxattr(2) finds: one of a name index with a
 * handler (XATTR_LISTED_INDEXES). An entry of another index (system.data, or an unknown index
 * whose name is bare bytes a hostile image chose) is never handed out.
 */
export function isListedXattr(e: XattrEntry): boolean {
  return XATTR_LISTED_INDEXES.has(e.nameIndex);
}

/** The xattrs listxattr(2) shows (isListedXattr), with getxattr's values. */
export async function readVisibleXattrs(s: Ext4Super, info: InodeInfo): Promise<{ name: string; value: Uint8Array }[]> {
  return (await readXattrs(s, info))
    .filter(isListedXattr)
    .map((x) => ({ name: x.name, value: visibleXattrValue(x.name, x.value, info.ino) }));
}
