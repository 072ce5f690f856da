/**
 * The allocation interfaces the rest of the filesystem codes against (fs/ext4/mballoc.c's
 * ext4_mb_new_blocks / ext4_free_blocks and ialloc.c's __ext4_new_inode / ext4_free_inode).
 * Extent trees, directories and xattr blocks take a BlockAllocator, so the I/O engine can pass
 * the same one and tests can count what each layer allocates.
 */

/** What to allocate (ext4_allocation_request). */
export interface AllocRequest {
  /** Preferred first block (near the inode's group, or after its last extent). */
  goal: number;
  /** Blocks wanted; the result may be shorter (but at least `minLen`) when no run this long is free. */
  maxLen: number;
  /** Shortest acceptable run (default 1). ENOSPC when no free run is this long. */
  minLen?: number;
  /** The owning inode (for the group preference and errors). */
  ino?: number;
  /** Metadata (extent tree, directory, xattr) rather than file data: may use reserved blocks. */
  metadata?: boolean;
  /**
   * Take the free run that starts at `goal` even when it is shorter than maxLen (at least
   * minLen): a file being extended stays contiguous across the end of a group instead of
   * leaving the group's tail unused (mballoc's goal extent, ext4_mb_find_by_goal).
   */
  takeGoalRun?: boolean;
}

/** A run of physical blocks. */
export interface BlockRun {
  pblk: number;
  len: number;
}

export interface BlockAllocator {
  /**
   * Allocates one contiguous run of `minLen..maxLen` blocks, preferring `goal`, and marks it
   * used in the bitmap, the group descriptor and the free counts. Throws PosixError ENOSPC
   * (and changes nothing) when no such run is free.
   */
  allocBlocks(req: AllocRequest): Promise<BlockRun>;
  /** Frees a run allocated before (ext4_free_blocks). Freeing a free block is Corrupt. */
  freeBlocks(pblk: number, len: number): Promise<void>;
}
