/**
 * The image builder: `build({ source, image })` turns a host directory, a tar archive or a JSON
 * manifest into an ext4 image, without root, through the same engine as every other write (the
 * public Ext4 API: mkfs, mkdir, mknod, symlink, link, setxattr, open + FileHandle.write, utimes,
 * close). There is no second write path.
 *
 * Order of work, and why:
 * 1. Scan the source (one cheap pass: metadata only) into entries in creation order.
 * 2. Size the image if no size was given (plan.ts), make the filesystem into a temporary file
 *    next to IMAGE and check that the content fits before writing any of it.
 * 3. Create every entry in sorted path order (parents first): directory insertion order, inode
 *    numbers and block placement, and so the image, depend only on the content. Owners and modes
 *    go in at creation, xattrs right after. A file with content is created by its open, written
 *    (its content read ahead of it), given its times and closed in the same step: writing moves
 *    mtime, and one path walk serves it all. Entries with no content get their times at once.
 * 4. A compressed tar's members that its first pass could not keep in memory are created empty
 *    in step 3 and written by a second pass, in archive order.
 * 5. Directories' times last: creating children moved them.
 * 6. close() writes everything back; the temporary file is renamed to IMAGE. On any failure the
 *    temporary file is removed, so no half-built image is ever left under IMAGE's name.
 *
 * Reproducible builds (SOURCE_DATE_EPOCH set, or `reproducible`): the clock of mkfs and of the
 * mount is fixed at SOURCE_DATE_EPOCH (or, without it, at the newest mtime in the source); atimes
 * and mtimes later than that are clamped to it; the UUID is derived from a hash of the epoch, the
 * label and the sorted entry list (paths, types, modes, owners, sizes, times, link targets), and
 * mkfs derives the hash seed from the UUID. Two builds of the same content are byte-identical.
 * ctime cannot be set through any API (as after `cp -a`): it is the build's clock, so
 * SOURCE_DATE_EPOCH under reproducible builds.
 */
import { rename, unlink, lstat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { Ext4, type FileHandle, type OpenOptions } from '../api/ext4.js';
import { mkfs, type MkfsOptions, type MkfsResult } from '../api/mkfs.js';
import { fixedClock, systemClock, clockFromSourceDateEpoch, type Clock } from '../runtime/clock.js';
import { seededRandom } from '../runtime/random.js';
import { PosixError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { compareTimes, type BuildEntry, type Chunk, type Source, type Timespec } from './source.js';
import { readAhead, contentLength, isLargeFile } from './content.js';
import { contentNeed, planSize, type ContentNeed } from './plan.js';
import { openSource } from './detect.js';

/** Options of build(). */
export interface BuildOptions {
  /** A host directory, a tar archive (plain or gzip) or a JSON manifest (see manifest-source.ts). */
  source: string;
  /** The image file to make (replaced if it exists, only once the build succeeded). */
  image: string;
  /** Image size in bytes; default: sized to fit the content plus the margin. */
  sizeBytes?: number | undefined;
  /** Headroom over the content when sizing, in percent (default 10). */
  marginPercent?: number | undefined;
  /** Number of inodes (default: those the content needs plus the margin, or mkfs's ratio with sizeBytes). */
  inodesCount?: number | undefined;
  /** mkfs parameters (block size, label, UUID, features, …); with auto-sizing the block size defaults to 4096. */
  mkfs?: Omit<MkfsOptions, 'sizeBytes' | 'inodesCount' | 'reproducible'> | undefined;
  /** Owner of the root directory (after the maps below); default the source root's. */
  rootOwner?: { uid: number; gid: number } | undefined;
  /** Every entry owned by 0:0 (the root directory too, unless rootOwner says otherwise). */
  allRoot?: boolean | undefined;
  /** uid and gid translation, applied to every entry (ids not in a map stay as they are). */
  uidMap?: ReadonlyMap<number, number> | undefined;
  gidMap?: ReadonlyMap<number, number> | undefined;
  /** Fixed clock, derived UUID, clamped times (default: when SOURCE_DATE_EPOCH is set). */
  reproducible?: boolean | undefined;
  /** Environment to read SOURCE_DATE_EPOCH from (default process.env). */
  env?: Record<string, string | undefined> | undefined;
  /** Called as the build advances (often: throttle any rendering). */
  onProgress?: ((p: BuildProgress) => void) | undefined;
  /** Files whose content is read ahead of the one being written (default 8). */
  readAheadFiles?: number | undefined;
  /**
   * Member bytes of a compressed tar kept in memory by the first pass (default 64 MiB); members
   * beyond it are read by a second pass over the archive.
   */
  memoryBytes?: number | undefined;
  /**
   * Page-cache tuning of the mount the build writes through (see OpenOptions). Defaults here:
   * 16 KiB pages (a 20,000-file tree built ~10% faster than with 4 KiB pages), a 16 MiB dirty
   * limit and a 32 MiB cache.
   */
  mount?: Pick<OpenOptions, 'pageSizeBytes' | 'dirtyLimitBytes' | 'cacheLimitBytes' | 'maxBioVecs' | 'metadataDirtyLimitBytes' | 'cacheBlocks'> | undefined;
}

/**
 * `write`: every entry is created, and file content written, in one pass; `stream`: a compressed
 * tar's members that did not fit in memory, from a second pass over the archive.
 */
export type BuildPhase = 'scan' | 'mkfs' | 'write' | 'stream' | 'times' | 'flush' | 'done';

export interface BuildProgress {
  phase: BuildPhase;
  entriesDone: number;
  entriesTotal: number;
  /** Files with content written / to write. */
  filesDone: number;
  filesTotal: number;
  /** Content bytes written / to write (holes excluded). */
  bytesDone: number;
  bytesTotal: number;
}

/** What build() made. */
export interface BuildSummary {
  image: string;
  source: string;
  sourceKind: Source['kind'];
  sizeBytes: number;
  autoSized: boolean;
  blockSize: number;
  blocksCount: number;
  freeBlocksCount: number;
  inodesCount: number;
  freeInodesCount: number;
  uuid: string;
  reproducible: boolean;
  /** The fixed clock of a reproducible build (seconds). */
  epoch?: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  devices: number;
  fifos: number;
  sockets: number;
  xattrs: number;
  /** Content bytes written (holes excluded). */
  bytes: number;
  sparseFiles: number;
  warnings: string[];
}

/** Page-cache page size of the build's mount (see BuildOptions.mount). */
const BUILD_PAGE_BYTES = 16384;
/**
 * Dirty and cache limits of the build's mount: a build never reads back what it wrote, so a
 * smaller cache than the default costs nothing (20,000 files: the same time, 30 MiB less RSS).
 */
const BUILD_DIRTY_BYTES = 16 << 20;
const BUILD_CACHE_BYTES = 32 << 20;
/**
 * Metadata limits of the build's mount: commit every 8 MiB of changed metadata blocks and keep
 * 2,048 clean ones, so the build's memory does not grow with the number of files.
 */
const BUILD_METADATA_DIRTY_BYTES = 8 << 20;
const BUILD_METADATA_CACHE_BLOCKS = 2048;

/** Makes IMAGE from SOURCE (see the module comment). */
export async function build(opts: BuildOptions): Promise<BuildSummary> {
  const b = new Builder(opts);
  return b.run();
}

/** Where the build stands; one per build() call. */
class Builder {
  private readonly progress: BuildProgress = {
    phase: 'scan', entriesDone: 0, entriesTotal: 0, filesDone: 0, filesTotal: 0, bytesDone: 0, bytesTotal: 0,
  };
  private readonly tmp: string;
  private fs: Ext4 | undefined;
  private clock: Clock = systemClock;
  private epoch: number | undefined;
  /** Content bytes written (holes excluded), for the summary. */
  private bytesWritten = 0;
  /** The image's block size (set when writing starts). */
  private blockSize = 0;

  constructor(private readonly opts: BuildOptions) {
    this.tmp = join(dirname(opts.image), `.${basename(opts.image)}.ext4ts-build-${process.pid}`);
  }

  private report(phase?: BuildPhase): void {
    if (phase !== undefined) this.progress.phase = phase;
    this.opts.onProgress?.({ ...this.progress });
  }

  async run(): Promise<BuildSummary> {
    const o = this.opts;
    // The image is built aside and renamed over IMAGE: never over a device or a directory.
    const existing = await lstat(o.image).catch(() => undefined);
    if (existing !== undefined && !existing.isFile()) {
      throw new PosixError('EINVAL', 'build', o.image, 'the image must be a regular file (builds write a new file and rename it into place)');
    }
    this.report('scan');
    const source = await openSource(o.source, o.memoryBytes);
    const entries = source.entries;
    this.mapOwners(entries);
    const reproducible = this.setClock(entries);
    const files = entries.filter(hasContent);
    this.progress.entriesTotal = entries.length;
    this.progress.filesTotal = files.length;
    this.progress.bytesTotal = files.reduce((n, e) => n + contentLength(e), 0);
    this.report('mkfs');
    try {
      const made = await this.makeFilesystem(entries, reproducible);
      const fs = await Ext4.open(this.tmp, {
        pageSizeBytes: BUILD_PAGE_BYTES, dirtyLimitBytes: BUILD_DIRTY_BYTES, cacheLimitBytes: BUILD_CACHE_BYTES,
        metadataDirtyLimitBytes: BUILD_METADATA_DIRTY_BYTES, cacheBlocks: BUILD_METADATA_CACHE_BLOCKS,
        ...o.mount, readOnly: false, clock: this.clock,
        // The image is a temporary file, removed if the build fails: commits need no cache
        // flush, and close flushes once.
        barrier: false,
      });
      this.fs = fs;
      await this.writeTree(fs, source, entries);
      await this.dirTimes(fs, entries);
      this.report('flush');
      this.fs = undefined;
      await fs.close();
      // After close: the superblock's free counts were summed by the final commit.
      const info = fs.info();
      await rename(this.tmp, o.image);
      this.report('done');
      return this.summary(source, made, info, reproducible);
    } catch (e) {
      await this.abandon();
      throw e;
    }
  }

  /** After a failure: the mount is closed (errors ignored) and the temporary image removed. */
  private async abandon(): Promise<void> {
    const fs = this.fs;
    this.fs = undefined;
    if (fs !== undefined) await fs.close().catch(() => undefined);
    await unlink(this.tmp).catch(() => undefined);
  }

  /** --all-root, --uid-map/--gid-map, then --root-owner for "/". */
  private mapOwners(entries: BuildEntry[]): void {
    const o = this.opts;
    for (const e of entries) {
      if (o.allRoot) {
        e.uid = 0;
        e.gid = 0;
      }
      e.uid = o.uidMap?.get(e.uid) ?? e.uid;
      e.gid = o.gidMap?.get(e.gid) ?? e.gid;
    }
    // OK to index: finishEntries puts the root first.
    const root = entries[0]!;
    if (o.rootOwner !== undefined) {
      root.uid = o.rootOwner.uid;
      root.gid = o.rootOwner.gid;
    }
  }

  /**
   * Picks the clock: fixed for reproducible builds (SOURCE_DATE_EPOCH, else the newest mtime),
   * with atimes and mtimes clamped to it; the system clock otherwise. Returns `reproducible`.
   */
  private setClock(entries: BuildEntry[]): boolean {
    const sde = clockFromSourceDateEpoch(this.opts.env ?? process.env);
    const reproducible = this.opts.reproducible ?? sde !== undefined;
    if (!reproducible) return false;
    let epoch = sde?.now().sec;
    if (epoch === undefined) {
      epoch = 0;
      for (const e of entries) if (e.mtime !== undefined && e.mtime.sec > epoch) epoch = e.mtime.sec;
    }
    this.epoch = epoch;
    this.clock = fixedClock(epoch);
    const limit: Timespec = { sec: epoch, nsec: 0 };
    for (const e of entries) {
      if (e.atime !== undefined && compareTimes(e.atime, limit) > 0) e.atime = limit;
      if (e.mtime !== undefined && compareTimes(e.mtime, limit) > 0) e.mtime = limit;
    }
    return true;
  }

  /**
   * mkfs into the temporary file: at the given size (failing early with ENOSPC when the content
   * clearly cannot fit), or sized by plan.ts and grown until mkfs's result offers the room.
   */
  private async makeFilesystem(entries: readonly BuildEntry[], reproducible: boolean): Promise<MkfsResult> {
    const o = this.opts;
    const auto = o.sizeBytes === undefined;
    const bs = o.mkfs?.blockSize ?? (auto ? 4096 : undefined);
    const base: MkfsOptions = { ...o.mkfs, reproducible };
    if (bs !== undefined) base.blockSize = bs;
    // OK to index: finishEntries puts the root first. mkfs gives it its owner directly.
    base.rootOwner = { uid: entries[0]!.uid, gid: entries[0]!.gid };
    const uuid = o.mkfs?.uuid ?? (reproducible ? deriveUuid(entries, this.epoch ?? 0, o.mkfs?.label ?? '') : undefined);
    if (uuid !== undefined) base.uuid = uuid;
    const random = uuid !== undefined && reproducible ? { random: seededRandom(typeof uuid === 'string' ? new TextEncoder().encode(uuid) : uuid) } : {};
    const mk = (sizeBytes: number, inodesCount: number | undefined): Promise<MkfsResult> =>
      mkfs(this.tmp, { ...base, ...random, sizeBytes, ...(inodesCount !== undefined ? { inodesCount } : {}), clock: this.clock, env: o.env ?? process.env });
    if (!auto) {
      // OK to assert sizeBytes: `auto` is false.
      const r = await mk(o.sizeBytes!, o.inodesCount);
      this.checkFits(contentNeed(entries, r.blockSize), r, o.sizeBytes!);
      return r;
    }
    const need = contentNeed(entries, bs ?? 4096);
    const input = {
      need, blockSize: bs ?? 4096, inodeSize: o.mkfs?.inodeSize ?? 256, marginPercent: o.marginPercent ?? 10,
      reservedPercent: o.mkfs?.reservedPercent ?? 5, inodesCount: o.inodesCount,
    };
    let plan = planSize(input);
    for (let attempt = 0; ; attempt++) {
      const r = await mk(plan.sizeBytes, plan.inodesCount);
      const free = r.freeBlocksCount - r.reservedBlocksCount;
      if ((free >= plan.wantFreeBlocks && r.freeInodesCount >= plan.wantFreeInodes) || attempt >= 4) {
        if (o.inodesCount !== undefined) this.checkFits(need, r, plan.sizeBytes);
        return r;
      }
      // The estimate of the overhead fell short: grow by what is missing, and some.
      const short = Math.max(0, plan.wantFreeBlocks - free) * r.blockSize;
      plan = { ...plan, sizeBytes: Math.ceil((plan.sizeBytes + short * 1.25 + (4 << 20)) / (1 << 20)) * (1 << 20) };
    }
  }

  /**
   * ENOSPC before writing anything when the content needs more blocks or inodes than mkfs made.
   * The root-reserved blocks count as free: the engine writes as root (like mke2fs -d).
   */
  private checkFits(need: ContentNeed, r: MkfsResult, sizeBytes: number): void {
    const free = r.freeBlocksCount;
    const exact = need.blocks; // without margin: the estimate errs on the large side already
    if (exact > free) {
      throw new PosixError('ENOSPC', 'build', this.opts.image,
        `the content needs about ${mib(exact * r.blockSize)} MiB but an image of ${mib(sizeBytes)} MiB offers ${mib(free * r.blockSize)} MiB; omit SIZE to size the image automatically`);
    }
    if (need.inodes - 1 > r.freeInodesCount) {
      throw new PosixError('ENOSPC', 'build', this.opts.image,
        `the content needs ${need.inodes} inodes but the image has ${r.freeInodesCount} free; give more with --inodes (-N)`);
    }
  }

  // ---- 3 and 4. inodes and content ----------------------------------------------------------

  /**
   * Creates every entry in order (module comment, steps 3 and 4): a file with content is created,
   * written and closed in one go (one path walk, its content read ahead of it); a compressed
   * tar's members that the first pass did not keep are created empty and written afterwards.
   */
  private async writeTree(fs: Ext4, source: Source, entries: readonly BuildEntry[]): Promise<void> {
    this.report('write');
    const blockSize = fs.info().blockSize;
    this.blockSize = blockSize;
    const lostFound = entries.some((e) => e.path === '/lost+found');
    const streamed = new Map<number, BuildEntry>();
    const direct = entries.filter((e) => hasContent(e) && e.content?.kind !== 'stream');
    const contents = readAhead(direct, { blockSize, depth: this.opts.readAheadFiles ?? 8 });
    try {
      for (const e of entries) {
        // mkfs made a lost+found directory; a source that has something else there replaces it.
        if (e.path === '/lost+found' && e.kind !== 'dir') await fs.rmdir('/lost+found');
        if (hasContent(e) && e.content?.kind !== 'stream') {
          const r = await contents.next();
          // OK to assert: readAhead hands out `direct` in order, and `direct` is `entries` filtered.
          assert(r.done !== true && r.value.entry === e, () => `build: content out of order at ${e.path}`);
          await withEntry(e, () => this.writeContent(fs, e, r.value.chunks, true));
        } else {
          if (e.kind === 'file' && e.content?.kind === 'stream') streamed.set(e.content.member, e);
          await withEntry(e, () => this.create(fs, e, lostFound));
        }
        this.progress.entriesDone++;
        if ((this.progress.entriesDone & 255) === 0) this.report();
      }
    } finally {
      await contents.return(undefined);
    }
    this.report();
    if (streamed.size > 0) {
      this.report('stream');
      // OK to assert streamContents: only compressed tars make 'stream' content, and they have it.
      await source.streamContents!(streamed, (entry, chunks) => withEntry(entry, () => this.writeContent(fs, entry, chunks, false)));
    }
  }

  /** An entry without content of its own (a file with content goes through writeContent). */
  private async create(fs: Ext4, e: BuildEntry, sourceHasLostFound: boolean): Promise<void> {
    const owner = { uid: e.uid, gid: e.gid };
    switch (e.kind) {
      case 'dir':
        if (e.path === '/' || (e.path === '/lost+found' && sourceHasLostFound)) await this.adoptDir(fs, e);
        else await fs.mkdir(e.path, { mode: e.perm, ...owner });
        break;
      case 'file':
        await fs.mknod(e.path, { mode: e.perm, ...owner });
        // A file that is one hole gets its size now; others when their content is written.
        if (contentLength(e) === 0 && e.sizeBytes > 0) await fs.truncate(e.path, e.sizeBytes);
        break;
      case 'symlink':
        // OK to assert the target: every source sets it for symlinks.
        await fs.symlink(e.target!, e.path, owner);
        break;
      case 'hardlink':
        // OK to assert linkTo: finishEntries sets it for every hard link.
        await fs.link(e.linkTo!, e.path);
        return;
      case 'chr':
      case 'blk':
        await fs.mknod(e.path, { node: { type: e.kind, major: e.major ?? 0, minor: e.minor ?? 0 }, mode: e.perm, ...owner });
        break;
      case 'fifo':
      case 'sock':
        await fs.mknod(e.path, { node: { type: e.kind }, mode: e.perm, ...owner });
        break;
    }
    for (const x of e.xattrs) await fs.setxattr(e.path, x.name, x.value);
    if (e.kind !== 'dir' && !hasContent(e)) await this.setTimes(fs, e);
  }

  /** The root (and a source's lost+found) exist already: give them the source's mode and owner. */
  private async adoptDir(fs: Ext4, e: BuildEntry): Promise<void> {
    const st = await fs.lstat(e.path);
    if ((st.mode & 0o7777) !== e.perm) await fs.chmod(e.path, e.perm);
    if (st.uid !== e.uid || st.gid !== e.gid) await fs.chown(e.path, e.uid, e.gid);
  }

  /** utimes with the entry's times (a missing one: the clock's now); symlinks themselves. */
  private async setTimes(fs: Ext4, e: BuildEntry): Promise<void> {
    if (e.atime === undefined && e.mtime === undefined) return;
    const now = this.clock.now();
    await fs.utimes(e.path, e.atime ?? now, e.mtime ?? now, false);
  }

  /**
   * One file with content: created by the open (`create`; else made empty earlier), its chunks
   * at their positions, the size (a trailing hole), its xattrs, then its times, since writing
   * moves mtime. Large files go through direct I/O: their chunks are block multiples but the
   * last, which is padded with zeros to a whole block and cut back by the final truncate (which,
   * as ftruncate does, keeps the zeros past EOF in that block).
   */
  private async writeContent(fs: Ext4, e: BuildEntry, chunks: AsyncIterable<Chunk>, create: boolean): Promise<void> {
    const direct = isLargeFile(e);
    const fh: FileHandle = create
      ? await fs.open(e.path, 'wx', { mode: e.perm, uid: e.uid, gid: e.gid, direct })
      : await fs.open(e.path, 'r+', { direct });
    const bs = this.blockSize;
    try {
      let end = 0;
      const before = this.progress.bytesDone;
      for await (const c of chunks) {
        let bytes = c.bytes;
        if (direct && bytes.length % bs !== 0) {
          bytes = new Uint8Array(Math.ceil(bytes.length / bs) * bs);
          bytes.set(c.bytes);
        }
        await fh.write(bytes, 0, bytes.length, c.pos);
        end = c.pos + c.bytes.length;
        this.bytesWritten += c.bytes.length;
        // Progress counts the bytes gone through, holes skipped in a sparse source included.
        this.progress.bytesDone = before + Math.min(contentLength(e), end);
        this.report();
      }
      this.progress.bytesDone = before + contentLength(e);
      if (end < e.sizeBytes || (direct && end % bs !== 0)) await fh.truncate(e.sizeBytes);
      if (create) for (const x of e.xattrs) await fs.setxattr(e.path, x.name, x.value);
      // futimens on the open file: no second path walk.
      if (e.atime !== undefined || e.mtime !== undefined) {
        const now = this.clock.now();
        await fh.utimes(e.atime ?? now, e.mtime ?? now);
      }
    } finally {
      await fh.close();
    }
    this.progress.filesDone++;
    this.report();
  }

  // ---- 5. directories' times ---------------------------------------------------------------

  private async dirTimes(fs: Ext4, entries: readonly BuildEntry[]): Promise<void> {
    this.report('times');
    for (let i = entries.length - 1; i >= 0; i--) {
      // OK to index: i is inside the array.
      const e = entries[i]!;
      if (e.kind === 'dir') await withEntry(e, () => this.setTimes(fs, e));
    }
  }

  private summary(source: Source, made: MkfsResult, info: ReturnType<Ext4['info']>, reproducible: boolean): BuildSummary {
    const count = (k: BuildEntry['kind']): number => source.entries.filter((e) => e.kind === k).length;
    const s: BuildSummary = {
      image: this.opts.image, source: this.opts.source, sourceKind: source.kind,
      sizeBytes: info.blocksCount * info.blockSize, autoSized: this.opts.sizeBytes === undefined,
      blockSize: info.blockSize, blocksCount: info.blocksCount, freeBlocksCount: info.freeBlocksCount,
      inodesCount: info.inodesCount, freeInodesCount: info.freeInodesCount, uuid: made.uuid, reproducible,
      files: count('file'), dirs: count('dir'), symlinks: count('symlink'), hardlinks: count('hardlink'),
      devices: count('chr') + count('blk'), fifos: count('fifo'), sockets: count('sock'),
      xattrs: source.entries.reduce((n, e) => n + e.xattrs.length, 0), bytes: this.bytesWritten,
      sparseFiles: source.entries.filter((e) => e.kind === 'file' && e.allocBytes < e.sizeBytes).length,
      warnings: [...source.warnings],
    };
    if (this.epoch !== undefined) s.epoch = this.epoch;
    return s;
  }
}

/** Runs one step for an entry; a POSIX error gets the entry's path and origin in its message. */
async function withEntry<T>(e: BuildEntry, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof PosixError) || err.syscall === 'build') throw err;
    // The engine's message is "CODE: detail, syscall 'path'": keep the detail, name the entry.
    const tail = `, ${err.syscall}${err.path !== undefined ? ` '${err.path}'` : ''}`;
    let detail = err.message.startsWith(`${err.code}: `) ? err.message.slice(err.code.length + 2) : err.message;
    if (detail.endsWith(tail)) detail = detail.slice(0, -tail.length);
    const hint = err.code === 'ENOSPC' ? '; the image is too small for the content (omit SIZE to size it automatically, or raise --margin)' : '';
    throw new PosixError(err.code, err.syscall, e.path, `${detail}${hint}; while adding ${e.origin}`);
  }
}

/** A regular file with content bytes to write (not one hole, not empty). */
function hasContent(e: BuildEntry): boolean {
  return e.kind === 'file' && contentLength(e) > 0;
}

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

/**
 * A UUID derived from what the image will hold (reproducible builds): SHA-256 over the epoch,
 * the label and every entry's metadata, with the RFC 4122 version 5 (name-based) and variant bits.
 */
export function deriveUuid(entries: readonly BuildEntry[], epoch: number, label: string): Uint8Array {
  const h = createHash('sha256');
  h.update(`ext4ts-build-v1\n${epoch}\n${label}\n`);
  for (const e of entries) {
    const t = (x: Timespec | undefined): string => (x === undefined ? '-' : `${x.sec}.${x.nsec}`);
    h.update(`${e.path}\0${e.kind}\0${e.perm}\0${e.uid}\0${e.gid}\0${e.sizeBytes}\0${t(e.atime)}\0${t(e.mtime)}\0`);
    h.update(`${e.linkTo ?? ''}\0${e.major ?? ''}\0${e.minor ?? ''}\0`);
    if (e.target !== undefined) h.update(e.target);
    for (const x of e.xattrs) {
      h.update(`\0${x.name}\0`);
      h.update(x.value);
    }
    h.update('\n');
  }
  const u = new Uint8Array(h.digest().subarray(0, 16));
  // OK to index: u has 16 bytes.
  u[6] = (u[6]! & 0x0f) | 0x50;
  u[8] = (u[8]! & 0x3f) | 0x80;
  return u;
}
