/**
 * The buffered data path (fs/ext4/inode.c: ext4_da_write_begin/ext4_da_write_end, ext4_read_folio,
 * ext4_writepages with mpage_map_and_submit_extent; fs/ext4/page-io.c: ext4_bio_write_page,
 * ext4_end_bio; fs/ext4/file.c: ext4_sync_file), built on the io_end of io-end.ts and the page
 * completion rule of cache/page-completion.ts.
 *
 * - write(): copies into page-cache pages. A page is filled from disk the first time it is
 *   instantiated (read-modify-write: mapped written blocks are read, holes and unwritten blocks are
 *   zeros) unless the write covers it whole. Buffers of holes become Delay (delayed allocation:
 *   nothing allocated, one block reserved per buffer in `reservedBlocks`, ENOSPC at write time when
 *   free blocks minus reservations cannot hold them). i_size grows in memory only (the kernel's
 *   i_size vs i_disksize): the on-disk size moves when the data is written, so a crash never
 *   exposes a size beyond written data.
 * - read(): through the cache (the same page fill), clipped at the in-memory size.
 * - writepages(): (1) map: walk dirty pages in index order, collect runs of Delay buffers with
 *   consecutive logical blocks, allocate each run with as few allocations as the allocator allows
 *   (goal right after the previous piece), insert the pieces as UNWRITTEN extents (split at
 *   32767 blocks), so a crash before the data lands exposes zeros, never stale blocks; the buffers
 *   become Mapped + Unwritten + Uninit ("convert after this write"). (2) submit: one IoEnd per run
 *   of buffers contiguous both logically and physically (one mapped extent), shared by all the
 *   bios writing it; per page the two passes of writePageBuffers (mark every buffer AsyncWrite,
 *   then submit); a bio takes io_end.get() when it is built; a buffer's range is added (and Uninit
 *   consumed, UNWRITTEN set) only after it joined a bio (IO-DESIGN §1.3 E, invariants 11, 12);
 *   the submitter's putDefer comes after the last bio of the io_end was submitted (invariant 3).
 * - Completion: each bio ends its page segments with endPageWrite (deferred until after the
 *   conversion for an unwritten io_end, invariant 24) and drops its io_end reference with
 *   completeBio; the conversion (ExtentTree.markWritten per range, then i_size/i_blocks through
 *   writeInode) runs in the InodeIo's work item, never in the completion (invariant 9). A failed
 *   bio marks the io_end FAILED: its ranges are not converted (they read as zeros) and the error
 *   is recorded in the mapping's errseq (invariant 14).
 * - fsync(): writepages, wait until every io_end is released (InodeIo.waitIdle), write the inode,
 *   commit the metadata, and report a write error once per open-file cursor.
 *
 * - Memory: a dirty limit (balanceDirtyPages: writeback starts at half, writers wait at the limit)
 *   and a cache limit (shrink: clean pages evicted oldest first; inodes with nothing cached are
 *   forgotten), so writing a file many times larger than the limits keeps memory flat.
 * - truncate/fallocate/punch/zero range write back and drop the affected pages first, then change
 *   the extent tree; an inode evicted (last link and last open file gone) is discarded unwritten.
 *
 * Concurrency: the caller runs write/read/writepages/fsync one at a time per mount (WriteOps.run)
 * under the inode lock (withInodeLock, i_rwsem). The conversion worker runs concurrently with
 * them, so every extent-tree access of this module goes through the inode's tree lock (the
 * kernel's i_data_sem). Direct I/O uses the hooks (writeAndWaitRange, invalidateRange, dio*).
 */
import type { Ext4Super } from '../fs/super.js';
import type { InodeInfo } from '../fs/inode/inode.js';
import { writeInode, addInodeBlocks } from '../fs/inode/inode.js';
import { touch } from '../fs/inode/inode-life.js';
import { ihold, irelease } from '../fs/inode/icache.js';
import { faults } from '../runtime/faults.js';
import { ExtentTree } from '../fs/extents/extent-tree.js';
import { mapExtentPoint } from '../fs/extents/extent-lookup.js';
import type { Mapping } from '../fs/extents/extent-read.js';
import { getBalloc } from '../fs/alloc/balloc.js';
import { setInodeSizeBytes } from '../format/inode.js';
import { EXT_UNWRITTEN_MAX_LEN, ExtentHeader, EXT4_EXT_MAGIC } from '../format/extent.js';
import { AddressSpace, type ErrCursor } from '../cache/address-space.js';
import { PG, type Page } from '../cache/page.js';
import { PagePool } from '../cache/page-pool.js';
import { BH, type BufferHead } from '../cache/buffer-head.js';
import { endPageWrite, writePageBuffers } from '../cache/page-completion.js';
import { Bio, BioBuilder, BIO_MAX_VECS, type BioStatus } from '../blockdev/bio.js';
import { HostWorkQueue, type WorkQueue } from '../runtime/work-queue.js';
import { InodeIo, IoEnd, type IoRange } from './io-end.js';
import { Mutex } from '../runtime/mutex.js';
import { assert } from '../util/assert.js';
import { PosixError } from '../util/errors.js';
import { pblk } from '../util/units.js';

/** fallocate(2) modes (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE). */
export interface FallocateMode {
  keepSize?: boolean;
  punchHole?: boolean;
  zeroRange?: boolean;
}

export interface FileDataOptions {
  /** Page size in bytes (4, 16 or 64 KiB; default 4 KiB). */
  pageSizeBytes?: number | undefined;
  /** Where conversion work runs (default: a HostWorkQueue). */
  wq?: WorkQueue | undefined;
  /** Most segments per bio (default BIO_MAX_VECS); small values make one extent span many bios. */
  maxBioVecs?: number | undefined;
  /** Most bytes per data bio (the queue's max_sectors; default: the device's request size). */
  maxBioBytes?: number | undefined;
  /** Dirty bytes at which writers are throttled (default 32 MiB); writeback starts at half. */
  dirtyLimitBytes?: number | undefined;
  /** Cached bytes beyond which clean pages are evicted (default 64 MiB). */
  cacheLimitBytes?: number | undefined;
}

/** Largest piece of one write() handled before the dirty limit is checked again. */
const WRITE_CHUNK_BYTES = 1 << 20;
/** Readahead window beyond a read that missed the cache. */
const READAHEAD_BYTES = 256 << 10;

/** The engine's counters (the keys of `--stats`). */
export interface DataStats {
  bios: number;
  ioEnds: number;
  unwrittenIoEnds: number;
  conversions: number;
  pagesWritten: number;
  bytesWritten: number;
}

/**
 * Free blocks every data allocation (a delayed reservation, fallocate) leaves beyond the delayed
 * reservations, for the extent-tree blocks of later mappings and conversions (the kernel's
 * reserved clusters, s_resv_clusters): a conversion that splits an unwritten extent must not fail
 * for want of a block, or the data it converts would read as zeros.
 */
const METADATA_RESERVE_BLOCKS = 8;

/** One bio's private data: its io_end reference and the page segments it carries. */
interface BioCtx {
  readonly io: IoEnd;
  readonly segs: { page: Page; off: number; len: number }[];
}

/** Per-inode state of the data path (the parts of ext4_inode_info and struct inode it needs). */
class InodeData {
  /** In-memory i_size (the on-disk i_disksize lives in info.view). */
  sizeBytes: number;
  /** Buffers with Delay set (each holds one reserved block). */
  delayed = 0;
  /** Extent-tree lock (i_data_sem). */
  private readonly treeLock = new Mutex('i_data_sem');
  /** Inode lock (i_rwsem) for writers, truncate, fallocate and direct I/O. */
  private readonly inodeLock = new Mutex('i_rwsem');
  /** Direct I/O requests in flight (i_dio_count); truncate waits for zero (inode_dio_wait). */
  dioCount = 0;
  /** The extent tree was reshaped since the last commit, which repacks it (deferRepack). */
  repackPending = false;
  private readonly dioWaiters: (() => void)[] = [];
  constructor(
    readonly info: InodeInfo,
    readonly mapping: AddressSpace,
    readonly io: InodeIo,
  ) {
    this.sizeBytes = info.size;
  }

  /** Someone holds the extent-tree lock (an update may be half done). */
  get treeBusy(): boolean {
    return this.treeLock.locked;
  }

  /** Runs `fn` holding the extent-tree lock. */
  withTree<T>(fn: () => Promise<T>): Promise<T> {
    return this.treeLock.run(fn);
  }

  /** Runs `fn` holding the inode lock. */
  withLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.inodeLock.run(fn);
  }

  dioBegin(): void {
    this.dioCount++;
  }
  dioEnd(): void {
    this.dioCount--;
    assert(this.dioCount >= 0, () => `inode ${this.info.ino}: i_dio_count below zero`);
    if (this.dioCount === 0) for (const w of this.dioWaiters.splice(0)) w();
  }
  dioWait(): Promise<void> {
    if (this.dioCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.dioWaiters.push(resolve));
  }
}

/** The inode's extent root is valid and holds no entry (a new or emptied file). */
function emptyExtentRoot(info: InodeInfo): boolean {
  const root = new ExtentHeader(info.iBlock, 0);
  return root.eh_magic === EXT4_EXT_MAGIC && root.eh_entries === 0;
}

export class FileData {
  readonly pageSizeBytes: number;
  readonly wq: WorkQueue;
  readonly maxBioVecs: number;
  readonly maxBioBytes: number | undefined;
  /** Blocks reserved by delayed writes and not yet allocated (per filesystem). */
  reservedBlocks = 0;
  readonly stats: DataStats = { bios: 0, ioEnds: 0, unwrittenIoEnds: 0, conversions: 0, pagesWritten: 0, bytesWritten: 0 };
  private readonly inodes = new Map<number, InodeData>();
  readonly dirtyLimitBytes: number;
  readonly cacheLimitBytes: number;
  /** Pages in every mapping (the cache's size). */
  nrPages = 0;
  /** Pages with PG_dirty (global_node_page_state(NR_FILE_DIRTY)). */
  nrDirty = 0;
  /**
   * Inodes that dirtied a page, in the order they first did (entries whose pages are all clean
   * again are dropped lazily by balanceDirtyPages and dropInodeData).
   */
  private readonly dirtyInodes = new Set<InodeData>();
  /** Pages under writeback that a bio completion will end (NR_WRITEBACK). */
  nrWriteback = 0;
  /** Page memory, recycled. */
  private readonly pool: PagePool;
  /** Writers throttled until writeback makes progress. */
  private readonly writebackWaiters: (() => void)[] = [];

  constructor(readonly s: Ext4Super, opts: FileDataOptions = {}) {
    this.pageSizeBytes = opts.pageSizeBytes ?? 4096;
    this.wq = opts.wq ?? new HostWorkQueue();
    this.maxBioVecs = opts.maxBioVecs ?? BIO_MAX_VECS;
    this.maxBioBytes = opts.maxBioBytes;
    if (this.maxBioBytes !== undefined && (!Number.isSafeInteger(this.maxBioBytes) || this.maxBioBytes < s.blockSize || this.maxBioBytes % s.blockSize !== 0)) {
      throw new PosixError('EINVAL', 'mount', undefined, `bio limit ${this.maxBioBytes} is not a positive multiple of the block size ${s.blockSize}`);
    }
    this.pool = new PagePool(this.pageSizeBytes);
    this.dirtyLimitBytes = Math.max(opts.dirtyLimitBytes ?? 32 << 20, 4 * this.pageSizeBytes);
    this.cacheLimitBytes = Math.max(opts.cacheLimitBytes ?? 64 << 20, 2 * this.dirtyLimitBytes);
  }

  /**
   * The page at `idx` of `d`, created when absent (counted in nrPages). A new page's memory is
   * not cleared: a page that is not uptodate is never read before fillPages has read or zeroed
   * every buffer of it that the caller does not overwrite.
   */
  private getPage(d: InodeData, idx: number): Page {
    const hit = d.mapping.findPage(idx);
    if (hit !== undefined) return hit;
    this.nrPages++;
    return d.mapping.findOrCreatePage(idx, this.pool.alloc());
  }

  /** Removes a clean page that nobody writes (delete_from_page_cache). */
  private dropPage(d: InodeData, page: Page): void {
    assert(page.trylock(), () => `${page.describe()}: dropped while locked`);
    d.mapping.deletePage(page);
    page.unlock();
    this.nrPages--;
    this.pool.release(page.data);
  }

  /** Marks `page` of `d` dirty, counting it once. */
  private dirtyPage(d: InodeData, page: Page): void {
    if (page.markDirty()) this.nrDirty++;
    this.dirtyInodes.add(d);
  }

  /** Forgets the whole page cache of `d` (its pages are garbage from now on). */
  private dropInodeData(d: InodeData): void {
    for (const page of d.mapping.pagesInOrder()) {
      assert(!PG.testWriteback(page), () => `${page.describe()}: dropped under writeback`);
      this.pool.release(page.data);
    }
    this.nrPages -= d.mapping.nrPages;
    this.nrDirty -= d.mapping.nrDirtyPages;
    assert(this.nrPages >= 0 && this.nrDirty >= 0, () => `inode ${d.info.ino}: page counts below zero`);
    this.inodes.delete(d.info.ino);
    this.dirtyInodes.delete(d);
    irelease(this.s, d.info.ino);
  }

  /** The data state of `info`, created on first use. */
  private of(info: InodeInfo): InodeData {
    let d = this.inodes.get(info.ino);
    if (d === undefined) {
      assert(info.type === 'file', () => `inode ${info.ino}: data path on a ${info.type}`);
      const mapping = new AddressSpace({ blockSizeBytes: this.s.blockSize, pageSizeBytes: this.pageSizeBytes });
      const dd: InodeData = new InodeData(info, mapping, new InodeIo(info.ino, this.wq, (r) => this.convert(dd, r)));
      d = dd;
      this.inodes.set(info.ino, d);
      ihold(this.s, info);
    }
    assert(d.info === info, () => `inode ${info.ino}: two in-core copies`);
    return d;
  }

  /** Does the page cache hold state for inode `ino` (possibly data not yet on disk)? */
  has(ino: number): boolean {
    return this.inodes.has(ino);
  }

  /** The in-memory size of `info` (i_size; the on-disk size may lag until fsync). */
  sizeOf(info: InodeInfo): number {
    return this.inodes.get(info.ino)?.sizeBytes ?? info.size;
  }

  /** A write-error cursor for a newly opened file (errseq sample). */
  openErrCursor(info: InodeInfo): ErrCursor {
    return this.of(info).mapping.openErrCursor();
  }

  /** The per-inode io_end counters, for tests. */
  inodeIo(info: InodeInfo): InodeIo {
    return this.of(info).io;
  }

  /** The page cache of `info`, for tests. */
  mappingOf(info: InodeInfo): AddressSpace {
    return this.of(info).mapping;
  }

  // -------------------------------------------------------------------------------------------
  // write / read
  // -------------------------------------------------------------------------------------------

  /**
   * Copies `bytes` into the file at `pos` (ext4_da_write_begin / write_end). Reserves one block
   * per newly delayed buffer first, so ENOSPC is reported before anything changes.
   */
  async write(info: InodeInfo, pos: number, bytes: Uint8Array): Promise<number> {
    if (!Number.isSafeInteger(pos) || pos < 0) throw new PosixError('EINVAL', 'write');
    if (bytes.length === 0) return 0;
    if (!info.hasExtents) throw new PosixError('EOPNOTSUPP', 'write', undefined, `inode ${info.ino} is not extent-mapped`);
    const bs = this.s.blockSize;
    if (Math.ceil((pos + bytes.length) / bs) > 0xffff_ffff) throw new PosixError('EFBIG', 'write');
    const d = this.of(info);
    const ps = this.pageSizeBytes;
    // Piece by piece (generic_perform_write), checking the dirty limit after each piece, so a
    // huge write never holds more than the limit in dirty pages. A later piece failing makes
    // a short write, as on Linux.
    let done = 0;
    while (done < bytes.length) {
      const at = pos + done;
      const pieceEnd = Math.min(pos + bytes.length, (Math.floor(at / ps) * ps) + Math.max(WRITE_CHUNK_BYTES, ps));
      try {
        await this.writePiece(d, at, bytes.subarray(done, pieceEnd - pos));
      } catch (e) {
        if (done > 0 && e instanceof PosixError && (e.code === 'ENOSPC' || e.code === 'ENOMEM')) break;
        throw e;
      }
      done = pieceEnd - pos;
      const balance = this.balanceDirtyPages();
      if (balance !== undefined) await balance;
    }
    touch(this.s, info, ['mtime', 'ctime']);
    return done;
  }

  /** One piece of write(): pages made uptodate, the reservation checked, bytes copied. */
  private async writePiece(d: InodeData, pos: number, bytes: Uint8Array): Promise<void> {
    const bs = this.s.blockSize;
    const ps = this.pageSizeBytes;
    const end = pos + bytes.length;
    // Pages are made uptodate (and their buffers mapped) before the reservation check, which
    // then counts exactly the buffers that become Delay.
    const pages: Page[] = [];
    let fill: Page[] | undefined;
    for (let idx = Math.floor(pos / ps); idx * ps < end; idx++) {
      const page = this.getPage(d, idx);
      if (PG.testWriteback(page)) await page.waitOnWriteback();
      if (!PG.testUptodate(page)) (fill ??= []).push(page);
      pages.push(page);
    }
    // Only the blocks the write does not cover entirely are read or zeroed (__block_write_begin).
    if (fill !== undefined) await this.fillPages(d, fill, { from: pos, to: end });
    let need = 0;
    for (const page of pages) {
      for (const bh of page.buffers) {
        const bStart = page.offsetBytes + bh.offsetInPage;
        if (bStart + bs <= pos || bStart >= end) continue;
        if (!BH.testMapped(bh) && !BH.testDelay(bh)) need++;
      }
    }
    if (need > 0) {
      const free = getBalloc(this.s).freeBlocksCount();
      if (free - this.reservedBlocks - METADATA_RESERVE_BLOCKS < need) {
        throw new PosixError('ENOSPC', 'write', undefined, `${need} block(s) needed, ${free} free, ${this.reservedBlocks} reserved`);
      }
    }
    for (const page of pages) {
      const from = Math.max(pos, page.offsetBytes);
      const to = Math.min(end, page.offsetBytes + ps);
      page.data.set(bytes.subarray(from - pos, to - pos), from - page.offsetBytes);
      PG.setUptodate(page);
      for (const bh of page.buffers) {
        const bStart = page.offsetBytes + bh.offsetInPage;
        if (bStart + bs <= from || bStart >= to) continue;
        BH.setUptodate(bh);
        BH.setDirty(bh);
        if (!BH.testMapped(bh) && !BH.testDelay(bh)) {
          BH.setDelay(bh);
          d.delayed++;
          this.reservedBlocks++;
        } else if (BH.testMapped(bh) && BH.testUnwritten(bh)) {
          // Rewriting an unwritten block (a failed write, or preallocation): convert it again.
          BH.setUninit(bh);
        }
      }
      this.dirtyPage(d, page);
    }
    if (end > d.sizeBytes) d.sizeBytes = end;
  }

  /**
   * balance_dirty_pages: past half the dirty limit, write back inodes with dirty pages (oldest
   * first) without waiting; past the limit (dirty + under writeback), wait for completions.
   * Then trim the cache of clean pages. Under both limits that trim is all, done at once: a
   * promise only when there is writeback to start or wait for.
   */
  private balanceDirtyPages(): Promise<void> | undefined {
    const limitPages = Math.floor(this.dirtyLimitBytes / this.pageSizeBytes);
    if (this.nrDirty <= limitPages / 2 && !this.overDirtyLimit(limitPages)) {
      this.shrink();
      return undefined;
    }
    return this.writebackAndWait(limitPages);
  }

  /** Dirty pages and pages under writeback past the limit, with completions to wait for. */
  private overDirtyLimit(limitPages: number): boolean {
    return this.nrDirty + this.nrWriteback > limitPages && this.nrWriteback > 0;
  }

  private async writebackAndWait(limitPages: number): Promise<void> {
    if (this.nrDirty > limitPages / 2) {
      // Only inodes that have dirtied pages, oldest first (the kernel's b_dirty list): a scan of
      // every cached inode per write made writing many small files quadratic.
      for (const d of this.dirtyInodes) {
        if (this.nrDirty <= limitPages / 4) break;
        if (d.mapping.nrDirtyPages > 0) {
          try {
            await this.writepagesOf(d);
          } catch (e) {
            // balance_dirty_pages never fails a write: the pages stay dirty for a later pass.
            if (!(e instanceof PosixError && e.code === 'ENOMEM')) throw e;
          }
        }
        if (d.mapping.nrDirtyPages === 0) this.dirtyInodes.delete(d);
      }
    }
    while (this.overDirtyLimit(limitPages)) {
      await new Promise<void>((resolve) => this.writebackWaiters.push(resolve));
    }
    this.shrink();
  }

  /**
   * Evicts clean pages (oldest first in each mapping) while the cache is over its limit, and
   * forgets inodes left with no pages, no I/O and no error to report.
   */
  shrink(): void {
    const ps = this.pageSizeBytes;
    const limitPages = Math.floor(this.cacheLimitBytes / ps);
    if (this.nrPages <= limitPages) return;
    const target = Math.floor(limitPages * 0.75);
    // Map iteration tolerates the deletions below (dropInodeData): no copy of every inode.
    for (const d of this.inodes.values()) {
      if (this.nrPages <= target) break;
      for (const page of d.mapping.pagesInOrder()) {
        if (this.nrPages <= target) break;
        if (PG.testDirty(page) || PG.testWriteback(page) || PG.testLocked(page)) continue;
        this.dropPage(d, page);
      }
      if (d.mapping.nrPages === 0 && d.io.isIdle() && d.delayed === 0 && d.dioCount === 0 && d.mapping.wbErr.raw === 0 && d.sizeBytes === d.info.size && !d.repackPending) {
        this.dropInodeData(d);
      }
    }
  }

  /** Reads up to `len` bytes at `pos` through the cache, clipped at the in-memory size. */
  async read(info: InodeInfo, pos: number, len: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(pos) || pos < 0 || !Number.isSafeInteger(len) || len < 0) throw new PosixError('EINVAL', 'read');
    const d = this.of(info);
    const n = Math.max(0, Math.min(len, d.sizeBytes - pos));
    const out = new Uint8Array(n);
    if (n === 0) return out;
    const ps = this.pageSizeBytes;
    const first = Math.floor(pos / ps);
    const last = Math.floor((pos + n - 1) / ps);
    // A miss reads the missing pages of the request and a readahead window beyond it in one
    // pass (ext4_readahead), so a sequential reader issues large device reads.
    const missing: Page[] = [];
    let miss = false;
    for (let idx = first; idx <= last; idx++) if (!PG.testUptodate(this.getPage(d, idx))) miss = true;
    if (miss) {
      const raLast = Math.min(Math.ceil(d.sizeBytes / ps) - 1, last + Math.floor(READAHEAD_BYTES / ps));
      for (let idx = first; idx <= raLast; idx++) {
        const page = idx <= last ? this.getPage(d, idx) : d.mapping.findPage(idx) ?? this.getPage(d, idx);
        if (!PG.testUptodate(page)) missing.push(page);
      }
      await this.fillPages(d, missing);
    }
    for (let cur = pos; cur < pos + n; ) {
      const page = this.getPage(d, Math.floor(cur / ps));
      if (!PG.testUptodate(page)) await this.fillPages(d, [page]);
      const to = Math.min(pos + n, page.offsetBytes + ps);
      out.set(page.data.subarray(cur - page.offsetBytes, to - page.offsetBytes), cur - pos);
      cur = to;
    }
    this.shrink();
    return out;
  }

  /**
   * Makes pages uptodate (ext4_read_folio / ext4_readahead / the read half of write_begin):
   * every buffer is mapped from the extent tree (one lookup per extent), written blocks are
   * read with one device request per physically contiguous run, holes and unwritten blocks
   * are zeros. Blocks inside `covered` (a byte range of the file the caller is about to
   * overwrite) are mapped but neither read nor zeroed.
   */
  private async fillPages(d: InodeData, pages: readonly Page[], covered?: { from: number; to: number }): Promise<void> {
    // A file without any extent (new, or truncated to nothing) is all holes: nothing to map.
    // Seen without the tree lock only while nobody holds it (no update half done): a new
    // file's write then takes no lock and no promise. (A bad root goes on to mapExtentPoint,
    // which reports it.)
    if (d.treeBusy || !emptyExtentRoot(d.info)) {
      await d.withTree(async () => {
        if (emptyExtentRoot(d.info)) return;
        // One point lookup per run (extent piece or hole up to the next extent), not per buffer.
        let m: Mapping | undefined;
        const lastLblk = pages.length === 0 ? 0 : pages[pages.length - 1]!.buffers[pages[pages.length - 1]!.buffers.length - 1]!.lblk;
        for (const page of pages) {
          if (PG.testUptodate(page)) continue;
          for (const bh of page.buffers) {
            if (BH.testMapped(bh) || BH.testDelay(bh)) continue;
            if (m === undefined || bh.lblk < m.lblk || bh.lblk >= m.lblk + m.len) {
              m = await mapExtentPoint(this.s, d.info, bh.lblk, Math.max(1, lastLblk - bh.lblk + 1));
            }
            if (m.kind === 'hole') continue;
            bh.map(pblk(m.pblk + (bh.lblk - m.lblk)));
            if (m.kind === 'unwritten') BH.setUnwritten(bh);
          }
        }
      });
    }
    const bs = this.s.blockSize;
    const from = covered?.from ?? 0;
    const to = covered?.to ?? 0;
    const isCovered = (page: Page, bh: BufferHead): boolean => {
      const at = page.offsetBytes + bh.offsetInPage;
      return at >= from && at + bs <= to;
    };
    // Runs of buffers whose blocks follow each other on disk: one read each. Holes and
    // unwritten blocks read as zeros.
    const runs: BufferHead[][] = [];
    let run: BufferHead[] = [];
    for (const page of pages) {
      if (PG.testUptodate(page)) continue;
      for (const bh of page.buffers) {
        if (isCovered(page, bh)) continue;
        if (BH.testMapped(bh) && !BH.testUnwritten(bh)) {
          const last = run[run.length - 1];
          if (last !== undefined && (last.pblk + 1 !== bh.pblk || (run.length + 1) * bs > Math.min(READAHEAD_BYTES, this.s.dev.maxRequestBytes))) {
            runs.push(run);
            run = [];
          }
          run.push(bh);
        } else {
          page.data.fill(0, bh.offsetInPage, bh.offsetInPage + bs);
        }
      }
    }
    if (run.length > 0) runs.push(run);
    for (const r of runs) {
      const first = r[0]!;
      if (r.length === 1) {
        await this.s.readBlocks(first.pblk, 1, first.page.data.subarray(first.offsetInPage, first.offsetInPage + bs));
      } else {
        const buf = new Uint8Array(r.length * bs);
        await this.s.readBlocks(first.pblk, r.length, buf);
        for (const [i, bh] of r.entries()) bh.page.data.set(buf.subarray(i * bs, (i + 1) * bs), bh.offsetInPage);
      }
    }
    for (const page of pages) {
      for (const bh of page.buffers) if (!isCovered(page, bh)) BH.setUptodate(bh);
      // With a covered range the caller sets the pages uptodate once its bytes are in (not here,
      // so a write that fails before copying leaves no page claiming data it never read).
      if (covered === undefined) PG.setUptodate(page);
    }
  }

  private tree(d: InodeData): ExtentTree {
    return new ExtentTree(this.s, d.info, getBalloc(this.s), { deferRepack: () => this.queueRepack(d) });
  }

  /** The extent tree of `info` for a caller holding its tree lock (direct I/O). */
  extentTree(info: InodeInfo): ExtentTree {
    return this.tree(this.of(info));
  }

  /** Inodes whose trees the next commit repacks. */
  private readonly repackQueue = new Set<InodeData>();

  private queueRepack(d: InodeData): void {
    if (d.repackPending) return;
    d.repackPending = true;
    this.repackQueue.add(d);
    this.s.preCommitHooks.add(this.repackHook);
  }

  /**
   * At commit, under each tree lock, repacks the trees reshaped since the last one, so the data
   * path pays for e2fsck's shape rule once per commit instead of after every split.
   */
  private readonly repackHook = async (): Promise<void> => {
    for (const d of [...this.repackQueue]) await this.repackNow(d);
  };

  private async repackNow(d: InodeData): Promise<void> {
    if (!d.repackPending) return;
    await d.withTree(async () => {
      if (!d.repackPending) return;
      d.repackPending = false;
      this.repackQueue.delete(d);
      await new ExtentTree(this.s, d.info, getBalloc(this.s)).repack();
    });
  }

  // -------------------------------------------------------------------------------------------
  // writepages
  // -------------------------------------------------------------------------------------------

  /** ext4_writepages: maps every delayed buffer of the dirty pages, then submits the pages. */
  async writepages(info: InodeInfo): Promise<void> {
    await this.writepagesOf(this.of(info));
  }

  /**
   * One writeback pass over `d` (WB_SYNC_NONE: pages under writeback are not dirty, so they are
   * skipped). An allocation failure leaves every page unlocked and dirty for the next pass and
   * is thrown to the caller.
   */
  private async writepagesOf(d: InodeData): Promise<void> {
    const pages = d.mapping.dirtyPages();
    if (pages.length === 0) return;
    await this.mapDelayed(d, pages);
    const err = this.submitPages(d, pages);
    if (err !== undefined) throw err;
  }

  /**
   * mpage_map_and_submit_extent's mapping half: runs of Delay buffers with consecutive logical
   * blocks are allocated (goal after the previous piece) and inserted as unwritten extents.
   */
  private async mapDelayed(d: InodeData, pages: readonly Page[]): Promise<void> {
    let run: BufferHead[] = [];
    const flush = async (): Promise<void> => {
      if (run.length > 0) await this.allocRun(d, run);
      run = [];
    };
    for (const page of pages) {
      for (const bh of page.buffers) {
        if (!BH.testDelay(bh)) continue;
        const last = run[run.length - 1];
        if (last !== undefined && last.lblk + 1 !== bh.lblk) await flush();
        run.push(bh);
      }
    }
    await flush();
  }

  private async allocRun(d: InodeData, run: readonly BufferHead[]): Promise<void> {
    const s = this.s;
    const balloc = getBalloc(s);
    await d.withTree(async () => {
      const tree = this.tree(d);
      let goal = balloc.goalForInode(d.info.ino);
      if (run[0]!.lblk > 0) {
        const prev = await tree.lookup(run[0]!.lblk - 1);
        if (prev !== undefined) goal = prev.pblk + prev.len;
      }
      let done = 0;
      while (done < run.length) {
        const want = Math.min(run.length - done, EXT_UNWRITTEN_MAX_LEN);
        faults.hit('block_alloc');
        const got = await balloc.allocBlocks({ goal, maxLen: want, minLen: 1, ino: d.info.ino, takeGoalRun: true });
        try {
          await tree.insert({ lblk: run[done]!.lblk, len: got.len, pblk: got.pblk, unwritten: true });
        } catch (e) {
          await balloc.freeBlocks(got.pblk, got.len);
          throw e;
        }
        addInodeBlocks(s, d.info, got.len);
        for (let i = 0; i < got.len; i++) {
          const bh = run[done + i]!;
          bh.map(pblk(got.pblk + i));
          BH.clearDelay(bh);
          BH.setUnwritten(bh);
          BH.setUninit(bh);
          BH.setNew(bh);
        }
        d.delayed -= got.len;
        this.reservedBlocks -= got.len;
        assert(d.delayed >= 0 && this.reservedBlocks >= 0, () => `inode ${d.info.ino}: reservation count below zero`);
        done += got.len;
        goal = got.pblk + got.len;
      }
      await writeInode(s, d.info);
    });
  }

  /**
   * The submission half: pages in index order, one io_end per run of buffers contiguous in the
   * file and on the device, shared by every bio that writes the run. Synchronous from start to
   * end, so no completion runs in between (completions arrive from the device as later tasks).
   *
   * Allocation failures (io_end, bio, range entry: the fault sites) stop the pass at the buffer
   * that could not be added: writePageBuffers redirties its page and clears AsyncWrite on the
   * rest (invariant 23), the open io_end and bio are closed normally, and later pages stay
   * dirty; nothing is left locked or under writeback (S3, S4, S7, S15). Every resource is
   * taken before the buffer joins a bio, so a failure never leaves a buffer written whose
   * range is not recorded (IO-DESIGN §1.3 E).
   */
  private submitPages(d: InodeData, pages: readonly Page[]): unknown {
    const bs = this.s.blockSize;
    let cur: IoEnd | undefined;
    let lastLblk = -2;
    let lastPblk = -2;
    let failure: unknown;
    const builder = new BioBuilder<BioCtx>({
      dev: this.s.dev,
      op: 'write',
      blockSizeBytes: bs,
      alloc: (sector) => {
        assert(cur !== undefined, 'bio allocated without an io_end');
        faults.hit('bio_alloc');
        this.stats.bios++;
        return new Bio<BioCtx>({
          dev: this.s.dev, op: 'write', sector, maxVecs: this.maxBioVecs, ...(this.maxBioBytes !== undefined ? { maxBytes: this.maxBioBytes } : {}),
          private: { io: cur.get(), segs: [] },
          endIo: (bio, status) => this.endBio(bio, status),
        });
      },
    });
    /** The submitter drops its reference only after the io_end's last bio went out. */
    const closeIoEnd = (): void => {
      if (cur === undefined) return;
      builder.submit();
      cur.putDefer();
      cur = undefined;
    };
    for (const page of pages) {
      if (failure !== undefined) break;
      // WB_SYNC_NONE: a dirty page still under writeback (redirtied by a failed pass) waits
      // for the next pass.
      if (!PG.testDirty(page) || PG.testWriteback(page)) continue;
      assert(page.trylock(), () => `${page.describe()}: locked during writepages`);
      if (page.clearDirtyForIo()) this.nrDirty--;
      const eofBytes = d.sizeBytes - page.offsetBytes;
      const r = writePageBuffers(page, {
        prepare: (bh) => {
          if (bh.offsetInPage >= eofBytes) {
            // Beyond EOF: nothing to write (ext4_bio_write_page zeroes the block).
            page.data.fill(0, bh.offsetInPage, bh.offsetInPage + bs);
            BH.clearDirty(bh);
            BH.setUptodate(bh);
            return false;
          }
          if (!BH.testDirty(bh) || BH.testDelay(bh) || !BH.testMapped(bh)) return false;
          BH.clearNew(bh);
          return true;
        },
        submit: (bh) => {
          const pb = bh.pblk;
          try {
            if (cur === undefined || bh.lblk !== lastLblk + 1 || pb !== lastPblk + 1) {
              closeIoEnd();
              faults.hit('io_end_alloc');
              cur = IoEnd.init(d.io);
              this.stats.ioEnds++;
            }
            if (BH.testUninit(bh)) faults.hit('io_range_alloc');
            const bio = builder.add(pb, page.data, bh.offsetInPage);
            // Only now did the buffer join a bio: account it (IO-DESIGN §1.3 E, invariant 11).
            const segs = bio.private.segs;
            const tail = segs[segs.length - 1];
            if (tail !== undefined && tail.page === page && tail.off + tail.len === bh.offsetInPage) tail.len += bs;
            else segs.push({ page, off: bh.offsetInPage, len: bs });
          } catch (e) {
            failure = e;
            return false;
          }
          if (BH.testClearUninit(bh)) {
            if (!cur.isUnwritten) this.stats.unwrittenIoEnds++;
            cur.setUnwritten();
            cur.addRange(bh.lblk * bs, bs);
          }
          this.stats.bytesWritten += bs;
          lastLblk = bh.lblk;
          lastPblk = pb;
          return true;
        },
      });
      if (r.failed) {
        this.nrDirty++;
        this.dirtyInodes.add(d);
      }
      if (PG.testWriteback(page)) this.nrWriteback++;
      if (r.nrSubmitted > 0) this.stats.pagesWritten++;
    }
    closeIoEnd();
    return failure;
  }

  /**
   * ext4_end_bio: page segments end (now, or after conversion) and the bio's reference drops. A
   * failed conversion lost the write (the data reads as zeros): the next fsync reports it as EIO.
   */
  private endBio(bio: Bio<BioCtx>, status: BioStatus): void {
    const { io, segs } = bio.private;
    const st = status === 0 ? null : status;
    io.completeBio({
      finish: (convertFailed) => {
        if (convertFailed) segs[0]?.page.mapping.setError('EIO');
        for (const sg of segs) if (endPageWrite(sg.page, sg.off, sg.len, st)) this.writebackEnded();
      },
    }, st !== null);
  }

  /** A page left writeback: wake throttled writers. */
  private writebackEnded(): void {
    this.nrWriteback--;
    assert(this.nrWriteback >= 0, 'pages under writeback below zero');
    for (const w of this.writebackWaiters.splice(0)) w();
  }

  /**
   * The InodeIo's conversion (ext4_convert_unwritten_io_end_vec), in the worker: each range
   * becomes written, the affected buffers lose Unwritten, and i_disksize grows to cover it.
   */
  private async convert(d: InodeData, ranges: readonly IoRange[]): Promise<void> {
    const bs = this.s.blockSize;
    // A failure leaves the data on disk but unwritten (reads give zeros; the kernel logs
    // "potential data loss"): reported by the io_end's owner, see endBio and DioRequest.
    faults.hit('conversion');
    await this.s.withMetaUpdate(() => d.withTree(async () => {
      const tree = this.tree(d);
      let disk = d.info.size;
      for (const r of ranges) {
        this.stats.conversions++;
        await tree.markWritten(r.offset / bs, r.size / bs);
        for (let b = r.offset / bs; b < (r.offset + r.size) / bs; b++) {
          const page = d.mapping.findPage(Math.floor((b * bs) / this.pageSizeBytes));
          const bh = page?.buffers[(b * bs) % this.pageSizeBytes / bs];
          if (bh !== undefined && BH.testMapped(bh)) BH.clearUnwritten(bh);
        }
        disk = Math.max(disk, Math.min(d.sizeBytes, r.offset + r.size));
      }
      if (disk > d.info.size) setInodeSizeBytes(d.info.view, disk);
      await writeInode(this.s, d.info);
    }));
  }

  // -------------------------------------------------------------------------------------------
  // fsync and whole-mount flushing
  // -------------------------------------------------------------------------------------------

  /**
   * ext4_sync_file: writepages, wait until every io_end is released (so every conversion ran),
   * write i_size to disk, commit the metadata; then report the write error this cursor has not
   * seen, once (EIO).
   */
  async fsync(info: InodeInfo, cursor?: ErrCursor): Promise<void> {
    await this.flushInode(info);
    await this.s.commit();
    const d = this.of(info);
    const err = cursor !== undefined ? d.mapping.fileErrorCheck(cursor) : d.mapping.checkAndClearLegacyError();
    if (err !== undefined) throw new PosixError(err, 'fsync', undefined, `write error on inode ${info.ino}`);
  }

  /** Writes and waits for one inode's dirty data, then its size (no commit). */
  async flushInode(info: InodeInfo): Promise<void> {
    const d = this.of(info);
    // WB_SYNC_ALL: a page redirtied while still under writeback (a pass that failed part-way)
    // is skipped by one pass, so wait and pass again until nothing is dirty.
    for (;;) {
      await this.writepagesOf(d);
      await d.io.waitIdle();
      for (const p of d.mapping.findTagged('writeback')) await p.waitOnWriteback();
      if (d.mapping.nrDirtyPages === 0) break;
    }
    assert(d.io.isIdle(), () => `inode ${info.ino}: io_ends alive after waitIdle`);
    if (d.info.size !== d.sizeBytes) setInodeSizeBytes(d.info.view, d.sizeBytes);
    await writeInode(this.s, d.info);
  }

  /**
   * Flushes every inode with cached data (sync / close): all writeback passes are submitted
   * first, then waited for, so the device sees every inode's I/O at once.
   */
  async flushAll(): Promise<void> {
    const all = [...this.inodes.values()];
    let first: unknown;
    for (const d of all) {
      try {
        await this.writepagesOf(d);
      } catch (e) {
        // An allocation failure of one inode must not stop the others; anything else (a bug,
        // corruption) stops at once rather than hide behind an earlier ENOMEM.
        if (!(e instanceof PosixError)) throw e;
        first ??= e;
      }
    }
    for (const d of all) await this.flushInode(d.info);
    if (first !== undefined) throw first;
    this.shrink();
  }

  /**
   * Inodes whose write errors no open file has seen (the legacy AS_EIO/AS_ENOSPC bits),
   * cleared as they are returned: unmount reports them once.
   */
  takeLegacyErrors(): { ino: number; code: string }[] {
    const out: { ino: number; code: string }[] = [];
    for (const d of this.inodes.values()) {
      const code = d.mapping.checkAndClearLegacyError();
      if (code !== undefined) out.push({ ino: d.info.ino, code });
    }
    return out;
  }

  /** Inodes with dirty pages or live io_ends. */
  busyInodes(): number[] {
    return [...this.inodes.values()].filter((d) => !d.io.isIdle() || d.mapping.nrDirtyPages > 0).map((d) => d.info.ino);
  }

  /**
   * Forgets every cached page (after flushAll): metadata operations that free or move blocks
   * (truncate, unlink) must not leave stale mappings behind. Asserts nothing is dirty or in flight.
   */
  dropCaches(): void {
    for (const d of this.inodes.values()) {
      assert(d.io.isIdle() && d.mapping.nrDirtyPages === 0 && d.delayed === 0, () =>
        `inode ${d.info.ino}: dropCaches with dirty data or I/O in flight`);
    }
    for (const d of [...this.inodes.values()]) {
      // A mapping whose errseq recorded an error stays (open files hold cursors into it);
      // only its pages go.
      if (d.mapping.wbErr.raw !== 0) {
        for (const page of d.mapping.pagesInOrder()) this.dropPage(d, page);
      } else {
        this.dropInodeData(d);
      }
    }
  }

  /**
   * Drops one inode's cached pages without writing them (its last link went: ext4_evict_inode's
   * truncate_inode_pages_final): waits for I/O in flight, gives back the delayed reservations,
   * and forgets the inode. A no-op for an inode the cache does not know.
   */
  async discard(info: InodeInfo): Promise<void> {
    const d = this.inodes.get(info.ino);
    if (d === undefined) return;
    await d.dioWait();
    for (const p of d.mapping.findTagged('writeback')) await p.waitOnWriteback();
    await d.io.waitIdle();
    for (const page of d.mapping.dirtyPages()) {
      for (const bh of page.buffers) {
        if (!BH.testDelay(bh)) continue;
        BH.clearDelay(bh);
        d.delayed--;
        this.reservedBlocks--;
      }
    }
    assert(d.delayed === 0 && this.reservedBlocks >= 0, () => `inode ${info.ino}: reservations left after discard`);
    // Its blocks are about to be freed: nothing to repack.
    d.repackPending = false;
    this.repackQueue.delete(d);
    this.dropInodeData(d);
  }

  /** The in-core inode the cache holds for `ino` (stat of a file with unwritten-back data). */
  liveInfo(ino: number): InodeInfo | undefined {
    return this.inodes.get(ino)?.info;
  }

  /**
   * Forgets one inode's page-cache state once it is clean and idle (its last open file closed
   * after unlink, or eviction). Keeps nothing that a later iget could disagree with.
   */
  async forget(info: InodeInfo): Promise<void> {
    const d = this.inodes.get(info.ino);
    if (d === undefined) return;
    await this.flushInode(info);
    await this.repackNow(d);
    assert(d.io.isIdle() && d.delayed === 0 && d.dioCount === 0, () => `inode ${info.ino}: forget while busy`);
    this.dropInodeData(d);
  }

  // -------------------------------------------------------------------------------------------
  // Hooks for direct I/O, truncate and fallocate (the kernel's filemap_write_and_wait_range,
  // invalidate_inode_pages2_range, inode_lock, inode_dio_begin/end/wait, i_data_sem)
  // -------------------------------------------------------------------------------------------

  /** Runs `fn` holding the inode lock of `info` (i_rwsem): writers, truncate, fallocate, DIO. */
  withInodeLock<T>(info: InodeInfo, fn: () => Promise<T>): Promise<T> {
    return this.of(info).withLock(fn);
  }

  /** Runs `fn` holding the extent-tree lock of `info` (i_data_sem). */
  withTreeLock<T>(info: InodeInfo, fn: () => Promise<T>): Promise<T> {
    return this.of(info).withTree(fn);
  }

  /** inode_dio_begin / inode_dio_end / inode_dio_wait. */
  dioBegin(info: InodeInfo): void {
    this.of(info).dioBegin();
  }
  dioEnd(info: InodeInfo): void {
    this.of(info).dioEnd();
  }
  dioWait(info: InodeInfo): Promise<void> {
    return this.of(info).dioWait();
  }

  /**
   * filemap_write_and_wait_range: dirty pages overlapping [start, end) are written and every
   * io_end of the inode has completed (so conversions of that range are done).
   */
  async writeAndWaitRange(info: InodeInfo, start: number, end: number): Promise<void> {
    const d = this.of(info);
    const ps = this.pageSizeBytes;
    const first = Math.floor(start / ps);
    const last = Math.ceil(end / ps);
    // WB_SYNC_ALL over the range: a page redirtied while still under writeback is skipped by one
    // pass, so wait and pass again until the range is clean.
    for (;;) {
      const dirty = d.mapping.dirtyPages(first, Math.max(0, last - first));
      if (dirty.length > 0) {
        await this.mapDelayed(d, dirty);
        const err = this.submitPages(d, dirty);
        if (err !== undefined) throw err;
      }
      for (const p of d.mapping.findTagged('writeback', first, Math.max(0, last - first))) await p.waitOnWriteback();
      await d.io.waitIdle();
      if (d.mapping.dirtyPages(first, Math.max(1, last - first)).length === 0) break;
    }
  }

  /**
   * invalidate_inode_pages2_range: drops the cached pages overlapping [start, end), which the
   * caller made clean (writeAndWaitRange) first; a later read maps them from the tree again.
   */
  async invalidateRange(info: InodeInfo, start: number, end: number): Promise<void> {
    const d = this.of(info);
    const ps = this.pageSizeBytes;
    for (let idx = Math.floor(start / ps); idx < Math.ceil(end / ps); idx++) {
      const page = d.mapping.findPage(idx);
      if (page === undefined) continue;
      await page.waitOnWriteback();
      assert(!PG.testDirty(page), () => `${page.describe()}: invalidate of a dirty page`);
      this.dropPage(d, page);
    }
  }

  /** Sets the in-memory size (direct I/O extending writes, after the data is on disk). */
  setSize(info: InodeInfo, sizeBytes: number): void {
    this.of(info).sizeBytes = sizeBytes;
  }

  /**
   * truncate (ext4_setattr's size change): waits for direct I/O, writes back and waits for every
   * dirty page and io_end, drops the pages from the one holding the new end on, then lets the
   * metadata layer free the blocks and zero the tail of the last block (`metaTruncate`).
   */
  async truncate(info: InodeInfo, sizeBytes: number, metaTruncate: (info: InodeInfo, sizeBytes: number) => Promise<void>): Promise<void> {
    const d = this.of(info);
    await d.dioWait();
    await this.flushInode(info);
    const ps = this.pageSizeBytes;
    await this.invalidateRange(info, Math.floor(Math.min(sizeBytes, d.sizeBytes) / ps) * ps, Math.max(d.sizeBytes, info.size) + ps);
    await d.withTree(() => metaTruncate(info, sizeBytes));
    d.sizeBytes = sizeBytes;
  }

  /**
   * fallocate(2): `mode` 0 preallocates unwritten extents over the holes of [offset, offset+len)
   * and grows i_size (unless keepSize); punchHole (with keepSize, as Linux requires) frees the
   * whole blocks and zeroes the partial ones; zeroRange zeroes the partial blocks and turns the
   * whole ones into unwritten extents (reads return zeros, no data is written).
   */
  async fallocate(info: InodeInfo, offset: number, len: number, mode: FallocateMode = {}): Promise<void> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len <= 0) {
      throw new PosixError('EINVAL', 'fallocate', undefined, `offset ${offset}, length ${len}`);
    }
    if (mode.punchHole === true && mode.zeroRange === true) throw new PosixError('EINVAL', 'fallocate', undefined, 'punch hole and zero range together');
    if (mode.punchHole === true && mode.keepSize !== true) throw new PosixError('EOPNOTSUPP', 'fallocate', undefined, 'punch hole needs keep size (FALLOC_FL_KEEP_SIZE)');
    if (!info.hasExtents) throw new PosixError('EOPNOTSUPP', 'fallocate', undefined, `inode ${info.ino} is not extent-mapped`);
    const bs = this.s.blockSize;
    const end = offset + len;
    if (Math.ceil(end / bs) > 0xffff_ffff) throw new PosixError('EFBIG', 'fallocate');
    const d = this.of(info);
    await d.dioWait();
    const firstFull = Math.ceil(offset / bs);
    const endFull = Math.floor(end / bs);
    if (mode.punchHole === true || mode.zeroRange === true) {
      // Write back and drop the cached pages of the range so no stale mapping or dirty data outlives it.
      await this.flushInode(info);
      const ps = this.pageSizeBytes;
      await this.invalidateRange(info, Math.floor(offset / ps) * ps, end);
      if (endFull > firstFull) {
        await d.withTree(async () => {
          const runs = await this.tree(d).remove(firstFull, endFull - firstFull);
          for (const r of runs) {
            await getBalloc(this.s).freeBlocks(r.pblk, r.len);
            addInodeBlocks(this.s, info, -r.len);
          }
          await writeInode(this.s, info);
        });
      }
      // Partial blocks at the edges: zeros through the page cache (only where data exists).
      const zeroEdge = async (from: number, to: number): Promise<void> => {
        const stop = Math.min(to, d.sizeBytes);
        if (stop <= from) return;
        const e = await d.withTree(() => this.tree(d).lookup(Math.floor(from / bs)));
        if (e === undefined || e.unwritten) return;
        await this.write(info, from, new Uint8Array(stop - from));
      };
      if (firstFull > endFull) await zeroEdge(offset, end);
      else {
        if (offset % bs !== 0) await zeroEdge(offset, firstFull * bs);
        if (end % bs !== 0 && endFull * bs >= offset) await zeroEdge(endFull * bs, end);
      }
      if (mode.punchHole === true) {
        await this.flushInode(info);
        touch(this.s, info, ['mtime', 'ctime']);
        await writeInode(this.s, info);
        return;
      }
    }
    // Preallocate unwritten extents over the holes of the whole blocks covering the range
    // (zeroRange: only the whole blocks; default mode: every block the range touches).
    const from = mode.zeroRange === true ? firstFull : Math.floor(offset / bs);
    const to = mode.zeroRange === true ? endFull : Math.ceil(end / bs);
    if (to > from) await this.preallocate(d, from, to);
    if (mode.keepSize !== true && end > d.sizeBytes) {
      await this.flushInode(info);
      d.sizeBytes = end;
      setInodeSizeBytes(info.view, end);
    }
    if (mode.zeroRange === true) await this.flushInode(info);
    touch(this.s, info, mode.keepSize === true && mode.zeroRange !== true ? ['ctime'] : ['mtime', 'ctime']);
    await writeInode(this.s, info);
  }

  /** Allocates unwritten extents over every hole of logical blocks [from, to). */
  private async preallocate(d: InodeData, from: number, to: number): Promise<void> {
    const balloc = getBalloc(this.s);
    // Cached buffers of the range may be unmapped holes (or Delay): write them back and drop
    // the pages, so the next access maps the new unwritten extents from the tree.
    await this.flushInode(d.info);
    const bs = this.s.blockSize;
    await this.invalidateRange(d.info, from * bs, to * bs);
    await d.withTree(async () => {
      const tree = this.tree(d);
      const holes: { lblk: number; len: number }[] = [];
      let cur = from;
      for (const e of await tree.extents()) {
        if (e.lblk + e.len <= cur) continue;
        if (e.lblk >= to) break;
        if (e.lblk > cur) holes.push({ lblk: cur, len: e.lblk - cur });
        cur = Math.max(cur, e.lblk + e.len);
      }
      if (cur < to) holes.push({ lblk: cur, len: to - cur });
      let need = 0;
      for (const h of holes) need += h.len;
      // Delayed reservations of other writers stay honoured, and the tree blocks' reserve kept.
      if (need > 0 && balloc.freeBlocksCount() - this.reservedBlocks - METADATA_RESERVE_BLOCKS < need) {
        throw new PosixError('ENOSPC', 'fallocate', undefined, `${need} block(s) needed`);
      }
      for (const h of holes) {
        let goal = balloc.goalForInode(d.info.ino);
        if (h.lblk > 0) {
          const prev = await tree.lookup(h.lblk - 1);
          if (prev !== undefined) goal = prev.pblk + prev.len;
        }
        let done = 0;
        while (done < h.len) {
          faults.hit('block_alloc');
          const got = await balloc.allocBlocks({ goal, maxLen: Math.min(h.len - done, EXT_UNWRITTEN_MAX_LEN), minLen: 1, ino: d.info.ino, takeGoalRun: true });
          try {
            await tree.insert({ lblk: h.lblk + done, len: got.len, pblk: got.pblk, unwritten: true });
          } catch (e) {
            await balloc.freeBlocks(got.pblk, got.len);
            throw e;
          }
          addInodeBlocks(this.s, d.info, got.len);
          done += got.len;
          goal = got.pblk + got.len;
        }
      }
      await writeInode(this.s, d.info);
    });
  }
}
