/**
 * The image builder's entry model: what a source (a host directory, a tar archive, a JSON
 * manifest) says the image holds, validated and put in creation order before anything is
 * written. Every source reduces to one sequence of BuildEntry, so the builder has one code path.
 *
 * Invariants of a finished list (finishEntries):
 * - The first entry is the root directory "/"; every other path is absolute, normalized
 *   ("/a/b": no empty, "." or ".." components, no trailing slash), each component 1..255 bytes of
 *   UTF-8 without NUL, and unique.
 * - Parents come before children and each directory's children are sorted by name (component-wise
 *   path order), so directory insertion order, and with it the image, depends only on the content.
 * - A hard-link group has exactly one 'file' entry (its smallest path, which carries the content,
 *   owner, mode, times and xattrs) and 'hardlink' entries whose `linkTo` names it; the file comes
 *   first in the list.
 */
import { PosixError } from '../util/errors.js';
// Re-exported: the sources decode PAX and manifest values with them.
export { decodeBase64, decodeHex } from '../util/bytes.js';
import type { ClockTime } from '../runtime/clock.js';

/** A timestamp: seconds since the epoch (may be negative) and nanoseconds 0..999,999,999. */
export type Timespec = ClockTime;

export type EntryKind = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo' | 'sock';

/** One extended attribute (name with its namespace prefix, e.g. "security.capability"). */
export interface Xattr {
  name: string;
  value: Uint8Array;
}

/**
 * Where a regular file's bytes come from.
 * - host: a host file, read in chunks; `sparse` means all-zero blocks are skipped (holes).
 * - bytes: in memory (manifest inline content, small members of a compressed tar).
 * - pieces: in memory at offsets, the rest holes (a manifest's sparse map), sorted, disjoint.
 * - archive: `length` bytes at byte `offset` of an uncompressed tar file (random access).
 * - stream: delivered by the source's second pass over a compressed archive (`member` is the
 *   index of the tar header that carries it).
 */
export type Content =
  | { kind: 'host'; hostPath: string; sparse: boolean }
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'pieces'; pieces: Chunk[] }
  | { kind: 'archive'; hostPath: string; offset: number }
  | { kind: 'stream'; member: number };

export interface BuildEntry {
  /** Absolute normalized path inside the image ("/" for the root). */
  path: string;
  kind: EntryKind;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  perm: number;
  uid: number;
  gid: number;
  /** Access and modification time; absent means "the build's clock". */
  atime?: Timespec;
  mtime?: Timespec;
  xattrs: Xattr[];
  /** Regular files: the size in bytes (the content may be shorter: the rest is a hole). */
  sizeBytes: number;
  /** Regular files: bytes the content occupies (less than sizeBytes for sparse files); for sizing. */
  allocBytes: number;
  content?: Content;
  /** Symlinks: the target bytes. */
  target?: Uint8Array;
  /** Hard links: the path of the group's 'file' entry. */
  linkTo?: string;
  /** Device nodes. */
  major?: number;
  minor?: number;
  /** Where the entry came from, for error messages (a host path, a tar member name, a manifest index). */
  origin: string;
}

/** Bytes at a position of the file being written. */
export interface Chunk {
  pos: number;
  bytes: Uint8Array;
  /** Hands `bytes` back for reuse once written (a pooled read buffer); the chunk is dead after. */
  release?: () => void;
}

/** What every source kind produces. */
export interface Source {
  readonly kind: 'dir' | 'tar' | 'manifest';
  /**
   * Every entry, in creation order (the invariants above). The builder walks twice: once to
   * size and plan, once to write. A directory source walks the host tree each time, so no list
   * of the whole tree is ever held (a second walk that disagrees with the first fails the build);
   * tar and manifest sources hold their list and hand out the same entries each time. The
   * builder must not change what it is handed.
   */
  walk(): Iterable<BuildEntry>;
  /**
   * Extended attributes the first walk's entries did not carry, by image path, read when that
   * walk ended (a directory source: getfattr reads every directory, so it must come after the
   * walk that records their atimes); the later walks' entries carry them. The paths of further
   * names of an inode (hardlink entries) are listed too and carry nothing.
   */
  lateXattrs?(): ReadonlyMap<string, readonly Xattr[]>;
  /** Things the image will not carry, for the summary (complete after the first walk). */
  readonly warnings: string[];
  /**
   * The second pass over a compressed archive: calls `write` for each wanted member (by header
   * index, see Content 'stream') in archive order with its bytes, waiting for each write.
   */
  streamContents?(want: ReadonlyMap<number, BuildEntry>, write: (entry: BuildEntry, chunks: AsyncIterable<Chunk>) => Promise<void>): Promise<void>;
}

/** Longest name component (EXT4_NAME_LEN). */
export const NAME_MAX_BYTES = 255;
/** Longest symlink target ext4 stores (PATH_MAX - 1). */
export const SYMLINK_MAX_BYTES = 4095;

const utf8 = new TextEncoder();

/** A source error: EINVAL naming the entry (`origin`) and what is wrong with it. */
export function badEntry(origin: string, detail: string): PosixError {
  return new PosixError('EINVAL', 'build', origin, detail);
}

/**
 * Normalizes a path inside the image. `relative` paths (tar member names) must not start with
 * "/"; image paths (manifests) must. ".." is refused anywhere (as GNU tar refuses member names
 * containing it): nothing a source says may land outside the image root or depend on lexical
 * tricks. Returns "/" for the root ("." or "./" in a tar, "/" in a manifest).
 */
export function normalizePath(raw: string, origin: string, style: 'relative' | 'absolute'): string {
  if (raw.includes('\0')) throw badEntry(origin, 'path contains a NUL byte');
  if (raw.includes('\uFFFD')) throw badEntry(origin, 'path is not valid UTF-8');
  if (style === 'relative' && raw.startsWith('/')) throw badEntry(origin, 'absolute member name (outside the archive root); refused');
  if (style === 'absolute' && !raw.startsWith('/')) throw badEntry(origin, 'path must be absolute inside the image (start with "/")');
  const comps: string[] = [];
  for (const c of raw.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw badEntry(origin, 'path contains ".." (outside the image root); refused');
    if (utf8.encode(c).length > NAME_MAX_BYTES) throw badEntry(origin, `name "${c.slice(0, 40)}…" is longer than ${NAME_MAX_BYTES} bytes`);
    comps.push(c);
  }
  return '/' + comps.join('/');
}

/** Parent path of a normalized non-root path. */
export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

/**
 * Component-wise path order: "/" sorts below every other character, so a directory's subtree
 * follows it immediately and siblings are in name order ("/a", "/a/z", "/a-b").
 */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    if (ca === 0x2f) return -1;
    if (cb === 0x2f) return 1;
    return ca - cb;
  }
  return a.length - b.length;
}

/** Compares timestamps (negative when a is earlier). */
export function compareTimes(a: Timespec, b: Timespec): number {
  return a.sec !== b.sec ? a.sec - b.sec : a.nsec - b.nsec;
}

/** A directory entry to stand in for a parent that the source implies but does not list. */
export function impliedDir(path: string, origin: string): BuildEntry {
  return { path, kind: 'dir', perm: 0o755, uid: 0, gid: 0, xattrs: [], sizeBytes: 0, allocBytes: 0, origin };
}

/** How finishEntries treats a path listed twice: tar extraction keeps the later one. */
export type DuplicatePolicy = 'later-wins' | 'error';

/**
 * Puts entries in creation order and checks the invariants in the module comment: removes or
 * refuses duplicates, adds missing parents (0755, 0:0), checks that every parent is a
 * directory, resolves hard links to their group's file and makes the smallest path of each group
 * the one that carries the inode.
 */
export function finishEntries(list: readonly BuildEntry[], dup: DuplicatePolicy): BuildEntry[] {
  const byPath = new Map<string, BuildEntry>();
  for (const e of list) {
    const prev = byPath.get(e.path);
    if (prev !== undefined && dup === 'error') throw badEntry(e.origin, `path ${e.path} is listed twice (also ${prev.origin})`);
    byPath.set(e.path, e);
  }
  if (!byPath.has('/')) byPath.set('/', impliedDir('/', '/'));
  for (const e of [...byPath.values()]) {
    for (let p = parentOf(e.path); e.path !== '/'; p = parentOf(p)) {
      const parent = byPath.get(p);
      if (parent === undefined) byPath.set(p, impliedDir(p, e.origin));
      else if (parent.kind !== 'dir') throw badEntry(e.origin, `parent ${p} is a ${parent.kind}, not a directory`);
      else break;
      if (p === '/') break;
    }
  }
  const entries = [...byPath.values()];
  groupHardLinks(entries, byPath);
  entries.sort((a, b) => comparePaths(a.path, b.path));
  return entries;
}

/**
 * Resolves every hard link to the file it names (following links to links), then moves the
 * inode's data and attributes to the group's smallest path so that it is created first.
 */
function groupHardLinks(entries: BuildEntry[], byPath: Map<string, BuildEntry>): void {
  const groups = new Map<BuildEntry, BuildEntry[]>();
  for (const e of entries) {
    if (e.kind !== 'hardlink') continue;
    let t = e;
    for (let hops = 0; t.kind === 'hardlink'; hops++) {
      const next = t.linkTo === undefined ? undefined : byPath.get(t.linkTo);
      if (next === undefined) throw badEntry(e.origin, `hard link target ${t.linkTo ?? '(none)'} is not in the source`);
      if (hops > entries.length) throw badEntry(e.origin, 'hard links form a cycle');
      t = next;
    }
    if (t.kind === 'dir') throw badEntry(e.origin, `hard link to the directory ${t.path}`);
    const g = groups.get(t);
    if (g === undefined) groups.set(t, [e]);
    else g.push(e);
  }
  const index = new Map(entries.map((e, i) => [e, i] as const));
  for (const [file, links] of groups) {
    const members = [file, ...links];
    let first = file;
    for (const l of links) if (comparePaths(l.path, first.path) < 0) first = l;
    for (const m of members) {
      // OK to assert the index: every member came from `entries`.
      const at = index.get(m)!;
      entries[at] = m === first
        ? { ...file, path: first.path, origin: first.origin }
        : { path: m.path, origin: m.origin, kind: 'hardlink', linkTo: first.path, perm: 0, uid: 0, gid: 0, xattrs: [], sizeBytes: 0, allocBytes: 0 };
    }
  }
}

/** The bytes of a symlink target, checked against ext4's limit. */
export function symlinkTarget(target: string | Uint8Array, origin: string): Uint8Array {
  const t = typeof target === 'string' ? utf8.encode(target) : target;
  if (t.length === 0) throw badEntry(origin, 'empty symlink target');
  if (t.length > SYMLINK_MAX_BYTES) throw badEntry(origin, `symlink target of ${t.length} bytes (ext4 allows ${SYMLINK_MAX_BYTES})`);
  return t;
}

/** Checks a numeric id or mode field of a source entry. */
export function checkU32(v: number, what: string, origin: string): number {
  if (!Number.isSafeInteger(v) || v < 0 || v > 0xffff_ffff) throw badEntry(origin, `${what} ${v} is not a 32-bit unsigned integer`);
  return v;
}

/** Checks a timestamp from a source (ext4 holds seconds from -2^31 to 2^34 - 1 with extra fields). */
export function checkTime(t: Timespec, what: string, origin: string): Timespec {
  if (!Number.isSafeInteger(t.sec) || !Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec > 999_999_999) {
    throw badEntry(origin, `${what} ${JSON.stringify(t)} is not a valid {sec, nsec} time`);
  }
  if (t.sec < -0x8000_0000 || t.sec > 0x3_7fff_ffff) throw badEntry(origin, `${what} ${t.sec} is outside what ext4 can store (1901..2446)`);
  return t;
}

/**
 * Parses a decimal time with up to nine fractional digits ("1700000000.123456789", "-1.5")
 * exactly, as PAX records and manifests write it. Returns undefined if it is not one.
 */
export function parseDecimalTime(s: string): Timespec | undefined {
  const m = /^(-?)(\d+)(?:\.(\d{1,9})\d*)?$/.exec(s.trim());
  if (m === null) return undefined;
  const whole = Number(m[2]);
  const frac = Number((m[3] ?? '').padEnd(9, '0'));
  if (!Number.isSafeInteger(whole)) return undefined;
  if (m[1] !== '-') return { sec: whole, nsec: frac };
  // -1.5 s is 2 s before the epoch plus 0.5 s.
  return frac === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1_000_000_000 - frac };
}

