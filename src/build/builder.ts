/**
 * The image builder: `build({ source, image })` turns a host directory, a tar archive or a JSON
 * manifest into an ext4 image, without root, through the same engine as every other write (the
 * public Ext4 API: mkfs, mkdir, mknod, symlink, link, setxattr, open + FileHandle.write, utimes,
 * close). There is no second write path.
 *
 * Order of work, and why:
 * 1. Walk the source once to plan (metadata only): counts, what the content needs, the root's
 *    owner, the newest mtime and the derived UUID. No list of the tree is kept for it (a
 *    directory source keeps its first walk's list only for small trees; see keepEntries).
 * 2. Size the image if no size was given (plan.ts), make the filesystem into a temporary file
 *    next to IMAGE and check that the content fits before writing any of it.
 * 3. Walk the source again and create every entry in that order (parents first, names sorted):
 *    directory insertion order, inode numbers and block placement, and so the image, depend
 *    only on the content. Owners and modes go in at creation, xattrs right after. A file with
 *    content is created by its open, written (its content read ahead of it: the walk runs ahead
 *    of the writes), given its times and closed in the same step: writing moves mtime, and one
 *    path walk serves it all. Entries with no content get their times at once, directories as
 *    the walk leaves them (creating children moved them). A second walk that disagrees with the
 *    first (the source changed) fails the build.
 * 4. A compressed tar's members that its first pass could not keep in memory are created empty
 *    in step 3 and written by a second pass over the archive, in archive order.
 * 5. close() writes everything back; the temporary file is renamed to IMAGE. On any failure the
 *    temporary file is removed, so no half-built image is ever left under IMAGE's name.
 *
 * Reproducible builds (SOURCE_DATE_EPOCH set, or `reproducible`): the clock of mkfs and of the
 * mount is fixed at SOURCE_DATE_EPOCH (or, without it, at the newest mtime in the source that is
 * not in the future); atimes
 * and mtimes later than that are clamped to it; the UUID is derived from a hash of the epoch, the
 * label and the entries in creation order (paths, types, modes, owners, sizes, times, link
 * targets; UuidHasher), and mkfs derives the hash seed from the UUID. Two builds of the same content are byte-identical.
 * ctime cannot be set through any API (as after `cp -a`): it is the build's clock, so
 * SOURCE_DATE_EPOCH under reproducible builds.
 */
import { rename, unlink, lstat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { Ext4, type FileHandle, type OpenOptions } from '../api/ext4.js';
import { mkfs, defaultBlockSize, type MkfsOptions, type MkfsResult } from '../api/mkfs.js';
import { fixedClock, systemClock, clockFromSourceDateEpoch, type Clock } from '../runtime/clock.js';
import { seededRandom } from '../runtime/random.js';
import { PosixError } from '../util/errors.js';
import { assert } from '../util/assert.js';
import { compareTimes, parentOf, type BuildEntry, type Chunk, type Source, type Timespec, type Xattr } from './source.js';
import { ContentFetcher, contentLength, isLargeFile, isSmallHost } from './content.js';
import { NeedCounter, planSize, type ContentNeed } from './plan.js';
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
  /**
   * Copy extended attributes (default true): a tar's PAX records, a manifest's lists, and a host
   * directory's attributes as getfattr (package attr) reads them. false: the image gets none.
   */
  xattrs?: boolean | undefined;
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
   * A directory source of up to this many entries is listed once and kept in memory between the
   * planning walk and the writing walk (default 50,000, about 27 MiB); a larger one is walked
   * twice (about 30 us more per entry), so memory does not grow with the tree. 0: always twice.
   */
  keepEntries?: number | undefined;
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
export type BuildPhase = 'scan' | 'mkfs' | 'write' | 'stream' | 'flush' | 'done';

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
/** Entries the second walk runs ahead of the writes (their files' reads start early). */
const LOOKAHEAD = 1024;

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
    const source = await openSource(o.source, { memoryBytes: o.memoryBytes, keepEntries: o.keepEntries, xattrs: o.xattrs });
    const plan = this.planWalk(source);
    const reproducible = this.setClock(plan);
    this.progress.entriesTotal = plan.entries;
    this.progress.filesTotal = plan.files;
    this.progress.bytesTotal = plan.bytes;
    this.report('mkfs');
    try {
      const made = await this.makeFilesystem(plan, reproducible);
      const fs = await Ext4.open(this.tmp, {
        pageSizeBytes: BUILD_PAGE_BYTES, dirtyLimitBytes: BUILD_DIRTY_BYTES, cacheLimitBytes: BUILD_CACHE_BYTES,
        metadataDirtyLimitBytes: BUILD_METADATA_DIRTY_BYTES, cacheBlocks: BUILD_METADATA_CACHE_BLOCKS,
        ...o.mount, readOnly: false, clock: this.clock,
        // The image is a temporary file, removed if the build fails: commits need no cache
        // flush, and close flushes once.
        barrier: false,
      });
      this.fs = fs;
      await this.writeTree(fs, source, plan);
      this.report('flush');
      this.fs = undefined;
      await fs.close();
      // After close: the superblock's free counts were summed by the final commit.
      const info = fs.info();
      await rename(this.tmp, o.image);
      this.report('done');
      return this.summary(source, plan, made, info, reproducible);
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

  /** The block size asked for; else 4096 when auto-sizing, or the one mkfs picks for SIZE. */
  private blockSizeChoice(): number {
    const o = this.opts;
    return o.mkfs?.blockSize ?? (o.sizeBytes === undefined ? 4096 : defaultBlockSize(o.sizeBytes));
  }

  /**
   * The first walk (step 1): everything the build must know before writing, with no list of
   * the entries kept: counts for progress and the summary, what the content needs at the
   * block size mkfs will use, the newest mtime, the root's owner and the inputs of the derived UUID.
   */
  private planWalk(source: Source): Plan {
    const o = this.opts;
    // A reproducible build's UUID hashes times as they will be written (clamped to the epoch).
    const sdeEpoch = clockFromSourceDateEpoch(o.env ?? process.env)?.now().sec;
    // Mtimes in the future do not count for the default epoch (see setClock).
    const nowSec = systemClock.now().sec;
    const plan: Plan = {
      entries: 0, files: 0, bytes: 0, smallFiles: 0, xattrs: 0, sparseFiles: 0,
      kinds: { file: 0, dir: 0, symlink: 0, hardlink: 0, chr: 0, blk: 0, fifo: 0, sock: 0 },
      need: new NeedCounter(this.blockSizeChoice()), newestMtime: undefined,
      root: { uid: 0, gid: 0 }, uuid: new UuidHasher(o.mkfs?.label ?? ''),
    };
    // Further names of an inode, when xattrs come after the walk (they carry none).
    let linkNames: Set<string> | undefined;
    for (const raw of source.walk()) {
      const e = this.mapOwners(raw, plan.entries === 0);
      if (plan.entries === 0) plan.root = { uid: e.uid, gid: e.gid };
      plan.entries++;
      plan.kinds[e.kind]++;
      plan.xattrs += e.xattrs.length;
      if (e.kind === 'file' && e.allocBytes < e.sizeBytes) plan.sparseFiles++;
      if (hasContent(e)) {
        plan.files++;
        plan.bytes += contentLength(e);
        if (isSmallHost(e)) plan.smallFiles++;
      }
      const m = e.mtime?.sec;
      if (m !== undefined && m <= nowSec && (plan.newestMtime === undefined || m > plan.newestMtime)) plan.newestMtime = m;
      plan.need.add(e);
      plan.uuid.add(e, sdeEpoch);
      if (e.kind === 'hardlink' && source.lateXattrs !== undefined) (linkNames ??= new Set()).add(e.path);
    }
    // Folded in path order (the UUID's input must not depend on getfattr's readdir order).
    const late = source.lateXattrs?.() ?? new Map<string, readonly Xattr[]>();
    for (const [path, xs] of [...late].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (xs.length === 0 || linkNames?.has(path) === true) continue;
      plan.xattrs += xs.length;
      plan.need.addXattrs(xs);
      plan.uuid.addXattrs(path, xs);
    }
    return plan;
  }

  /**
   * --all-root, --uid-map/--gid-map, then --root-owner for "/" (`isRoot`: the walk's first
   * entry); --no-xattrs empties the entry's list. A copy when anything changes: sources hand
   * out their entries, not ours to change.
   */
  private mapOwners(e: BuildEntry, isRoot: boolean): BuildEntry {
    const o = this.opts;
    let uid = o.allRoot ? 0 : e.uid;
    let gid = o.allRoot ? 0 : e.gid;
    uid = o.uidMap?.get(uid) ?? uid;
    gid = o.gidMap?.get(gid) ?? gid;
    if (isRoot && o.rootOwner !== undefined) {
      uid = o.rootOwner.uid;
      gid = o.rootOwner.gid;
    }
    const dropXattrs = o.xattrs === false && e.xattrs.length > 0;
    if (uid === e.uid && gid === e.gid && !dropXattrs) return e;
    return { ...e, uid, gid, ...(dropXattrs ? { xattrs: [] } : {}) };
  }

  /** An entry as the second walk writes it: owners mapped, times clamped to a reproducible clock. */
  private prepare(raw: BuildEntry, isRoot: boolean): BuildEntry {
    const e = this.mapOwners(raw, isRoot);
    if (this.epoch === undefined) return e;
    const limit: Timespec = { sec: this.epoch, nsec: 0 };
    const late = (t: Timespec | undefined): boolean => t !== undefined && compareTimes(t, limit) > 0;
    if (!late(e.atime) && !late(e.mtime)) return e;
    const c = { ...e };
    if (late(e.atime)) c.atime = limit;
    if (late(e.mtime)) c.mtime = limit;
    return c;
  }

  /**
   * Picks the clock: fixed for reproducible builds (SOURCE_DATE_EPOCH, else the newest mtime
   * that is not in the future: a clock in the future would date the superblock's mount and write
   * times there, which e2fsck reports as an error; later mtimes are then clamped like any other),
   * atimes and mtimes later than it then clamped to it (prepare); the system clock otherwise.
   * Returns `reproducible`.
   */
  private setClock(plan: Plan): boolean {
    const sde = clockFromSourceDateEpoch(this.opts.env ?? process.env);
    const reproducible = this.opts.reproducible ?? sde !== undefined;
    if (!reproducible) return false;
    const epoch = sde?.now().sec ?? Math.max(0, plan.newestMtime ?? 0);
    this.epoch = epoch;
    this.clock = fixedClock(epoch);
    return true;
  }

  /**
   * mkfs into the temporary file: at the given size (failing early with ENOSPC when the content
   * clearly cannot fit), or sized by plan.ts and grown until mkfs's result offers the room.
   */
  private async makeFilesystem(walked: Plan, reproducible: boolean): Promise<MkfsResult> {
    const o = this.opts;
    const auto = o.sizeBytes === undefined;
    const bs = this.blockSizeChoice();
    const base: MkfsOptions = { ...o.mkfs, reproducible, blockSize: bs };
    // mkfs gives the root its owner directly.
    base.rootOwner = walked.root;
    const uuid = o.mkfs?.uuid ?? (reproducible ? walked.uuid.digest(this.epoch ?? 0) : undefined);
    if (uuid !== undefined) base.uuid = uuid;
    const random = uuid !== undefined && reproducible ? { random: seededRandom(typeof uuid === 'string' ? new TextEncoder().encode(uuid) : uuid) } : {};
    const mk = (sizeBytes: number, inodesCount: number | undefined): Promise<MkfsResult> =>
      mkfs(this.tmp, { ...base, ...random, sizeBytes, ...(inodesCount !== undefined ? { inodesCount } : {}), clock: this.clock, env: o.env ?? process.env });
    if (!auto) {
      // OK to assert sizeBytes: `auto` is false.
      const r = await mk(o.sizeBytes!, o.inodesCount);
      this.checkFits(needAt(walked, r.blockSize), r, o.sizeBytes!);
      return r;
    }
    const need = needAt(walked, bs);
    const input = {
      need, blockSize: bs, inodeSize: o.mkfs?.inodeSize ?? 256, marginPercent: o.marginPercent ?? 10,
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
  private async writeTree(fs: Ext4, source: Source, plan: Plan): Promise<void> {
    this.report('write');
    const blockSize = fs.info().blockSize;
    this.blockSize = blockSize;
    const streamed = new Map<number, BuildEntry>();
    const contents = new ContentFetcher({ blockSize, depth: this.opts.readAheadFiles ?? 8 }, plan.smallFiles);
    // The walk runs LOOKAHEAD entries ahead of the writes, handing their files to the fetcher.
    const walk = source.walk()[Symbol.iterator]();
    const ahead: BuildEntry[] = [];
    let aheadAt = 0;
    let walked = 0;
    let walkDone = false;
    let bytes = 0;
    const pull = (): void => {
      while (!walkDone && ahead.length - aheadAt < LOOKAHEAD) {
        const r = walk.next();
        if (r.done === true) {
          walkDone = true;
          break;
        }
        const e = this.prepare(r.value, walked === 0);
        walked++;
        if (hasContent(e)) bytes += contentLength(e);
        ahead.push(e);
        if (isFetched(e)) contents.push(e);
      }
      if (aheadAt > 4096) {
        ahead.splice(0, aheadAt);
        aheadAt = 0;
      }
    };
    // Directories whose subtree is being written, outermost first: their times are set as the
    // walk leaves them (creating a child moves a directory's mtime; nothing later touches it).
    const open: BuildEntry[] = [];
    const leave = async (until: string | undefined): Promise<void> => {
      for (let top = open[open.length - 1]; top !== undefined && top.path !== until; top = open[open.length - 1]) {
        open.pop();
        await withEntry(top, () => this.setTimes(fs, top));
      }
    };
    try {
      for (pull(); aheadAt < ahead.length; pull()) {
        // OK to index: aheadAt < ahead.length.
        const e = ahead[aheadAt++]!;
        if (e.path !== '/') await leave(parentOf(e.path));
        // mkfs made a lost+found directory; a source that has something else there replaces it.
        if (e.path === '/lost+found' && e.kind !== 'dir') await fs.rmdir('/lost+found');
        if (isFetched(e)) {
          const r = contents.next();
          // OK to assert: the fetcher hands out files in the order pull() pushed them.
          assert(r.entry === e, () => `build: content out of order at ${e.path}`);
          await withEntry(e, () => this.writeContent(fs, e, r.chunks, true));
        } else {
          if (e.kind === 'file' && e.content?.kind === 'stream') streamed.set(e.content.member, e);
          await withEntry(e, () => this.create(fs, e));
        }
        if (e.kind === 'dir') open.push(e);
        this.progress.entriesDone++;
        if ((this.progress.entriesDone & 255) === 0) this.report();
      }
    } finally {
      await contents.close();
    }
    // A directory source walked again: it must be the tree that was sized.
    if (walked !== plan.entries || bytes !== plan.bytes) {
      throw new PosixError('EINVAL', 'build', this.opts.source,
        `the source changed during the build (${plan.entries} entries and ${plan.bytes} content bytes when it was sized, ${walked} and ${bytes} when written)`);
    }
    if (streamed.size > 0) {
      this.report('stream');
      // OK to assert streamContents: only compressed tars make 'stream' content, and they have it.
      await source.streamContents!(streamed, (entry, chunks) => withEntry(entry, () => this.writeContent(fs, entry, chunks, false)));
    }
    // The root last: every creation has touched what it will.
    await leave(undefined);
    this.report();
  }

  /** An entry without content of its own (a file with content goes through writeContent). */
  private async create(fs: Ext4, e: BuildEntry): Promise<void> {
    const owner = { uid: e.uid, gid: e.gid };
    switch (e.kind) {
      case 'dir':
        // mkfs made both: they take the source's mode and owner.
        if (e.path === '/' || e.path === '/lost+found') await this.adoptDir(fs, e);
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
    const it = chunks[Symbol.asyncIterator]();
    const first = await it.next();
    // A new file in one chunk (every small file): created, written and stamped in one operation.
    if (create && !direct && first.done !== true && first.value.pos === 0 && first.value.bytes.length === e.sizeBytes) {
      const rest = await it.next();
      assert(rest.done === true, () => `build: ${e.path} has more content than its size`);
      const times = e.atime !== undefined || e.mtime !== undefined ? this.clock.now() : undefined;
      await fs.writeFile(e.path, first.value.bytes, {
        flag: 'wx', mode: e.perm, uid: e.uid, gid: e.gid,
        ...(times !== undefined ? { atime: e.atime ?? times, mtime: e.mtime ?? times } : {}),
      });
      first.value.release?.();
      for (const x of e.xattrs) await fs.setxattr(e.path, x.name, x.value);
      this.bytesWritten += e.sizeBytes;
      this.progress.bytesDone += e.sizeBytes;
      this.fileDone();
      return;
    }
    const fh: FileHandle = create
      ? await fs.open(e.path, 'wx', { mode: e.perm, uid: e.uid, gid: e.gid, direct })
      : await fs.open(e.path, 'r+', { direct });
    const bs = this.blockSize;
    try {
      let end = 0;
      const before = this.progress.bytesDone;
      for (let r = first; r.done !== true; r = await it.next()) {
        const c = r.value;
        let bytes = c.bytes;
        if (direct && bytes.length % bs !== 0) {
          bytes = new Uint8Array(Math.ceil(bytes.length / bs) * bs);
          bytes.set(c.bytes);
        }
        await fh.write(bytes, 0, bytes.length, c.pos);
        // Copied into the page cache, or on the device (direct I/O): the read buffer is free.
        c.release?.();
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
    this.fileDone();
  }

  /** A file's content is in: counted and reported. */
  private fileDone(): void {
    this.progress.filesDone++;
    this.report();
  }

  private summary(source: Source, plan: Plan, made: MkfsResult, info: ReturnType<Ext4['info']>, reproducible: boolean): BuildSummary {
    const k = plan.kinds;
    const s: BuildSummary = {
      image: this.opts.image, source: this.opts.source, sourceKind: source.kind,
      sizeBytes: info.blocksCount * info.blockSize, autoSized: this.opts.sizeBytes === undefined,
      blockSize: info.blockSize, blocksCount: info.blocksCount, freeBlocksCount: info.freeBlocksCount,
      inodesCount: info.inodesCount, freeInodesCount: info.freeInodesCount, uuid: made.uuid, reproducible,
      files: k.file, dirs: k.dir, symlinks: k.symlink, hardlinks: k.hardlink,
      devices: k.chr + k.blk, fifos: k.fifo, sockets: k.sock,
      xattrs: plan.xattrs, bytes: this.bytesWritten, sparseFiles: plan.sparseFiles,
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

/** A file whose content the ContentFetcher reads (everything but a compressed tar's second pass). */
function isFetched(e: BuildEntry): boolean {
  return hasContent(e) && e.content?.kind !== 'stream';
}

/** A regular file with content bytes to write (not one hole, not empty). */
function hasContent(e: BuildEntry): boolean {
  return e.kind === 'file' && contentLength(e) > 0;
}

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

/**
 * A UUID derived from what the image will hold (reproducible builds): SHA-256 over the label,
 * every entry's metadata in creation order (owners mapped, times clamped as they will be
 * written; see add) and last the epoch, with the RFC 4122 version 5
 * (name-based) and variant bits. Fed one entry at a time by the builder's first walk.
 */
export class UuidHasher {
  private readonly h = createHash('sha256');

  constructor(label: string) {
    this.h.update(`ext4ts-build-v2\n${label}\n`);
  }

  /**
   * `epoch`: the clamp, when known before the walk (SOURCE_DATE_EPOCH). Without it the epoch is
   * the newest mtime not in the future, known only after the walk: mtimes are hashed as the
   * source has them (the clamp follows from them), and atimes are left out (reading the source
   * moves them, and the clamp they will get is not known yet).
   */
  add(e: BuildEntry, epoch: number | undefined): void {
    const h = this.h;
    const t = (x: Timespec | undefined): string => {
      if (x === undefined) return '-';
      return epoch !== undefined && x.sec >= epoch && (x.sec > epoch || x.nsec > 0) ? `${epoch}.0` : `${x.sec}.${x.nsec}`;
    };
    const atime = epoch !== undefined ? t(e.atime) : '';
    h.update(`${e.path}\0${e.kind}\0${e.perm}\0${e.uid}\0${e.gid}\0${e.sizeBytes}\0${atime}\0${t(e.mtime)}\0`);
    h.update(`${e.linkTo ?? ''}\0${e.major ?? ''}\0${e.minor ?? ''}\0`);
    if (e.target !== undefined) h.update(e.target);
    this.hashXattrs(e.xattrs);
    h.update('\n');
  }

  /** Xattrs a source gave after its walk (Source.lateXattrs), after every entry. */
  addXattrs(path: string, xattrs: readonly Xattr[]): void {
    this.h.update(`xattrs ${path}`);
    this.hashXattrs(xattrs);
    this.h.update('\n');
  }

  private hashXattrs(xattrs: readonly Xattr[]): void {
    for (const x of xattrs) {
      this.h.update(`\0${x.name}\0`);
      this.h.update(x.value);
    }
  }

  digest(epoch: number): Uint8Array {
    this.h.update(`epoch ${epoch}\n`);
    const u = new Uint8Array(this.h.digest().subarray(0, 16));
    // OK to index: u has 16 bytes.
    u[6] = (u[6]! & 0x0f) | 0x50;
    u[8] = (u[8]! & 0x3f) | 0x80;
    return u;
  }
}

/** What the first walk learned (Builder.planWalk). */
interface Plan {
  entries: number;
  /** Files with content, their content bytes, and how many of them are small host files. */
  files: number;
  bytes: number;
  smallFiles: number;
  xattrs: number;
  sparseFiles: number;
  kinds: Record<BuildEntry['kind'], number>;
  /** The content's need at the block size mkfs will use. */
  need: NeedCounter;
  /** The newest mtime that is not in the future (seconds). */
  newestMtime: number | undefined;
  /** The root's owner, mapped. */
  root: { uid: number; gid: number };
  uuid: UuidHasher;
}

function needAt(plan: Plan, blockSize: number): ContentNeed {
  assert(plan.need.blockSize === blockSize, () => `build: content counted at block size ${plan.need.blockSize}, mkfs made ${blockSize}`);
  return plan.need.result();
}

