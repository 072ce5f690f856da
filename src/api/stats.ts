/**
 * Stats and Dirent shaped like node:fs's, so code written for node:fs reads images unchanged.
 * Exact times are kept as {sec, nsec} (node's Date-based fields lose nanoseconds and the
 * pre-1970/post-2038 range that ext4's epoch bits carry).
 */
import type { Timespec, FileType } from '../format/inode.js';

export type { Timespec, FileType };

const TYPE_CHECK = {
  isFile: 'file', isDirectory: 'dir', isSymbolicLink: 'symlink', isFIFO: 'fifo',
  isSocket: 'sock', isCharacterDevice: 'chr', isBlockDevice: 'blk',
} as const;

export class Stats {
  readonly dev = 0;
  constructor(
    readonly ino: number,
    /** Full i_mode: type and permission bits. */
    readonly mode: number,
    readonly nlink: number,
    readonly uid: number,
    readonly gid: number,
    /** Device number for device nodes (Linux makedev encoding), else 0. */
    readonly rdev: number,
    readonly size: number,
    readonly blksize: number,
    /** Allocated space in 512-byte units (data, tree and xattr blocks). */
    readonly blocks: number,
    readonly atimeSpec: Timespec,
    readonly mtimeSpec: Timespec,
    readonly ctimeSpec: Timespec,
    /** Creation time; undefined in 128-byte inodes. */
    readonly birthtimeSpec: Timespec | undefined,
    readonly type: FileType,
  ) {}
  get atimeMs(): number { return ms(this.atimeSpec); }
  get mtimeMs(): number { return ms(this.mtimeSpec); }
  get ctimeMs(): number { return ms(this.ctimeSpec); }
  get birthtimeMs(): number { return this.birthtimeSpec ? ms(this.birthtimeSpec) : 0; }
  get atime(): Date { return new Date(this.atimeMs); }
  get mtime(): Date { return new Date(this.mtimeMs); }
  get ctime(): Date { return new Date(this.ctimeMs); }
  get birthtime(): Date { return new Date(this.birthtimeMs); }
  isFile(): boolean { return this.type === TYPE_CHECK.isFile; }
  isDirectory(): boolean { return this.type === TYPE_CHECK.isDirectory; }
  isSymbolicLink(): boolean { return this.type === TYPE_CHECK.isSymbolicLink; }
  isFIFO(): boolean { return this.type === TYPE_CHECK.isFIFO; }
  isSocket(): boolean { return this.type === TYPE_CHECK.isSocket; }
  isCharacterDevice(): boolean { return this.type === TYPE_CHECK.isCharacterDevice; }
  isBlockDevice(): boolean { return this.type === TYPE_CHECK.isBlockDevice; }
}

function ms(t: Timespec): number {
  return t.sec * 1000 + Math.floor(t.nsec / 1e6);
}

/** A directory entry, like node's fs.Dirent, with the raw name bytes kept. */
export class Dirent {
  constructor(
    readonly name: string,
    readonly nameBytes: Uint8Array,
    readonly ino: number,
    readonly type: FileType | 'unknown',
    /** The directory that holds the entry. */
    readonly parentPath: string,
  ) {}
  isFile(): boolean { return this.type === 'file'; }
  isDirectory(): boolean { return this.type === 'dir'; }
  isSymbolicLink(): boolean { return this.type === 'symlink'; }
  isFIFO(): boolean { return this.type === 'fifo'; }
  isSocket(): boolean { return this.type === 'sock'; }
  isCharacterDevice(): boolean { return this.type === 'chr'; }
  isBlockDevice(): boolean { return this.type === 'blk'; }
}

/** EXT4_FT_* to FileType. */
export function fileTypeOfFt(ft: number): FileType | 'unknown' {
  switch (ft) {
    case 1: return 'file';
    case 2: return 'dir';
    case 3: return 'chr';
    case 4: return 'blk';
    case 5: return 'fifo';
    case 6: return 'sock';
    case 7: return 'symlink';
    default: return 'unknown';
  }
}
