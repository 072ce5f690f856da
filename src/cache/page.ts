/**
 * Page: one page-cache page of a file with its ring of BufferHeads, ported from `struct page` /
 * `struct folio` (include/linux/page-flags.h, mm/filemap.c, mm/page-writeback.c) as ext4's
 * data path uses it.
 *
 * Page flags live in one bit word. Dirty, Error and Uptodate get the generated accessors
 * (`PG.setError(page)`, `PG.testClearDirty(page)`, …). Locked and Writeback get only `testX`:
 * they change through `lock`/`trylock`/`unlock` and `startWriteback`/`endWriteback`, which assert
 * correct use, as the kernel tests PageWriteback freely but sets it only in `set_page_writeback`
 * and clears it only in `end_page_writeback`.
 *
 * Invariants kept:
 * - pageSizeBytes is a power of two in [4 KiB, 64 KiB]; the block size divides it; the page
 *   holds exactly pageSize / blockSize buffers, buffer i covering bytes [i·b, (i+1)·b);
 * - unlock only a locked page; a waiting locker gets the lock handed over directly;
 * - writeback starts only on a locked page not already under writeback, and ends exactly once
 *   per start (IO-DESIGN.md invariant 19; the kernel BUGs on a second end_page_writeback);
 * - the mapping's dirty and writeback tags follow the page: writeback tag set exactly while
 *   Writeback is set; dirty tag set by markDirty and cleared when writeback starts on a page
 *   that is no longer dirty (as `__folio_start_writeback` does).
 */
import { assert } from '../util/assert.js';
import { BufferHead } from './buffer-head.js';
import { checkBitTable, defineFlagFns, defineTestFns } from './flag-fns.js';
import type { AddressSpace } from './address-space.js';

/** The page sizes ext4ts selects between (4 KiB is the default, the kernel's on x86). */
export const PAGE_SIZES = [4096, 16384, 65536] as const;
/** The default page size in bytes. */
export const DEFAULT_PAGE_SIZE = 4096;

/** Bit numbers of the page flag word (a subset of the kernel's `enum pageflags`). */
export const PG_BITS = {
  /** Page lock held (PG_locked). Changed by lock/trylock/unlock only. */
  Locked: 0,
  /** A write of this page failed (PG_error). */
  Error: 1,
  /** Page contents are valid (PG_uptodate). */
  Uptodate: 2,
  /** Page has data not yet written (PG_dirty). */
  Dirty: 3,
  /** Page is being written (PG_writeback). Changed by startWriteback/endWriteback only. */
  Writeback: 4,
} as const;
checkBitTable('Page', PG_BITS);

/** The names of the page flags. */
export type PgFlag = keyof typeof PG_BITS;

const { Locked, Writeback, ...PG_FREE_BITS } = PG_BITS;

/** Generated accessors: all five for Dirty, Error, Uptodate; `testX` for every flag. */
export const PG = Object.freeze({
  ...defineFlagFns<Page>()('Page', PG_FREE_BITS),
  ...defineTestFns<Page>()('Page', { Locked, Writeback }),
});

/** Asserts that `pageSizeBytes` and `blockSizeBytes` form a valid page geometry. */
export function assertPageGeometry(pageSizeBytes: number, blockSizeBytes: number): void {
  const pow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
  assert(pow2(pageSizeBytes) && pageSizeBytes >= 4096 && pageSizeBytes <= 65536, () =>
    `page size ${pageSizeBytes} is not a power of two in [4096, 65536]`);
  assert(pow2(blockSizeBytes) && blockSizeBytes >= 1024 && blockSizeBytes <= pageSizeBytes, () =>
    `block size ${blockSizeBytes} is not a power of two in [1024, page size ${pageSizeBytes}]`);
}

export class Page {
  /** The flag bits (`page->flags`); change them through `PG.*` or this class's verbs. */
  state = 0;
  /** The file mapping this page belongs to (`page->mapping`). */
  readonly mapping: AddressSpace;
  /** Page number in the file: byte offset / pageSizeBytes (`page->index`). */
  readonly index: number;
  /** Size of the page in bytes. */
  readonly sizeBytes: number;
  /** The page contents, sizeBytes long. */
  readonly data: Uint8Array;
  /** One buffer per block, in offset order (the kernel's `b_this_page` ring). */
  readonly buffers: readonly BufferHead[];
  /** Resolvers of callers waiting in lock(), served first come first served. */
  private readonly lockWaiters: (() => void)[] = [];
  /** Resolvers of callers waiting in waitOnWriteback(). */
  private writebackWaiters: (() => void)[] = [];

  /** Made by AddressSpace.findOrCreatePage; the geometry comes from the mapping. */
  constructor(mapping: AddressSpace, index: number, data?: Uint8Array) {
    assertPageGeometry(mapping.pageSizeBytes, mapping.blockSizeBytes);
    assert(Number.isSafeInteger(index) && index >= 0, () => `page index ${index}`);
    this.mapping = mapping;
    this.index = index;
    this.sizeBytes = mapping.pageSizeBytes;
    assert(data === undefined || data.length === this.sizeBytes, () => `page ${index}: data of ${data?.length} bytes`);
    this.data = data ?? new Uint8Array(this.sizeBytes);
    const perPage = this.sizeBytes / mapping.blockSizeBytes;
    const bufs: BufferHead[] = [];
    for (let i = 0; i < perPage; i++) bufs.push(new BufferHead(this, i, mapping.blockSizeBytes, index * perPage + i));
    this.buffers = bufs;
  }

  /** Byte offset of this page in the file. */
  get offsetBytes(): number {
    return this.index * this.sizeBytes;
  }

  /** Takes the page lock if it is free (`trylock_page`); true when taken. */
  trylock(): boolean {
    if (PG.testLocked(this)) return false;
    this.state |= 1 << PG_BITS.Locked;
    return true;
  }

  /** Takes the page lock, waiting for the holder's unlock (`lock_page`). */
  async lock(): Promise<void> {
    if (this.trylock()) return;
    await new Promise<void>((resolve) => this.lockWaiters.push(resolve));
    // unlock() handed the lock to us without clearing Locked, so no one could barge in.
    assert(PG.testLocked(this), () => `${this.describe()}: lock handed over but not held`);
  }

  /**
   * Releases the page lock (`unlock_page`). Asserts the page is locked: unlocking twice is the
   * bug that leaves another path's lock dropped (S3/S4 are the opposite mistake).
   */
  unlock(): void {
    assert(PG.testLocked(this), () => `${this.describe()}: unlock of an unlocked page`);
    const next = this.lockWaiters.shift();
    if (next !== undefined) next();
    else this.state &= ~(1 << PG_BITS.Locked);
  }

  /**
   * Starts writeback (`set_page_writeback`): the page must be locked and not already under
   * writeback (ext4_bio_write_page's BUG_ONs). Tags the page for writeback in the mapping and
   * drops its dirty tag if the caller already cleared Dirty for I/O.
   */
  startWriteback(): void {
    assert(PG.testLocked(this), () => `${this.describe()}: writeback started on an unlocked page`);
    assert(!PG.testWriteback(this), () => `${this.describe()}: writeback started twice`);
    this.state |= 1 << PG_BITS.Writeback;
    this.mapping.tagWriteback(this);
    if (!PG.testDirty(this)) this.mapping.untagDirty(this);
  }

  /**
   * Ends writeback (`end_page_writeback`), exactly once per startWriteback (invariant 19):
   * a second end is an Ext4Bug, as the kernel BUGs. Wakes every waitOnWriteback caller.
   */
  endWriteback(): void {
    assert(PG.testWriteback(this), () => `${this.describe()}: writeback ended but not under writeback`);
    this.state &= ~(1 << PG_BITS.Writeback);
    this.mapping.untagWriteback(this);
    const waiters = this.writebackWaiters;
    this.writebackWaiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once the page is not under writeback (`wait_on_page_writeback`). */
  async waitOnWriteback(): Promise<void> {
    while (PG.testWriteback(this)) await new Promise<void>((resolve) => this.writebackWaiters.push(resolve));
  }

  /** Sets Dirty and the mapping's dirty tag (`folio_mark_dirty`); true if it was clean. */
  markDirty(): boolean {
    const wasDirty = PG.testSetDirty(this);
    this.mapping.tagDirty(this);
    return !wasDirty;
  }

  /**
   * Clears Dirty before writing the page (`clear_page_dirty_for_io`); true if it was dirty.
   * The dirty tag stays until startWriteback, so an interrupted writeback finds the page again.
   */
  clearDirtyForIo(): boolean {
    assert(PG.testLocked(this), () => `${this.describe()}: clear_page_dirty_for_io on an unlocked page`);
    return PG.testClearDirty(this);
  }

  /** The set flags by name, for assertion messages and tests. */
  flagNames(): PgFlag[] {
    return (Object.keys(PG_BITS) as PgFlag[]).filter((n) => (this.state & (1 << PG_BITS[n])) !== 0);
  }

  /** A short description for assertion messages. */
  describe(): string {
    return `page ${this.index} (${this.sizeBytes} B) [${this.flagNames().join(',')}]`;
  }
}
