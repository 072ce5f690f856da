/**
 * BufferHead: one filesystem block of a page-cache page, ported from `struct buffer_head`
 * (include/linux/buffer_head.h, fs/buffer.c) with ext4's private bit BH_Uninit (fs/ext4/ext4.h).
 *
 * State lives in one bit word with generated accessors, as BUFFER_FNS/TAS_BUFFER_FNS generate
 * `buffer_dirty`, `set_buffer_dirty`, `clear_buffer_dirty`, `test_set_buffer_dirty` and
 * `test_clear_buffer_dirty`: here `BH.testDirty(bh)`, `BH.setDirty(bh)`, `BH.clearDirty(bh)`,
 * `BH.testSetDirty(bh)`, `BH.testClearDirty(bh)` (STYLE.md §8). There are no boolean fields.
 *
 * Invariants kept: a buffer belongs to exactly one page for its whole life, at a fixed index;
 * its logical block is fixed by that position; its physical block is readable only while
 * Mapped (asserted), and `map()` is the one way to set it (the kernel's `map_bh`).
 */
import { assert } from '../util/assert.js';
import { lblk, pblk, type Lblk, type Pblk } from '../util/units.js';
import { defineFlagFns } from './flag-fns.js';
import type { Page } from './page.js';

/** Bit numbers of the buffer state word (the kernel's `enum bh_state_bits`, ext4's BH_Uninit). */
export const BH_BITS = {
  /** Contains valid data (BH_Uptodate). */
  Uptodate: 0,
  /** Has data not yet written to disk (BH_Dirty). */
  Dirty: 1,
  /** Has a physical block: `pblk` is valid (BH_Mapped). */
  Mapped: 2,
  /** Newly allocated by the mapping call; the disk block holds garbage (BH_New). */
  New: 3,
  /** Blocks reserved but not allocated: delayed allocation (BH_Delay). */
  Delay: 4,
  /** Mapped to an unwritten extent: reads as zeros until converted (BH_Unwritten). */
  Unwritten: 5,
  /** ext4: the extent must be converted after this write (BH_Uninit, dioread_nolock). */
  Uninit: 6,
  /** Under async write: marked before submission, cleared by bio completion (BH_Async_Write). */
  AsyncWrite: 7,
  /** The last write of this buffer failed (BH_Write_EIO). */
  WriteEIO: 8,
} as const;

/** The names of the buffer state flags. */
export type BhFlag = keyof typeof BH_BITS;

/** Generated accessors for every buffer flag: `BH.testSetAsyncWrite(bh)` and so on. */
export const BH = defineFlagFns<BufferHead>()('BufferHead', BH_BITS);

/** Value of the physical block field while the buffer is not mapped. */
const NO_BLOCK = -1;

export class BufferHead {
  /** The flag bits (`b_state`); change them only through `BH.*` or `map()`/`unmap()`. */
  state = 0;
  /** The page this buffer belongs to (`b_page`). */
  readonly page: Page;
  /** Position of this buffer in its page, 0-based (the kernel walks `b_this_page`). */
  readonly indexInPage: number;
  /** Size of the block in bytes (`b_size`). */
  readonly sizeBytes: number;
  /** The file-relative block this buffer holds: page index × buffers per page + index. */
  readonly lblk: Lblk;
  /** The device block (`b_blocknr`) when Mapped, NO_BLOCK otherwise. */
  private blocknr: number = NO_BLOCK;

  /** Made only by Page's constructor, which owns the buffer ring. */
  constructor(page: Page, indexInPage: number, sizeBytes: number, logical: number) {
    assert(Number.isSafeInteger(logical) && logical >= 0, () => `buffer lblk ${logical}`);
    this.page = page;
    this.indexInPage = indexInPage;
    this.sizeBytes = sizeBytes;
    this.lblk = lblk(logical);
  }

  /** Byte offset of this buffer inside its page (`bh_offset`). */
  get offsetInPage(): number {
    return this.indexInPage * this.sizeBytes;
  }

  /** The physical block; asserting Mapped, because an unmapped b_blocknr is meaningless. */
  get pblk(): Pblk {
    assert(BH.testMapped(this), () => `${this.describe()}: pblk read while not mapped`);
    return pblk(this.blocknr);
  }

  /** Maps the buffer to device block `nr` and sets Mapped (the kernel's `map_bh`). */
  map(nr: Pblk): void {
    assert(Number.isSafeInteger(nr) && nr >= 0, () => `${this.describe()}: map to bad block ${nr}`);
    this.blocknr = nr;
    BH.setMapped(this);
  }

  /**
   * Forgets the mapping (truncate, punch hole, invalidate): clears Mapped, New, Delay,
   * Unwritten and Uninit together, as the kernel's `discard_buffer` clears the mapping bits,
   * so no stale physical block can be used after its extent is gone. Asserts no write is in
   * flight, since a completion would then refer to a block the buffer no longer names.
   */
  unmap(): void {
    assert(!BH.testAsyncWrite(this), () => `${this.describe()}: unmapped while under async write`);
    this.blocknr = NO_BLOCK;
    BH.clearMapped(this);
    BH.clearNew(this);
    BH.clearDelay(this);
    BH.clearUnwritten(this);
    BH.clearUninit(this);
  }

  /** The set flags by name, for assertion messages and tests. */
  flagNames(): BhFlag[] {
    return (Object.keys(BH_BITS) as BhFlag[]).filter((n) => (this.state & (1 << BH_BITS[n])) !== 0);
  }

  /** A short description for assertion messages: page, index, lblk and flags. */
  describe(): string {
    return `buffer ${this.indexInPage} of page ${this.page.index} (lblk ${this.lblk}) [${this.flagNames().join(',')}]`;
  }
}
