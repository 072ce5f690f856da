/**
 * The error families of ext4ts (STYLE.md §5): Corrupt (EFSCORRUPTED / EFSBADCRC),
 * Incompatible (unsupported feature bits), Io (the device failed), and PosixError (ENOENT, …)
 * shaped like node's errors with `code`, `syscall` and `path`. Every error serializes with
 * toJSON() so the CLI's --json output and scripts see the same fields.
 */

/** Where on disk a problem was found; every field optional, printed in a fixed order. */
export interface Where {
  /** The filesystem block that holds the bad structure. */
  block?: number;
  /** The inode the structure belongs to. */
  ino?: number;
  /** The byte offset inside the block, for directory entries and the like. */
  offset?: number;
  /** The block group, for group descriptors and bitmaps. */
  group?: number;
}

function whereText(w: Where): string {
  const parts: string[] = [];
  if (w.block !== undefined) parts.push(`at block ${w.block}`);
  if (w.offset !== undefined) parts.push(`offset ${w.offset}`);
  if (w.group !== undefined) parts.push(`group ${w.group}`);
  if (w.ino !== undefined) parts.push(`(inode ${w.ino})`);
  return parts.join(' ');
}

/** Base class: every error ext4ts throws on purpose is an Ext4Error. */
export abstract class Ext4Error extends Error {
  abstract readonly code: string;
  /** The errno number node would use for this code (negative kernel value made positive). */
  abstract readonly errno: number;
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { name: this.name, code: this.code, message: this.message };
    for (const [k, v] of Object.entries(this)) if (v !== undefined) out[k] = v;
    return out;
  }
}

/** On-disk data is inconsistent: the kernel's -EFSCORRUPTED (EUCLEAN). */
export class Corrupt extends Ext4Error {
  override readonly name = 'Corrupt';
  readonly code: 'EFSCORRUPTED' | 'EFSBADCRC';
  readonly errno: number;
  /** The on-disk structure, e.g. "extent header". */
  readonly structure: string;
  readonly block: number | undefined;
  readonly ino: number | undefined;
  /** What was wrong, e.g. "magic 0x0000". */
  readonly detail: string;
  constructor(structure: string, detail: string, where: Where = {}, badCrc = false) {
    const code = badCrc ? 'EFSBADCRC' : 'EFSCORRUPTED';
    const w = whereText(where);
    super(`${code}: ${structure} ${detail}${w ? ' ' + w : ''}`);
    this.code = code;
    this.errno = badCrc ? 74 : 117; // EBADMSG : EUCLEAN
    this.structure = structure;
    this.detail = detail;
    this.block = where.block;
    this.ino = where.ino;
  }
}

/** A checksum did not match: the kernel's -EFSBADCRC (EBADMSG). */
export class BadCrc extends Corrupt {
  constructor(structure: string, stored: number, computed: number, where: Where = {}) {
    super(structure, `checksum 0x${hex(stored)} != computed 0x${hex(computed)}`, where, true);
  }
}

/** The image uses features ext4ts cannot handle (or cannot handle in this mode). */
export class Incompatible extends Ext4Error {
  override readonly name = 'Incompatible';
  readonly code = 'EXT4_INCOMPATIBLE';
  readonly errno = 95; // EOPNOTSUPP
  /** Names of the offending feature bits, for scripts. */
  readonly features: readonly string[];
  constructor(message: string, features: readonly string[] = []) {
    super(`EXT4_INCOMPATIBLE: ${message}`);
    this.features = features;
  }
}

/** The block device failed (read, write or flush). Wraps the device's own error. */
export class IoError extends Ext4Error {
  override readonly name = 'IoError';
  readonly code = 'EIO';
  readonly errno = 5;
  readonly op: string;
  readonly offsetBytes: number | undefined;
  constructor(op: string, detail: string, offsetBytes?: number, options?: { cause?: unknown }) {
    super(`EIO: ${op} failed${offsetBytes !== undefined ? ` at byte ${offsetBytes}` : ''}: ${detail}`, options);
    this.op = op;
    this.offsetBytes = offsetBytes;
  }
}

/** errno values (Linux) for the POSIX errors the API raises. */
export const ERRNO = {
  EPERM: 1, ENOENT: 2, EIO: 5, E2BIG: 7, EBADF: 9, EBUSY: 16, ENOMEM: 12, EACCES: 13, EEXIST: 17, EXDEV: 18,
  ENODEV: 19, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, EFBIG: 27, ENOSPC: 28, EROFS: 30, EMLINK: 31,
  ERANGE: 34, ENAMETOOLONG: 36, ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, EOPNOTSUPP: 95,
} as const;
export type ErrnoCode = keyof typeof ERRNO;

const DESCRIPTIONS: Record<ErrnoCode, string> = {
  EPERM: 'operation not permitted', ENOENT: 'no such file or directory', EIO: 'i/o error',
  E2BIG: 'argument list too long', EBUSY: 'resource busy or locked',
  EBADF: 'bad file descriptor', ENOMEM: 'out of memory', EACCES: 'permission denied',
  EEXIST: 'file already exists', EXDEV: 'cross-device link', ENODEV: 'no such device', ENOTDIR: 'not a directory',
  EISDIR: 'illegal operation on a directory', EINVAL: 'invalid argument',
  EFBIG: 'file too large', ENOSPC: 'no space left on device', EROFS: 'read-only file system',
  EMLINK: 'too many links', ERANGE: 'result out of range', ENAMETOOLONG: 'name too long',
  ENOTEMPTY: 'directory not empty', ELOOP: 'too many symbolic links encountered',
  ENODATA: 'no data available', EOPNOTSUPP: 'operation not supported',
};

/** A POSIX error shaped like node's SystemError: `ENOENT: no such file or directory, stat '/x'`. */
export class PosixError extends Ext4Error {
  override readonly name = 'PosixError';
  readonly code: ErrnoCode;
  readonly errno: number;
  readonly syscall: string;
  readonly path: string | undefined;
  constructor(code: ErrnoCode, syscall: string, path?: string, detail?: string) {
    const p = path !== undefined ? ` '${path}'` : '';
    super(`${code}: ${detail ?? DESCRIPTIONS[code]}, ${syscall}${p}`);
    this.code = code;
    this.errno = ERRNO[code];
    this.syscall = syscall;
    this.path = path;
  }
}

/** Lower-case hex without prefix, for messages. */
export function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(4, '0');
}

/** True for any error ext4ts throws on purpose (as opposed to a bug or a runtime fault). */
export function isExt4Error(e: unknown): e is Ext4Error {
  return e instanceof Ext4Error;
}
