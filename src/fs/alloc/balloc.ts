/**
 * The block allocator: fs/ext4/balloc.c (bitmap reading, BLOCK_UNINIT initialisation, the
 * system zone) and a simplified fs/ext4/mballoc.c (ext4_mb_new_blocks, ext4_free_blocks).
 *
 * Design, and where it differs from the kernel:
 * - Bitmaps are metadata blocks read through the buffer cache. A bitmap read from disk is
 *   checked once (ext4_validate_block_bitmap: crc32c with metadata_csum, the group's own
 *   bitmaps and inode table marked in use, and its free bits equal to the descriptor's count,
 *   the check mballoc makes when it builds a buddy) and marked `verified`.
 * - A BLOCK_UNINIT group's bitmap is never read: it is computed (ext4_init_block_bitmap) into
 *   the cached buffer each time it is needed, and written only once the group is first
 *   allocated from, when the flag is cleared. Uninit flags count only on filesystems with group
 *   descriptor checksums (ext4_has_group_desc_csum), as in the kernel.
 * - Instead of buddy bitmaps, each group caches the longest free run found by its last full
 *   scan (dropped when the group changes). Together with the descriptors' free counts this
 *   lets a search skip groups without reading their bitmaps: a 1-block allocation near its goal
 *   reads one bitmap however large the filesystem is.
 * - A run never spans two groups (as in mballoc).
 * - Reserved blocks (s_r_blocks_count) are not held back: ext4ts writes as root, and the kernel
 *   lets root (CAP_SYS_RESOURCE) allocate them, for data and metadata alike.
 * - No preallocation, no stripe alignment, no delayed-allocation reservations.
 *
 * Invariants (asserted): a descriptor's free count never goes negative or past the group's
 * size; bits set by an allocation were clear and bits cleared by a free were set; with
 * `debugChecks` on, every change recounts the bitmap against its descriptor.
 *
 * Allocations and frees of one mount run one at a time (`exclusive`), shared with the inode
 * allocator, so no two searches can pick the same free bits across an await.
 */
import { groupHasSuper, type Ext4Super } from '../super.js';
import type { MetaBuffer } from '../../cache/buffer-cache.js';
import type { AllocRequest, BlockAllocator, BlockRun } from './allocator.js';
import {
  EXT4_BG_BLOCK_UNINIT, bitmapCsum, bitmapCsumMatches, type GroupDesc,
} from '../../format/group-desc.js';
import { BadCrc, Corrupt, PosixError } from '../../util/errors.js';
import { assert } from '../../util/assert.js';
import * as bm from './bitmap.js';
import { Mutex } from '../../runtime/mutex.js';

/** Blocks in group `g`: s_blocks_per_group, fewer in the last group (num_clusters_in_group). */
export function blocksInGroup(s: Ext4Super, g: number): number {
  return g === s.groupCount - 1 ? s.blocksCount - s.groupFirstBlock(g) : s.blocksPerGroup;
}

/** The group holding block `pblk` and the block's bit in that group's bitmap. */
export function groupOfBlock(s: Ext4Super, pblk: number): { group: number; bit: number } {
  const rel = pblk - s.firstDataBlock;
  const group = Math.floor(rel / s.blocksPerGroup);
  return { group, bit: rel - group * s.blocksPerGroup };
}

/** Inode table blocks of one group (s_itb_per_group). */
export function inodeTableBlocks(s: Ext4Super): number {
  return Math.ceil((s.inodesPerGroup * s.inodeSize) / s.blockSize);
}

/** Groups per flex group (1 without flex_bg). */
export function flexSize(s: Ext4Super): number {
  return s.features.flexBg ? 2 ** s.sb.s_log_groups_per_flex : 1;
}

/**
 * Whether the descriptors carry checksums (crc16 or crc32c), which is when the kernel honours
 * the INODE_UNINIT / BLOCK_UNINIT / ITABLE_ZEROED flags (ext4_has_group_desc_csum).
 */
export function hasGroupDescCsum(s: Ext4Super): boolean {
  return s.gdCsum.kind !== 'none';
}

/**
 * Blocks at the start of group `g` taken by the superblock backup, the descriptor table (or
 * its meta_bg block) and the reserved GDT blocks (ext4_num_base_meta_clusters). These are the
 * first bits of the group's bitmap.
 */
export function numBaseMetaBlocks(s: Ext4Super, g: number): number {
  const sb = s.sb;
  const hasSuper = groupHasSuper(sb, g) ? 1 : 0;
  const perBlock = s.blockSize / s.descSize;
  if (!s.features.metaBg || g < sb.s_first_meta_bg * perBlock) {
    if (hasSuper === 0) return 0;
    const gdb = s.features.metaBg ? sb.s_first_meta_bg : Math.ceil(s.groupCount / perBlock);
    return 1 + gdb + sb.s_reserved_gdt_blocks;
  }
  // meta_bg: the first, second and last group of each meta group hold its descriptor block.
  const idx = g % perBlock;
  return hasSuper + (idx === 0 || idx === 1 || idx === perBlock - 1 ? 1 : 0);
}

/** A free run found by a search: `start` is a bit of `group`'s bitmap. */
interface Candidate {
  group: number;
  start: number;
  len: number;
}

/**
 * The blocks no allocation may hand out and no free may release (the kernel's system zone,
 * fs/ext4/block_validity.c): every group's superblock backup, descriptor and reserved GDT
 * blocks, bitmaps and inode table, as sorted, merged ranges.
 */
class SystemZone {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  constructor(ranges: [number, number][]) {
    ranges.sort((a, b) => a[0] - b[0]);
    for (const [lo, hi] of ranges) {
      const last = this.ends.length - 1;
      // OK to use `!`: last >= 0 is checked first.
      if (last >= 0 && lo <= this.ends[last]!) this.ends[last] = Math.max(this.ends[last]!, hi);
      else {
        this.starts.push(lo);
        this.ends.push(hi);
      }
    }
  }
  /** A metadata block inside [pblk, pblk + len), or undefined when there is none. */
  overlap(pblk: number, len: number): number | undefined {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      // OK to use `!`: mid < starts.length.
      if (this.starts[mid]! < pblk + len) lo = mid + 1;
      else hi = mid;
    }
    const i = lo - 1;
    if (i < 0 || this.ends[i]! <= pblk) return undefined;
    return Math.max(this.starts[i]!, pblk);
  }
}

export class Balloc implements BlockAllocator {
  /** Recount every changed bitmap against its descriptor after each change (tests turn it on). */
  debugChecks = false;
  /** Groups per flex group (1 without flex_bg). */
  readonly flexSize: number;
  /** Inode table blocks per group. */
  readonly itbPerGroup: number;
  /** BLOCK_UNINIT and friends are honoured (group descriptor checksums are on). */
  private readonly uninitFlags: boolean;
  /** Per group: length of the longest free run at the last full scan, -1 when unknown. */
  private readonly largestLen: Int32Array;
  /** Per group: the bit where that run starts. */
  private readonly largestStart: Int32Array;
  /**
   * Per group: every bit below this one is in use, so searches start here instead of walking the
   * allocated front of the group again for each new file (a file's goal is its flex group's
   * first data block). Raised lazily by a search, lowered by a free.
   */
  private readonly firstFree: Int32Array;
  private zone: SystemZone | undefined;
  /** Data goal per flex group leader (goalForInode). */
  private readonly flexGoals = new Map<number, number>();
  /** Exclusive sections of the allocator (the group lock). */
  private readonly groupLock = new Mutex('allocator group lock');

  constructor(private readonly s: Ext4Super) {
    this.flexSize = flexSize(s);
    this.itbPerGroup = inodeTableBlocks(s);
    this.uninitFlags = hasGroupDescCsum(s);
    this.largestLen = new Int32Array(s.groupCount).fill(-1);
    this.largestStart = new Int32Array(s.groupCount);
    this.firstFree = new Int32Array(s.groupCount);
  }

  /** The first bit of group `g` that may be free (see firstFree), moved past the used ones. */
  private firstFreeOf(g: number, data: Uint8Array, n: number): number {
    // OK to index: g < groupCount.
    const h = bm.findNextZero(data, this.firstFree[g]!, n);
    this.firstFree[g] = h;
    return h;
  }

  /**
   * Runs `fn` after every earlier exclusive section of this mount has finished (the group
   * locks of the kernel, collapsed into one). Block and inode allocation both go through it;
   * `fn` must not call exclusive() itself.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.groupLock.run(fn);
  }

  /** ext4_mb_new_blocks, simplified: see BlockAllocator.allocBlocks and the module header. */
  async allocBlocks(req: AllocRequest): Promise<BlockRun> {
    return this.exclusive(() => this.allocLocked(req));
  }

  /**
   * ext4_free_blocks: see BlockAllocator.freeBlocks. The blocks are checked now but released at
   * the next commit (the kernel's ext4_free_data, released after the journal commit): until the
   * metadata that stops pointing at them is on disk, reusing them for new data could overwrite
   * what the on-disk tree still references (an old extent block, say), and a crash would then
   * lose fsynced data. When space runs out, allocation releases them early (see allocLocked).
   */
  async freeBlocks(pblk: number, len: number): Promise<void> {
    return this.exclusive(async () => {
      this.checkFree(pblk, len);
      for (const seg of this.segments(pblk, len)) {
        const data = (await this.readBlockBitmap(seg.group)).data;
        const z = bm.findNextZero(data, seg.start, seg.start + seg.len);
        if (z < seg.start + seg.len) {
          throw new Corrupt('block bitmap', `freeing free block ${this.s.groupFirstBlock(seg.group) + z}`, { group: seg.group, block: this.s.group(seg.group).blockBitmap });
        }
      }
      const segs = this.segments(pblk, len);
      for (const seg of segs) {
        const bits = this.pendingBits.get(seg.group);
        const twice = bits === undefined ? seg.start + seg.len : bm.findNextSet(bits, seg.start, seg.start + seg.len);
        if (twice < seg.start + seg.len) {
          const blk = this.s.groupFirstBlock(seg.group) + twice;
          throw new Corrupt('block range', `${pblk}+${len} freed twice before a commit (block ${blk} is already pending)`, { block: blk });
        }
      }
      for (const seg of segs) {
        let bits = this.pendingBits.get(seg.group);
        if (bits === undefined) {
          bits = new Uint8Array(Math.ceil(this.s.blocksPerGroup / 8));
          this.pendingBits.set(seg.group, bits);
        }
        bm.setBits(bits, seg.start, seg.start + seg.len);
      }
      if (this.pendingFrees.length === 0) this.s.preCommitHooks.add(this.releaseHook);
      this.pendingFrees.push({ pblk, len });
      this.pendingCount += len;
      for (let b = pblk; b < pblk + len; b++) this.s.cache.forget(b);
    });
  }

  /** Blocks freed since the last commit, released by it. */
  private pendingFrees: { pblk: number; len: number }[] = [];
  /**
   * The same blocks as a bitmap per group, so that a double free is caught without a scan of
   * every pending run (random direct writes free tree blocks by the thousand between commits).
   */
  private pendingBits = new Map<number, Uint8Array>();
  private pendingCount = 0;
  private readonly releaseHook = (): Promise<void> => this.exclusive(() => this.releasePending());

  private async releasePending(): Promise<void> {
    const list = this.pendingFrees;
    this.pendingFrees = [];
    this.pendingBits = new Map();
    this.pendingCount = 0;
    this.s.preCommitHooks.delete(this.releaseHook); // an early release (ENOSPC) outside a commit
    for (const f of list) await this.freeLocked(f.pblk, f.len);
  }

  /**
   * A goal block for inode `ino` (ext4_inode_to_goal_block): the first block after the
   * metadata (superblock backup, descriptors, bitmaps, inode tables) packed at the start of
   * the inode's flex group, or of its own group without flex_bg. The search goes forward from
   * there, so the goal need not be free. Unlike the kernel (which keeps the first group of a
   * large flex group for directories), files and directories share the goal: the caller does
   * not say which it is allocating for.
   */
  goalForInode(ino: number): number {
    const s = this.s;
    assert(Number.isSafeInteger(ino) && ino >= 1 && ino <= s.sb.s_inodes_count, () => `goalForInode(${ino})`);
    const g = Math.floor((ino - 1) / s.inodesPerGroup);
    const lead = g - (g % this.flexSize);
    let goal = this.flexGoals.get(lead);
    if (goal === undefined) {
      goal = this.flexGoal(lead);
      this.flexGoals.set(lead, goal);
    }
    return goal;
  }

  /** Free blocks in the whole filesystem: the sum of the descriptors' counts. */
  freeBlocksCount(): number {
    let n = this.pendingCount;
    for (const gd of this.s.groups) n += gd.freeBlocksCount;
    return n;
  }

  /**
   * Group `g`'s block bitmap (ext4_read_block_bitmap): computed for a BLOCK_UNINIT group, else
   * read and, the first time, validated. Throws BadCrc or Corrupt naming the group and block.
   * The buffer is the cached one; change it only through this allocator.
   */
  async readBlockBitmap(g: number): Promise<MetaBuffer> {
    const s = this.s;
    const gd = s.group(g);
    if (this.isBlockUninit(gd)) {
      const buf = s.cache.getblk(gd.blockBitmap);
      assert(!buf.dirty, () => `group ${g}: BLOCK_UNINIT but its bitmap buffer is dirty`);
      this.initBlockBitmap(g, gd, buf.data);
      this.validateBlockBitmap(g, gd, buf.data, true);
      return buf;
    }
    const buf = await s.cache.bread(gd.blockBitmap, 'block bitmap');
    if (!buf.verified) {
      this.validateBlockBitmap(g, gd, buf.data, false);
      buf.verified = true;
    }
    return buf;
  }

  /**
   * Writes out group `g`'s computed block bitmap and clears BLOCK_UNINIT, without allocating
   * (what __ext4_new_inode does before it uses a group's first inode). Call it inside
   * exclusive(). No-op when the group's bitmap is already initialised.
   */
  async initBlockBitmapLocked(g: number): Promise<void> {
    const gd = this.s.group(g);
    if (!this.isBlockUninit(gd)) return;
    const buf = await this.readBlockBitmap(g);
    gd.flags = gd.flags & ~EXT4_BG_BLOCK_UNINIT;
    this.bitmapChanged(g, buf);
  }

  /** True when group `g`'s bitmap is to be computed rather than read. */
  private isBlockUninit(gd: GroupDesc): boolean {
    return this.uninitFlags && (gd.flags & EXT4_BG_BLOCK_UNINIT) !== 0;
  }

  /**
   * ext4_init_block_bitmap: the bitmap of a group nothing was ever allocated in: its base
   * metadata (superblock backup, descriptors, reserved GDT), its own bitmaps and inode table
   * where they lie inside it, and the padding past its last block set.
   */
  private initBlockBitmap(g: number, gd: GroupDesc, data: Uint8Array): void {
    const s = this.s;
    const n = blocksInGroup(s, g);
    const first = s.groupFirstBlock(g);
    data.fill(0);
    bm.setBits(data, 0, Math.min(numBaseMetaBlocks(s, g), n));
    const mark = (b: number, len: number): void => {
      const lo = Math.max(b, first);
      const hi = Math.min(b + len, first + n);
      if (lo < hi) bm.setBits(data, lo - first, hi - first);
    };
    mark(gd.blockBitmap, 1);
    mark(gd.inodeBitmap, 1);
    mark(gd.inodeTable, this.itbPerGroup);
    bm.markBitmapEnd(data, n, s.blockSize * 8);
  }

  /**
   * ext4_validate_block_bitmap plus mballoc's count check: the checksum (for a bitmap read
   * from disk), the group's own bitmaps and inode table in use where they lie in the group,
   * and as many free bits as the descriptor says.
   */
  private validateBlockBitmap(g: number, gd: GroupDesc, data: Uint8Array, computed: boolean): void {
    const s = this.s;
    const where = { group: g, block: gd.blockBitmap };
    if (!computed && s.features.metadataCsum) {
      const c = bitmapCsum(s.csumSeed, data, s.blocksPerGroup);
      if (!bitmapCsumMatches(gd.blockBitmapCsum, c, s.descSize)) {
        throw new BadCrc('block bitmap', gd.blockBitmapCsum, s.descSize >= 64 ? c : c & 0xffff, where);
      }
    }
    const first = s.groupFirstBlock(g);
    const n = blocksInGroup(s, g);
    const own: [string, number, number][] = [
      ['block bitmap', gd.blockBitmap, 1],
      ['inode bitmap', gd.inodeBitmap, 1],
      ['inode table', gd.inodeTable, this.itbPerGroup],
    ];
    for (const [what, b, len] of own) {
      const lo = Math.max(b, first) - first;
      const hi = Math.min(b + len, first + n) - first;
      if (lo >= hi) continue;
      const z = bm.findNextZero(data, lo, hi);
      if (z < hi) throw new Corrupt('block bitmap', `marks block ${first + z} (the group's ${what}) free`, where);
    }
    const free = bm.countZero(data, 0, n);
    if (free !== gd.freeBlocksCount) {
      const how = computed ? 'BLOCK_UNINIT group computes' : 'has';
      const detail = `${how} ${free} free blocks but the group descriptor says ${gd.freeBlocksCount}`;
      throw new Corrupt('block bitmap', detail, where);
    }
  }

  /** The finalizer of group `g`'s bitmap: its checksum into the descriptor, at commit. */
  private bitmapFinalizer(g: number): (data: Uint8Array) => void {
    return (data) => {
      const s = this.s;
      if (s.features.metadataCsum) s.group(g).blockBitmapCsum = bitmapCsum(s.csumSeed, data, s.blocksPerGroup);
      s.markGroupDirty(g);
    };
  }

  /** Group `g`'s bitmap changed: dirty it and its descriptor, drop its cached longest run. */
  private bitmapChanged(g: number, buf: MetaBuffer): void {
    const s = this.s;
    s.cache.markDirty(buf, this.bitmapFinalizer(g));
    s.markGroupDirty(g);
    this.largestLen[g] = -1;
    if (this.debugChecks) this.checkGroup(g, buf.data);
  }

  /** Debug check: the bitmap's free bits equal the descriptor's count, padding is set. */
  private checkGroup(g: number, data: Uint8Array): void {
    const s = this.s;
    const n = blocksInGroup(s, g);
    const free = bm.countZero(data, 0, n);
    const gd = s.group(g);
    assert(free === gd.freeBlocksCount, () => `group ${g}: ${free} free bits, descriptor says ${gd.freeBlocksCount}`);
    assert(bm.allSet(data, n, s.blockSize * 8), () => `group ${g}: block bitmap padding not set`);
  }

  /** Marks [start, start + len) of group `g` in use (ext4_mb_mark_diskspace_used). */
  private markUsed(g: number, buf: MetaBuffer, start: number, len: number): void {
    const gd = this.s.group(g);
    assert(bm.allClear(buf.data, start, start + len), () => `group ${g}: allocating used bits ${start}+${len}`);
    assert(gd.freeBlocksCount >= len, () => `group ${g}: free count ${gd.freeBlocksCount} < ${len}`);
    if (this.isBlockUninit(gd)) gd.flags = gd.flags & ~EXT4_BG_BLOCK_UNINIT;
    bm.setBits(buf.data, start, start + len);
    gd.freeBlocksCount = gd.freeBlocksCount - len;
    this.bitmapChanged(g, buf);
  }

  /** Marks [start, start + len) of group `g` free (ext4_mb_free_blocks' bitmap part). */
  private markFree(g: number, buf: MetaBuffer, start: number, len: number): void {
    const gd = this.s.group(g);
    assert(bm.allSet(buf.data, start, start + len), () => `group ${g}: freeing free bits ${start}+${len}`);
    const free = gd.freeBlocksCount + len;
    assert(free <= blocksInGroup(this.s, g), () => `group ${g}: free count ${free} past the group size`);
    bm.clearBits(buf.data, start, start + len);
    // OK to index: g < groupCount.
    if (start < this.firstFree[g]!) this.firstFree[g] = start;
    gd.freeBlocksCount = free;
    this.bitmapChanged(g, buf);
  }

  private requireWritable(syscall: string): void {
    if (this.s.readOnly) throw new PosixError('EROFS', syscall);
  }

  /**
   * One allocation: check the request, search, then mark the chosen run. Nothing changes
   * before the search has found a run, so ENOSPC leaves the filesystem as it was.
   */
  private async allocLocked(req: AllocRequest): Promise<BlockRun> {
    const s = this.s;
    this.requireWritable('alloc');
    const minLen = req.minLen ?? 1;
    assert(Number.isSafeInteger(req.maxLen) && req.maxLen >= 1, () => `allocBlocks maxLen ${req.maxLen}`);
    assert(Number.isSafeInteger(minLen) && minLen >= 1 && minLen <= req.maxLen, () => `allocBlocks minLen ${minLen}`);
    // A run never spans groups, so no request can be served longer than a group.
    const want = Math.min(req.maxLen, s.blocksPerGroup);
    const ino = req.ino !== undefined ? ` for inode ${req.ino}` : '';
    const enospc = (): PosixError => {
      const detail = `no free run of ${minLen} block(s)${ino} (${this.freeBlocksCount()} blocks free)`;
      return new PosixError('ENOSPC', 'alloc', undefined, detail);
    };
    if (minLen > want) throw enospc();
    // Like ext4_mb_initialize_context: a goal outside the filesystem becomes its first block.
    const goal = Number.isSafeInteger(req.goal) && req.goal >= s.firstDataBlock && req.goal < s.blocksCount
      ? req.goal : s.firstDataBlock;
    let c = await this.search(goal, minLen, want, req.takeGoalRun === true);
    if (c === undefined && this.pendingFrees.length > 0) {
      // Out of space with blocks awaiting the next commit: release them now rather than fail
      // (the kernel forces a journal commit and retries; without a journal this reopens, until
      // the next commit, the window the deferral closes).
      await this.releasePending();
      c = await this.search(goal, minLen, want, req.takeGoalRun === true);
    }
    if (c === undefined) throw enospc();
    return this.useRun(c);
  }

  /**
   * Finds a free run: the goal itself when `want` blocks are free there; else the first run of
   * `want` at or after the goal in its group, then anywhere in that group; else the first run
   * of `want` in the following groups (wrapping around); else the longest run of at least
   * `minLen` anywhere (ties go to the one met first from the goal on).
   */
  private async search(goal: number, minLen: number, want: number, takeGoalRun = false): Promise<Candidate | undefined> {
    const s = this.s;
    const { group: g0, bit: off0 } = groupOfBlock(s, goal);
    let best: Candidate | undefined;
    const consider = (group: number, run: bm.ZeroRun): void => {
      if (run.len < minLen || (best !== undefined && run.len <= best.len)) return;
      best = { group, start: run.start, len: run.len };
    };
    if (s.group(g0).freeBlocksCount >= minLen) {
      const data = (await this.readBlockBitmap(g0)).data;
      const n = blocksInGroup(s, g0);
      const atGoal = bm.findNextSet(data, off0, Math.min(n, off0 + want)) - off0;
      if (atGoal >= want) return { group: g0, start: off0, len: want };
      if (takeGoalRun && atGoal >= minLen) return { group: g0, start: off0, len: atGoal };
      consider(g0, { start: off0, len: atGoal });
      const after = bm.findZeroRun(data, Math.max(off0, this.firstFreeOf(g0, data, n)), n, want);
      if (after.found) return { group: g0, start: after.start, len: want };
      const whole = this.scanGroup(g0, data, want);
      if (whole.found) return { group: g0, start: whole.start, len: want };
      consider(g0, whole);
    }
    const N = s.groupCount;
    for (let i = 1; i < N; i++) {
      const g = (g0 + i) % N;
      // OK to use `!`: g < groupCount, the arrays' length.
      if (s.group(g).freeBlocksCount < want || (this.largestLen[g]! >= 0 && this.largestLen[g]! < want)) continue;
      const r = this.scanGroup(g, (await this.readBlockBitmap(g)).data, want);
      if (r.found) return { group: g, start: r.start, len: want };
      consider(g, r);
    }
    for (let i = 1; i < N; i++) {
      const g = (g0 + i) % N;
      const need = Math.max(minLen, best === undefined ? 1 : best.len + 1);
      const known = this.largestLen[g]!;
      if (s.group(g).freeBlocksCount < need || (known >= 0 && known < need)) continue;
      if (known >= 0) consider(g, { start: this.largestStart[g]!, len: known });
      else consider(g, this.scanGroup(g, (await this.readBlockBitmap(g)).data, want));
    }
    return best;
  }

  /**
   * Scans all of group `g` for the first run of `want` free blocks; when there is none the
   * result is the group's longest run, which is cached until the group changes.
   */
  private scanGroup(g: number, data: Uint8Array, want: number): bm.ZeroRun & { found: boolean } {
    const n = blocksInGroup(this.s, g);
    const r = bm.findZeroRun(data, this.firstFreeOf(g, data, n), n, want);
    if (!r.found) {
      this.largestLen[g] = r.len;
      this.largestStart[g] = r.start;
    }
    return r;
  }

  /**
   * Marks a found run in use. A run that the bitmap calls free but that holds metadata is
   * corruption (the kernel's "Allocating blocks … which overlap fs metadata").
   */
  private async useRun(c: Candidate): Promise<BlockRun> {
    const s = this.s;
    const buf = await this.readBlockBitmap(c.group);
    const pblk = s.groupFirstBlock(c.group) + c.start;
    const meta = this.systemZone().overlap(pblk, c.len);
    if (meta !== undefined) {
      const where = { group: c.group, block: s.group(c.group).blockBitmap };
      throw new Corrupt('block bitmap', `marks metadata block ${meta} free`, where);
    }
    this.markUsed(c.group, buf, c.start, c.len);
    return { pblk, len: c.len };
  }

  /**
   * Frees [pblk, pblk + len), possibly across groups. Everything is checked before anything
   * changes: the range lies in the filesystem, holds no metadata, and every block is in use.
   * Freed blocks are dropped from the buffer cache (bforget), so a stale metadata buffer is
   * never written over the block's next owner.
   */
  /** A range to free must lie in the filesystem, outside its metadata. */
  private checkFree(pblk: number, len: number): void {
    const s = this.s;
    this.requireWritable('free');
    assert(Number.isSafeInteger(len) && len >= 1, () => `freeBlocks length ${len}`);
    if (!Number.isSafeInteger(pblk) || pblk < s.firstDataBlock || pblk + len > s.blocksCount) {
      const fsRange = `blocks ${s.firstDataBlock}..${s.blocksCount - 1}`;
      throw new Corrupt('block range', `${pblk}+${len} to free lies outside the filesystem (${fsRange})`);
    }
    const meta = this.systemZone().overlap(pblk, len);
    if (meta !== undefined) {
      throw new Corrupt('block range', `freeing filesystem metadata block ${meta}`, { block: meta });
    }
  }

  private async freeLocked(pblk: number, len: number): Promise<void> {
    const s = this.s;
    this.checkFree(pblk, len);
    const segs = this.segments(pblk, len);
    for (const seg of segs) {
      const data = (await this.readBlockBitmap(seg.group)).data;
      const z = bm.findNextZero(data, seg.start, seg.start + seg.len);
      if (z < seg.start + seg.len) {
        const where = { group: seg.group, block: s.group(seg.group).blockBitmap };
        throw new Corrupt('block bitmap', `freeing free block ${s.groupFirstBlock(seg.group) + z}`, where);
      }
    }
    for (const seg of segs) {
      // Re-read: an earlier read may have pushed this clean buffer out of the cache; its
      // contents are unchanged (it was clean), so the check above still holds.
      this.markFree(seg.group, await this.readBlockBitmap(seg.group), seg.start, seg.len);
    }
    for (let b = pblk; b < pblk + len; b++) s.cache.forget(b);
  }

  /** Splits [pblk, pblk + len) at group boundaries. */
  private segments(pblk: number, len: number): Candidate[] {
    const out: Candidate[] = [];
    for (let p = pblk; p < pblk + len; ) {
      const { group, bit } = groupOfBlock(this.s, p);
      const n = Math.min(pblk + len - p, blocksInGroup(this.s, group) - bit);
      out.push({ group, start: bit, len: n });
      p += n;
    }
    return out;
  }

  /** The system zone, built on first use (ext4_setup_system_zone). */
  private systemZone(): SystemZone {
    if (this.zone !== undefined) return this.zone;
    const s = this.s;
    const ranges: [number, number][] = [];
    for (let g = 0; g < s.groupCount; g++) {
      const base = numBaseMetaBlocks(s, g);
      const first = s.groupFirstBlock(g);
      if (base > 0) ranges.push([first, first + base]);
      const gd = s.group(g);
      ranges.push([gd.blockBitmap, gd.blockBitmap + 1], [gd.inodeBitmap, gd.inodeBitmap + 1]);
      ranges.push([gd.inodeTable, gd.inodeTable + this.itbPerGroup]);
    }
    this.zone = new SystemZone(ranges);
    return this.zone;
  }

  /**
   * The data goal of flex group `lead` (its first group): past the base metadata of that
   * group and past every bitmap and inode table of the flex group that lies inside the flex
   * group's blocks, where mkfs packs them.
   */
  private flexGoal(lead: number): number {
    const s = this.s;
    const last = Math.min(lead + this.flexSize, s.groupCount) - 1;
    const lo = s.groupFirstBlock(lead);
    const hi = s.groupFirstBlock(last) + blocksInGroup(s, last);
    let goal = lo + numBaseMetaBlocks(s, lead);
    for (let h = lead; h <= last; h++) {
      const gd = s.group(h);
      const meta: [number, number][] = [[gd.blockBitmap, 1], [gd.inodeBitmap, 1], [gd.inodeTable, this.itbPerGroup]];
      for (const [b, n] of meta) if (b >= lo && b < hi) goal = Math.max(goal, b + n);
    }
    return Math.min(goal, s.blocksCount - 1);
  }
}

const ballocs = new WeakMap<Ext4Super, Balloc>();

/** The block allocator of a mount (one per Ext4Super, created on first use). */
export function getBalloc(s: Ext4Super): Balloc {
  let b = ballocs.get(s);
  if (b === undefined) {
    b = new Balloc(s);
    ballocs.set(s, b);
  }
  return b;
}
