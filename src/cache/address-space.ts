/**
 * AddressSpace: the page cache of one file, ported from `struct address_space`
 * (include/linux/fs.h, mm/filemap.c) with its write-error state, `errseq_t` (lib/errseq.c)
 * plus the legacy AS_EIO / AS_ENOSPC bits (include/linux/pagemap.h `mapping_set_error`).
 *
 * Pages are indexed by page number. The dirty and writeback tags (the kernel's xarray marks
 * PAGECACHE_TAG_DIRTY / _WRITEBACK) let writeback find dirty pages in index order and
 * fsync find pages still being written, without walking every page.
 *
 * Write errors are reported once per open file: a bio that fails calls `setError`; each open
 * file holds an `ErrCursor` sampled at open; `fileErrorCheck(cursor)` (the kernel's
 * `file_check_and_advance_wb_err`, called by fsync) returns the error the first time that file
 * asks after it happened and nothing after, while another file still sees it once, and a new
 * error after that is seen again by everyone (IO-DESIGN.md invariant 14, "reported once
 * through fsync").
 *
 * Invariants kept: a page is in `pages` under its own index; a page is in the writeback tag
 * exactly while it is under writeback; the dirty tag may outlive PG_Dirty until writeback
 * starts (as in the kernel, where writeback rechecks the flag), never the other way round;
 * a page leaves the cache only locked, clean and not under writeback.
 */
import { assert } from '../util/assert.js';
import { ERRNO, type ErrnoCode } from '../util/errors.js';
import { defineFlagFns } from './flag-fns.js';
import { Page, PG, assertPageGeometry, DEFAULT_PAGE_SIZE } from './page.js';

// ---------------------------------------------------------------------------------------------
// errseq_t (lib/errseq.c)
// ---------------------------------------------------------------------------------------------

/** Largest errno an errseq can hold (the kernel's MAX_ERRNO). */
const MAX_ERRNO = 4095;
/** Set once someone has seen the current error (ERRSEQ_SEEN = 1 << ilog2(MAX_ERRNO + 1)). */
const ERRSEQ_SEEN = 1 << 12;
/** One step of the change counter in the bits above SEEN (ERRSEQ_CTR_INC). */
const ERRSEQ_CTR_INC = 1 << 13;

/** errno number → code, for turning a stored errno back into the code the caller passed. */
const CODE_OF_ERRNO = new Map<number, ErrnoCode>(
  (Object.entries(ERRNO) as [ErrnoCode, number][]).map(([code, n]) => [n, code]),
);

/**
 * A sequence-numbered error slot (`errseq_t`): the low 12 bits hold the last errno, bit 12 says
 * whether anyone has seen it, the bits above count errors recorded after a sighting. The value
 * stays a 32-bit unsigned number (`>>> 0` after every change), as the kernel's u32 wraps.
 */
export class ErrSeq {
  /** The packed errseq value. */
  private value = 0;

  /** The raw value, for tests and for superblock-level sampling. */
  get raw(): number {
    return this.value;
  }

  /**
   * Records `errno` (`errseq_set`). The counter advances only if the previous error was seen,
   * so a burst of errors before anyone looks is reported once, and an error after a sighting
   * is always a new value that every cursor will notice.
   */
  set(errno: number): void {
    assert(Number.isInteger(errno) && errno > 0 && errno <= MAX_ERRNO, () => `errseq_set of errno ${errno}`);
    const old = this.value;
    let next = ((old & ~(MAX_ERRNO | ERRSEQ_SEEN)) | errno) >>> 0;
    if ((old & ERRSEQ_SEEN) !== 0) next = (next + ERRSEQ_CTR_INC) >>> 0;
    this.value = next;
  }

  /**
   * A cursor value for a new opener (`errseq_sample`): the current value if its error was
   * already seen, else 0, so an error nobody has seen yet is reported to this opener too.
   */
  sample(): number {
    return (this.value & ERRSEQ_SEEN) !== 0 ? this.value : 0;
  }

  /** The errno recorded since `since`, without consuming it (`errseq_check`); 0 if none. */
  check(since: number): number {
    return this.value === since ? 0 : this.value & MAX_ERRNO;
  }

  /**
   * Reports the errno recorded since `cursor.since` once and moves the cursor past it
   * (`errseq_check_and_advance`); marks the error seen so later errors bump the counter.
   */
  checkAndAdvance(cursor: ErrCursor): number {
    const old = this.value;
    if (old === cursor.since) return 0;
    const seen = (old | ERRSEQ_SEEN) >>> 0;
    this.value = seen;
    cursor.since = seen;
    return seen & MAX_ERRNO;
  }
}

/** One open file's position in its mapping's error sequence (the kernel's `file->f_wb_err`). */
export interface ErrCursor {
  /** The errseq value this file last saw. */
  since: number;
}

/** Turns a stored errno back into its code; EIO for a number outside the table. */
function codeOf(errno: number): ErrnoCode {
  return CODE_OF_ERRNO.get(errno) ?? 'EIO';
}

// ---------------------------------------------------------------------------------------------
// AddressSpace
// ---------------------------------------------------------------------------------------------

/** Bit numbers of the mapping flag word (the kernel's AS_EIO, AS_ENOSPC). */
export const AS_BITS = {
  /** A write failed with an error other than ENOSPC since the last legacy check. */
  EIO: 0,
  /** A write failed with ENOSPC since the last legacy check. */
  ENOSPC: 1,
} as const;

/** Generated accessors for the mapping flags: `AS.testClearEIO(mapping)` and so on. */
export const AS = defineFlagFns<AddressSpace>()('AddressSpace', AS_BITS);

/** The two tags a page can carry in its mapping (PAGECACHE_TAG_DIRTY, PAGECACHE_TAG_WRITEBACK). */
export type PageTag = 'dirty' | 'writeback';

export interface AddressSpaceOptions {
  /** Filesystem block size in bytes (1024 … pageSizeBytes). */
  blockSizeBytes: number;
  /** Page size in bytes; DEFAULT_PAGE_SIZE (4 KiB) when absent. */
  pageSizeBytes?: number;
  /** The superblock's error sequence (`sb->s_wb_err`, for syncfs); also set by setError. */
  sbWbErr?: ErrSeq;
}

export class AddressSpace {
  /** The AS_* flag bits; change them through `AS.*` or setError/fileErrorCheck. */
  state = 0;
  /** Page size in bytes. */
  readonly pageSizeBytes: number;
  /** Filesystem block size in bytes. */
  readonly blockSizeBytes: number;
  /** The write-error sequence of this file (`mapping->wb_err`). */
  readonly wbErr = new ErrSeq();
  private readonly sbWbErr: ErrSeq | undefined;
  /** Cached pages by page index (`i_pages`). */
  private readonly pages = new Map<number, Page>();
  /** Indexes of the pages tagged dirty / under writeback. */
  private readonly tags: Record<PageTag, Set<number>> = { dirty: new Set(), writeback: new Set() };

  constructor(opts: AddressSpaceOptions) {
    this.pageSizeBytes = opts.pageSizeBytes ?? DEFAULT_PAGE_SIZE;
    this.blockSizeBytes = opts.blockSizeBytes;
    this.sbWbErr = opts.sbWbErr;
    assertPageGeometry(this.pageSizeBytes, this.blockSizeBytes);
  }

  /** Buffers (blocks) per page. */
  get buffersPerPage(): number {
    return this.pageSizeBytes / this.blockSizeBytes;
  }

  /** Number of cached pages (`nrpages`). */
  get nrPages(): number {
    return this.pages.size;
  }

  /** The cached page at `index`, if any (`filemap_get_folio` without creation). */
  findPage(index: number): Page | undefined {
    return this.pages.get(index);
  }

  /** Every page, oldest first (the order they entered the cache): eviction scans this. */
  pagesInOrder(): Page[] {
    return [...this.pages.values()];
  }

  /** The page at `index`, created empty (not uptodate, no flags) when absent. */
  findOrCreatePage(index: number, data?: Uint8Array): Page {
    let page = this.pages.get(index);
    if (page === undefined) {
      page = new Page(this, index, data);
      this.pages.set(index, page);
    }
    return page;
  }

  /**
   * Removes a page from the cache (`delete_from_page_cache`). The page must be locked, clean
   * and not under writeback: dropping dirty data or a page a bio still writes is a bug.
   */
  deletePage(page: Page): void {
    assert(this.pages.get(page.index) === page, () => `${page.describe()}: not in this mapping`);
    assert(PG.testLocked(page), () => `${page.describe()}: deleted while unlocked`);
    assert(!PG.testWriteback(page), () => `${page.describe()}: deleted under writeback`);
    assert(!PG.testDirty(page), () => `${page.describe()}: deleted while dirty`);
    this.pages.delete(page.index);
    this.tags.dirty.delete(page.index);
  }

  /** Tags `page` dirty; called by Page.markDirty. */
  tagDirty(page: Page): void {
    this.assertOwn(page);
    this.tags.dirty.add(page.index);
  }

  /** Drops the dirty tag of `page`; called by Page.startWriteback once the page is clean. */
  untagDirty(page: Page): void {
    this.assertOwn(page);
    this.tags.dirty.delete(page.index);
  }

  /** Tags `page` under writeback; called by Page.startWriteback only. */
  tagWriteback(page: Page): void {
    this.assertOwn(page);
    assert(!this.tags.writeback.has(page.index), () => `${page.describe()}: writeback tag set twice`);
    this.tags.writeback.add(page.index);
  }

  /** Drops the writeback tag of `page`; called by Page.endWriteback only. */
  untagWriteback(page: Page): void {
    this.assertOwn(page);
    assert(this.tags.writeback.delete(page.index), () => `${page.describe()}: writeback tag not set`);
  }

  /** Is page `index` tagged `tag`? */
  isTagged(index: number, tag: PageTag): boolean {
    return this.tags[tag].has(index);
  }

  /** Number of pages tagged dirty (no snapshot made). */
  get nrDirtyPages(): number {
    return this.tags.dirty.size;
  }

  /**
   * Pages tagged `tag` with index ≥ `fromIndex`, in index order, at most `max` of them
   * (`filemap_get_folios_tag`). Returns a snapshot, because writeback changes the tags of the
   * pages it is handed while it walks them.
   */
  findTagged(tag: PageTag, fromIndex = 0, max = Number.POSITIVE_INFINITY): Page[] {
    const idx = [...this.tags[tag]].filter((i) => i >= fromIndex);
    // A small file has one tagged page: nothing to sort.
    if (idx.length > 1) idx.sort((a, b) => a - b);
    const out: Page[] = [];
    for (const i of idx) {
      if (out.length >= max) break;
      const page = this.pages.get(i);
      assert(page !== undefined, () => `${tag} tag on page ${i} which is not cached`);
      out.push(page);
    }
    return out;
  }

  /** Dirty-tagged pages from `fromIndex` on, in index order (the writeback walk). */
  dirtyPages(fromIndex = 0, max = Number.POSITIVE_INFINITY): Page[] {
    return this.findTagged('dirty', fromIndex, max);
  }

  /**
   * Records a write error (`mapping_set_error`): in this file's errseq, the superblock's errseq
   * when one was given, and the legacy AS_ENOSPC / AS_EIO bit.
   */
  setError(code: ErrnoCode): void {
    const errno = ERRNO[code];
    this.wbErr.set(errno);
    this.sbWbErr?.set(errno);
    if (code === 'ENOSPC') AS.setENOSPC(this);
    else AS.setEIO(this);
  }

  /** A cursor for a newly opened file (`filemap_sample_wb_err`). */
  openErrCursor(): ErrCursor {
    return { since: this.wbErr.sample() };
  }

  /**
   * The write error this open file has not yet seen, once (`file_check_and_advance_wb_err`);
   * undefined when there is none. Like the kernel, it also clears the legacy AS_EIO/AS_ENOSPC
   * bits, since a caller of this function replaces a legacy check.
   */
  fileErrorCheck(cursor: ErrCursor): ErrnoCode | undefined {
    let errno = 0;
    if (this.wbErr.check(cursor.since) !== 0) errno = this.wbErr.checkAndAdvance(cursor);
    AS.clearEIO(this);
    AS.clearENOSPC(this);
    return errno === 0 ? undefined : codeOf(errno);
  }

  /**
   * The legacy error check for callers without an open file (`filemap_check_errors`):
   * test-and-clear AS_ENOSPC then AS_EIO, so each legacy error is returned once; EIO wins.
   */
  checkAndClearLegacyError(): ErrnoCode | undefined {
    let code: ErrnoCode | undefined;
    if (AS.testClearENOSPC(this)) code = 'ENOSPC';
    if (AS.testClearEIO(this)) code = 'EIO';
    return code;
  }

  private assertOwn(page: Page): void {
    assert(page.mapping === this && this.pages.get(page.index) === page, () =>
      `${page.describe()}: tagged in a mapping it does not belong to`);
  }
}
