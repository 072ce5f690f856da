/**
 * The in-use block map of a filesystem being made, as sorted disjoint runs instead of a bitmap
 * (a 4 TiB filesystem has 2^30 blocks; mkfs uses a few thousand runs). The searches reproduce
 * libext2fs's allocators exactly, because where mke2fs puts a table or the journal decides
 * what e2fsck and the kernel expect nowhere, but what users compare with dumpe2fs everywhere:
 * - getFreeBlocks: ext2fs_get_free_blocks2 (lib/ext2fs/alloc.c): the first b in [start, finish)
 *   with [b, b+num) free, wrapping to s_first_data_block when finish <= start.
 * - newBlock: ext2fs_new_block2: the first free block at or after goal, wrapping once.
 * - newRange: ext2fs_new_range with no flags: the first free run at or after goal (wrapping),
 *   cut at `len` blocks.
 * Invariant: runs are sorted, disjoint and never adjacent (mark() merges neighbours), and every
 * run lies inside [firstDataBlock, blocksCount) except block 0 when it holds the superblock.
 */
import { assert } from '../../util/assert.js';
import { PosixError } from '../../util/errors.js';

export class UsedSpace {
  /** Run starts, ascending. */
  private starts: number[] = [];
  /** Run ends (exclusive), parallel to starts. */
  private ends: number[] = [];

  constructor(readonly firstDataBlock: number, readonly blocksCount: number) {}

  /** Index of the last run starting at or before b, or -1. */
  private runAtOrBefore(b: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      // OK to index: 0 <= mid < starts.length.
      if (this.starts[mid]! <= b) {
        ans = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return ans;
  }

  /** True when block b is in use. */
  isUsed(b: number): boolean {
    const i = this.runAtOrBefore(b);
    return i >= 0 && b < this.ends[i]!;
  }

  /** True when every block of [b, b+n) is free. */
  isFree(b: number, n: number): boolean {
    const i = this.runAtOrBefore(b + n - 1);
    return i < 0 || this.ends[i]! <= b;
  }

  /** The first free block at or after b (b itself if free), or blocksCount if none. */
  nextFree(b: number): number {
    const i = this.runAtOrBefore(b);
    if (i >= 0 && b < this.ends[i]!) return this.ends[i]!; // runs never touch, so the end is free
    return b;
  }

  /** The first used block at or after b, or blocksCount if none. */
  nextUsed(b: number): number {
    const i = this.runAtOrBefore(b);
    if (i >= 0 && b < this.ends[i]!) return b;
    const n = this.starts[i + 1];
    return n === undefined ? this.blocksCount : n;
  }

  /** Marks [b, b+n) in use. Marking a used block again is a bug in the layout. */
  mark(b: number, n = 1): void {
    assert(n > 0 && Number.isSafeInteger(b) && b >= 0 && b + n <= this.blocksCount, () => `mark(${b}, ${n}) outside the filesystem`);
    assert(this.isFree(b, n), () => `mark(${b}, ${n}): blocks already in use`);
    const i = this.runAtOrBefore(b);
    const joinPrev = i >= 0 && this.ends[i] === b;
    const joinNext = this.starts[i + 1] === b + n;
    if (joinPrev && joinNext) {
      this.ends[i] = this.ends[i + 1]!;
      this.starts.splice(i + 1, 1);
      this.ends.splice(i + 1, 1);
    } else if (joinPrev) {
      this.ends[i] = b + n;
    } else if (joinNext) {
      this.starts[i + 1] = b;
    } else {
      this.starts.splice(i + 1, 0, b);
      this.ends.splice(i + 1, 0, b + n);
    }
  }

  /** Number of used blocks in [a, b). */
  usedIn(a: number, b: number): number {
    let n = 0;
    for (let i = Math.max(0, this.runAtOrBefore(a)); i < this.starts.length; i++) {
      const s = this.starts[i]!;
      if (s >= b) break;
      const lo = Math.max(s, a);
      const hi = Math.min(this.ends[i]!, b);
      if (hi > lo) n += hi - lo;
    }
    return n;
  }

  /** The used runs that intersect [a, b), clipped to it. */
  runsIn(a: number, b: number): { start: number; end: number }[] {
    const out: { start: number; end: number }[] = [];
    for (let i = Math.max(0, this.runAtOrBefore(a)); i < this.starts.length; i++) {
      const s = this.starts[i]!;
      if (s >= b) break;
      const lo = Math.max(s, a);
      const hi = Math.min(this.ends[i]!, b);
      if (hi > lo) out.push({ start: lo, end: hi });
    }
    return out;
  }

  /** Total used blocks. */
  get usedCount(): number {
    let n = 0;
    for (let i = 0; i < this.starts.length; i++) n += this.ends[i]! - this.starts[i]!;
    return n;
  }

  /**
   * ext2fs_get_free_blocks2: the first b, scanning from `start` (0 means s_first_data_block) up
   * to but excluding `finish` (0 means start), with [b, b+num) free. When finish > start a
   * candidate run passing the end of the filesystem fails the search; otherwise the scan wraps
   * to s_first_data_block and goes on up to finish. Returns undefined where libext2fs returns
   * EXT2_ET_BLOCK_ALLOC_FAIL. (The C loop steps one block at a time; we jump over used runs.)
   */
  getFreeBlocks(start: number, finish: number, num: number): number | undefined {
    const b0 = start === 0 ? this.firstDataBlock : start;
    const fin = finish === 0 ? start : finish;
    const n = num === 0 ? 1 : num;
    const lastCandidate = this.blocksCount - n + 1; // candidates b satisfy b + n <= blocksCount
    if (fin > start) {
      // The do-while tests b0 even when it is already at or past fin (start 0, tiny finish).
      return this.firstFit(b0, b0 >= fin ? lastCandidate : Math.min(fin, lastCandidate), n);
    }
    const r = this.firstFit(b0, lastCandidate, n);
    if (r !== undefined) return r;
    return this.firstFit(this.firstDataBlock, fin > this.firstDataBlock ? Math.min(fin, b0) : b0, n);
  }

  /** The first b in [lo, hi) with [b, b+n) free, or undefined. */
  private firstFit(lo: number, hi: number, n: number): number | undefined {
    let b = this.nextFree(lo);
    while (b < hi) {
      const used = this.nextUsed(b);
      if (used - b >= n) return b;
      if (used >= this.blocksCount) return undefined;
      b = this.nextFree(used);
    }
    return undefined;
  }

  /** ext2fs_new_block2(goal): the first free block at or after goal, wrapping once. ENOSPC if none. */
  newBlock(goal: number): number {
    const g = goal < this.firstDataBlock || goal >= this.blocksCount ? this.firstDataBlock : goal;
    let b = this.nextFree(g);
    if (b >= this.blocksCount) b = this.nextFree(this.firstDataBlock);
    if (b >= this.blocksCount) {
      throw new PosixError('ENOSPC', 'mkfs', undefined, 'no free block left for metadata');
    }
    return b;
  }

  /**
   * ext2fs_new_range(fs, 0, goal, len): the first free run at or after goal (wrapping once to
   * s_first_data_block), cut at len blocks and at the end of the filesystem. ENOSPC if none.
   */
  newRange(goal: number, len: number): { start: number; len: number } {
    const g = goal < this.firstDataBlock || goal >= this.blocksCount ? this.firstDataBlock : goal;
    let s = this.nextFree(g);
    if (s >= this.blocksCount) s = this.nextFree(this.firstDataBlock);
    if (s >= this.blocksCount) throw new PosixError('ENOSPC', 'mkfs', undefined, 'no free blocks left for the journal');
    const end = Math.min(this.nextUsed(s), s + len, this.blocksCount);
    return { start: s, len: end - s };
  }
}
