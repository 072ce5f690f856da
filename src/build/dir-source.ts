/**
 * A host directory as a build source (like `mke2fs -d DIR`): one synchronous walk with lstat
 * (bigint, for nanosecond times and exact device/inode numbers), which is the cheapest way Node
 * offers to visit tens of thousands of entries; file content is read later, in chunks.
 *
 * - Types: regular files, directories, symlinks (targets as raw bytes), FIFOs, sockets, and
 *   character/block devices (which only root can create on the host).
 * - Hard links: non-directories with st_nlink > 1 are grouped by (st_dev, st_ino); links whose
 *   other names lie outside the tree simply have fewer names in the image.
 * - Sparse files: st_blocks * 512 < st_size marks a file sparse; its all-zero blocks become holes.
 * - Extended attributes are NOT read: Node has no xattr API, and reading them would need a native
 *   addon. A tar made with `tar --xattrs` or a manifest carries them instead; the builder says so
 *   in its warnings.
 * - Names must be valid UTF-8 (the engine's API takes string paths); others are refused by name.
 */
import { readdirSync, lstatSync, readlinkSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { badEntry, finishEntries, symlinkTarget, type BuildEntry, type EntryKind, type Source, type Timespec } from './source.js';

const S_IFMT = 0o170000n;
const KIND_OF_FMT: ReadonlyMap<bigint, EntryKind> = new Map([
  [0o100000n, 'file'], [0o040000n, 'dir'], [0o120000n, 'symlink'], [0o020000n, 'chr'],
  [0o060000n, 'blk'], [0o010000n, 'fifo'], [0o140000n, 'sock'],
]);

const NS_PER_SEC = 1_000_000_000n;
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

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

/** The names in a host directory, decoded as UTF-8 (an invalid name is refused by its path). */
function namesOf(hostDir: string): string[] {
  let raw: Buffer[];
  try {
    raw = readdirSync(hostDir, { encoding: 'buffer' });
  } catch (e) {
    throw badEntry(hostDir, `cannot read the directory: ${(e as Error).message}`);
  }
  return raw.map((b) => {
    try {
      return fatalUtf8.decode(b);
    } catch {
      throw badEntry(join(hostDir, b.toString('latin1')), 'file name is not valid UTF-8 (the image API takes UTF-8 names)');
    }
  });
}

/** One host entry as a BuildEntry (content is referenced, not read). */
function entryOf(hostPath: string, path: string, st: BigIntStats, links: Map<string, string>): BuildEntry {
  const kind = KIND_OF_FMT.get(st.mode & S_IFMT);
  if (kind === undefined) throw badEntry(hostPath, `unknown file type 0o${st.mode.toString(8)}`);
  const e: BuildEntry = {
    path, kind, perm: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid),
    atime: timespecOfNs(st.atimeNs), mtime: timespecOfNs(st.mtimeNs), xattrs: [], sizeBytes: 0, allocBytes: 0,
    origin: hostPath,
  };
  if (kind !== 'dir' && st.nlink > 1n) {
    const key = `${st.dev}:${st.ino}`;
    const first = links.get(key);
    if (first !== undefined) return { ...e, kind: 'hardlink', linkTo: first };
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
    e.target = symlinkTarget(readlinkSync(hostPath, { encoding: 'buffer' }), hostPath);
  } else if (kind === 'chr' || kind === 'blk') {
    Object.assign(e, splitRdev(st.rdev));
  }
  return e;
}

/** Walks `root` (a host directory) into a Source. */
export function scanDirectory(root: string): Source {
  const rootSt = lstatSync(root, { bigint: true });
  const links = new Map<string, string>();
  const list: BuildEntry[] = [entryOf(root, '/', rootSt, links)];
  const stack: { host: string; path: string }[] = [{ host: root, path: '' }];
  while (stack.length > 0) {
    // OK to assert: the loop condition says the stack is not empty.
    const dir = stack.pop()!;
    for (const name of namesOf(dir.host)) {
      const host = join(dir.host, name);
      const path = `${dir.path}/${name}`;
      let st: BigIntStats;
      try {
        st = lstatSync(host, { bigint: true });
      } catch (e) {
        throw badEntry(host, `cannot stat: ${(e as Error).message}`);
      }
      const e = entryOf(host, path, st, links);
      list.push(e);
      if (e.kind === 'dir') stack.push({ host, path });
    }
  }
  return {
    kind: 'dir',
    entries: finishEntries(list, 'error'),
    warnings: ['extended attributes of a directory source are not copied (Node.js has no xattr API); a tar made with --xattrs or a manifest carries them'],
  };
}
