/**
 * The in-core inode table of a read-write mount (the kernel's inode cache, iget/iput): every
 * write path loads an inode through iget() so that two operations on the same inode — a rename
 * inside one directory, a link to a file being truncated — change one object, never two stale
 * copies. writeInode() writes through to the inode-table buffer, so the read path (readInode)
 * sees every change at once and an evicted entry loses nothing.
 */
import type { Ext4Super } from '../super.js';
import { readInode, type InodeInfo } from './inode.js';

/**
 * Entries kept per mount between operations. Eviction happens only in itrim(), which the API
 * calls when no operation runs, so an operation never holds an object that a later iget of the
 * same inode would not return.
 */
const ICACHE_MAX = 4096;

const caches = new WeakMap<Ext4Super, Map<number, InodeInfo>>();

function cacheOf(s: Ext4Super): Map<number, InodeInfo> {
  let c = caches.get(s);
  if (c === undefined) {
    c = new Map();
    caches.set(s, c);
  }
  return c;
}

/** The in-core inode `ino`, loaded (and validated) on first use. */
export async function iget(s: Ext4Super, ino: number): Promise<InodeInfo> {
  const c = cacheOf(s);
  const hit = c.get(ino);
  if (hit !== undefined) {
    c.delete(ino);
    c.set(ino, hit);
    return hit;
  }
  const info = await readInode(s, ino);
  // Another operation may have loaded it while we awaited: keep the first object.
  const raced = c.get(ino);
  if (raced !== undefined) return raced;
  iadd(s, info);
  return info;
}

/** Registers an inode created in memory (a new inode) so later igets return this object. */
export function iadd(s: Ext4Super, info: InodeInfo): void {
  cacheOf(s).set(info.ino, info);
}

/** Evicts the least recently used entries beyond the limit (call only between operations). */
export function itrim(s: Ext4Super): void {
  const c = cacheOf(s);
  for (const k of c.keys()) {
    if (c.size <= ICACHE_MAX) break;
    c.delete(k);
  }
}

/** Drops an inode that was freed (its number may be reused by a new inode). */
export function iforget(s: Ext4Super, ino: number): void {
  cacheOf(s).delete(ino);
}
