/**
 * Inline data (fs/ext4/inline.c): small files and directories stored in the inode itself,
 * i_block's 60 bytes followed by the value of the in-inode `system.data` xattr. i_size bounds
 * what is read; data past the stored bytes would be corruption.
 */
import type { InodeInfo } from './inode.js';
import { inlineDataXattr } from '../xattr/xattr-read.js';
import { Corrupt } from '../../util/errors.js';

/** The inline bytes of an inode (i_block then system.data), exactly i_size long. */
export function inlineBytes(info: InodeInfo): Uint8Array {
  const extra = inlineDataXattr(info) ?? new Uint8Array(0);
  const all = new Uint8Array(60 + extra.length);
  all.set(info.iBlock, 0);
  all.set(extra, 60);
  if (info.size > all.length) {
    throw new Corrupt('inline data', `i_size ${info.size} exceeds the ${all.length} bytes stored in the inode`, { ino: info.ino });
  }
  return all.subarray(0, info.size);
}
