/**
 * Everything a user can do to an image, run against one (possibly corrupt) image: mount,
 * info(), a walk of the whole tree (readdir withFileTypes, lstat, stat through symlinks, layout,
 * listxattr/getxattr, readFile or positioned reads of every file, readlink, rdev), lookups of
 * names that exist and that do not (the htree probe), and optionally `extract` of the whole tree
 * into a temporary host directory that is removed afterwards.
 *
 * The contract under test: every operation ends in a value or an Ext4Error. Each operation is
 * attempted on its own, so one corrupt structure does not hide the rest of the image from the
 * fuzzer; an Ext4Error is counted by code and the walk goes on. Anything else (Ext4Bug,
 * TypeError, RangeError, a host error extract should not have let through) is thrown as a
 * `Crash` naming the operation and the path. A few cheap oracles check that successful results
 * are self-consistent (readFile returns st.size bytes, symlink targets fit PATH_MAX).
 */
import { existsSync, chmodSync, lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Prng } from './prng.js';
import {
  Ext4, MemDevice, Ext4Error, Ext4Bug, extract, ExtractRefused, type Dirent, type Stats, type ExtractWarning,
} from '../../src/index.js';

/** Why an exercise failed the contract. */
export class Crash extends Error {
  override readonly name = 'Crash';
  constructor(readonly op: string, readonly path: string, override readonly cause: unknown) {
    super(`${op}(${JSON.stringify(path)}) threw ${describeError(cause)}`);
  }
}

/** A planted failure that proves the harness notices (TigerBeetle's canary). */
export type Canary = 'crash' | 'bug' | 'hang' | 'reject' | 'leak' | 'alloc';

export interface ExerciseOptions {
  noRecovery: boolean;
  /** Extract the whole tree under this host directory (which must exist), or skip extraction. */
  extractInto?: string;
  strictExtract: boolean;
  /** Seeds the choice of entries that get path-based operations in large directories. */
  sampleSeed: number;
  /** Planted failure, only ever set by the harness's canary test. */
  canary?: Canary;
}

/** The result of one exercise: 'ok', or the code of the first Ext4Error, with counts. */
export interface Outcome {
  result: string;
  /** How many operations ended in each Ext4Error code. */
  codes: Record<string, number>;
  /** Operations attempted. */
  ops: number;
  /** Messages of Ext4Errors that mention NaN or undefined (a poor report, not a crash). */
  oddMessages: string[];
  /** Host errors extract was allowed to end with (see HOST_ERRORS_ALLOWED). */
  hostErrors: string[];
}

/** readFile() is used up to this size; larger files are read in pieces through open(). */
const READ_CAP_BYTES = 16 << 20;
const PIECE_BYTES = 64 << 10;
/** Bounds of the walk itself (the image's tree is finite, but a corrupt one may be wide). */
const MAX_ENTRIES = 20_000;
const MAX_XATTRS_READ = 16;
/** Entries per directory that get the path-based operations (see walk). */
const FULL_PER_DIR = 48;
/** Longest symlink target Linux accepts (PATH_MAX - 1). */
const MAX_SYMLINK_BYTES = 4095;

/**
 * Host errors `extract` may end with, because the image legitimately asks for something this
 * host cannot hold. Any other host error is a crash: extract should have turned the condition
 * into an Ext4Error or a skip.
 */
const HOST_ERRORS_ALLOWED: Readonly<Record<string, string>> = {
  ENAMETOOLONG: 'a path in the image is longer than the host allows',
  EFBIG: 'a file size the host file system cannot hold',
  EMLINK: 'more hard links than the host allows',
  ENOSPC: 'the host is out of space',
  EDQUOT: 'the host quota is exhausted',
};

const retained: Uint8Array[] = [];

/** Runs the whole exercise on `image`. */
export async function exercise(image: Uint8Array, opts: ExerciseOptions): Promise<Outcome> {
  const ctx = new Ctx();
  // The canary runs first: a corruption that makes open fail must not hide it.
  if (opts.canary !== undefined) await ctx.attempt('canary', '', () => plantCanary(opts.canary));
  const fs = await ctx.attempt('open', '', () => Ext4.open(new MemDevice(image, true), { readOnly: true, noRecovery: opts.noRecovery }));
  if (fs === undefined) return ctx.outcome();
  await ctx.attempt('info', '', async () => fs.info());
  await walk(ctx, fs, new Prng(opts.sampleSeed));
  if (opts.extractInto !== undefined) await extractAll(ctx, fs, opts.extractInto, opts.strictExtract);
  await ctx.attempt('close', '', () => fs.close());
  return ctx.outcome();
}

/** Tracks the error codes of one exercise and enforces the contract on every operation. */
class Ctx {
  readonly codes: Record<string, number> = {};
  readonly odd: string[] = [];
  readonly host: string[] = [];
  first: string | undefined;
  ops = 0;

  /**
   * Runs one operation: its value, or undefined after an Ext4Error; anything else is a Crash.
   * `expected` names the error code a probe for something absent should end in: it is not
   * counted as the case's outcome.
   */
  async attempt<T>(op: string, path: string, fn: () => Promise<T>, expected: readonly string[] = []): Promise<T | undefined> {
    this.ops++;
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof Ext4Error)) throw new Crash(op, path, e);
      this.note(e.code, e.message, expected.includes(e.code));
      return undefined;
    }
  }

  note(code: string, message: string, expected = false): void {
    this.codes[code] = (this.codes[code] ?? 0) + 1;
    if (!expected) this.first ??= code;
    if (/\bNaN\b|\bundefined\b/.test(message) && this.odd.length < 4) this.odd.push(message);
  }

  /** Fails the contract for a successful result that contradicts itself. */
  check(cond: boolean, op: string, path: string, what: string): void {
    if (!cond) throw new Crash(op, path, new Error(`oracle: ${what}`));
  }

  outcome(): Outcome {
    return { result: this.first ?? 'ok', codes: this.codes, ops: this.ops, oddMessages: this.odd, hostErrors: this.host };
  }
}

/**
 * Breadth-first walk of the tree from '/', each directory once (by inode number). In a large
 * directory only some entries get the path-based operations (each of which resolves the path
 * again, a full htree lookup); the rest get the same reads through their inode number, so every
 * inode is still loaded, its xattrs parsed and its data mapped.
 */
async function walk(ctx: Ctx, fs: Ext4, rng: Prng): Promise<void> {
  const seenDirs = new Set<number>();
  const queue: string[] = ['/'];
  const root = await ctx.attempt('lstat', '/', () => fs.lstat('/'));
  if (root !== undefined) seenDirs.add(root.ino);
  await ctx.attempt('layout', '/', () => fs.layout('/'));
  await xattrs(ctx, fs, '/');
  let entries = 0;
  while (queue.length > 0 && entries < MAX_ENTRIES) {
    // OK to assert: the queue is non-empty.
    const dir = queue.shift() as string;
    const list = await ctx.attempt('readdir', dir, () => fs.readdir(dir, { withFileTypes: true }));
    await ctx.attempt('getxattr', dir, () => fs.getxattr(dir, 'user.no-such-attribute'), ['ENODATA']);
    await missingLookups(ctx, fs, dir, list ?? []);
    const full = pickFull(rng, list?.length ?? 0);
    for (const [i, d] of (list ?? []).entries()) {
      if (++entries > MAX_ENTRIES) break;
      ctx.check(typeof d.name === 'string' && Number.isSafeInteger(d.ino), 'readdir', dir, 'dirent with a bad name or inode');
      const path = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
      const st = full.has(i) ? await entry(ctx, fs, path, d) : await lightEntry(ctx, fs, path, d);
      if (st?.isDirectory() && !seenDirs.has(st.ino)) {
        seenDirs.add(st.ino);
        queue.push(path);
      }
    }
  }
}

/** Indexes of the entries that get path-based operations: all in a small directory, else a sample. */
function pickFull(rng: Prng, n: number): Set<number> {
  const out = new Set<number>();
  for (let i = 0; i < Math.min(n, FULL_PER_DIR / 2); i++) out.add(i);
  for (let k = 0; k < FULL_PER_DIR && out.size < Math.min(n, FULL_PER_DIR); k++) out.add(rng.below(n));
  return out;
}

/** The reads of one entry through its inode number (no path resolution). */
async function lightEntry(ctx: Ctx, fs: Ext4, path: string, d: Dirent): Promise<Stats | undefined> {
  const st = await ctx.attempt('statIno', path, () => fs.statIno(d.ino));
  if (st !== undefined) touchStats(ctx, st, path);
  await ctx.attempt('xattrsOfIno', path, () => fs.xattrsOfIno(d.ino));
  if (st?.isFile() || st?.isSymbolicLink()) {
    const info = await ctx.attempt('inode', path, () => fs.inode(d.ino));
    if (info !== undefined) {
      const data = await ctx.attempt('readRange', path, () => fs.readRange(info, 0, READ_CAP_BYTES));
      if (data !== undefined) ctx.check(data.length === Math.min(info.size, READ_CAP_BYTES), 'readRange', path, `${data.length} bytes of ${info.size}`);
    }
  }
  return st;
}

/** Looks up names that are not in `dir` (a dx lookup on htree directories) and '.'/'..'. */
async function missingLookups(ctx: Ctx, fs: Ext4, dir: string, list: readonly Dirent[]): Promise<void> {
  const base = dir === '/' ? '' : dir;
  const names = ['.', '..', 'no-such-entry', 'x'.repeat(200)];
  const some = list[0];
  if (some !== undefined && some.name.length > 0) names.push(`${some.name.slice(0, -1)}\u00e9`);
  for (const n of names) await ctx.attempt('lstat', `${base}/${n}`, () => fs.lstat(`${base}/${n}`), n.length > 2 ? ['ENOENT'] : []);
}

/** Everything done to one directory entry; returns its lstat result. */
async function entry(ctx: Ctx, fs: Ext4, path: string, d: Dirent): Promise<Stats | undefined> {
  // A name that is not UTF-8 cannot be spelled in a path (it decodes with U+FFFD): ENOENT.
  const lossy = utf8Strict(d.nameBytes) === undefined ? ['ENOENT'] : [];
  const st = await ctx.attempt('lstat', path, () => fs.lstat(path), lossy);
  if (st === undefined && lossy.length > 0) return lightEntry(ctx, fs, path, d);
  if (st !== undefined) touchStats(ctx, st, path);
  await ctx.attempt('layout', path, () => fs.layout(path));
  await xattrs(ctx, fs, path);
  const type = st?.type ?? d.type;
  switch (type) {
    case 'file': await readData(ctx, fs, path, st); break;
    case 'symlink': {
      const t = await ctx.attempt('readlinkBytes', path, () => fs.readlinkBytes(path));
      if (t !== undefined) ctx.check(t.length >= 1 && t.length <= MAX_SYMLINK_BYTES, 'readlinkBytes', path, `target of ${t.length} bytes`);
      await ctx.attempt('readlink', path, () => fs.readlink(path));
      // Following a link may fail by design (dangling, looping): not the case's outcome.
      const target = await ctx.attempt('stat', path, () => fs.stat(path), ['ENOENT', 'ELOOP', 'ENOTDIR']);
      if (target?.isFile()) await readData(ctx, fs, path, target);
      break;
    }
    case 'chr':
    case 'blk': await ctx.attempt('rdev', path, () => fs.rdev(path)); break;
    case 'dir': break;
    default: await ctx.attempt('readFile', path, () => fs.readFile(path)); break;
  }
  return st;
}

/** Reads every getter a caller might (dates included), checking the numbers are numbers. */
function touchStats(ctx: Ctx, st: Stats, path: string): void {
  const nums = [st.ino, st.mode, st.nlink, st.uid, st.gid, st.rdev, st.size, st.blocks, st.atimeMs, st.mtimeMs, st.ctimeMs, st.birthtimeMs];
  ctx.check(nums.every((n) => typeof n === 'number' && !Number.isNaN(n)), 'lstat', path, `a NaN field in ${nums.join(',')}`);
  ctx.check(Number.isSafeInteger(st.size) && st.size >= 0, 'lstat', path, `size ${st.size}`);
  void [st.atime, st.mtime, st.ctime, st.birthtime, st.isFile(), st.isFIFO(), st.isSocket()];
}

/** Reads a file: whole when small (checking the length), else pieces at the start, middle and end. */
async function readData(ctx: Ctx, fs: Ext4, path: string, st: Stats | undefined): Promise<void> {
  if (st !== undefined && st.size <= READ_CAP_BYTES) {
    const data = await ctx.attempt('readFile', path, () => fs.readFile(path));
    if (data !== undefined) ctx.check(data.length === st.size, 'readFile', path, `${data.length} bytes for a size of ${st.size}`);
    return;
  }
  const fh = await ctx.attempt('open', path, () => fs.open(path));
  if (fh === undefined) return;
  const size = fh.info.size;
  const buf = new Uint8Array(PIECE_BYTES);
  for (const pos of [0, Math.floor(size / 2), Math.max(0, size - PIECE_BYTES)]) {
    const r = await ctx.attempt('read', path, () => fh.read(buf, 0, PIECE_BYTES, pos));
    if (r !== undefined) ctx.check(r.bytesRead === Math.max(0, Math.min(PIECE_BYTES, size - pos)), 'read', path, `${r.bytesRead} bytes at ${pos} of ${size}`);
  }
  await ctx.attempt('fstat', path, () => fh.stat());
  await ctx.attempt('fclose', path, () => fh.close());
}

async function xattrs(ctx: Ctx, fs: Ext4, path: string): Promise<void> {
  const names = await ctx.attempt('listxattr', path, () => fs.listxattr(path));
  for (const n of (names ?? []).slice(0, MAX_XATTRS_READ)) await ctx.attempt('getxattr', path, () => fs.getxattr(path, n));
}

/**
 * Extracts '/' under `into`, classifies the result, and removes what was written. Extract turns
 * an inode it cannot read into a skip warning carrying only the error's message; a message that
 * is not an Ext4Error's (those start with their code) means a bug was swallowed, which is a
 * crash too.
 */
async function extractAll(ctx: Ctx, fs: Ext4, into: string, strict: boolean): Promise<void> {
  const dest = join(into, 'x');
  const swallowed: string[] = [];
  const onWarning = (w: ExtractWarning): void => {
    const why = swallowedBug(w.reason);
    if (why !== undefined) swallowed.push(`${w.path}: ${why}`);
  };
  ctx.ops++;
  try {
    await extract(fs, '/', dest, { strict, onWarning });
  } catch (e) {
    if (e instanceof ExtractRefused) onWarning(e.warning);
    if (e instanceof Ext4Error) {
      ctx.note(e.code, e.message);
    } else {
      const code = hostErrorCode(e);
      if (code === undefined || HOST_ERRORS_ALLOWED[code] === undefined) throw new Crash('extract', '/', e);
      ctx.host.push(`${code}: ${(e as Error).message}`);
      ctx.note(`host:${code}`, (e as Error).message);
    }
  } finally {
    forceRemove(dest);
  }
  if (swallowed.length > 0) throw new Crash('extract', '/', new Error(`a non-Ext4Error became a skip warning: ${swallowed[0]}`));
}

/** The inner message of a "cannot read inode" warning when it is not an Ext4Error's. */
export function swallowedBug(reason: string): string | undefined {
  const m = /^cannot read inode \d+: ([\s\S]*)$/.exec(reason);
  if (m === null) return undefined;
  const inner = m[1] ?? '';
  return /^[A-Z][A-Z0-9_]*: /.test(inner) ? undefined : inner;
}

/** The code of a host (node:fs) system error, or undefined for anything else. */
function hostErrorCode(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const x = e as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
  return typeof x.code === 'string' && typeof x.errno === 'number' && typeof x.syscall === 'string' ? x.code : undefined;
}

/** Removes `dir` even when extraction left directories without write or search permission. */
export function forceRemove(dir: string): void {
  if (!existsSync(dir) && !isLink(dir)) return;
  try {
    rmSync(dir, { recursive: true, force: true });
    return;
  } catch {
    // Fall through: make every directory writable and searchable, then retry.
  }
  const open = (d: string): void => {
    chmodSync(d, 0o700);
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (lstatSync(p).isDirectory()) open(p);
    }
  };
  open(dir);
  rmSync(dir, { recursive: true, force: true });
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** The planted failures of the canary test; a no-op unless the harness asks for one. */
async function plantCanary(canary: Canary | undefined): Promise<void> {
  switch (canary) {
    case undefined: return;
    case 'crash': {
      // A genuine TypeError, as a bug in the read path would throw.
      const missing = undefined as unknown as { field: number };
      void missing.field;
      return;
    }
    case 'bug': throw new Ext4Bug('planted canary invariant failure');
    case 'hang': for (;;) { /* A synchronous loop: only the watchdog can stop it. */ }
    case 'reject': void Promise.reject(new Error('planted unhandled rejection')); return;
    case 'leak': retained.push(new Uint8Array(8 << 20).fill(1)); return;
    case 'alloc': {
      // A large buffer that stays live across an await, as one sized from a corrupt count would.
      const big = new Uint8Array(512 << 20).fill(1);
      await sleep(400);
      void big[big.length - 1];
      return;
    }
  }
}

const strictDecoder = new TextDecoder('utf-8', { fatal: true });

function utf8Strict(b: Uint8Array): string | undefined {
  try {
    return strictDecoder.decode(b);
  } catch {
    return undefined;
  }
}

/** One line for any thrown value: name, code and message. */
export function describeError(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return `${e.name}${typeof code === 'string' ? ` [${code}]` : ''}: ${e.message}`;
  }
  return `non-Error value ${String(e)}`;
}
