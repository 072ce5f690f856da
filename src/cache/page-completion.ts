/**
 * The BH_Async_Write page-completion rule (seed 002, "ext4: make ext4_bio_write_page() use
 * BH_Async_Write flags"; IO-DESIGN.md §3), for one page:
 * - `writePageBuffers` is the skeleton of `ext4_bio_write_page` (fs/ext4/page-io.c): start
 *   writeback, mark every buffer to write AsyncWrite (pass 1), then submit them (pass 2);
 * - `endPageWrite` is the per-page body of `ext4_end_bio` / `ext4_finish_bio`: clear AsyncWrite
 *   on the buffers a completed bio covered, count the page's buffers still under I/O, and end
 *   page writeback when none are left.
 * The io/ layer supplies the per-buffer policy (which buffers to write, how to add one to a
 * bio) and calls endPageWrite once per (page, range) segment of each completed bio.
 *
 * Invariants kept (IO-DESIGN.md §6):
 * 19 page writeback ends exactly once per start;
 * 20 every buffer to submit is marked before the first is submitted, and writeback ends only
 *    after the last marked buffer's completion, however completions interleave with each other
 *    and with submission;
 * 21 a completion clears AsyncWrite and sets errors only inside its range; marked buffers
 *    outside it count as still under I/O;
 * 22 a page with nothing submitted ends writeback at once (the writeback cycle also clears its
 *    dirty tag, the 2026 fix f4a2b42e7891);
 * 23 if submission fails after k buffers, the rest lose AsyncWrite and stay dirty, the page is
 *    redirtied, and writeback still ends exactly once;
 * 26 the marking and the under-I/O scan of a page are atomic: each function here runs to
 *    completion without an await, which is what the kernel's BH_Uptodate_Lock bit spinlock
 *    (later `b_uptodate_lock`) with interrupts off provides.
 */
import { assert } from '../util/assert.js';
import type { ErrnoCode } from '../util/errors.js';
import { BH, type BufferHead } from './buffer-head.js';
import { PG, type Page } from './page.js';

/** A bio's completion status: null for success, else the error (the kernel's `bi_status`). */
export type WriteStatus = ErrnoCode | null;

/**
 * Ends the write of the buffers of `page` inside [startBytes, startBytes + lenBytes) (byte
 * offsets in the page: one bio_vec of a completed bio) with `status`; returns true if this
 * call ended the page's writeback.
 *
 * On failure it sets the page's Error flag, records the error in the mapping (reported once
 * per open file by fsync) and sets WriteEIO on each buffer of the range.
 *
 * Why writeback ends exactly once, and only after the last buffer (the ordering argument):
 * writePageBuffers sets AsyncWrite on every buffer it will submit *before* it submits any of
 * them, and only a completion clears the bit of a buffer in its own range. So while any
 * submitted buffer's completion has not run, that buffer's bit is set and every other
 * completion of the page counts it in `underIo`; none of them ends writeback. The completion
 * that clears the last set bit finds `underIo == 0` and ends writeback. No completion can come
 * after it: each buffer is in exactly one bio range and every bit is now clear, so a later
 * call for this page would be a second completion of some buffer, which is asserted below.
 * The scan must see a consistent set of bits, hence it runs without yielding (invariant 26).
 */
export function endPageWrite(page: Page, startBytes: number, lenBytes: number, status: WriteStatus): boolean {
  const blockSize = page.mapping.blockSizeBytes;
  assert(Number.isInteger(startBytes) && startBytes >= 0 && startBytes % blockSize === 0, () =>
    `${page.describe()}: completion start ${startBytes} not a block boundary`);
  assert(Number.isInteger(lenBytes) && lenBytes > 0 && lenBytes % blockSize === 0, () =>
    `${page.describe()}: completion length ${lenBytes} not a whole number of blocks`);
  assert(startBytes + lenBytes <= page.sizeBytes, () =>
    `${page.describe()}: completion range [${startBytes}, +${lenBytes}) past the page end`);
  assert(PG.testWriteback(page), () => `${page.describe()}: write completion on a page not under writeback`);
  if (status !== null) {
    PG.setError(page);
    page.mapping.setError(status);
  }
  const endBytes = startBytes + lenBytes;
  let underIo = 0;
  for (const bh of page.buffers) {
    if (bh.offsetInPage < startBytes || bh.offsetInPage + bh.sizeBytes > endBytes) {
      if (BH.testAsyncWrite(bh)) underIo++;
      continue;
    }
    // A buffer in a completed range must still be marked: if it is not, this range completed
    // twice or was never marked, and writeback could end early or twice.
    assert(BH.testClearAsyncWrite(bh), () => `${bh.describe()}: write completed but AsyncWrite was not set`);
    if (status !== null) BH.setWriteEIO(bh);
  }
  if (underIo !== 0) return false;
  page.endWriteback();
  return true;
}

/** The per-buffer policy of one page write, supplied by the io/ layer. */
export interface PageWriteHooks {
  /**
   * Pass 1: should `bh` be written? The hook applies ext4_bio_write_page's skips (beyond EOF:
   * zero the block, clear Dirty, set Uptodate; clean, delayed, unmapped or unwritten buffers:
   * skip and close the open bio; New: clear it) and returns true for the buffers to submit.
   * It must not submit anything.
   */
  prepare(bh: BufferHead): boolean;
  /**
   * Pass 2: add `bh` to a bio (`io_submit_add_bh`); false when that failed (ENOMEM). The
   * hook may submit bios, and their completions may even run inside it.
   */
  submit(bh: BufferHead): boolean;
}

/** What writePageBuffers did. */
export interface PageWriteResult {
  /** Buffers handed to a bio. */
  nrSubmitted: number;
  /** A submit hook failed: the page was redirtied and the rest of its buffers left dirty. */
  failed: boolean;
}

/**
 * Writes the buffers of a locked page that is not under writeback (the skeleton of
 * `ext4_bio_write_page`, with the two passes of seed 002). Starts writeback, marks, submits,
 * unlocks the page, and ends writeback itself when no completion will.
 *
 * The two passes are the point: "We have to mark all buffers in the page before submitting so
 * that end_page_writeback() cannot be called from ext4_bio_end_io() when IO on the first
 * buffer finishes and we are still working on submitting the second buffer." With one pass
 * (mark b0, submit b0, mark b1, …) b0's completion can run before b1 is marked, find no buffer
 * under I/O and end writeback; b1's completion then ends it a second time (a kernel BUG), and
 * in between the page can be reclaimed or truncated with b1 in flight (scenario S8).
 *
 * If a submit fails after k buffers, the failing buffer and all later ones lose AsyncWrite and
 * keep Dirty, and the page is redirtied (invariant 23). The k submitted buffers end writeback
 * through their completions, unless all of them already completed (inside the hooks): each of
 * those completions saw the failing buffer still marked, so no one ended writeback, and this
 * function must. The kernel's 3.10 code ended writeback here only when nothing was submitted;
 * that missed this case, unreachable there only because its bio allocation never failed.
 */
export function writePageBuffers(page: Page, hooks: PageWriteHooks): PageWriteResult {
  assert(PG.testLocked(page), () => `${page.describe()}: written while unlocked`);
  assert(!PG.testWriteback(page), () => `${page.describe()}: written while already under writeback`);
  page.startWriteback();
  PG.clearError(page);

  // Pass 1: mark every buffer that will be written, before any is submitted.
  for (const bh of page.buffers) {
    if (!hooks.prepare(bh)) continue;
    assert(!BH.testSetAsyncWrite(bh), () => `${bh.describe()}: already under async write`);
  }

  // Pass 2: submit the marked buffers in page order.
  let nrSubmitted = 0;
  let failedAt = -1;
  for (const bh of page.buffers) {
    if (!BH.testAsyncWrite(bh)) continue;
    if (!hooks.submit(bh)) {
      failedAt = bh.indexInPage;
      break;
    }
    nrSubmitted++;
    BH.clearDirty(bh);
  }

  if (failedAt >= 0) {
    page.markDirty();
    for (const bh of page.buffers.slice(failedAt)) BH.clearAsyncWrite(bh);
  }
  page.unlock();
  // Nothing submitted, or everything submitted already completed before the cleanup above:
  // no completion is left to end writeback, so end it here.
  const anyUnderIo = page.buffers.some((bh) => BH.testAsyncWrite(bh));
  assert(nrSubmitted > 0 || !anyUnderIo, () => `${page.describe()}: AsyncWrite left on a page with nothing submitted`);
  if (nrSubmitted === 0 || (failedAt >= 0 && !anyUnderIo)) page.endWriteback();
  return { nrSubmitted, failed: failedAt >= 0 };
}
