/**
 * The write half of the facade: node:fs-shaped namespace operations on a read-write mount,
 * run one at a time (a mount-wide queue, like a single-threaded VFS), each leaving the
 * in-memory metadata consistent so that sync()/close() can write it out at any point.
 */
import type { Ext4Super } from '../fs/super.js';
import { Namespace, type Owner, type NodeSpec } from '../fs/namespace.js';
import { itrim } from '../fs/inode/icache.js';
import { orphanCleanup } from '../fs/orphan.js';
import type { Timespec } from '../format/inode.js';
import { PosixError } from '../util/errors.js';
import { encodeUtf8 } from '../util/bytes.js';
import { Mutex } from '../runtime/mutex.js';

/** A time for utimes: seconds (may be fractional), a Date, or an exact {sec, nsec}. */
export type TimeArg = number | Date | Timespec;

export function toTimespec(t: TimeArg): Timespec {
  if (t instanceof Date) {
    const ms = t.getTime();
    const sec = Math.floor(ms / 1000);
    return { sec, nsec: (ms - sec * 1000) * 1_000_000 };
  }
  if (typeof t === 'number') {
    const sec = Math.floor(t);
    return { sec, nsec: Math.min(999_999_999, Math.round((t - sec) * 1e9)) };
  }
  if (!Number.isSafeInteger(t.sec) || !Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec > 999_999_999) {
    throw new PosixError('EINVAL', 'utimes', undefined, `bad time ${JSON.stringify(t)}`);
  }
  return t;
}

/** OpenOptions.metadataDirtyLimitBytes's default. */
const DEFAULT_METADATA_DIRTY_BYTES = 32 << 20;

export class WriteOps {
  readonly ns: Namespace;
  /** One operation at a time; each one's end trims the inode cache and may commit (afterOp). */
  private readonly queue = new Mutex('operation queue', () => this.afterOp());
  /** Owner of new inodes unless an operation says otherwise. */
  owner: Owner;

  /**
   * A commit that an operation's end started (dirty metadata over the limit) and that failed:
   * reported once, by the next sync() or close() (errseq-like: nobody waited for that commit).
   */
  private commitError: unknown;

  constructor(
    readonly s: Ext4Super,
    owner: Owner,
    /** Dirty metadata bytes past which the end of an operation commits (see OpenOptions). */
    private readonly metadataDirtyLimitBytes = DEFAULT_METADATA_DIRTY_BYTES,
  ) {
    this.ns = new Namespace(s);
    this.owner = owner;
  }

  /** Mount-time work of a read-write mount: the orphan chain. */
  async mountRw(): Promise<{ released: number; truncated: number }> {
    return this.run(() => orphanCleanup(this.s));
  }

  /** Runs `fn` after every earlier operation, one at a time. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    return this.queue.run(fn);
  }

  /**
   * Between operations: trim the inode cache, and commit once dirty metadata passes the limit
   * (the way jbd2 closes a transaction that grew too big), so that a long run of changes (a
   * build of a million files) keeps bounded memory instead of holding every changed block until
   * the next sync.
   */
  private afterOp(): Promise<void> | undefined {
    itrim(this.s);
    // Synchronous when under the limit: no promise per operation.
    if (this.s.cache.dirtyCount * this.s.blockSize <= this.metadataDirtyLimitBytes) return undefined;
    return this.s.commit().catch((e: unknown) => {
      this.commitError ??= e;
    });
  }

  /** The failure of a commit afterOp started, once (see commitError). */
  takeCommitError(): unknown {
    const e = this.commitError;
    this.commitError = undefined;
    return e;
  }

  async mkdir(path: string, opts: { mode?: number; recursive?: boolean; uid?: number; gid?: number } = {}): Promise<string | undefined> {
    const mode = opts.mode ?? 0o755;
    const owner = { uid: opts.uid ?? this.owner.uid, gid: opts.gid ?? this.owner.gid };
    return this.run(async () => {
      if (!opts.recursive) {
        await this.ns.mkdir(path, mode, owner);
        return undefined;
      }
      // mkdir -p: create each missing component; an existing non-directory is ENOTDIR/EEXIST.
      const comps = path.split('/').filter((c) => c.length > 0);
      let first: string | undefined;
      let cur = '';
      for (const c of comps) {
        cur += '/' + c;
        let exists = true;
        try {
          const info = await this.ns.inode(cur, true, 'mkdir');
          if (info.type !== 'dir') throw new PosixError('ENOTDIR', 'mkdir', cur);
        } catch (e) {
          if (!(e instanceof PosixError) || e.code !== 'ENOENT') throw e;
          exists = false;
        }
        if (!exists) {
          await this.ns.mkdir(cur, mode, owner);
          first ??= cur;
        }
      }
      return first;
    });
  }

  /** Creates an empty regular file (or, with `node`, a FIFO, socket or device node). */
  async mknod(path: string, opts: { node?: NodeSpec; mode?: number; uid?: number; gid?: number } = {}): Promise<void> {
    const node = opts.node ?? { type: 'file' as const };
    const owner = { uid: opts.uid ?? this.owner.uid, gid: opts.gid ?? this.owner.gid };
    await this.run(() => this.ns.mknod(path, node, opts.mode ?? 0o644, owner));
  }

  async symlink(target: string | Uint8Array, path: string, opts: { uid?: number; gid?: number } = {}): Promise<void> {
    const t = typeof target === 'string' ? encodeUtf8(target) : target;
    const owner = { uid: opts.uid ?? this.owner.uid, gid: opts.gid ?? this.owner.gid };
    await this.run(() => this.ns.symlink(t, path, owner));
  }

  async link(existing: string, newPath: string): Promise<void> {
    await this.run(() => this.ns.link(existing, newPath));
  }

  async unlink(path: string): Promise<void> {
    await this.run(() => this.ns.unlink(path));
  }

  async rmdir(path: string): Promise<void> {
    await this.run(() => this.ns.rmdir(path));
  }

  /** rm [-r]: a file, symlink or special file; with `recursive`, a whole tree (depth first). */
  async rm(path: string, opts: { recursive?: boolean; force?: boolean } = {}): Promise<void> {
    await this.run(async () => {
      let info;
      try {
        info = await this.ns.inode(path, false, 'rm');
      } catch (e) {
        if (opts.force && e instanceof PosixError && e.code === 'ENOENT') return;
        throw e;
      }
      if (info.type !== 'dir') return this.ns.unlink(path);
      if (!opts.recursive) throw new PosixError('EISDIR', 'rm', path, 'is a directory (use recursive)');
      if (path.replace(/\/+$/, '') === '') throw new PosixError('EPERM', 'rm', path, 'refusing to remove the root directory');
      await this.rmTree(path.replace(/\/+$/, ''));
    });
  }

  private async rmTree(dir: string): Promise<void> {
    // Collect first: removing entries while iterating a directory would skip some.
    const names = await this.ns.listNames(dir);
    for (const n of names) {
      const p = `${dir}/${n}`;
      const info = await this.ns.inode(p, false, 'rm');
      if (info.type === 'dir') await this.rmTree(p);
      else await this.ns.unlink(p);
    }
    await this.ns.rmdir(dir);
  }

  async rename(from: string, to: string): Promise<void> {
    await this.run(() => this.ns.rename(from, to));
  }

  async chmod(path: string, mode: number): Promise<void> {
    await this.run(() => this.ns.chmod(path, mode));
  }

  async chown(path: string, uid: number, gid: number, follow = true): Promise<void> {
    await this.run(() => this.ns.chown(path, uid, gid, follow));
  }

  async utimes(path: string, atime: TimeArg | undefined, mtime: TimeArg | undefined, follow = true): Promise<void> {
    const a = atime === undefined ? undefined : toTimespec(atime);
    const m = mtime === undefined ? undefined : toTimespec(mtime);
    await this.run(() => this.ns.utimes(path, a, m, follow));
  }

  async truncate(path: string, size: number): Promise<void> {
    await this.run(() => this.ns.truncate(path, size));
  }

  async setxattr(path: string, name: string, value: Uint8Array | string, flags: { create?: boolean; replace?: boolean } = {}): Promise<void> {
    const v = typeof value === 'string' ? encodeUtf8(value) : value;
    await this.run(() => this.ns.setxattr(path, name, v, flags));
  }

  async removexattr(path: string, name: string): Promise<void> {
    await this.run(() => this.ns.removexattr(path, name));
  }

  /** Writes every change to the device (sync_fs). */
  async sync(): Promise<void> {
    await this.run(async () => {
      await this.s.commit();
      const e = this.takeCommitError();
      if (e !== undefined) throw e;
    });
  }
}

export { type NodeSpec };
