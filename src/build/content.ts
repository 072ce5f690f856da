/**
 * File content for the builder: reads a regular file's bytes from where its source keeps them
 * (a host file, a region of an uncompressed tar, memory) as chunks of at most CHUNK_BYTES
 * (LARGE_CHUNK_BYTES for large files) placed
 * at explicit file positions, so a file of any size streams through bounded memory.
 *
 * Holes: Node has no SEEK_DATA/SEEK_HOLE, so a host file whose allocation is smaller than its
 * size (st_blocks * 512 < st_size) is treated as sparse and its all-zero blocks are skipped, as
 * `cp --sparse=auto` does; every other file is copied whole. Reading stops early once the
 * non-zero 512-byte sectors found account for every allocated byte (st_blocks): whatever follows
 * can only be holes. Memory content may be a list of pieces at offsets (a manifest's sparse map).
 *
 * ContentFetcher keeps the next files' first chunks (and the next chunk of the current file) in
 * flight while the caller writes the current one, so source reads overlap the engine's work.
 * Files up to SYNC_READ_BYTES are read with synchronous calls instead: from the page cache that
 * costs a few microseconds, where a promise-based open, read and close cost about 150 µs of CPU
 * per file (measured: 20,000 files, 3.2 s of a 17 s data phase). With many of them, a worker
 * thread makes those calls ahead of the writes (read-worker.ts), on another CPU.
 * The order in which files are handed out never depends on I/O timing: that order decides block
 * allocation, and a reproducible image needs the same allocation every run.
 */
import { open, type FileHandle as HostFileHandle } from 'node:fs/promises';
import { openSync, readSync, closeSync } from 'node:fs';
import { hostFsPath } from '../util/bytes.js';
import { badEntry, type BuildEntry, type Chunk } from './source.js';
import { SmallFileReader } from './read-worker.js';
import { assert } from '../util/assert.js';

export type { Chunk };

/** The largest piece read or written at once. */
export const CHUNK_BYTES = 1 << 20;

const SECTOR = 512;

/** Host files up to this size are read synchronously (see the module comment). */
export const SYNC_READ_BYTES = 256 << 10;

/**
 * Large files: at least LARGE_FILE_BYTES of dense host content (not sparse). They are read in
 * chunks of LARGE_CHUNK_BYTES, and the builder writes them with direct I/O (no copy through the
 * page cache; measured on 8 × 128 MiB: 2.2 s buffered, 1.2 s direct with 8 MiB requests).
 */
export const LARGE_FILE_BYTES = 4 << 20;
export const LARGE_CHUNK_BYTES = 8 << 20;

/** True for a large file (see LARGE_FILE_BYTES): dense host or plain-tar content. */
export function isLargeFile(e: BuildEntry): boolean {
  const c = e.content;
  return e.sizeBytes >= LARGE_FILE_BYTES && (c?.kind === 'archive' || (c?.kind === 'host' && !c.sparse));
}

/** Read size of a host-backed file's chunks. */
function chunkBytesOf(e: BuildEntry): number {
  return isLargeFile(e) ? LARGE_CHUNK_BYTES : CHUNK_BYTES;
}

/** True when bytes[from, to) are all zero (four bytes at a time where aligned). */
function isZero(b: Uint8Array, from: number, to: number): boolean {
  let i = from;
  const start = b.byteOffset + i;
  if (start % 4 === 0) {
    const words = new Uint32Array(b.buffer, start, (to - i) >>> 2);
    for (let k = 0; k < words.length; k++) if (words[k] !== 0) return false;
    i += words.length * 4;
  }
  for (; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Splits `bytes` (file bytes at the block-aligned `pos`) into runs without all-zero
 * `blockSize` blocks, and counts the 512-byte sectors holding a non-zero byte (each one must be
 * allocated on the host, whatever its block size).
 */
export function scanSparse(pos: number, bytes: Uint8Array, blockSize: number): { runs: Chunk[]; nonZeroSectors: number } {
  assert(pos % blockSize === 0 && blockSize % SECTOR === 0, () => `scanSparse at ${pos} with blocks of ${blockSize}`);
  const runs: Chunk[] = [];
  let nonZeroSectors = 0;
  let runStart = -1;
  for (let off = 0; off < bytes.length; off += blockSize) {
    const end = Math.min(bytes.length, off + blockSize);
    let zero = true;
    for (let s = off; s < end; s += SECTOR) {
      if (!isZero(bytes, s, Math.min(end, s + SECTOR))) {
        zero = false;
        nonZeroSectors++;
      }
    }
    if (!zero && runStart < 0) runStart = off;
    if (zero && runStart >= 0) {
      runs.push({ pos: pos + runStart, bytes: bytes.subarray(runStart, off) });
      runStart = -1;
    }
  }
  if (runStart >= 0) runs.push({ pos: pos + runStart, bytes: bytes.subarray(runStart) });
  return { runs, nonZeroSectors };
}

/** Bytes of content a file has to write (holes excluded where the source says where they are). */
export function contentLength(e: BuildEntry): number {
  const c = e.content;
  if (c === undefined) return 0;
  if (c.kind === 'bytes') return Math.min(c.bytes.length, e.sizeBytes);
  if (c.kind === 'pieces') return c.pieces.reduce((n, p) => n + p.bytes.length, 0);
  return e.sizeBytes;
}

/**
 * Read buffers of LARGE_CHUNK_BYTES, handed back once written and reused. A fresh 8 MiB buffer
 * per chunk is fresh memory from the kernel every time: its page faults (on the read that fills
 * it) and its unmapping by the garbage collector doubled the system time of a build of large
 * files. Bounded by the read-ahead: at most as many as are in flight at once are kept.
 */
export class ChunkPool {
  private readonly free: Uint8Array[] = [];
  constructor(private readonly keep = 16) {}

  /**
   * A buffer of `len` bytes whose contents are garbage (the reader overwrites every byte). Only
   * the buffer taken comes back, through its own release: nothing else can enter the pool.
   */
  take(len: number): { buf: Uint8Array; release?: () => void } {
    if (len !== LARGE_CHUNK_BYTES) return { buf: new Uint8Array(len) };
    const b = this.free.pop() ?? new Uint8Array(len);
    let released = false;
    return {
      buf: b,
      release: () => {
        assert(!released, 'ChunkPool: a buffer released twice');
        released = true;
        if (this.free.length < this.keep) this.free.push(b);
      },
    };
  }

  /** Buffers waiting for reuse. */
  get size(): number {
    return this.free.length;
  }
}

/** A chunk read by HostReader: its bytes, and how to give a pooled buffer back. */
interface ReadChunk {
  bytes: Uint8Array;
  release?: () => void;
}

/** An open host file being read chunk by chunk (a source file, or a plain tar). */
class HostReader {
  /** The open file; one promise, so that overlapping reads share one descriptor. */
  private fh: Promise<HostFileHandle> | undefined;
  constructor(private readonly e: BuildEntry, private readonly hostPath: string, private readonly offset: number, private readonly pool: ChunkPool) {}

  /** Reads file bytes [pos, pos + len) of the entry. */
  async read(pos: number, len: number): Promise<ReadChunk> {
    this.fh ??= open(hostFsPath(this.hostPath), 'r').catch((err: unknown) => {
      throw badEntry(this.e.origin, `cannot read the source: ${(err as Error).message}`);
    });
    const fh = await this.fh;
    const { buf, release } = this.pool.take(len);
    try {
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fh.read(buf, got, len - got, this.offset + pos + got);
        if (bytesRead === 0) throw badEntry(this.e.origin, `the source ended at ${pos + got} of ${this.e.sizeBytes} bytes (changed during the build?)`);
        got += bytesRead;
      }
    } catch (err) {
      release?.();
      throw err;
    }
    return release !== undefined ? { bytes: buf, release } : { bytes: buf };
  }

  /** Closes the file (after the reads in flight, which the caller awaited or abandoned). */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh !== undefined) await (await fh.catch(() => undefined))?.close();
  }
}

/** A file's content being fetched: the first chunk of a host file in flight. */
interface Pending {
  entry: BuildEntry;
  reader: HostReader | undefined;
  first: Promise<ReadChunk> | undefined;
  /** Bytes fetched ahead for this file (counted against ReadAheadOptions.maxBytes). */
  aheadBytes: number;
}

export interface ReadAheadOptions {
  /** Image block size: the unit of hole detection. */
  blockSize: number;
  /** Files whose first chunk is fetched ahead of the one being written (default 8). */
  depth?: number;
  /** Most bytes fetched ahead in total (default 32 MiB). */
  maxBytes?: number;
  /**
   * Small host files are read on a worker thread (read-worker.ts) when there are at least this
   * many (default WORKER_MIN_FILES; starting the thread costs about 30 ms).
   */
  workerMinFiles?: number;
}

/** See ReadAheadOptions.workerMinFiles. */
export const WORKER_MIN_FILES = 256;

/** A small host file (or plain-tar member): read whole, on the worker when there is one. */
export function isSmallHost(e: BuildEntry): boolean {
  const c = e.content;
  return (c?.kind === 'host' || c?.kind === 'archive') && e.sizeBytes <= SYNC_READ_BYTES;
}

/**
 * Hands out files in the order they were pushed, each with its content as chunks (holes skipped
 * where known), reading ahead as ReadAheadOptions allows: the caller pushes files as it learns
 * of them, ahead of the ones it writes. Files must not have 'stream' content.
 */
export class ContentFetcher {
  private readonly depth: number;
  private readonly maxBytes: number;
  /** Pushed and not started (their first chunk not yet in flight). */
  private readonly queued: BuildEntry[] = [];
  private queuedAt = 0;
  /** Started, in order. */
  private readonly window: Pending[] = [];
  private ahead = 0;
  private readonly archives = new ArchiveFds();
  private readonly small: SmallFileReader | undefined;
  private readonly pool = new ChunkPool();

  /** `smallFiles`: how many small host files will be pushed (a worker is started for many). */
  constructor(private readonly opts: ReadAheadOptions, smallFiles: number) {
    this.depth = opts.depth ?? 8;
    this.maxBytes = opts.maxBytes ?? 32 * CHUNK_BYTES;
    this.small = smallFiles >= (opts.workerMinFiles ?? WORKER_MIN_FILES) ? new SmallFileReader() : undefined;
  }

  /** The next file to be written (after every file pushed before). */
  push(e: BuildEntry): void {
    assert(e.content?.kind !== 'stream', () => `${e.path}: ContentFetcher of streamed content`);
    const c = e.content;
    // A small host file is read whole on the worker (isSmallHost, spelled out for the types).
    if (this.small !== undefined && (c?.kind === 'host' || c?.kind === 'archive') && isSmallHost(e)) {
      this.small.add({ path: c.hostPath, offset: c.kind === 'archive' ? c.offset : 0, size: e.sizeBytes, archive: c.kind === 'archive' });
    }
    this.queued.push(e);
    this.fill();
  }

  /** The next pushed file and its chunks, in push order. */
  next(): { entry: BuildEntry; chunks: AsyncGenerator<Chunk> } {
    this.fill();
    const p = this.window.shift();
    assert(p !== undefined, 'ContentFetcher.next with nothing pushed');
    this.ahead -= p.aheadBytes;
    this.fill();
    return { entry: p.entry, chunks: chunksOf(p, this.opts.blockSize, this.archives, this.small) };
  }

  private fill(): void {
    while (this.queuedAt < this.queued.length && this.window.length < this.depth && (this.ahead < this.maxBytes || this.window.length === 0)) {
      // OK to index: queuedAt < queued.length.
      const p = start(this.queued[this.queuedAt++]!, this.pool);
      this.ahead += p.aheadBytes;
      this.window.push(p);
    }
    // Drop the started prefix now and then: the queue stays as long as the look-ahead.
    if (this.queuedAt > 1024) {
      this.queued.splice(0, this.queuedAt);
      this.queuedAt = 0;
    }
  }

  /** Closes every source file and the worker (after the last file, or when the build gave up). */
  async close(): Promise<void> {
    this.archives.closeAll();
    await this.small?.close();
    // Stopped early (an error): let fetches in flight settle and close their files.
    for (const p of this.window) {
      await p.first?.catch(() => undefined);
      await p.reader?.close().catch(() => undefined);
    }
    this.window.length = 0;
  }
}

/** Descriptors of archives kept open while their members are read (one open per archive). */
class ArchiveFds {
  private readonly fds = new Map<string, number>();
  get(hostPath: string): number {
    let fd = this.fds.get(hostPath);
    if (fd === undefined) {
      fd = openSync(hostFsPath(hostPath), 'r');
      this.fds.set(hostPath, fd);
    }
    return fd;
  }
  closeAll(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/** Reads a small host file (or a member of a plain tar) whole, synchronously. */
function readSmallSync(e: BuildEntry, archives: ArchiveFds): Uint8Array {
  const c = e.content;
  assert(c?.kind === 'host' || c?.kind === 'archive', () => `${e.path}: readSmallSync of ${c?.kind ?? 'no'} content`);
  const buf = new Uint8Array(e.sizeBytes);
  let fd: number;
  try {
    fd = c.kind === 'archive' ? archives.get(c.hostPath) : openSync(hostFsPath(c.hostPath), 'r');
  } catch (err) {
    throw badEntry(e.origin, `cannot read the source: ${(err as Error).message}`);
  }
  const offset = c.kind === 'archive' ? c.offset : 0;
  try {
    for (let got = 0; got < buf.length; ) {
      const n = readSync(fd, buf, got, buf.length - got, offset + got);
      if (n === 0) throw badEntry(e.origin, `the source ended at ${got} of ${e.sizeBytes} bytes (changed during the build?)`);
      got += n;
    }
  } finally {
    if (c.kind === 'host') closeSync(fd);
  }
  return buf;
}

/** Starts fetching the first chunk of a big host-backed file; small and memory content need nothing yet. */
function start(entry: BuildEntry, pool: ChunkPool): Pending {
  const c = entry.content;
  if (c === undefined || c.kind === 'bytes' || c.kind === 'pieces') return { entry, reader: undefined, first: undefined, aheadBytes: 0 };
  if (entry.sizeBytes <= SYNC_READ_BYTES) return { entry, reader: undefined, first: undefined, aheadBytes: 0 };
  assert(c.kind !== 'stream', () => `${entry.path}: readAhead of streamed content`);
  const reader = new HostReader(entry, c.hostPath, c.kind === 'archive' ? c.offset : 0, pool);
  const len = Math.min(entry.sizeBytes, chunkBytesOf(entry));
  const first = reader.read(0, len);
  // Fetched ahead: a failure is reported when the file's turn comes, not as an unhandled rejection.
  first.catch(() => undefined);
  return { entry, reader, first, aheadBytes: len };
}

/** Memory content as chunks of at most CHUNK_BYTES. */
function* memoryChunks(pieces: readonly Chunk[], sizeBytes: number): Generator<Chunk> {
  for (const p of pieces) {
    const end = Math.min(p.bytes.length, sizeBytes - p.pos);
    for (let off = 0; off < end; off += CHUNK_BYTES) {
      yield { pos: p.pos + off, bytes: p.bytes.subarray(off, Math.min(end, off + CHUNK_BYTES)) };
    }
  }
}

/** The chunks of one file: memory pieces, or host bytes read one chunk ahead of the writes. */
async function* chunksOf(p: Pending, blockSize: number, archives: ArchiveFds, small: SmallFileReader | undefined): AsyncGenerator<Chunk> {
  const e = p.entry;
  const c = e.content;
  if (c?.kind === 'bytes') return yield* memoryChunks([{ pos: 0, bytes: c.bytes }], e.sizeBytes);
  if (c?.kind === 'pieces') return yield* memoryChunks(c.pieces, e.sizeBytes);
  if ((c?.kind === 'host' || c?.kind === 'archive') && e.sizeBytes <= SYNC_READ_BYTES) {
    let bytes: Uint8Array;
    if (small === undefined) bytes = readSmallSync(e, archives);
    else {
      try {
        bytes = await small.take();
      } catch (err) {
        throw badEntry(e.origin, (err as Error).message);
      }
    }
    if (c.kind === 'host' && c.sparse) return yield* scanSparse(0, bytes, blockSize).runs;
    return yield { pos: 0, bytes };
  }
  if (p.reader === undefined || p.first === undefined) return;
  const reader = p.reader;
  const sparse = c?.kind === 'host' && c.sparse;
  let sectorsLeft = Math.ceil(e.allocBytes / SECTOR);
  // The read in flight: settled before the file is closed, however the loop ends.
  let inflight: Promise<ReadChunk> = p.first;
  const chunk = chunkBytesOf(e);
  try {
    for (let pos = 0; pos < e.sizeBytes; ) {
      const cur = inflight;
      const nextPos = pos + Math.min(chunk, e.sizeBytes - pos);
      if (nextPos < e.sizeBytes) {
        inflight = reader.read(nextPos, Math.min(chunk, e.sizeBytes - nextPos));
        inflight.catch(() => undefined);
      }
      const { bytes, release } = await cur;
      // A pooled buffer goes back once the caller wrote it (large files are never sparse).
      if (!sparse) yield release !== undefined ? { pos, bytes, release } : { pos, bytes };
      else {
        const s = scanSparse(pos, bytes, blockSize);
        yield* s.runs;
        sectorsLeft -= s.nonZeroSectors;
        // Every allocated sector is accounted for: the rest of the file is holes.
        if (sectorsLeft <= 0) return;
      }
      pos = nextPos;
    }
  } finally {
    await inflight.catch(() => undefined);
    await reader.close();
  }
}
