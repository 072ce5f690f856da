/**
 * The in-core inode table of a read-write mount (the kernel's inode cache, iget/iput): every
 * write path loads an inode through iget() so that two operations on the same inode — a rename
 * inside one directory, a link to a file being truncated — change one object, never two stale
 * copies. writeInode() writes through to the inode-table buffer, so the read path (readInode)
 * sees every change at once and an evicted entry loses nothing.
 */
import type { Ext4Super } from '../super.js';
import { readInode, type InodeInfo } from './inode.js';
import { assert } from '../../util/assert.js';

/**
 * Entries kept per mount between operations. Eviction happens only in itrim(), which the API
 * calls when no operation runs, so an operation never holds an object that a later iget of the
 * same inode would not return.
 */
const ICACHE_MAX = 4096;

const caches = new WeakMap<Ext4Super, Map<number, InodeInfo>>();
/** Inodes that must stay in core (the page cache holds state about them): ino → hold count. */
const holds = new WeakMap<Ext4Super, Map<number, number>>();

function holdsOf(s: Ext4Super): Map<number, number> {
  let h = holds.get(s);
  if (h === undefined) {
    h = new Map();
    holds.set(s, h);
  }
  return h;
}

/**
 * Keeps `info` in core until irelease (ihold: the data path keeps per-inode state, an in-memory
 * i_size and page buffers, that must refer to the one object every later iget returns).
 */
export function ihold(s: Ext4Super, info: InodeInfo): void {
  const h = holdsOf(s);
  h.set(info.ino, (h.get(info.ino) ?? 0) + 1);
  const c = cacheOf(s);
  assert(c.get(info.ino) === undefined || c.get(info.ino) === info, () => `inode ${info.ino}: ihold of a stale copy`);
  c.set(info.ino, info);
}

/** Drops one hold taken by ihold. */
export function irelease(s: Ext4Super, ino: number): void {
  const h = holdsOf(s);
  const n = (h.get(ino) ?? 0) - 1;
  assert(n >= 0, () => `inode ${ino}: irelease without ihold`);
  if (n === 0) h.delete(ino);
  else h.set(ino, n);
}

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
  const hit = ipeek(s, ino);
  if (hit !== undefined) return hit;
  const c = cacheOf(s);
  const info = await readInode(s, ino);
  // Another operation may have loaded it while we awaited: keep the first object.
  const raced = c.get(ino);
  if (raced !== undefined) return raced;
  iadd(s, info);
  return info;
}

/** The cached in-core inode `ino` (a use, as iget's hit), or undefined: no read, no promise. */
export function ipeek(s: Ext4Super, ino: number): InodeInfo | undefined {
  const hit = cacheOf(s).get(ino);
  if (hit !== undefined) hit.referenced = true;
  return hit;
}

/** Registers an inode created in memory (a new inode) so later igets return this object. */
export function iadd(s: Ext4Super, info: InodeInfo): void {
  cacheOf(s).set(info.ino, info);
}

/**
 * Evicts entries beyond the limit, oldest first, giving a second chance to those used since the
 * last scan (the kernel's I_REFERENCED, instead of moving an entry on every hit): call only
 * between operations.
 */
export function itrim(s: Ext4Super): void {
  const c = cacheOf(s);
  const h = holds.get(s);
  // The limit bounds the entries that can go: held ones (the page cache's, bounded by its own
  // limits) do not count, or every operation would rescan them in vain.
  const held = h?.size ?? 0;
  if (c.size - held <= ICACHE_MAX) return;
  const spared: InodeInfo[] = [];
  // Down to three quarters, so that the scan (past held entries) is not paid per operation.
  const target = ICACHE_MAX - (ICACHE_MAX >> 2);
  for (const [k, info] of c) {
    if (c.size - held <= target) break;
    if (h?.has(k) === true) continue;
    c.delete(k);
    if (info.referenced) {
      info.referenced = false;
      spared.push(info);
    }
  }
  // Spared entries go to the young end; if they alone exceed the limit, the oldest still go.
  for (const info of spared) if (c.size - held < target) c.set(info.ino, info);
}

/** Drops an inode that was freed (its number may be reused by a new inode). */
export function iforget(s: Ext4Super, ino: number): void {
  assert(holds.get(s)?.has(ino) !== true, () => `inode ${ino}: freed while the page cache holds it`);
  cacheOf(s).delete(ino);
}
