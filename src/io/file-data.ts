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
 * Concurrency: the caller runs write/read/writepages/fsync one at a time per mount (WriteOps.run).
 * The conversion worker runs concurrently with them, so every extent-tree access of this module
 * goes through the inode's tree lock (the kernel's i_data_sem). Metadata operations that change a
 * file's blocks (truncate, unlink) must first call `flushAll()` and `dropCaches()`.
 */
import type { Ext4Super } from '../fs/super.js';
import type { InodeInfo } from '../fs/inode/inode.js';
import { writeInode, addInodeBlocks } from '../fs/inode/inode.js';
import { touch } from '../fs/inode/inode-life.js';
import { ExtentTree } from '../fs/extents/extent-tree.js';
import { getBalloc } from '../fs/alloc/balloc.js';
import { setInodeSizeBytes } from '../format/inode.js';
import { EXT_UNWRITTEN_MAX_LEN } from '../format/extent.js';
import { AddressSpace, type ErrCursor } from '../cache/address-space.js';
import { PG, type Page } from '../cache/page.js';
import { BH, type BufferHead } from '../cache/buffer-head.js';
import { endPageWrite, writePageBuffers } from '../cache/page-completion.js';
import { Bio, BioBuilder, BIO_MAX_VECS, type BioStatus } from '../blockdev/bio.js';
import { HostWorkQueue, type WorkQueue } from '../runtime/work-queue.js';
import { InodeIo, IoEnd, type IoRange } from './io-end.js';
import { assert } from '../util/assert.js';
import { PosixError } from '../util/errors.js';
import { pblk } from '../util/units.js';

export interface FileDataOptions {
  /** Page size in bytes (4, 16 or 64 KiB; default 4 KiB). */
  pageSizeBytes?: number | undefined;
  /** Where conversion work runs (default: a HostWorkQueue). */
  wq?: WorkQueue | undefined;
  /** Most segments per bio (default BIO_MAX_VECS); small values make one extent span many bios. */
  maxBioVecs?: number | undefined;
}

/** The engine's counters (the keys of `--stats`). */
export interface DataStats {
  bios: number;
  ioEnds: number;
  unwrittenIoEnds: number;
  conversions: number;
  pagesWritten: number;
  bytesWritten: number;
}

/** Blocks held back per inode with delayed data, for extent-tree blocks the mapping may need. */
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
  /** Extent-tree lock (i_data_sem): a promise chain. */
  private treeTail: Promise<unknown> = Promise.resolve();
  constructor(
    readonly info: InodeInfo,
    readonly mapping: AddressSpace,
    readonly io: InodeIo,
  ) {
    this.sizeBytes = info.size;
  }

  /** Runs `fn` holding the extent-tree lock. */
  withTree<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.treeTail.then(fn, fn);
    this.treeTail = p.then(() => undefined, () => undefined);
    return p;
  }
}

export class FileData {
  readonly pageSizeBytes: number;
  readonly wq: WorkQueue;
  readonly maxBioVecs: number;
  /** Blocks reserved by delayed writes and not yet allocated (per filesystem). */
  reservedBlocks = 0;
  readonly stats: DataStats = { bios: 0, ioEnds: 0, unwrittenIoEnds: 0, conversions: 0, pagesWritten: 0, bytesWritten: 0 };
  private readonly inodes = new Map<number, InodeData>();

  constructor(readonly s: Ext4Super, opts: FileDataOptions = {}) {
    this.pageSizeBytes = opts.pageSizeBytes ?? 4096;
    this.wq = opts.wq ?? new HostWorkQueue();
    this.maxBioVecs = opts.maxBioVecs ?? BIO_MAX_VECS;
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
    const end = pos + bytes.length;
    if (Math.ceil(end / bs) > 0xffff_ffff) throw new PosixError('EFBIG', 'write');
    const d = this.of(info);
    const ps = this.pageSizeBytes;
    // Pages are made uptodate (and their buffers mapped) before the reservation check, which
    // then counts exactly the buffers that become Delay.
    const pages: Page[] = [];
    for (let idx = Math.floor(pos / ps); idx * ps < end; idx++) {
      const page = d.mapping.findOrCreatePage(idx);
      await page.waitOnWriteback();
      const whole = pos <= page.offsetBytes && end >= page.offsetBytes + ps;
      await this.fillPage(d, page, whole);
      pages.push(page);
    }
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
      const meta = d.delayed === 0 ? METADATA_RESERVE_BLOCKS : 0;
      if (free - this.reservedBlocks - meta < need) {
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
      page.markDirty();
    }
    if (end > d.sizeBytes) d.sizeBytes = end;
    touch(this.s, info, ['mtime', 'ctime']);
    return bytes.length;
  }

  /** Reads up to `len` bytes at `pos` through the cache, clipped at the in-memory size. */
  async read(info: InodeInfo, pos: number, len: number): Promise<Uint8Array> {
    const d = this.of(info);
    const n = Math.max(0, Math.min(len, d.sizeBytes - pos));
    const out = new Uint8Array(n);
    const ps = this.pageSizeBytes;
    for (let cur = pos; cur < pos + n; ) {
      const page = d.mapping.findOrCreatePage(Math.floor(cur / ps));
      await this.fillPage(d, page, false);
      const to = Math.min(pos + n, page.offsetBytes + ps);
      out.set(page.data.subarray(cur - page.offsetBytes, to - page.offsetBytes), cur - pos);
      cur = to;
    }
    return out;
  }

  /**
   * Makes a page uptodate (ext4_read_folio / the read half of write_begin): each buffer is
   * mapped from the extent tree once; written blocks are read, holes and unwritten blocks are
   * zeros. With `whole` (the caller overwrites the page entirely) nothing is read.
   */
  private async fillPage(d: InodeData, page: Page, whole: boolean): Promise<void> {
    if (PG.testUptodate(page)) return;
    const bs = this.s.blockSize;
    for (const bh of page.buffers) {
      if (BH.testMapped(bh) || BH.testDelay(bh)) continue;
      const e = await d.withTree(() => this.tree(d).lookup(bh.lblk));
      if (e === undefined) continue;
      bh.map(pblk(e.pblk + (bh.lblk - e.lblk)));
      if (e.unwritten) BH.setUnwritten(bh);
    }
    if (!whole) {
      for (const bh of page.buffers) {
        const dst = page.data.subarray(bh.offsetInPage, bh.offsetInPage + bs);
        if (BH.testMapped(bh) && !BH.testUnwritten(bh)) await this.s.readBlocks(bh.pblk, 1, dst);
        else dst.fill(0);
        BH.setUptodate(bh);
      }
    }
    PG.setUptodate(page);
  }

  private tree(d: InodeData): ExtentTree {
    return new ExtentTree(this.s, d.info, getBalloc(this.s));
  }

  // -------------------------------------------------------------------------------------------
  // writepages
  // -------------------------------------------------------------------------------------------

  /** ext4_writepages: maps every delayed buffer of the dirty pages, then submits the pages. */
  async writepages(info: InodeInfo): Promise<void> {
    const d = this.of(info);
    for (const p of d.mapping.findTagged('writeback')) await p.waitOnWriteback();
    const pages = d.mapping.dirtyPages();
    if (pages.length === 0) return;
    await this.mapDelayed(d, pages);
    this.submitPages(d, pages);
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
        const got = await balloc.allocBlocks({ goal, maxLen: want, minLen: 1, ino: d.info.ino });
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
   * file and on the device. Synchronous from start to end, so no completion runs in between
   * (completions arrive from the device as later tasks).
   */
  private submitPages(d: InodeData, pages: readonly Page[]): void {
    const bs = this.s.blockSize;
    let cur: IoEnd | undefined;
    let lastLblk = -2;
    let lastPblk = -2;
    const builder = new BioBuilder<BioCtx>({
      dev: this.s.dev,
      op: 'write',
      blockSizeBytes: bs,
      alloc: (sector) => {
        assert(cur !== undefined, 'bio allocated without an io_end');
        this.stats.bios++;
        return new Bio<BioCtx>({
          dev: this.s.dev, op: 'write', sector, maxVecs: this.maxBioVecs,
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
      if (!PG.testDirty(page)) continue;
      assert(page.trylock(), () => `${page.describe()}: locked during writepages`);
      page.clearDirtyForIo();
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
          if (cur === undefined || bh.lblk !== lastLblk + 1 || pb !== lastPblk + 1) {
            closeIoEnd();
            cur = IoEnd.init(d.io);
            this.stats.ioEnds++;
          }
          const bio = builder.add(pb, page.data, bh.offsetInPage);
          // Only now did the buffer join a bio: account it (IO-DESIGN §1.3 E, invariant 11).
          const segs = bio.private.segs;
          const tail = segs[segs.length - 1];
          if (tail !== undefined && tail.page === page && tail.off + tail.len === bh.offsetInPage) tail.len += bs;
          else segs.push({ page, off: bh.offsetInPage, len: bs });
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
      if (r.nrSubmitted > 0) this.stats.pagesWritten++;
    }
    closeIoEnd();
  }

  /** ext4_end_bio: page segments end (now, or after conversion) and the bio's reference drops. */
  private endBio(bio: Bio<BioCtx>, status: BioStatus): void {
    const { io, segs } = bio.private;
    const st = status === 0 ? null : status;
    io.completeBio({ finish: () => { for (const sg of segs) endPageWrite(sg.page, sg.off, sg.len, st); } }, st !== null);
  }

  /**
   * The InodeIo's conversion (ext4_convert_unwritten_io_end_vec), in the worker: each range
   * becomes written, the affected buffers lose Unwritten, and i_disksize grows to cover it.
   */
  private async convert(d: InodeData, ranges: readonly IoRange[]): Promise<void> {
    const bs = this.s.blockSize;
    await d.withTree(async () => {
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
    });
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
    await this.writepages(info);
    await d.io.waitIdle();
    for (const p of d.mapping.findTagged('writeback')) await p.waitOnWriteback();
    assert(d.io.isIdle(), () => `inode ${info.ino}: io_ends alive after waitIdle`);
    if (d.info.size !== d.sizeBytes) setInodeSizeBytes(d.info.view, d.sizeBytes);
    await writeInode(this.s, d.info);
  }

  /** Flushes every inode with cached data (sync / close). */
  async flushAll(): Promise<void> {
    for (const d of [...this.inodes.values()]) await this.flushInode(d.info);
  }

  /** Inodes with dirty pages or live io_ends. */
  busyInodes(): number[] {
    return [...this.inodes.values()].filter((d) => !d.io.isIdle() || d.mapping.dirtyPages().length > 0).map((d) => d.info.ino);
  }

  /**
   * Forgets every cached page (after flushAll): metadata operations that free or move blocks
   * (truncate, unlink) must not leave stale mappings behind. Asserts nothing is dirty or in flight.
   */
  dropCaches(): void {
    for (const d of this.inodes.values()) {
      assert(d.io.isIdle() && d.mapping.dirtyPages().length === 0 && d.delayed === 0, () =>
        `inode ${d.info.ino}: dropCaches with dirty data or I/O in flight`);
    }
    this.inodes.clear();
  }
}
