/**
 * The metadata buffer cache: the kernel's getblk/bread/brelse over filesystem blocks
 * (fs/buffer.c). Blocks are read once and kept in a bounded LRU; `verified` records that a
 * block's checksum and structure were checked (the kernel's buffer_verified), so hot metadata is
 * validated once, not on every access. Reads of the same block that overlap in time share one
 * device request. The write side (dirty tracking, sync) builds on the same entries.
 */
import type { BlockDevice } from '../blockdev/block-device.js';
import { assert } from '../util/assert.js';
import { Corrupt } from '../util/errors.js';

/** A cached metadata block. `data` is shared: callers must not modify it without markDirty. */
export interface MetaBuffer {
  readonly blockNr: number;
  readonly data: Uint8Array;
  /** Set once a validator accepted the block; cleared when the block changes. */
  verified: boolean;
  /** The block has changes not yet written to the device. */
  dirty: boolean;
  /**
   * Runs once just before a dirty block is written (or when commit() asks): stamps the
   * checksum over the final contents, so a block changed many times between syncs is summed
   * once.
   */
  finalize?: ((data: Uint8Array) => void) | undefined;
  /** Never evicted (group descriptor blocks: views into them live for the whole mount). */
  pinned?: boolean;
  /**
   * A block allocated since the last sync, which nothing on disk points at yet (a new extent-tree
   * node): sync makes it durable before the blocks that may point at it.
   */
  fresh?: boolean;
}

export class BufferCache {
  /**
   * Clean, evictable buffers in LRU order. Dirty and pinned buffers live in `held` instead, so
   * eviction never has to step over them (with thousands of dirty blocks between syncs, a
   * single map made every insert a scan).
   */
  private readonly lru = new Map<number, MetaBuffer>();
  private readonly held = new Map<number, MetaBuffer>();
  private readonly inflight = new Map<number, Promise<MetaBuffer>>();
  constructor(
    private readonly dev: BlockDevice,
    readonly blockSize: number,
    /** Blocks beyond this number are outside the filesystem. */
    private readonly blocksCount: number,
    /** Most clean blocks kept (dirty blocks are never evicted). */
    private readonly capacity = 8192,
    /** No buffer of a read-only cache may be dirtied. */
    private readonly readOnly = false,
  ) {
    assert(blockSize >= 1024 && (blockSize & (blockSize - 1)) === 0, `block size ${blockSize}`);
  }

  /**
   * The cached buffer of block `nr`, or undefined (no read): lets hot paths skip bread's promise
   * when the block is cached, which it nearly always is. A hit counts as a use.
   */
  peek(nr: number): MetaBuffer | undefined {
    const held = this.held.get(nr);
    if (held !== undefined) return held;
    const hit = this.lru.get(nr);
    if (hit !== undefined) {
      this.lru.delete(nr);
      this.lru.set(nr, hit);
    }
    return hit;
  }

  /** Reads block `nr` through the cache (bread). `what` names the structure for errors. */
  async bread(nr: number, what: string): Promise<MetaBuffer> {
    if (!Number.isSafeInteger(nr) || nr < 0 || nr >= this.blocksCount) {
      throw new Corrupt(what, `block number ${nr} outside the filesystem (${this.blocksCount} blocks)`);
    }
    const hit = this.peek(nr);
    if (hit !== undefined) return hit;
    const pending = this.inflight.get(nr);
    if (pending !== undefined) return pending;
    const p = this.load(nr);
    this.inflight.set(nr, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(nr);
    }
  }

  private async load(nr: number): Promise<MetaBuffer> {
    const data = new Uint8Array(this.blockSize);
    await this.dev.read(nr * this.blockSize, data);
    const buf: MetaBuffer = { blockNr: nr, data, verified: false, dirty: false };
    this.insert(buf);
    return buf;
  }

  /**
   * A zeroed buffer for block `nr` when the cache neither holds nor is reading it (a block whose
   * old contents do not matter, created without a read); nothing when it does.
   */
  createIfAbsent(nr: number): void {
    if (this.held.has(nr) || this.lru.has(nr) || this.inflight.has(nr)) return;
    this.getblk(nr);
  }

  /** Returns a zeroed buffer for a block about to be overwritten entirely (getblk). */
  getblk(nr: number): MetaBuffer {
    assert(Number.isSafeInteger(nr) && nr >= 0 && nr < this.blocksCount, () => `getblk ${nr}`);
    let buf = this.held.get(nr) ?? this.lru.get(nr);
    if (buf === undefined) {
      buf = { blockNr: nr, data: new Uint8Array(this.blockSize), verified: true, dirty: false };
      this.insert(buf);
    }
    return buf;
  }

  /**
   * Marks a buffer changed (mark_buffer_dirty): it will be written by sync() and is never
   * evicted before then. `finalize`, if given, replaces any earlier one and stamps the block's
   * checksum at write time. The buffer must be the cached one for its block.
   */
  markDirty(buf: MetaBuffer, finalize?: (data: Uint8Array) => void): void {
    assert(!this.readOnly, () => `markDirty of block ${buf.blockNr} on a read-only cache`);
    assert((this.held.get(buf.blockNr) ?? this.lru.get(buf.blockNr)) === buf, () => `markDirty of block ${buf.blockNr}: not the cached buffer`);
    if (!buf.dirty) this.nDirty++;
    buf.dirty = true;
    this.lru.delete(buf.blockNr);
    this.held.set(buf.blockNr, buf);
    buf.verified = true;
    if (finalize !== undefined) buf.finalize = finalize;
  }

  /**
   * Drops block `nr` from the cache, discarding unwritten changes (bforget): a freed metadata
   * block must not be written back over data that may be allocated there next.
   */
  forget(nr: number): void {
    assert(this.held.get(nr)?.pinned !== true, () => `forget of pinned block ${nr}`);
    const held = this.held.get(nr);
    if (held?.dirty === true) {
      this.nDirty--;
      // A write of it already issued by sync must not count it clean a second time.
      held.dirty = false;
    }
    this.lru.delete(nr);
    this.held.delete(nr);
  }

  /**
   * Number of dirty buffers (counters back to zero after sync: STYLE.md §7). Kept as a count:
   * the end of every operation reads it (the mount's dirty-metadata limit).
   */
  get dirtyCount(): number {
    return this.nDirty;
  }
  private nDirty = 0;

  /** Runs every pending finalizer (commit runs them before it sums the group descriptors). */
  finalizeAll(): void {
    for (const b of this.held.values()) {
      if (b.dirty && b.finalize !== undefined) {
        b.finalize(b.data);
        b.finalize = undefined;
      }
    }
  }

  private insert(buf: MetaBuffer): void {
    this.lru.set(buf.blockNr, buf);
    if (this.lru.size > this.capacity) this.insertTrim(buf);
  }

  /** Keeps `buf` cached for the rest of the mount (bread + pin). */
  pin(buf: MetaBuffer): void {
    assert((this.held.get(buf.blockNr) ?? this.lru.get(buf.blockNr)) === buf, () => `pin of block ${buf.blockNr}: not the cached buffer`);
    buf.pinned = true;
    this.lru.delete(buf.blockNr);
    this.held.set(buf.blockNr, buf);
  }

  /**
   * Writes every dirty buffer in block order, runs of adjacent blocks as one request up to the
   * device's limit, then flushes the device. Fresh buffers go first, behind their own flush: a
   * power cut between the two passes then never leaves a block on disk pointing at a new block
   * that is not (e2fsck would clear the pointer and everything under it, an extent tree with
   * data fsynced long before). Without a journal the commit stays non-atomic otherwise.
   */
  async sync(): Promise<void> {
    this.finalizeAll();
    const dirty = [...this.held.values()].filter((b) => b.dirty).sort((a, b) => a.blockNr - b.blockNr);
    assert(dirty.length === this.nDirty, () => `${dirty.length} dirty buffers but the count says ${this.nDirty}`);
    const fresh = dirty.filter((b) => b.fresh === true);
    if (fresh.length > 0 && fresh.length < dirty.length) {
      await this.writeRuns(fresh);
      await this.dev.flush();
    }
    await this.writeRuns(dirty.filter((b) => b.dirty));
    await this.dev.flush();
    assert(this.nDirty >= 0, () => `dirty buffer count ${this.nDirty} below zero`);
    // Written buffers become evictable again (pinned ones stay held).
    for (const b of dirty) {
      if (b.dirty || b.pinned === true || this.held.get(b.blockNr) !== b) continue;
      this.held.delete(b.blockNr);
      this.lru.set(b.blockNr, b);
    }
    if (this.lru.size > this.capacity) this.insertTrim(undefined);
  }

  /** Writes `bufs` (dirty, in block order), runs of adjacent blocks as one request; they become clean. */
  private async writeRuns(bufs: readonly MetaBuffer[]): Promise<void> {
    const maxRun = Math.max(1, Math.floor(this.dev.maxRequestBytes / this.blockSize));
    for (let i = 0; i < bufs.length; ) {
      let j = i + 1;
      // OK to index: j < bufs.length is checked first.
      while (j < bufs.length && j - i < maxRun && bufs[j]!.blockNr === bufs[j - 1]!.blockNr + 1) j++;
      const first = bufs[i]!;
      if (j - i === 1) {
        await this.dev.write(first.blockNr * this.blockSize, first.data);
      } else {
        const run = new Uint8Array((j - i) * this.blockSize);
        for (let k = i; k < j; k++) run.set(bufs[k]!.data, (k - i) * this.blockSize);
        await this.dev.write(first.blockNr * this.blockSize, run);
      }
      for (let k = i; k < j; k++) {
        if (bufs[k]!.dirty) this.nDirty--;
        bufs[k]!.dirty = false;
        bufs[k]!.fresh = false;
      }
      i = j;
    }
  }

  /**
   * Evicts clean, unpinned buffers, oldest first, down to the capacity. Never the buffer just
   * inserted (`keep`): its caller is about to use it. Dirty and pinned buffers stay, so the cache
   * may exceed its capacity until the next sync.
   */
  private insertTrim(keep: MetaBuffer | undefined): void {
    for (const [k, v] of this.lru) {
      if (this.lru.size <= this.capacity) break;
      if (v !== keep) this.lru.delete(k);
    }
  }

  /** Drops every clean buffer (tests use it to force re-reads). */
  dropClean(): void {
    this.lru.clear();
  }
}
