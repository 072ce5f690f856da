/**
 * A host directory as a build source (like `mke2fs -d DIR`): synchronous walks with lstat
 * (bigint, for nanosecond times and exact device/inode numbers), which is the cheapest way Node
 * offers to visit tens of thousands of entries; file content is read later, in chunks. Nothing
 * is kept between walks beyond the first walk's list of a small tree (KEPT_ENTRIES): memory
 * does not grow with the size of the tree.
 *
 * - Types: regular files, directories, symlinks (targets as raw bytes), FIFOs, sockets, and
 *   character/block devices (which only root can create on the host).
 * - Hard links: non-directories with st_nlink > 1 are grouped by (st_dev, st_ino); links whose
 *   other names lie outside the tree simply have fewer names in the image.
 * - Sparse files: st_blocks * 512 < st_size marks a file sparse; its all-zero blocks become holes.
 * - Extended attributes (user, trusted, security and POSIX ACLs) are read once for the whole
 *   tree by getfattr (host-xattrs.ts: Node has no xattr API), after the first walk (lateXattrs);
 *   without getfattr installed they are not copied and the builder says so in its warnings. `xattrs: false` skips them.
 * - Names are bytes: one that is not valid UTF-8 keeps its bytes in the image (decodeName's
 *   escapes, which every host call turns back into the bytes: hostFsPath).
 */
import { readdirSync, lstatSync, readlinkSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { decodeName, hostFsPath } from '../util/bytes.js';
import { badEntry, symlinkTarget, type BuildEntry, type EntryKind, type Source, type Timespec, type Xattr } from './source.js';
import { readHostXattrs } from './host-xattrs.js';

const S_IFMT = 0o170000n;
const KIND_OF_FMT: ReadonlyMap<bigint, EntryKind> = new Map([
  [0o100000n, 'file'], [0o040000n, 'dir'], [0o120000n, 'symlink'], [0o020000n, 'chr'],
  [0o060000n, 'blk'], [0o010000n, 'fifo'], [0o140000n, 'sock'],
]);

const NS_PER_SEC = 1_000_000_000n;

/** A bigint nanosecond time as {sec, nsec} with nsec >= 0 (floor division for negative times). */
export function timespecOfNs(ns: bigint): Timespec {
  let sec = ns / NS_PER_SEC;
  let rem = ns % NS_PER_SEC;
  if (rem < 0n) {
    sec -= 1n;
    rem += NS_PER_SEC;
  }
  return { sec: Number(sec), nsec: Number(rem) };
}

/** Linux dev_t split (glibc's gnu_dev_major / gnu_dev_minor). */
export function splitRdev(rdev: bigint): { major: number; minor: number } {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

/**
 * The names in a host directory, as the engine's API takes them: UTF-8, a name that is not
 * valid UTF-8 with its other bytes escaped (decodeName), so the image gets the exact bytes, as
 * mke2fs -d copies them.
 */
function namesOf(hostDir: string): string[] {
  let raw: Buffer[];
  try {
    raw = readdirSync(hostFsPath(hostDir), { encoding: 'buffer' });
  } catch (e) {
    throw badEntry(hostDir, `cannot read the directory: ${(e as Error).message}`);
  }
  return raw.map((b) => decodeName(b));
}

/** One host entry as a BuildEntry (content is referenced, not read). */
function entryOf(hostPath: string, path: string, st: BigIntStats, links: Map<string, string>, xattrs: readonly Xattr[]): BuildEntry {
  const kind = KIND_OF_FMT.get(st.mode & S_IFMT);
  if (kind === undefined) throw badEntry(hostPath, `unknown file type 0o${st.mode.toString(8)}`);
  const e: BuildEntry = {
    path, kind, perm: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid),
    atime: timespecOfNs(st.atimeNs), mtime: timespecOfNs(st.mtimeNs), xattrs: [...xattrs], sizeBytes: 0, allocBytes: 0,
    origin: hostPath,
  };
  if (kind !== 'dir' && st.nlink > 1n) {
    const key = `${st.dev}:${st.ino}`;
    const first = links.get(key);
    // A further name of an inode: its attributes came with the first.
    if (first !== undefined) return { ...e, kind: 'hardlink', linkTo: first, xattrs: [] };
    links.set(key, path);
  }
  if (kind === 'file') {
    const size = Number(st.size);
    const alloc = Number(st.blocks * 512n);
    const sparse = alloc < size;
    e.sizeBytes = size;
    e.allocBytes = sparse ? alloc : size;
    if (size > 0) e.content = { kind: 'host', hostPath, sparse };
  } else if (kind === 'symlink') {
    e.target = symlinkTarget(readlinkSync(hostFsPath(hostPath), { encoding: 'buffer' }), hostPath);
  } else if (kind === 'chr' || kind === 'blk') {
    Object.assign(e, splitRdev(st.rdev));
  }
  return e;
}

/**
 * A host directory as a Source. Each walk() visits the tree afresh, depth first with each
 * directory's names sorted, which is creation order (component-wise path order): parents
 * first, and the first name of a hard-link group is its smallest path, so it carries the inode.
 * Only the hard-link groups (device and inode → first path) are remembered during a walk.
 */
export function scanDirectory(root: string, keepEntries = KEPT_ENTRIES, xattrs = true): Source {
  // Fail now, at open, if the root is unreadable.
  lstatSync(root, { bigint: true });
  // Reading a directory (readdir) or a symlink (readlink) moves its atime on the host, so a
  // second walk would see the first walk's own reads. The first walk's atimes of directories
  // and symlinks are kept (seconds and nanoseconds, in walk order: 16 bytes each) and given
  // back by the later walks.
  const atimes: number[] = [];
  // A tree of up to `keepEntries` entries is kept whole by the first walk and handed out again
  // (a second walk costs ~30 us per entry); a larger one is walked again, so memory stays bounded.
  let kept: BuildEntry[] | undefined;
  let walks = 0;
  const warnings: string[] = [];
  let xattrsOf = (_path: string): readonly Xattr[] => [];
  let late: ReadonlyMap<string, readonly Xattr[]> | undefined;
  /**
   * getfattr reads every directory too, so it runs after the first walk, which has recorded the
   * atimes the tree had; the first walk's entries carry no xattrs (lateXattrs gives them), the
   * later walks' and the kept list's do.
   */
  const loadXattrs = (): ReadonlyMap<string, readonly Xattr[]> => {
    if (late !== undefined) return late;
    late = new Map();
    if (!xattrs) return late;
    const host = readHostXattrs(root);
    if (host === undefined) {
      warnings.push('extended attributes of a directory source are not copied: getfattr (Debian package attr) is not installed');
      return late;
    }
    if (host.skipped.first !== undefined) {
      const f = host.skipped.first;
      warnings.push(`${host.skipped.count} extended attribute(s) not copied: ext4 has no handler for names like ${f.name} (at ${f.path})`);
    }
    late = host.byPath;
    xattrsOf = (path: string): readonly Xattr[] => host.byPath.get(path) ?? [];
    // A further name of an inode (a hard link) carries nothing: the attributes came with the first.
    for (const e of kept ?? []) if (e.kind !== 'hardlink') e.xattrs = [...xattrsOf(e.path)];
    return late;
  };
  function* firstWalk(): Generator<BuildEntry> {
    yield* keepWhile(walkTree(root, atimes, false, xattrsOf), keepEntries, (list) => {
      kept = list;
    });
    loadXattrs();
  }
  return {
    kind: 'dir',
    walk: () => {
      if (walks++ === 0) return firstWalk();
      // A first walk given up early has not read them yet.
      loadXattrs();
      return kept ?? walkTree(root, atimes, true, xattrsOf);
    },
    lateXattrs: loadXattrs,
    warnings,
  };
}

/** Entries a first walk keeps for the next by default (see scanDirectory; ~27 MiB at most). */
const KEPT_ENTRIES = 50_000;

/** Yields `walk`'s entries; `done` gets them all if the walk ended within `max`. */
function* keepWhile(walk: Iterable<BuildEntry>, max: number, done: (list: BuildEntry[]) => void): Generator<BuildEntry> {
  let list: BuildEntry[] | undefined = max > 0 ? [] : undefined;
  for (const e of walk) {
    if (list !== undefined) {
      if (list.length < max) list.push(e);
      else list = undefined;
    }
    yield e;
  }
  if (list !== undefined) done(list);
}

function* walkTree(root: string, atimes: number[], replay: boolean, xattrsOf: (path: string) => readonly Xattr[]): Generator<BuildEntry> {
  const links = new Map<string, string>();
  let k = 0;
  /** Records (first walk) or restores (later walks) the atime of a directory or symlink. */
  const keepAtime = (e: BuildEntry): void => {
    if ((e.kind !== 'dir' && e.kind !== 'symlink') || e.atime === undefined) return;
    if (!replay) atimes.push(e.atime.sec, e.atime.nsec);
    // OK to index: k + 1 < atimes.length. A longer second walk fails the build at its end.
    else if (k + 1 < atimes.length) e.atime = { sec: atimes[k]!, nsec: atimes[k + 1]! };
    k += 2;
  };
  const rootEntry = entryOf(root, '/', lstatHost(root), links, xattrsOf('/'));
  if (rootEntry.kind !== 'dir') throw badEntry(root, 'the source is not a directory');
  keepAtime(rootEntry);
  yield rootEntry;
  // Pending directories, deepest last; each frame lists its names sorted and walks them in order.
  const stack: { host: string; path: string; names: string[]; at: number }[] = [{ host: root, path: '', names: sortedNames(root), at: 0 }];
  while (stack.length > 0) {
    // OK to index: the loop condition says the stack is not empty.
    const dir = stack[stack.length - 1]!;
    if (dir.at >= dir.names.length) {
      stack.pop();
      continue;
    }
    // OK to index: at < names.length.
    const name = dir.names[dir.at++]!;
    const host = join(dir.host, name);
    const path = `${dir.path}/${name}`;
    const e = entryOf(host, path, lstatHost(host), links, xattrsOf(path));
    keepAtime(e);
    yield e;
    if (e.kind === 'dir') stack.push({ host, path, names: sortedNames(host), at: 0 });
  }
}

function lstatHost(host: string): BigIntStats {
  try {
    return lstatSync(hostFsPath(host), { bigint: true });
  } catch (e) {
    throw badEntry(host, `cannot stat: ${(e as Error).message}`);
  }
}

/** A directory's names in creation order (a plain code-unit sort: names hold no "/"). */
function sortedNames(hostDir: string): string[] {
  return namesOf(hostDir).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
