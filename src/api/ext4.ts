/**
 * The public facade: `Ext4.open(image | device)` mounts an image and offers a node:fs-shaped
 * promises API over it (stat, lstat, readdir, readFile, readlink, getxattr, listxattr, open).
 * Paths are absolute inside the image. Errors are the typed classes of util/errors.ts.
 */
import type { BlockDevice } from '../blockdev/block-device.js';
import { FileDevice } from '../blockdev/file-device.js';
import { Ext4Super, type MountOptions } from '../fs/super.js';
import { readInode, type InodeInfo } from '../fs/inode/inode.js';
import { iterateDir, type DirEntry } from '../fs/dir/dir.js';
import { resolvePath, readSymlink, isFastSymlink } from '../fs/namei.js';
import { FileMap, readMappedRange } from '../fs/inode/file-map.js';
import { inlineBytes } from '../fs/inode/inline.js';
import { readXattrs, readVisibleXattrs, visibleXattrValue, isListedXattr } from '../fs/xattr/xattr-read.js';
import { listIndirectBlocks } from '../fs/inode/block-map.js';
import { decodeRdev } from '../format/inode.js';
import { blocksCount, freeBlocksCount, rBlocksCount, sbTime, superblockFeatureNames } from '../format/superblock.js';
import { loadJournalInfo, type JournalInfo } from '../fs/journal.js';
import { Ext4Error, PosixError, type ErrnoCode } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { decodeName } from '../util/bytes.js';
import { Stats, Dirent, fileTypeOfFt } from './stats.js';
import { WriteOps, toTimespec, type TimeArg, type NodeSpec } from './write-ops.js';
import { mkfs as mkfsImpl } from './mkfs.js';
import type { ClockTime } from '../runtime/clock.js';
import { FileData, type FallocateMode, type DataStats } from '../io/file-data.js';
import { DirectIo } from '../io/direct-io.js';
import { DirectFile, type AioContext, type AioContextOptions } from '../io/aio.js';
/** Whether ext4 stores an xattr name (the builder filters a host tree's attributes with it). */
export { hasXattrHandler } from '../fs/xattr/xattr-write.js';
export type { AioContext, AioContextOptions, AioRequest, Iocb, IoEvent } from '../io/aio.js';
import type { ErrCursor } from '../cache/address-space.js';
import { iget } from '../fs/inode/icache.js';

export interface OpenOptions extends MountOptions {
  /** Owner of inodes created through this mount (default root, 0:0: image builders make root-owned trees). */
  owner?: { uid: number; gid: number };
  /** Page-cache page size for file data (4096, 16384 or 65536; default 4096). */
  pageSizeBytes?: number;
  /** Most segments per data bio (default 256). */
  maxBioVecs?: number;
  /** Most bytes per data bio (default: the device's largest request, 1 MiB for a file). */
  maxBioBytes?: number;
  /** Dirty page-cache bytes that throttle writers (default 32 MiB; writeback starts at half). */
  dirtyLimitBytes?: number;
  /** Page-cache bytes kept before clean pages are evicted (default 64 MiB). */
  cacheLimitBytes?: number;
  /**
   * Dirty metadata (inode tables, directories, bitmaps, tree blocks) past which the end of an
   * operation commits (default 32 MiB): memory stays bounded however many changes are made
   * between syncs. A failure of such a commit is reported by the next sync() or close().
   */
  metadataDirtyLimitBytes?: number;
}

/** node:fs open flags. */
export type OpenFlags = 'r' | 'r+' | 'w' | 'w+' | 'wx' | 'wx+' | 'a' | 'a+' | 'ax' | 'ax+';

/** Options of Ext4.open(path, flags, options). */
export interface FileOpenOptions {
  /** Mode of a file the open creates (default 0644). */
  mode?: number;
  /** Owner of a file the open creates (default the mount's owner). */
  uid?: number;
  gid?: number;
  /**
   * O_DIRECT: reads and writes bypass the page cache (offsets, lengths and buffers aligned to the
   * block size, else EINVAL) and the handle offers `aio()` contexts. Read-write mounts only.
   */
  direct?: boolean;
}

interface ParsedFlags {
  read: boolean;
  write: boolean;
  create: boolean;
  excl: boolean;
  trunc: boolean;
  append: boolean;
}

function parseOpenFlags(flags: string): ParsedFlags {
  const table: Record<string, ParsedFlags> = {
    r: { read: true, write: false, create: false, excl: false, trunc: false, append: false },
    'r+': { read: true, write: true, create: false, excl: false, trunc: false, append: false },
    w: { read: false, write: true, create: true, excl: false, trunc: true, append: false },
    'w+': { read: true, write: true, create: true, excl: false, trunc: true, append: false },
    wx: { read: false, write: true, create: true, excl: true, trunc: true, append: false },
    'wx+': { read: true, write: true, create: true, excl: true, trunc: true, append: false },
    a: { read: false, write: true, create: true, excl: false, trunc: false, append: true },
    'a+': { read: true, write: true, create: true, excl: false, trunc: false, append: true },
    ax: { read: false, write: true, create: true, excl: true, trunc: false, append: true },
    'ax+': { read: true, write: true, create: true, excl: true, trunc: false, append: true },
  };
  const f = table[flags];
  if (f === undefined) throw new PosixError('EINVAL', 'open', undefined, `unknown flags ${JSON.stringify(flags)}`);
  return f;
}

/** Largest file readFile() returns in one buffer (callers stream bigger ones with open()). */
export const READFILE_MAX_BYTES = 2 ** 31 - 1;

/** A summary of the superblock, like `dumpe2fs -h`. */
export interface FsInfo {
  label: string;
  uuid: string;
  blockSize: number;
  blocksCount: number;
  freeBlocksCount: number;
  reservedBlocksCount: number;
  inodesCount: number;
  freeInodesCount: number;
  inodeSize: number;
  groupCount: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  descSize: number;
  features: string[];
  state: 'clean' | 'not clean' | 'errors';
  readOnly: boolean;
  readOnlyReason?: string;
  needsRecovery: boolean;
  mkfsTime: number;
  lastWriteTime: number;
  hashSeed: string;
  defaultHashVersion: number;
  journalInode: number;
  /**
   * The internal journal's superblock, validated; or why it could not be read (only when opened
   * with noRecovery, which ignores the journal as the kernel's `noload` does); `external` for a
   * journal on another device. Absent without has_journal.
   */
  journal?: JournalInfo | { error: string } | { external: true };
}

/** The layout of an inode's data, for `ext4ts stat` (like debugfs stat + ex). */
export interface InodeLayout {
  kind: 'extents' | 'blockmap' | 'inline' | 'fast-symlink' | 'none';
  depth?: number;
  extents: { lblk: number; len: number; pblk: number; unwritten: boolean }[];
  /** Extent tree nodes or indirect blocks. */
  metaBlocks: number[];
  xattrBlock: number;
  flags: number;
  generation: number;
}

/** Ext4.writeFile's options. */
export interface WriteFileOptions {
  /** 'w' (default: create or truncate) or 'wx' (create; EEXIST when the name exists). */
  flag?: 'w' | 'wx';
  /** Permission bits of a new file (default 0644). */
  mode?: number;
  /** Owner of a new file (default: the mount's owner). */
  uid?: number;
  gid?: number;
  /** Times to give the file after the write (default: the write's own). */
  atime?: TimeArg;
  mtime?: TimeArg;
}

export class Ext4 {
  private constructor(
    readonly sup: Ext4Super,
    private readonly journal: FsInfo['journal'],
    private readonly wops: WriteOps | undefined,
    /** The buffered data path of a read-write mount. */
    readonly data: FileData | undefined = undefined,
    /** Direct I/O (O_DIRECT and the AIO contexts) of a read-write mount. */
    private readonly dio: DirectIo | undefined = undefined,
  ) {}

  /** Creates a new filesystem on an image file or a BlockDevice (see `mkfs` in api/mkfs.ts). */
  static mkfs(...args: Parameters<typeof mkfsImpl>): ReturnType<typeof mkfsImpl> {
    return mkfsImpl(...args);
  }

  /** Opens and mounts an image file or a BlockDevice (read-only unless told otherwise). */
  static async open(image: string | BlockDevice, opts: OpenOptions = {}): Promise<Ext4> {
    const readOnly = opts.readOnly ?? true;
    const dev = typeof image === 'string' ? await FileDevice.open(image, { readOnly }) : image;
    try {
      const sup = await Ext4Super.mount(dev, { ...opts, readOnly });
      const journal = await journalOf(sup, opts.noRecovery ?? false);
      let wops: WriteOps | undefined;
      if (!sup.readOnly) {
        wops = new WriteOps(sup, opts.owner ?? { uid: 0, gid: 0 }, opts.metadataDirtyLimitBytes);
        await wops.mountRw();
      }
      let data: FileData | undefined;
      let dio: DirectIo | undefined;
      if (wops !== undefined) {
        const fd = new FileData(sup, { pageSizeBytes: opts.pageSizeBytes, maxBioVecs: opts.maxBioVecs, maxBioBytes: opts.maxBioBytes, dirtyLimitBytes: opts.dirtyLimitBytes, cacheLimitBytes: opts.cacheLimitBytes });
        data = fd;
        // An inode whose last link and last open file went: its cached pages go, unwritten.
        wops.ns.onEvict = (info) => fd.discard(info);
        const w = wops;
        dio = new DirectIo(sup, fd, { serialize: (fn) => w.run(fn) });
      }
      return new Ext4(sup, journal, wops, data, dio);
    } catch (e) {
      if (typeof image === 'string') await dev.close();
      throw e;
    }
  }

  /** Superblock summary. */
  info(): FsInfo {
    const s = this.sup;
    const sb = s.sb;
    const uuid = [...sb.s_uuid].map((b) => b.toString(16).padStart(2, '0')).join('');
    const seed = [...sb.s_hash_seed].map((b) => b.toString(16).padStart(2, '0')).join('');
    const fmt = (h: string): string => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    return {
      label: s.label, uuid: fmt(uuid), blockSize: s.blockSize, blocksCount: blocksCount(sb),
      freeBlocksCount: freeBlocksCount(sb), reservedBlocksCount: rBlocksCount(sb),
      inodesCount: sb.s_inodes_count, freeInodesCount: sb.s_free_inodes_count, inodeSize: s.inodeSize,
      groupCount: s.groupCount, blocksPerGroup: s.blocksPerGroup, inodesPerGroup: s.inodesPerGroup,
      descSize: s.descSize, features: superblockFeatureNames(sb),
      state: sb.s_state & 2 ? 'errors' : sb.s_state & 1 ? 'clean' : 'not clean',
      readOnly: s.readOnly, ...(s.verdict.readOnlyReason ? { readOnlyReason: s.verdict.readOnlyReason } : {}),
      needsRecovery: s.verdict.needsRecovery, mkfsTime: sbTime(sb.s_mkfs_time, sb.s_mkfs_time_hi),
      lastWriteTime: sbTime(sb.s_wtime, sb.s_wtime_hi), hashSeed: fmt(seed),
      defaultHashVersion: sb.s_def_hash_version, journalInode: sb.s_journal_inum,
      ...(this.journal !== undefined ? { journal: this.journal } : {}),
    };
  }

  /** stat(): follows a final symlink. */
  async stat(path: string): Promise<Stats> {
    return this.statsOf(await resolvePath(this.sup, path, true, 'stat'));
  }

  /** lstat(): does not follow a final symlink. */
  async lstat(path: string): Promise<Stats> {
    return this.statsOf(await resolvePath(this.sup, path, false, 'lstat'));
  }

  /** Stats of an inode by number (for tools that walk by inode). */
  async statIno(ino: number): Promise<Stats> {
    return this.statsOf(await readInode(this.sup, ino));
  }

  private statsOf(disk: InodeInfo): Stats {
    const s = this.sup;
    // A file with data in the page cache: its in-core inode has the current size and times.
    const info = this.data?.liveInfo(disk.ino) ?? disk;
    const size = this.data !== undefined && info.type === 'file' ? this.data.sizeOf(info) : info.size;
    let rdev = 0;
    if (info.type === 'chr' || info.type === 'blk') {
      const d = decodeRdev(info.iBlock);
      rdev = d.major * 256 + d.minor; // Linux makedev for major/minor < 256/ (small devices)
      if (d.minor > 0xff || d.major > 0xfff) rdev = ((d.minor & 0xff) | (d.major << 8) | ((d.minor & ~0xff) << 12)) >>> 0;
    }
    return new Stats(
      info.ino, info.mode, info.linksCount, info.uid, info.gid, rdev, size, s.blockSize,
      info.blocks512(s.features.hugeFile, s.blockSize), info.time('atime'), info.time('mtime'),
      info.time('ctime'), info.crtime, info.type,
    );
  }

  /** Device major/minor of a device node (lstat). */
  async rdev(path: string): Promise<{ major: number; minor: number }> {
    const info = await resolvePath(this.sup, path, false, 'lstat');
    if (info.type !== 'chr' && info.type !== 'blk') throw new PosixError('EINVAL', 'rdev', path, 'not a device node');
    return decodeRdev(info.iBlock);
  }

  /** readdir(): names (without '.' and '..'), or Dirents with `withFileTypes`. */
  async readdir(path: string): Promise<string[]>;
  async readdir(path: string, opts: { withFileTypes: true }): Promise<Dirent[]>;
  async readdir(path: string, opts?: { withFileTypes?: boolean }): Promise<string[] | Dirent[]> {
    const dirents = await this.readdirEntries(path);
    return opts?.withFileTypes ? dirents : dirents.map((d) => d.name);
  }

  private async readdirEntries(path: string): Promise<Dirent[]> {
    const dir = await resolvePath(this.sup, path, true, 'scandir');
    if (dir.type !== 'dir') throw new PosixError('ENOTDIR', 'scandir', path);
    const out: Dirent[] = [];
    for await (const e of iterateDir(this.sup, dir)) {
      if (isDotOrDotDot(e)) continue;
      out.push(new Dirent(decodeName(e.name), e.name, e.ino, fileTypeOfFt(e.fileType), path));
    }
    return out;
  }

  /** Raw directory entries of an inode, '.' and '..' included (for tools like extraction). */
  async *entriesOfIno(ino: number): AsyncGenerator<DirEntry> {
    yield* iterateDir(this.sup, await readInode(this.sup, ino));
  }

  /** readFile(): the whole content of a regular file (following symlinks). */
  async readFile(path: string): Promise<Uint8Array> {
    const info = await resolvePath(this.sup, path, true, 'open');
    if (info.type === 'dir') throw new PosixError('EISDIR', 'read', path);
    const data = this.data;
    const w = this.wops;
    if (data !== undefined && w !== undefined && info.type === 'file' && data.has(info.ino)) {
      // Written through this mount and maybe not on disk yet: read through the page cache.
      return w.run(async () => {
        const live = await iget(this.sup, info.ino);
        const size = data.sizeOf(live);
        if (size > READFILE_MAX_BYTES) throw new PosixError('EFBIG', 'read', path, `file of ${size} bytes is too large for one buffer; use open()`);
        return data.read(live, 0, size);
      });
    }
    if (info.size > READFILE_MAX_BYTES) throw new PosixError('EFBIG', 'read', path, `file of ${info.size} bytes is too large for one buffer; use open()`);
    return this.readRange(info, 0, info.size);
  }

  /** Reads [pos, pos+length) of an inode's data, clipped at i_size. */
  async readRange(info: InodeInfo, pos: number, length: number): Promise<Uint8Array> {
    const n = Math.max(0, Math.min(length, info.size - pos));
    if (info.hasInlineData) return inlineBytes(info).slice(pos, pos + n);
    const out = new Uint8Array(n);
    if (n > 0) await readMappedRange(this.sup, new FileMap(this.sup, info), pos, n, out);
    return out;
  }

  /** readlink(): the target as a string (bytes that are not UTF-8 escaped as decodeName does); see readlinkBytes. */
  async readlink(path: string): Promise<string> {
    return decodeName(await this.readlinkBytes(path));
  }

  async readlinkBytes(path: string): Promise<Uint8Array> {
    const info = await resolvePath(this.sup, path, false, 'readlink');
    if (info.type !== 'symlink') throw new PosixError('EINVAL', 'readlink', path);
    return readSymlink(this.sup, info);
  }

  /** getxattr(): the value of one extended attribute, ENODATA if absent. */
  async getxattr(path: string, name: string): Promise<Uint8Array> {
    const info = await resolvePath(this.sup, path, false, 'getxattr');
    const e = (await readXattrs(this.sup, info)).find((x) => isListedXattr(x) && x.name === name);
    if (e === undefined) throw new PosixError('ENODATA', 'getxattr', path);
    return visibleXattrValue(e.name, e.value, info.ino);
  }

  /** listxattr(): names of the extended attributes a handler takes (isListedXattr). */
  async listxattr(path: string): Promise<string[]> {
    const info = await resolvePath(this.sup, path, false, 'listxattr');
    return (await readXattrs(this.sup, info)).filter(isListedXattr).map((x) => x.name);
  }

  /** All xattrs of an inode with values. */
  async xattrsOfIno(ino: number): Promise<{ name: string; value: Uint8Array }[]> {
    return readVisibleXattrs(this.sup, await readInode(this.sup, ino));
  }

  /**
   * Opens a file, like node's fsPromises.open: `flags` 'r' (default), 'r+', 'w', 'w+', 'wx',
   * 'wx+', 'a', 'a+', 'ax', 'ax+'; `mode` (default 0644) for a file it creates. On a read-write
   * mount the handle pins the inode: unlinking it while open defers its release to the last
   * close (the orphan list covers a crash).
   */
  async open(path: string, flags: OpenFlags = 'r', modeOrOpts?: number | FileOpenOptions): Promise<FileHandle> {
    const f = parseOpenFlags(flags);
    const opts: FileOpenOptions = typeof modeOrOpts === 'number' ? { mode: modeOrOpts } : (modeOrOpts ?? {});
    const w = this.wops;
    if (w === undefined) {
      if (f.write) throw new PosixError('EROFS', 'open', path, 'the image was opened read-only');
      if (opts.direct === true) throw new PosixError('EINVAL', 'open', path, 'O_DIRECT needs a read-write mount');
      const info = await resolvePath(this.sup, path, true, 'open');
      return new FileHandle(this, info, f);
    }
    // One queued operation: the lookup, the creation and the pin see the same namespace (no other
    // operation can create or unlink the name in between), with one path walk on a hit or a miss.
    const { info: live, created } = await w.run(async () => {
      const r = f.create
        ? await w.ns.openCreate(path, opts.mode ?? 0o644, { uid: opts.uid ?? w.owner.uid, gid: opts.gid ?? w.owner.gid }, f.excl)
        : { info: await w.ns.inode(path, true, 'open'), created: false };
      if (r.info.type === 'dir' && f.write) throw new PosixError('EISDIR', 'open', path);
      w.ns.pin(r.info.ino);
      return r;
    });
    const ino = live.ino;
    try {
      // O_TRUNC of a file this open just made has nothing to cut.
      if (f.trunc && !created && live.type === 'file') await this.truncateInfo(live, 0);
      let direct: DirectFile | undefined;
      if (opts.direct === true) {
        if (live.type !== 'file' || this.dio === undefined) throw new PosixError('EINVAL', 'open', path, 'O_DIRECT needs a regular file');
        direct = new DirectFile(this.dio, live, { read: f.read, write: f.write, append: f.append });
      }
      return new FileHandle(this, live, f, () => w.run(() => w.ns.unpin(ino)), direct);
    } catch (e) {
      await w.run(() => w.ns.unpin(ino));
      throw e;
    }
  }

  /** Loads an inode by number. */
  async inode(ino: number): Promise<InodeInfo> {
    return readInode(this.sup, ino);
  }

  /** The data layout of an inode (lstat semantics), for `ext4ts stat`. */
  async layout(path: string): Promise<InodeLayout> {
    const info = await resolvePath(this.sup, path, false, 'stat');
    const base = { xattrBlock: info.fileAcl, flags: info.flags, generation: info.generation };
    if (info.hasInlineData) return { kind: 'inline', extents: [], metaBlocks: [], ...base };
    if (info.type === 'symlink' && isFastSymlink(this.sup, info)) return { kind: 'fast-symlink', extents: [], metaBlocks: [], ...base };
    if (info.type === 'chr' || info.type === 'blk' || info.type === 'fifo' || info.type === 'sock') {
      return { kind: 'none', extents: [], metaBlocks: [], ...base };
    }
    if (info.hasExtents) {
      const list = await new FileMap(this.sup, info).extentList();
      return { kind: 'extents', depth: list.depth, extents: list.leaves.map((l) => ({ ...l })), metaBlocks: [...list.nodeBlocks], ...base };
    }
    const sizeBlocks = Math.ceil(info.size / this.sup.blockSize);
    const { data, meta } = await listIndirectBlocks(this.sup, info, sizeBlocks);
    const extents = data.flatMap((m) => (m.kind === 'mapped' ? [{ lblk: m.lblk, len: m.len, pblk: m.pblk, unwritten: false }] : []));
    return { kind: 'blockmap', extents, metaBlocks: meta, ...base };
  }

  // ---- writing (read-write mounts) -------------------------------------------------------

  private w(syscall: string): WriteOps {
    if (this.wops === undefined) throw new PosixError('EROFS', syscall, undefined, 'the image was opened read-only');
    return this.wops;
  }

  /** The mount's clock (SOURCE_DATE_EPOCH-aware callers pass a fixed one at open). */
  now(): ClockTime {
    return this.sup.now();
  }

  /** mkdir (mode default 0755); with `recursive`, like mkdir -p; returns the first directory made. */
  mkdir(path: string, opts: { mode?: number; recursive?: boolean; uid?: number; gid?: number } = {}): Promise<string | undefined> {
    return this.w('mkdir').mkdir(path, opts);
  }
  /** Creates an empty file (mode default 0644) or, with `node`, a FIFO, socket or device. */
  mknod(path: string, opts: { node?: NodeSpec; mode?: number; uid?: number; gid?: number } = {}): Promise<void> {
    return this.w('mknod').mknod(path, opts);
  }
  symlink(target: string | Uint8Array, path: string, opts: { uid?: number; gid?: number } = {}): Promise<void> {
    return this.w('symlink').symlink(target, path, opts);
  }
  link(existing: string, newPath: string): Promise<void> {
    return this.w('link').link(existing, newPath);
  }
  unlink(path: string): Promise<void> {
    return this.w('unlink').unlink(path);
  }
  rmdir(path: string): Promise<void> {
    return this.w('rmdir').rmdir(path);
  }
  rm(path: string, opts: { recursive?: boolean; force?: boolean } = {}): Promise<void> {
    return this.w('rm').rm(path, opts);
  }
  rename(from: string, to: string): Promise<void> {
    return this.w('rename').rename(from, to);
  }
  chmod(path: string, mode: number): Promise<void> {
    return this.w('chmod').chmod(path, mode);
  }
  /** chown (follows a final symlink unless `follow` is false, like lchown); -1 keeps an id. */
  chown(path: string, uid: number, gid: number, follow = true): Promise<void> {
    return this.w('chown').chown(path, uid, gid, follow);
  }
  /** utimes with nanosecond precision ({sec, nsec}), seconds, or Dates; undefined keeps one. */
  utimes(path: string, atime: TimeArg | undefined, mtime: TimeArg | undefined, follow = true): Promise<void> {
    return this.w('utimes').utimes(path, atime, mtime, follow);
  }
  /** truncate(2): through the page cache (dirty data written first, pages past the end dropped). */
  async truncate(path: string, size: number): Promise<void> {
    const w = this.w('truncate');
    if (!Number.isSafeInteger(size) || size < 0) throw new PosixError('EINVAL', 'truncate', path);
    const info = await resolvePath(this.sup, path, true, 'truncate');
    if (info.type === 'dir') throw new PosixError('EISDIR', 'truncate', path);
    if (info.type !== 'file') throw new PosixError('EINVAL', 'truncate', path);
    await this.truncateInfo(await w.run(() => iget(this.sup, info.ino)), size);
  }

  /** @internal truncate of an in-core inode (FileHandle.truncate, open with 'w'). */
  async truncateInfo(info: InodeInfo, size: number): Promise<void> {
    const w = this.w('truncate');
    const data = this.data;
    if (!Number.isSafeInteger(size) || size < 0) throw new PosixError('EINVAL', 'truncate');
    if (data === undefined || info.type !== 'file') {
      await w.run(() => w.ns.truncateInode(info, size));
      return;
    }
    if (info.flags & 0x10) throw new PosixError('EPERM', 'truncate', undefined, 'immutable file');
    await w.run(() => data.withInodeLock(info, () => data.truncate(info, size, (i, sz) => w.ns.truncateInode(i, sz))));
  }

  /**
   * fallocate(2) on a path: default mode preallocates unwritten extents (reads give zeros) and
   * grows the size; `keepSize` leaves the size; `punchHole` (with keepSize) frees the range;
   * `zeroRange` makes it read as zeros.
   */
  async fallocate(path: string, offset: number, len: number, mode: FallocateMode = {}): Promise<void> {
    const w = this.w('fallocate');
    const info = await resolvePath(this.sup, path, true, 'fallocate');
    if (info.type === 'dir') throw new PosixError('EISDIR', 'fallocate', path);
    if (info.type !== 'file') throw new PosixError('ENODEV', 'fallocate', path);
    await this.fallocateInfo(await w.run(() => iget(this.sup, info.ino)), offset, len, mode);
  }

  /** @internal FileHandle.utimes / FileHandle.chown. */
  async setattrInfo(info: InodeInfo, attr: { atime?: TimeArg | undefined; mtime?: TimeArg | undefined; uid?: number; gid?: number }): Promise<void> {
    const w = this.w('setattr');
    const times = attr.atime !== undefined || attr.mtime !== undefined;
    const atime = attr.atime === undefined ? undefined : toTimespec(attr.atime);
    const mtime = attr.mtime === undefined ? undefined : toTimespec(attr.mtime);
    // Synchronous when the inode's table block is cached: one section, no promise of its own.
    await w.run(() => {
      const owner = attr.uid !== undefined || attr.gid !== undefined ? w.ns.chownInode(info, attr.uid, attr.gid) : undefined;
      const setTimes = (): Promise<void> | undefined => (times ? w.ns.utimesInode(info, atime, mtime) : undefined);
      return owner === undefined ? setTimes() : owner.then(setTimes);
    });
  }

  /** @internal */
  async fallocateInfo(info: InodeInfo, offset: number, len: number, mode: FallocateMode): Promise<void> {
    const w = this.w('fallocate');
    const data = this.data;
    assert(data !== undefined, 'read-write mount without a data path');
    await w.run(() => data.withInodeLock(info, () => data.fallocate(info, offset, len, mode)));
  }

  /** appendFile(): creates the file if missing (mode default 0644) and writes at its end. */
  async appendFile(path: string, bytes: Uint8Array | string, opts: { mode?: number } = {}): Promise<void> {
    const fh = await this.open(path, 'a', opts.mode);
    try {
      await fh.write(typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes);
    } finally {
      await fh.close();
    }
  }

  /** The data path's counters for this mount (the keys of `ext4ts … --stats`). */
  dataStats(): DataStats {
    const z: DataStats = { bios: 0, ioEnds: 0, unwrittenIoEnds: 0, conversions: 0, pagesWritten: 0, bytesWritten: 0 };
    return this.data !== undefined ? { ...this.data.stats } : z;
  }
  setxattr(path: string, name: string, value: Uint8Array | string, flags: { create?: boolean; replace?: boolean } = {}): Promise<void> {
    return this.w('setxattr').setxattr(path, name, value, flags);
  }
  removexattr(path: string, name: string): Promise<void> {
    return this.w('removexattr').removexattr(path, name);
  }
  /** Writes every change to the image and flushes it (the image stays open). */
  async sync(): Promise<void> {
    const w = this.wops;
    const data = this.data;
    if (w === undefined) return;
    await this.dio?.drain();
    if (data !== undefined) await w.run(() => data.flushAll());
    await w.sync();
  }

  /** Unmounts: writes all dirty file data, then everything else back (read-write), releases the device. */
  async close(): Promise<void> {
    const data = this.data;
    if (this.wops !== undefined) {
      await this.dio?.drain();
      let lost: { ino: number; code: string }[] = [];
      await this.wops.run(async () => {
        try {
          if (data !== undefined) {
            await data.flushAll();
            lost = data.takeLegacyErrors();
          }
        } finally {
          await this.sup.close();
        }
      });
      const commitError = this.wops.takeCommitError();
      if (commitError !== undefined) throw commitError;
      // Write errors no fsync or close of a file reported: once, here (like AS_EIO at unmount).
      if (lost.length > 0) throw new PosixError('EIO', 'close', undefined, `write error on inode(s) ${lost.map((l) => l.ino).join(', ')}`);
    } else await this.sup.close();
  }

  /**
   * writeFile(): creates (mode default 0644) or truncates `path` and writes `bytes` into it.
   * `flag: 'wx'` fails with EEXIST when the name exists (O_EXCL); `uid`/`gid` give a new file's
   * owner and `atime`/`mtime` its times after the write. A file this call creates is made,
   * written and stamped in one operation (one path walk, no handle): the way an image builder
   * writes thousands of small files.
   */
  async writeFile(path: string, bytes: Uint8Array | string, opts: WriteFileOptions = {}): Promise<void> {
    const buf = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
    const w = this.wops;
    const data = this.data;
    const flag = opts.flag ?? 'w';
    if (flag !== 'w' && flag !== 'wx') throw new PosixError('EINVAL', 'open', path, `writeFile flag ${JSON.stringify(flag)} (w or wx)`);
    const atime = opts.atime === undefined ? undefined : toTimespec(opts.atime);
    const mtime = opts.mtime === undefined ? undefined : toTimespec(opts.mtime);
    if (w !== undefined && data !== undefined) {
      const owner = { uid: opts.uid ?? w.owner.uid, gid: opts.gid ?? w.owner.gid };
      const made = await w.run(async () => {
        const r = await w.ns.openCreate(path, opts.mode ?? 0o644, owner, flag === 'wx');
        if (!r.created) return false;
        if (buf.length > 0) await data.withInodeLock(r.info, () => data.write(r.info, 0, buf));
        if (atime !== undefined || mtime !== undefined) await w.ns.utimesInode(r.info, atime, mtime);
        return true;
      });
      if (made) return;
    }
    // An existing file (or a read-only mount's EROFS): through a handle, as open(2) and write(2).
    const fh = await this.open(path, flag, opts.mode);
    try {
      await fh.write(buf, 0, undefined, 0);
      if (atime !== undefined || mtime !== undefined) await fh.utimes(atime, mtime);
    } finally {
      await fh.close();
    }
  }

  /** @internal FileHandle.read on a read-write mount: through the page cache. */
  async readCached(info: InodeInfo, pos: number, len: number): Promise<Uint8Array> {
    const w = this.wops;
    const data = this.data;
    assert(w !== undefined && data !== undefined, 'readCached on a read-only mount');
    return w.run(() => data.read(info, pos, len));
  }

  /** @internal The write error `cursor` has not seen yet (reported by close), if any. */
  takeWriteError(info: InodeInfo, cursor: ErrCursor): ErrnoCode | undefined {
    if (this.data === undefined || !this.data.has(info.ino)) return undefined;
    return this.data.mappingOf(info).fileErrorCheck(cursor);
  }

  /** @internal FileHandle.write; `pos` -1 appends at the in-memory end of file. */
  async writeInode(info: InodeInfo, pos: number, bytes: Uint8Array): Promise<number> {
    const w = this.w('write');
    const data = this.data;
    assert(data !== undefined, 'read-write mount without a data path');
    if (info.type !== 'file') throw new PosixError(info.type === 'dir' ? 'EISDIR' : 'EINVAL', 'write');
    return w.run(() => data.withInodeLock(info, () => data.write(info, pos === -1 ? data.sizeOf(info) : pos, bytes)));
  }

  /** @internal FileHandle.sync: fsync of one inode, reporting a write error once per cursor. */
  async fsyncInode(info: InodeInfo, cursor: ErrCursor | undefined): Promise<void> {
    const w = this.wops;
    const data = this.data;
    if (w === undefined || data === undefined || info.type !== 'file') return;
    await w.run(() => data.withInodeLock(info, () => data.fsync(info, cursor)));
  }

  /** @internal An errseq cursor for a new FileHandle. */
  errCursor(info: InodeInfo): ErrCursor | undefined {
    return this.data !== undefined && info.type === 'file' ? this.data.openErrCursor(info) : undefined;
  }
}

function isDotOrDotDot(e: DirEntry): boolean {
  return e.name[0] === 0x2e && (e.name.length === 1 || (e.name.length === 2 && e.name[1] === 0x2e));
}

/** An open file, like node's fsPromises FileHandle (positions are explicit or append). */
export class FileHandle {
  private closed = false;
  /** This open file's position in its mapping's write-error sequence (errseq, like f_wb_err). */
  private cursor: ErrCursor | undefined;
  /** @internal */
  constructor(
    private readonly fs: Ext4,
    readonly info: InodeInfo,
    private readonly flags: ParsedFlags = parseOpenFlags('r'),
    private readonly onClose?: () => Promise<void>,
    /** O_DIRECT: reads and writes go to DirectIo (never inside the mount's operation queue). */
    private readonly direct?: DirectFile,
  ) {
    this.cursor = flags.write || fs.data !== undefined ? fs.errCursor(info) : undefined;
  }

  private check(syscall: string, need: 'read' | 'write'): void {
    if (this.closed) throw new PosixError('EBADF', syscall);
    if (need === 'read' && !this.flags.read) throw new PosixError('EBADF', syscall, undefined, 'not open for reading');
    if (need === 'write' && !this.flags.write) throw new PosixError('EBADF', syscall, undefined, 'not open for writing');
  }

  /** Reads up to `length` bytes at `position` into `buffer` at `offset`. */
  async read(buffer: Uint8Array, offset = 0, length = buffer.length - offset, position = 0): Promise<{ bytesRead: number; buffer: Uint8Array }> {
    this.check('read', 'read');
    if (this.info.type === 'dir') throw new PosixError('EISDIR', 'read');
    if (this.direct !== undefined) return this.direct.read(buffer, offset, length, position);
    const want = Math.min(length, buffer.length - offset);
    const data = this.fs.data !== undefined && this.info.type === 'file'
      ? await this.fs.readCached(this.info, position, want)
      : await this.fs.readRange(this.info, position, want);
    buffer.set(data, offset);
    return { bytesRead: data.length, buffer };
  }

  /**
   * Writes `length` bytes of `buffer` from `offset` at file position `position` through the page
   * cache (delayed allocation); with 'a' flags at the end of the file whatever `position` says.
   */
  async write(buffer: Uint8Array | string, offset = 0, length?: number, position = 0): Promise<{ bytesWritten: number; buffer: Uint8Array }> {
    this.check('write', 'write');
    if (this.direct !== undefined) {
      if (typeof buffer === 'string') throw new PosixError('EINVAL', 'write', undefined, 'O_DIRECT writes take an aligned Uint8Array');
      return this.direct.write(buffer, offset, length ?? buffer.length - offset, position);
    }
    const bytes = typeof buffer === 'string' ? new TextEncoder().encode(buffer) : buffer;
    const n = length ?? bytes.length - offset;
    if (offset < 0 || n < 0 || offset + n > bytes.length) throw new PosixError('EINVAL', 'write', undefined, `offset ${offset} + length ${n} outside a buffer of ${bytes.length}`);
    const written = await this.fs.writeInode(this.info, this.flags.append ? -1 : position, bytes.subarray(offset, offset + n));
    return { bytesWritten: written, buffer: bytes };
  }

  /**
   * io_setup for an O_DIRECT handle: an asynchronous context whose submit() returns at once with
   * a promise per request (see io/aio.ts for ordering and cancellation).
   */
  aio(opts: Omit<AioContextOptions, 'readable' | 'writable'> = {}): AioContext {
    if (this.closed) throw new PosixError('EBADF', 'io_setup');
    if (this.direct === undefined) throw new PosixError('EINVAL', 'io_setup', undefined, 'asynchronous I/O needs a handle opened with { direct: true }');
    return this.direct.aio(opts);
  }

  /** ftruncate: the file gets `len` bytes (default 0). */
  async truncate(len = 0): Promise<void> {
    this.check('ftruncate', 'write');
    await this.fs.truncateInfo(this.info, len);
  }

  /** fallocate(2) (see Ext4.fallocate). */
  async fallocate(offset: number, len: number, mode: FallocateMode = {}): Promise<void> {
    this.check('fallocate', 'write');
    if (this.info.type !== 'file') throw new PosixError('ENODEV', 'fallocate');
    await this.fs.fallocateInfo(this.info, offset, len, mode);
  }

  /** futimens: nanosecond times ({sec, nsec}), seconds or Dates; undefined keeps one. */
  utimes(atime: TimeArg | undefined, mtime: TimeArg | undefined): Promise<void> {
    if (this.closed) return Promise.reject(new PosixError('EBADF', 'futimens'));
    return this.fs.setattrInfo(this.info, { atime, mtime });
  }

  /** fchown (numeric ids). */
  async chown(uid: number, gid: number): Promise<void> {
    if (this.closed) throw new PosixError('EBADF', 'fchown');
    await this.fs.setattrInfo(this.info, { uid, gid });
  }

  /** fsync: writes this file's data and the metadata; a write error is reported once (EIO). */
  async sync(): Promise<void> {
    if (this.closed) throw new PosixError('EBADF', 'fsync');
    this.cursor ??= this.fs.errCursor(this.info);
    await this.fs.fsyncInode(this.info, this.cursor);
  }

  /** fdatasync: the same as sync here (the inode's size and blocks are data for this purpose). */
  datasync(): Promise<void> {
    return this.sync();
  }

  async stat(): Promise<Stats> {
    if (this.closed) throw new PosixError('EBADF', 'fstat');
    return this.fs.statIno(this.info.ino);
  }

  /**
   * close: releases the handle; a write error of this file that no fsync reported yet is
   * reported here, once (EIO), after the handle is released.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.direct !== undefined) await this.direct.close();
    const err = this.cursor !== undefined ? this.fs.takeWriteError(this.info, this.cursor) : undefined;
    if (this.onClose !== undefined) await this.onClose();
    if (err !== undefined) throw new PosixError(err, 'close', undefined, `write error on inode ${this.info.ino}`);
  }
}

/** Data runs of a file: byte ranges that hold written data (holes and unwritten extents omitted). */
export async function* dataRuns(fs: Ext4, info: InodeInfo): AsyncGenerator<{ pos: number; len: number }> {
  if (info.size === 0) return;
  if (info.hasInlineData) {
    yield { pos: 0, len: info.size };
    return;
  }
  const bs = fs.sup.blockSize;
  const fmap = new FileMap(fs.sup, info);
  const lastBlock = Math.ceil(info.size / bs);
  for (let lblk = 0; lblk < lastBlock; ) {
    const m = await fmap.map(lblk, Math.min(lastBlock - lblk, 1 << 20));
    if (m.kind === 'mapped') {
      const pos = lblk * bs;
      yield { pos, len: Math.min(info.size, (lblk + m.len) * bs) - pos };
    }
    lblk += m.len;
  }
}

/**
 * The journal superblock, checked as the kernel checks it at mount (a bad one refuses the
 * mount); with noRecovery the journal is ignored like `-o noload`, so a bad one is only reported.
 */
async function journalOf(sup: Ext4Super, noRecovery: boolean): Promise<FsInfo['journal']> {
  if (!sup.features.hasJournal) return undefined;
  if (sup.sb.s_journal_inum === 0 && sup.sb.s_journal_dev !== 0) return { external: true };
  try {
    return await loadJournalInfo(sup);
  } catch (e) {
    if (!noRecovery || !(e instanceof Ext4Error)) throw e;
    return { error: e.message };
  }
}
