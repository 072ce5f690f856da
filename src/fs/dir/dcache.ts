/**
 * The dentry cache (the kernel's dcache, positive entries only): (directory inode, name) → the
 * entry's inode and file type, so a path walk does not scan or re-verify directory blocks for
 * every component it has seen before. Kept exact by the directory writers: every entry added,
 * removed or retargeted in dir-write.ts updates it after the change succeeded, and a freed
 * directory drops its names (its inode number may come back as another directory).
 * '.' and '..' are never cached (rename moves '..').
 */
import type { Ext4Super } from '../super.js';
import { assert } from '../../util/assert.js';

/**
 * Names cached per mount. Past it, whole directories are forgotten, least recently used first,
 * down to three quarters (the kernel's dcache shrinker works from an LRU too): a tree builder
 * leaves each directory behind for good, so the ones it still fills stay complete, and memory
 * stays flat however large the tree (measured: the live heap grew by 25 MiB over a
 * 200,000-file build when the cache was dropped whole at 2^18 names).
 */
export const DCACHE_MAX = 1 << 16;

interface Dentry {
  ino: number;
  fileType: number;
}

interface Dcache {
  /** Per directory its names; iteration order is recency of use (least recent first). */
  dirs: Map<number, Map<string, Dentry>>;
  /** The directory used last (already at the end of `dirs`: no reordering needed). */
  lastDir: number;
  /**
   * Directories whose every name is cached (made by this mount, so every entry went through
   * dcacheSet): a miss there is a negative answer, with no scan of the directory's blocks.
   */
  complete: Set<number>;
  size: number;
  /**
   * Bumped whenever a name goes away or names another inode (delete, retarget, a freed
   * directory): a path that resolved before resolves the same way while it holds (adding names
   * cannot change a path that resolved, and forgetting cached names changes no answer), so
   * callers may memoize on it.
   */
  generation: number;
}

const caches = new WeakMap<Ext4Super, Dcache>();

function cacheOf(s: Ext4Super): Dcache {
  let c = caches.get(s);
  if (c === undefined) {
    c = { dirs: new Map(), lastDir: 0, complete: new Set(), size: 0, generation: 0 };
    caches.set(s, c);
  }
  return c;
}

/** The name's bytes as a string key, one char per byte (exact, whatever the encoding). */
function keyOf(name: Uint8Array): string | undefined {
  if (name.length === 0 || (name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e)))) return undefined;
  // OK to cast: fromCharCode reads the indexed byte values (names are at most 255 bytes).
  return String.fromCharCode.apply(null, name as unknown as number[]);
}

/** The names of `dirIno`, moved to the most recently used end. */
function touchDir(c: Dcache, dirIno: number): Map<string, Dentry> | undefined {
  const d = c.dirs.get(dirIno);
  if (d !== undefined && c.lastDir !== dirIno) {
    c.dirs.delete(dirIno);
    c.dirs.set(dirIno, d);
    c.lastDir = dirIno;
  }
  return d;
}

/**
 * Forgets least recently used directories until the cache holds 3/4 of DCACHE_MAX names. The
 * directory being added to (`keep`) goes last, only when it alone holds DCACHE_MAX names: a
 * large flat directory being filled stays complete, its misses answered without a scan.
 */
function shrink(c: Dcache, keep: number): void {
  const drop = (ino: number, d: Map<string, Dentry>): void => {
    c.size -= d.size;
    c.dirs.delete(ino);
    // Its names are gone: a miss there is no longer an answer.
    c.complete.delete(ino);
    if (c.lastDir === ino) c.lastDir = 0;
  };
  for (const [ino, d] of c.dirs) {
    if (c.size <= (DCACHE_MAX * 3) / 4) break;
    if (ino !== keep) drop(ino, d);
  }
  const kept = c.dirs.get(keep);
  if (kept !== undefined && c.size >= DCACHE_MAX) drop(keep, kept);
  assert(c.size >= 0, 'dcache: negative size');
}

export function dcacheGet(s: Ext4Super, dirIno: number, name: Uint8Array): Dentry | undefined {
  const k = keyOf(name);
  const c = caches.get(s);
  return k === undefined || c === undefined ? undefined : touchDir(c, dirIno)?.get(k);
}

/** Names cached now (for tests and statistics). */
export function dcacheSize(s: Ext4Super): number {
  return caches.get(s)?.size ?? 0;
}

export function dcacheSet(s: Ext4Super, dirIno: number, name: Uint8Array, ino: number, fileType: number): void {
  const k = keyOf(name);
  if (k === undefined) return;
  const c = cacheOf(s);
  if (c.size >= DCACHE_MAX) shrink(c, dirIno);
  let d = touchDir(c, dirIno);
  if (d === undefined) {
    d = new Map();
    c.dirs.set(dirIno, d);
    c.lastDir = dirIno;
  }
  const old = d.get(k);
  if (old === undefined) c.size++;
  else if (old.ino !== ino) c.generation++;
  d.set(k, { ino, fileType });
}

export function dcacheDelete(s: Ext4Super, dirIno: number, name: Uint8Array): void {
  const k = keyOf(name);
  const c = cacheOf(s);
  c.generation++;
  const d = c.dirs.get(dirIno);
  if (k === undefined || d === undefined) return;
  if (d.delete(k)) c.size--;
}

/** A directory was freed: forget every name cached under it. */
export function dcacheDropDir(s: Ext4Super, dirIno: number): void {
  const c = cacheOf(s);
  c.generation++;
  c.complete.delete(dirIno);
  const d = c.dirs.get(dirIno);
  if (d === undefined) return;
  c.size -= d.size;
  c.dirs.delete(dirIno);
  if (c.lastDir === dirIno) c.lastDir = 0;
}

/** See Dcache.generation. */
export function dcacheGeneration(s: Ext4Super): number {
  return cacheOf(s).generation;
}

/** A directory was just made (it holds only '.' and '..'): every later name will be cached. */
export function dcacheNewDir(s: Ext4Super, dirIno: number): void {
  const c = cacheOf(s);
  assert(c.dirs.get(dirIno) === undefined || c.dirs.get(dirIno)?.size === 0, () => `dcache: new directory ${dirIno} has cached names`);
  c.complete.add(dirIno);
}

/**
 * True when `name` is known to be absent from the directory (a complete directory without it);
 * false means "look on disk" ('.' and '..' are never answered here).
 */
export function dcacheKnownAbsent(s: Ext4Super, dirIno: number, name: Uint8Array): boolean {
  const c = caches.get(s);
  if (c === undefined || !c.complete.has(dirIno)) return false;
  const k = keyOf(name);
  return k !== undefined && c.dirs.get(dirIno)?.has(k) !== true;
}
