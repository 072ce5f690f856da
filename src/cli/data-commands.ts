/**
 * `ext4ts put`, `fallocate` and `truncate`: the buffered data path from the command line
 * (issue 4). Each opens the image read-write with the data-path flags, runs, unmounts, and then
 * prints its own summary (`--json`) and the engine's counters (`--stats`, one JSON line, last).
 *
 * - `put` copies a host file or tree into the image like `cp -a`: directories, regular files,
 *   symlinks, FIFOs, sockets and device nodes, with modes, owners, atime/mtime to the nanosecond,
 *   and hard links within the tree (by host dev:ino). File contents go through the page cache
 *   (`Ext4.open(path)` + `FileHandle.write`) in 1 MiB chunks read from the host, never a whole
 *   file at once. A sparse source (st_blocks * 512 < st_size; Node has no SEEK_DATA/SEEK_HOLE)
 *   skips every all-zero block of the image's block size, as `cp --sparse=auto` does, and ends
 *   with `truncate` when it ends in a hole; so holes smaller than a page reach the engine.
 * - `fallocate` maps util-linux fallocate(1)'s flags onto `Ext4.fallocate`.
 * - `truncate` is the write verb of write-commands.ts with the data flags added.
 *
 * Invariants: the cli/ layer imports only src/index.ts; times are set last (post-order for
 * directories), after every write, truncate and link that would move them.
 */
import { Command, CommanderError } from 'commander';
import type { BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { Ext4, PosixError, decodeName, hostFsPath, type FileHandle, type OpenOptions, type Stats } from '../index.js';
import { parseSize } from './write-commands.js';

/** Host bytes read (and handed to FileHandle.write) per step. */
const CHUNK_BYTES = 1 << 20;
/** Page sizes the engine's page cache supports. */
const PAGE_SIZES = [4096, 16384, 65536];

/** The engine counters printed by `--stats`, in their printed order. */
const STATS_KEYS = ['bios', 'ioEnds', 'unwrittenIoEnds', 'conversions', 'pagesWritten', 'bytesWritten'] as const;
type DataStats = Record<(typeof STATS_KEYS)[number], number>;

/** fallocate(2) modes as `Ext4.fallocate` takes them. */
type FallocateMode = NonNullable<Parameters<Ext4['fallocate']>[3]>;

/** The flags shared by every data command (commander's parsed options). */
interface DataFlags {
  pageSize?: string;
  maxBioKib?: string;
  stats?: boolean;
  json?: boolean;
  quiet?: boolean;
}

function out(s: string): void {
  process.stdout.write(s + '\n');
}

/** A bad-usage error: one line on stderr, exit code 2 (main.ts maps CommanderError to 2). */
function usage(msg: string): never {
  process.stderr.write(`ext4ts: ${msg}\n`);
  throw new CommanderError(2, 'ext4ts.usage', msg);
}

/** Adds --page-size, --max-bio-kib, --stats, --json and --quiet to a data command. */
function withDataFlags(cmd: Command): Command {
  return cmd
    .option('--page-size <bytes>', `page-cache page size: ${PAGE_SIZES.join(', ')} (default 4096)`)
    .option('--max-bio-kib <kib>', 'most KiB per data bio (a multiple of the block size in KiB)')
    .option('--stats', 'after unmounting, print the data-path counters as one JSON line')
    .option('--json', 'print a JSON summary')
    .option('-q, --quiet', 'print nothing but errors (and what --json/--stats ask for)');
}

/**
 * Turns the data flags into open options. `--max-bio-kib N` becomes `maxBioBytes = N KiB` (the
 * queue's max_sectors: no bio carries more). The block size, which N must be a multiple of, is
 * read first with a read-only mount that ignores the journal and writes nothing.
 */
async function openOptions(image: string, o: DataFlags): Promise<OpenOptions> {
  const opts: OpenOptions = { readOnly: false };
  if (o.pageSize === undefined && o.maxBioKib === undefined) return opts;
  const pageSizeBytes = o.pageSize !== undefined ? Number(o.pageSize) : undefined;
  if (o.pageSize !== undefined && (!/^\d+$/.test(o.pageSize) || !PAGE_SIZES.includes(pageSizeBytes ?? 0))) {
    usage(`--page-size ${o.pageSize}: must be one of ${PAGE_SIZES.join(', ')}`);
  }
  const kib = o.maxBioKib !== undefined ? Number(o.maxBioKib) : undefined;
  const badKib = (why: string): never => usage(`--max-bio-kib ${o.maxBioKib}: must be a positive multiple of the block size in KiB (${why})`);
  if (kib !== undefined && (!/^\d+$/.test(o.maxBioKib ?? '') || kib <= 0 || !Number.isSafeInteger(kib * 1024))) badKib('a whole number');
  const probe = await Ext4.open(image, { readOnly: true, noRecovery: true });
  const blockSize = probe.info().blockSize;
  await probe.close();
  if (pageSizeBytes !== undefined) {
    if (pageSizeBytes < blockSize) usage(`--page-size ${pageSizeBytes}: smaller than the block size (${blockSize} bytes)`);
    opts.pageSizeBytes = pageSizeBytes;
  }
  if (kib !== undefined) {
    if ((kib * 1024) % blockSize !== 0) badKib(`${blockSize / 1024} KiB here`);
    opts.maxBioBytes = kib * 1024;
  }
  return opts;
}

/** The engine's data counters (`Ext4.dataStats()`), keys in the printed order. */
function dataStats(fs: Ext4): DataStats {
  const src = fs.dataStats();
  const line = {} as DataStats; // OK to start empty: every key is set just below.
  for (const k of STATS_KEYS) line[k] = src[k];
  return line;
}

/**
 * Opens `image` read-write with `opts` (from openOptions), runs `fn`, unmounts (writing every dirty page),
 * and returns `fn`'s result with the counters taken after the unmount. On failure the image is
 * still unmounted (what was done stays, as with cp) and the first error is thrown.
 */
async function withDataImage<T>(image: string, opts: OpenOptions, fn: (fs: Ext4) => Promise<T>): Promise<{ result: T; stats: DataStats }> {
  const fs = await Ext4.open(image, opts);
  let result: T;
  try {
    result = await fn(fs);
  } catch (e) {
    await fs.close().catch(() => undefined); // OK to drop: the operation's error is the one to report.
    throw e;
  }
  await fs.close();
  return { result, stats: dataStats(fs) };
}

/** Prints the `--json` summary and then the `--stats` line (always the last line). */
function finish(o: DataFlags, summary: Record<string, unknown>, stats: DataStats): void {
  if (o.json === true) out(JSON.stringify(summary));
  if (o.stats === true) out(JSON.stringify(stats));
}

/** Registers `put`, `fallocate` and `truncate`. */
export function registerDataCommands(program: Command): void {
  registerPut(program);
  registerFallocate(program);
  registerTruncate(program);
}

// ---------------------------------------------------------------------------------------------
// truncate and fallocate
// ---------------------------------------------------------------------------------------------

/** The size and allocation of a file, for the --json summary of truncate and fallocate. */
async function sizeSummary(fs: Ext4, path: string): Promise<Record<string, unknown>> {
  const st = await fs.stat(path);
  return { path, size: st.size, blocks: st.blocks };
}

function registerTruncate(program: Command): void {
  withDataFlags(program.command('truncate')
    .description('set a file\'s size (shrinking frees blocks; growing leaves a hole)')
    .argument('<image>', 'the image file to change').argument('<size>', 'new size (bytes, or with K/M/G/T)').argument('<path>'))
    .action(async (image: string, size: string, path: string, o: DataFlags) => {
      const sizeBytes = parseSize(size);
      const { result, stats } = await withDataImage(image, await openOptions(image, o), async (fs) => {
        await fs.truncate(path, sizeBytes);
        return sizeSummary(fs, path);
      });
      finish(o, result, stats);
    });
}

interface FallocateFlags extends DataFlags {
  offset?: string;
  length: string;
  keepSize?: boolean;
  punchHole?: boolean;
  zeroRange?: boolean;
}

function registerFallocate(program: Command): void {
  withDataFlags(program.command('fallocate')
    .description('preallocate (default), punch a hole in or zero a range of a file (like fallocate(1); creates a missing file)')
    .argument('<image>', 'the image file to change').argument('<path>')
    .option('-o, --offset <size>', 'start of the range (bytes, or with K/M/G/T)', '0')
    .requiredOption('-l, --length <size>', 'length of the range (bytes, or with K/M/G/T)')
    .option('-n, --keep-size', 'do not change the file size (FALLOC_FL_KEEP_SIZE)')
    .option('-p, --punch-hole', 'free the range, which then reads as zeros (implies --keep-size)')
    .option('-z, --zero-range', 'make the range read as zeros, keeping it allocated'))
    .action(async (image: string, path: string, o: FallocateFlags) => {
      const offset = parseSize(o.offset ?? '0', 'fallocate');
      const len = parseSize(o.length, 'fallocate');
      if (o.punchHole === true && o.zeroRange === true) usage('--punch-hole and --zero-range cannot be combined');
      if (len === 0) usage('--length must be greater than zero');
      // As fallocate(1): --punch-hole implies --keep-size (Linux requires FALLOC_FL_KEEP_SIZE with it).
      const mode: FallocateMode = { keepSize: o.keepSize === true || o.punchHole === true, punchHole: o.punchHole === true, zeroRange: o.zeroRange === true };
      const { result, stats } = await withDataImage(image, await openOptions(image, o), async (fs) => {
        if (!(await exists(fs, path))) await fs.mknod(path, { mode: 0o644 });
        await fs.fallocate(path, offset, len, mode);
        return sizeSummary(fs, path);
      });
      finish(o, result, stats);
    });
}

// ---------------------------------------------------------------------------------------------
// put
// ---------------------------------------------------------------------------------------------

/** What `put` copied (hard-linked files count once in files and bytes). */
interface PutSummary {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  special: number;
  /** Sum of the sizes of the regular files copied. */
  bytes: number;
  /** Files copied as sparse (holes kept). */
  sparse: number;
}

/** A special file as `Ext4.mknod` takes it. */
type SpecialNode = { type: 'fifo' | 'sock' } | { type: 'chr' | 'blk'; major: number; minor: number };

/** State of one `put` run. */
interface PutCtx {
  readonly fs: Ext4;
  readonly blockSize: number;
  /** Host "dev:ino" of a file with more than one link → its first path in the image. */
  readonly links: Map<string, string>;
  readonly sum: PutSummary;
  /** A zero-filled block, to recognize the holes of a sparse source. */
  readonly zeroBlock: Buffer;
  /** A reusable 1 MiB chunk buffer. */
  readonly chunk: Buffer;
}

function registerPut(program: Command): void {
  withDataFlags(program.command('put')
    .description('copy a host file or tree into the image (like cp -a HOSTSRC PATH; into PATH if it is a directory)')
    .argument('<image>', 'the image file to change').argument('<hostsrc>', 'host file or directory').argument('<path>', 'destination inside the image'))
    .action(async (image: string, hostSrc: string, path: string, o: DataFlags) => {
      const opts = await openOptions(image, o);
      const st = await lstat(hostSrc, { bigint: true });
      const { result, stats } = await withDataImage(image, opts, async (fs) => {
        const ctx: PutCtx = {
          fs, blockSize: fs.info().blockSize, links: new Map(),
          sum: { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, special: 0, bytes: 0, sparse: 0 },
          zeroBlock: Buffer.alloc(fs.info().blockSize), chunk: Buffer.allocUnsafe(CHUNK_BYTES),
        };
        // Like cp: an existing directory (symlinks to one followed) receives the source by name.
        const into = await statOrUndefined(fs, path, true);
        const name = basename(hostSrc.replace(/\/+$/, ''));
        const dest = into?.isDirectory() === true && name !== '' ? joinPath(path, name) : path;
        await putEntry(ctx, hostSrc, dest, st);
        return { dest, summary: ctx.sum };
      });
      const s = result.summary;
      if (o.json !== true && o.quiet !== true) {
        process.stderr.write(`ext4ts: put ${s.files} files (${s.sparse} sparse), ${s.dirs} directories, ${s.symlinks} symlinks, ` +
          `${s.hardlinks} hard links, ${s.special} special files, ${s.bytes} bytes into ${result.dest}\n`);
      }
      finish(o, { dest: result.dest, ...s }, stats);
    });
}

/** Copies one host entry (recursively for a directory) to `dest`, metadata last. */
async function putEntry(ctx: PutCtx, host: string, dest: string, st: BigIntStats): Promise<void> {
  const fs = ctx.fs;
  const existing = await statOrUndefined(fs, dest, false);
  if (!st.isDirectory() && st.nlink > 1n) {
    const key = `${st.dev}:${st.ino}`;
    const first = ctx.links.get(key);
    if (first !== undefined) {
      await removeNonDir(fs, dest, existing);
      await fs.link(first, dest);
      ctx.sum.hardlinks++;
      return;
    }
    ctx.links.set(key, dest);
  }
  if (st.isDirectory()) return putDir(ctx, host, dest, st, existing);
  if (st.isFile()) return putFile(ctx, host, dest, st, existing);
  const owner = { uid: Number(st.uid), gid: Number(st.gid) };
  await removeNonDir(fs, dest, existing);
  if (st.isSymbolicLink()) {
    await fs.symlink(await readlink(hostFsPath(host), { encoding: 'buffer' }), dest, owner);
    ctx.sum.symlinks++;
  } else {
    await fs.mknod(dest, { node: nodeSpec(host, st), mode: Number(st.mode) & 0o7777, ...owner });
    ctx.sum.special++;
  }
  await fs.utimes(dest, timespec(st.atimeNs), timespec(st.mtimeNs), false);
}

/** A directory: created (or merged into an existing one), children in name order, then metadata. */
async function putDir(ctx: PutCtx, host: string, dest: string, st: BigIntStats, existing: Stats | undefined): Promise<void> {
  const fs = ctx.fs;
  const perm = Number(st.mode) & 0o7777;
  if (existing === undefined) {
    await fs.mkdir(dest, { mode: perm, uid: Number(st.uid), gid: Number(st.gid) });
  } else if (!existing.isDirectory()) {
    throw new PosixError('ENOTDIR', 'put', dest, 'cannot overwrite a non-directory with a directory');
  }
  ctx.sum.dirs++;
  // A name that is not UTF-8 keeps its bytes (decodeName's escapes; hostFsPath undoes them).
  const names = (await readdir(hostFsPath(host), { encoding: 'buffer' })).map((n) => decodeName(n)).sort();
  for (const name of names) {
    const child = `${host}/${name}`;
    await putEntry(ctx, child, joinPath(dest, name), await lstat(hostFsPath(child), { bigint: true }));
  }
  if (existing !== undefined) {
    await fs.chown(dest, Number(st.uid), Number(st.gid), false);
    await fs.chmod(dest, perm);
  }
  await fs.utimes(dest, timespec(st.atimeNs), timespec(st.mtimeNs), false);
}

/**
 * A regular file: a new inode, or an existing file truncated to zero (like cp, which keeps the
 * destination inode); then the contents, owner, mode and times.
 */
async function putFile(ctx: PutCtx, host: string, dest: string, st: BigIntStats, existing: Stats | undefined): Promise<void> {
  const fs = ctx.fs;
  const perm = Number(st.mode) & 0o7777;
  if (existing?.isFile() === true) {
    await fs.truncate(dest, 0);
  } else {
    await removeNonDir(fs, dest, existing);
    await fs.mknod(dest, { mode: perm, uid: Number(st.uid), gid: Number(st.gid) });
  }
  const sparse = st.blocks * 512n < st.size;
  await copyContents(ctx, host, dest, Number(st.size), sparse);
  if (existing !== undefined) {
    await fs.chown(dest, Number(st.uid), Number(st.gid), false);
    await fs.chmod(dest, perm);
  }
  await fs.utimes(dest, timespec(st.atimeNs), timespec(st.mtimeNs), false);
  ctx.sum.files++;
  ctx.sum.bytes += Number(st.size);
  if (sparse) ctx.sum.sparse++;
}

/**
 * Streams `host` into the image file `dest` (empty) through the page cache, 1 MiB at a time.
 * With `sparse`, all-zero blocks (aligned to the image's block size) are skipped and the size is
 * set with truncate when the file ends in a hole. A source that changes size while it is read
 * is copied as far as it is read.
 */
async function copyContents(ctx: PutCtx, host: string, dest: string, sizeBytes: number, sparse: boolean): Promise<void> {
  if (sizeBytes === 0) return;
  const src = await open(hostFsPath(host), 'r');
  let endBytes = 0;
  try {
    const fh = await ctx.fs.open(dest, 'r+');
    try {
      for (let pos = 0; pos < sizeBytes; ) {
        const { bytesRead } = await src.read(ctx.chunk, 0, Math.min(CHUNK_BYTES, sizeBytes - pos), pos);
        if (bytesRead === 0) break;
        if (!sparse) {
          await fh.write(ctx.chunk, 0, bytesRead, pos);
          endBytes = pos + bytesRead;
        } else {
          endBytes = Math.max(endBytes, await writeDataRuns(ctx, fh, pos, bytesRead));
        }
        pos += bytesRead;
      }
    } finally {
      await fh.close();
    }
  } finally {
    await src.close();
  }
  if (endBytes < sizeBytes) await ctx.fs.truncate(dest, sizeBytes);
}

/**
 * Writes the runs of non-zero blocks of `ctx.chunk[0, len)`, which holds the file's bytes at
 * `pos`; block boundaries are the file's (multiples of the image's block size). Returns the end
 * of the last byte written (0 if none).
 */
async function writeDataRuns(ctx: PutCtx, fh: FileHandle, pos: number, len: number): Promise<number> {
  const bs = ctx.blockSize;
  let runStart = -1;
  let endBytes = 0;
  const flush = async (at: number): Promise<void> => {
    if (runStart < 0) return;
    await fh.write(ctx.chunk, runStart, at - runStart, pos + runStart);
    endBytes = pos + at;
    runStart = -1;
  };
  for (let off = 0; off < len; ) {
    const next = Math.min(len, (Math.floor((pos + off) / bs) + 1) * bs - pos);
    const piece = ctx.chunk.subarray(off, next);
    const zero = piece.length === bs ? piece.equals(ctx.zeroBlock) : piece.every((b) => b === 0);
    if (zero) await flush(off);
    else if (runStart < 0) runStart = off;
    off = next;
  }
  await flush(len);
  return endBytes;
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/** Removes a non-directory at `dest` so another kind of entry can take its name (cp's unlink). */
async function removeNonDir(fs: Ext4, dest: string, existing: Stats | undefined): Promise<void> {
  if (existing === undefined) return;
  if (existing.isDirectory()) throw new PosixError('EISDIR', 'put', dest, 'cannot overwrite a directory with a non-directory');
  await fs.unlink(dest);
}

/** The device, FIFO or socket to create for a special host entry. */
function nodeSpec(host: string, st: BigIntStats): SpecialNode {
  if (st.isFIFO()) return { type: 'fifo' };
  if (st.isSocket()) return { type: 'sock' };
  if (!st.isCharacterDevice() && !st.isBlockDevice()) throw new PosixError('EINVAL', 'put', host, 'unsupported file type');
  // Linux's dev_t: major in bits 8-19 and 32-43, minor in bits 0-7 and 20-31 (new_decode_dev).
  const major = Number(((st.rdev >> 8n) & 0xfffn) | ((st.rdev >> 32n) & ~0xfffn));
  const minor = Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn));
  return { type: st.isCharacterDevice() ? 'chr' : 'blk', major, minor };
}

/** Nanoseconds since the epoch (may be negative) → {sec, nsec} with 0 <= nsec < 1e9. */
function timespec(ns: bigint): { sec: number; nsec: number } {
  let sec = ns / 1_000_000_000n;
  let nsec = ns % 1_000_000_000n;
  if (nsec < 0n) {
    nsec += 1_000_000_000n;
    sec -= 1n;
  }
  return { sec: Number(sec), nsec: Number(nsec) };
}

async function statOrUndefined(fs: Ext4, path: string, follow: boolean): Promise<Stats | undefined> {
  try {
    return follow ? await fs.stat(path) : await fs.lstat(path);
  } catch (e) {
    if (e instanceof PosixError && e.code === 'ENOENT') return undefined;
    throw e;
  }
}

async function exists(fs: Ext4, path: string): Promise<boolean> {
  return (await statOrUndefined(fs, path, false)) !== undefined;
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}
