/**
 * The block layer's unit of I/O, ported from the kernel's `struct bio` (include/linux/blk_types.h,
 * block/bio.c, block/blk-core.c) and ext4's bio builder `io_submit_add_bh` (fs/ext4/page-io.c).
 *
 * A Bio is one contiguous device range (its first sector plus the sum of its segments) made of
 * (page bytes, offset, length) segments — the kernel's bio_vec — up to `maxVecs` of them
 * (BIO_MAX_VECS, 256 in the kernel; tests set it small so one extent spans many bios) and up to
 * the device's `maxRequestBytes`. Lifecycle: open (segments added) → submitted (`submitBio`) →
 * ended (`bioEndio` calls `endIo(bio, status)` exactly once). A segment whose data is a page of
 * the page cache is not copied: the page must stay stable until endIo.
 *
 * Differences from the kernel, on purpose: the Bio carries its device (the kernel's `bi_bdev`),
 * so `submitBio(bio)` takes no device argument; the status is an errno code (`'EIO'`) rather than
 * a blk_status_t; and a bio with several segments is issued to the BlockDevice as one request
 * through a bounce buffer (the BlockDevice interface has no vectored calls yet).
 */
import { assert, Ext4Bug } from '../util/assert.js';
import { isExt4Error, type ErrnoCode } from '../util/errors.js';
import type { BlockDevice } from './block-device.js';

/** The kernel's REQ_OP_READ / REQ_OP_WRITE. */
export type BioOp = 'read' | 'write';

/** A bio's completion status: 0 for success, else the errno code (the kernel's bi_status). */
export type BioStatus = 0 | ErrnoCode;

/** One segment (the kernel's bio_vec): `len` bytes of `page` starting at `offset`. */
export interface BioVec {
  /** The page's bytes (bv_page). */
  readonly page: Uint8Array;
  /** Byte offset in the page (bv_offset). */
  readonly offset: number;
  /** Length in bytes (bv_len), a multiple of the device's sector size. */
  len: number;
}

/** The completion callback (bi_end_io). Called exactly once, after the I/O finished. */
export type BioEndIo<P> = (bio: Bio<P>, status: BioStatus) => void;

/** BIO_MAX_VECS in the kernel. */
export const BIO_MAX_VECS = 256;

export interface BioInit<P> {
  /** The device the bio targets (bi_bdev). */
  dev: BlockDevice;
  op: BioOp;
  /** First sector, in units of `dev.sectorSize` (bi_iter.bi_sector). */
  sector: number;
  /** Most segments the bio may hold (bi_max_vecs); default BIO_MAX_VECS. */
  maxVecs?: number;
  /** Most bytes the bio may carry (a queue's max_sectors); default: the device's maxRequestBytes. */
  maxBytes?: number;
  endIo: BioEndIo<P>;
  /** Caller's data for endIo (bi_private), e.g. the io_end the bio holds a reference on. */
  private: P;
}

type BioState = 'open' | 'submitted' | 'ended';

export class Bio<P = undefined> {
  readonly dev: BlockDevice;
  readonly op: BioOp;
  /** First sector (bi_iter.bi_sector), in units of dev.sectorSize. */
  readonly sector: number;
  /** Most segments (bi_max_vecs). */
  readonly maxVecs: number;
  /** Most bytes (the smaller of the caller's limit and the device's request size). */
  readonly maxBytes: number;
  /** The segments (bi_io_vec), in device order. */
  readonly vecs: BioVec[] = [];
  /** Caller's data (bi_private). */
  readonly private: P;
  private readonly endIo: BioEndIo<P>;
  /** Total bytes (bi_iter.bi_size). */
  private sizeBytesValue = 0;
  private state: BioState = 'open';
  /** The status once ended (bi_status); undefined before. */
  status: BioStatus | undefined;
  /** The device error behind a nonzero status, for messages. */
  error: unknown;
  /** Resolvers of wait(), run after endIo. */
  private waiters: ((status: BioStatus) => void)[] = [];

  /** bio_alloc: an empty bio at `sector`. */
  constructor(init: BioInit<P>) {
    this.dev = init.dev;
    this.op = init.op;
    this.sector = init.sector;
    this.maxVecs = init.maxVecs ?? BIO_MAX_VECS;
    this.maxBytes = Math.min(init.maxBytes ?? Number.MAX_SAFE_INTEGER, init.dev.maxRequestBytes);
    assert(this.maxBytes >= init.dev.sectorSize, () => `bio: limit of ${this.maxBytes} bytes is below one sector`);
    this.endIo = init.endIo;
    this.private = init.private;
    assert(Number.isSafeInteger(this.sector) && this.sector >= 0, () => `bio: bad sector ${this.sector}`);
    assert(Number.isSafeInteger(this.maxVecs) && this.maxVecs >= 1, () => `bio: bad maxVecs ${this.maxVecs}`);
  }

  /** Total bytes in the bio (bi_iter.bi_size). */
  get sizeBytes(): number {
    return this.sizeBytesValue;
  }
  /** Byte offset of the bio on the device. */
  get offsetBytes(): number {
    return this.sector * this.dev.sectorSize;
  }
  /** The sector right after the bio's last byte: where a contiguous segment must go. */
  get endSector(): number {
    return this.sector + this.sizeBytesValue / this.dev.sectorSize;
  }
  get isSubmitted(): boolean {
    return this.state !== 'open';
  }
  get isEnded(): boolean {
    return this.state === 'ended';
  }

  /**
   * bio_add_page: appends `len` bytes of `page` at `offset`, which land at `sector` on the device
   * (default: right after the bio's current end). Returns false, changing nothing, when the bio
   * is full (maxVecs segments, or the device's maxRequestBytes) or `sector` is not the bio's
   * end. A segment continuing the last one in the same page extends it instead of taking a new
   * slot, as the kernel merges adjacent buffers of one page into one bio_vec.
   */
  add(page: Uint8Array, offset: number, len: number, sector = this.endSector): boolean {
    assert(this.state === 'open', 'bio_add_page on a submitted bio');
    const ss = this.dev.sectorSize;
    assert(Number.isSafeInteger(offset) && offset >= 0, () => `bio_add_page: bad offset ${offset}`);
    assert(Number.isSafeInteger(len) && len > 0 && len % ss === 0, () => `bio_add_page: length ${len} not a positive multiple of ${ss}`);
    assert(offset + len <= page.length, () => `bio_add_page: [${offset}, +${len}) past a ${page.length}-byte page`);
    if (sector !== this.endSector) return false;
    if (this.sizeBytesValue + len > this.maxBytes) return false;
    const last = this.vecs[this.vecs.length - 1];
    if (last !== undefined && last.page === page && last.offset + last.len === offset) {
      last.len += len;
    } else {
      if (this.vecs.length >= this.maxVecs) return false;
      this.vecs.push({ page, offset, len });
    }
    this.sizeBytesValue += len;
    return true;
  }

  /** Marks the bio submitted; only submitBio calls this. */
  markSubmitted(): void {
    assert(this.state === 'open', 'submit_bio of a bio submitted twice');
    assert(this.vecs.length > 0, 'submit_bio of an empty bio');
    this.state = 'submitted';
  }

  /**
   * bio_endio: records the status and calls endIo. A second call is a bug (the kernel's
   * "bio ended twice" would be a use-after-free).
   */
  end(status: BioStatus, error?: unknown): void {
    assert(this.state === 'submitted', () => `bio_endio on a bio that is ${this.state === 'open' ? 'not submitted' : 'already ended'} (sector ${this.sector})`);
    this.state = 'ended';
    this.status = status;
    this.error = error;
    try {
      this.endIo(this, status);
    } finally {
      for (const w of this.waiters) w(status);
      this.waiters = [];
    }
  }

  /** Resolves with the status once the bio has ended and its endIo has run. */
  wait(): Promise<BioStatus> {
    const status = this.status;
    if (this.state === 'ended' && status !== undefined) return Promise.resolve(status);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

/**
 * submit_bio: issues the bio on its device and calls its endIo when the device completes it
 * (from the device's completion context: a promise continuation, never inside this call).
 * Device errors become a status (an IoError is 'EIO', a PosixError keeps its code); anything
 * that is not an Ext4Error is a bug and is thrown from the completion, not turned into EIO.
 */
export function submitBio<P>(bio: Bio<P>): void {
  bio.markSubmitted();
  const single = bio.vecs.length === 1 ? bio.vecs[0] : undefined;
  const dev = bio.dev;
  let req: Promise<void>;
  let buf: Uint8Array | undefined;
  if (bio.op === 'write' && single === undefined && dev.writev !== undefined) {
    // A gather write straight from the pages: no bounce copy.
    req = dev.writev(bio.offsetBytes, bio.vecs.map((v) => v.page.subarray(v.offset, v.offset + v.len)));
  } else {
    buf = single !== undefined ? single.page.subarray(single.offset, single.offset + single.len) : new Uint8Array(bio.sizeBytes);
    if (bio.op === 'write' && single === undefined) gather(bio.vecs, buf);
    req = bio.op === 'write' ? dev.write(bio.offsetBytes, buf) : dev.read(bio.offsetBytes, buf);
  }
  req.then(
    () => {
      if (bio.op === 'read' && single === undefined && buf !== undefined) scatter(bio.vecs, buf);
      bio.end(0);
    },
    (e: unknown) => {
      if (!isExt4Error(e) || e instanceof Ext4Bug) throw e;
      bio.end(errnoOf(e), e);
    },
  );
}

/** submit_bio_wait: submits and resolves with the status once endIo has run. */
export function submitBioWait<P>(bio: Bio<P>): Promise<BioStatus> {
  const done = bio.wait();
  submitBio(bio);
  return done;
}

/** The errno code of a device error. */
function errnoOf(e: { code: string }): ErrnoCode {
  return e.code === 'EIO' || !isErrno(e.code) ? 'EIO' : e.code;
}
function isErrno(code: string): code is ErrnoCode {
  return /^E[A-Z0-9]+$/.test(code) && code !== 'EFSCORRUPTED' && code !== 'EFSBADCRC' && code !== 'EXT4_INCOMPATIBLE';
}

function gather(vecs: readonly BioVec[], dst: Uint8Array): void {
  let at = 0;
  for (const v of vecs) {
    dst.set(v.page.subarray(v.offset, v.offset + v.len), at);
    at += v.len;
  }
}

function scatter(vecs: readonly BioVec[], src: Uint8Array): void {
  let at = 0;
  for (const v of vecs) {
    v.page.set(src.subarray(at, at + v.len), v.offset);
    at += v.len;
  }
}

export interface BioBuilderInit<P> {
  dev: BlockDevice;
  op: BioOp;
  /** The filesystem block size in bytes; block numbers passed to add() are in these units. */
  blockSizeBytes: number;
  /**
   * io_submit_init_bio: makes the bio for a run starting at `sector` (sets endIo and private,
   * e.g. taking an io_end reference). Called only when a buffer is about to be added.
   */
  alloc: (sector: number) => Bio<P>;
}

/**
 * The ext4_io_submit bio builder: buffers are added in order; contiguous blocks share one bio;
 * a discontiguity (`blockNr` not the next block) or a full bio submits the open bio and starts
 * another (io_submit_add_bh's "submit_and_retry"). `submit()` (ext4_io_submit) sends the open
 * bio, if any; call it when the caller's batch ends.
 */
export class BioBuilder<P> {
  private bio: Bio<P> | undefined;
  /** The block right after the open bio's last one (io_next_block). */
  private nextBlock = -1;
  /** Bios submitted so far (for --stats). */
  submitted = 0;
  private readonly sectorsPerBlock: number;

  constructor(private readonly init: BioBuilderInit<P>) {
    const bs = init.blockSizeBytes;
    assert(Number.isSafeInteger(bs) && bs > 0 && bs % init.dev.sectorSize === 0, () => `bio builder: bad block size ${bs}`);
    this.sectorsPerBlock = bs / init.dev.sectorSize;
  }

  /** The open bio, if any (io_bio). */
  get openBio(): Bio<P> | undefined {
    return this.bio;
  }

  /**
   * io_submit_add_bh: adds one block (or a run of `len` bytes, a whole number of blocks) of
   * `page` at `offset`, destined for device block `blockNr`. Returns the bio that took it, so
   * the caller can account the buffer only now that it joined a bio (IO-DESIGN.md §1.3 E).
   */
  add(blockNr: number, page: Uint8Array, offset: number, len = this.init.blockSizeBytes): Bio<P> {
    const bs = this.init.blockSizeBytes;
    assert(Number.isSafeInteger(blockNr) && blockNr >= 0, () => `bio builder: bad block ${blockNr}`);
    assert(len > 0 && len % bs === 0, () => `bio builder: length ${len} not a multiple of ${bs}`);
    if (this.bio !== undefined && blockNr !== this.nextBlock) this.submit();
    for (let tries = 0; ; tries++) {
      if (this.bio === undefined) {
        const sector = blockNr * this.sectorsPerBlock;
        const bio = this.init.alloc(sector);
        assert(bio.sector === sector && bio.sizeBytes === 0 && bio.op === this.init.op, 'bio builder: alloc returned a bio that does not fit');
        this.bio = bio;
      }
      if (this.bio.add(page, offset, len)) break;
      // A fresh bio refusing the buffer can only mean the buffer exceeds one request.
      assert(tries === 0, () => `bio builder: a fresh bio cannot take ${len} bytes`);
      this.submit();
    }
    this.nextBlock = blockNr + len / bs;
    return this.bio;
  }

  /** ext4_io_submit: submits the open bio, if any. */
  submit(): void {
    const bio = this.bio;
    if (bio === undefined) return;
    this.bio = undefined;
    this.nextBlock = -1;
    this.submitted++;
    submitBio(bio);
  }
}
