/**
 * FileDevice: a BlockDevice over an image file (node:fs FileHandle). Several requests may be in
 * flight at once (node's thread pool runs them), so completions can arrive out of order.
 * Callers must not rely on completion order (submitBio's endIo runs whenever each request ends);
 * they must also not put two overlapping writes in flight together (the OS gives no order between
 * them; SimDevice asserts this). Short
 * reads are retried until the buffer is full; a read past the end of the file is an IoError.
 *
 * Small reads (up to `syncReadMaxBytes`, 64 KiB by default) are served with a synchronous
 * pread on the same descriptor: metadata and small files come from the host's page cache in a
 * few microseconds, while a thread-pool round trip costs ~100 us (measured: extraction of 2,000
 * small files spent over half its time idle waiting for such hops). Larger reads and every write
 * stay asynchronous. Set syncReadMaxBytes to 0 for a device on slow storage.
 *
 * Writes are plugged (the block layer's blk_plug): every write issued in one turn of the event
 * loop is queued, and when the turn ends the queue is sorted and contiguous requests are merged
 * into one pwritev (up to PLUG_MAX_BYTES / PLUG_MAX_IOVS). Writeback of many small files that
 * the allocator placed side by side, or a long run of small bios, becomes a few large writes.
 * A merged write that fails fails each request in it.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';
import { IoError, PosixError } from '../util/errors.js';
import { assertRange, type BlockDevice } from './block-device.js';

/** Largest merged write. */
const PLUG_MAX_BYTES = 1 << 20;
/** Most buffers in one pwritev (IOV_MAX is 1024 on Linux). */
const PLUG_MAX_IOVS = 1024;

interface PluggedWrite {
  offsetBytes: number;
  lenBytes: number;
  bufs: readonly Uint8Array[];
  resolve: () => void;
  reject: (e: unknown) => void;
}

export interface FileDeviceOptions {
  readOnly?: boolean;
  /** Largest single request in bytes (default 1 MiB). */
  maxRequestBytes?: number;
  /** Reads up to this size are synchronous (see the module comment). Default 64 KiB. */
  syncReadMaxBytes?: number;
}

export class FileDevice implements BlockDevice {
  readonly sectorSize = 512;
  readonly maxRequestBytes: number;
  private closed = false;
  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    public sizeBytes: number,
    readonly readOnly: boolean,
    maxRequestBytes: number,
    private readonly syncReadMaxBytes: number,
  ) {
    this.maxRequestBytes = maxRequestBytes;
  }

  /** Opens an image file. Throws PosixError (ENOENT, EACCES, EISDIR…) with the path. */
  static async open(path: string, opts: FileDeviceOptions = {}): Promise<FileDevice> {
    const readOnly = opts.readOnly ?? false;
    let fh: FileHandle;
    try {
      fh = await open(path, readOnly ? 'r' : 'r+');
    } catch (e) {
      throw toPosix(e, 'open', path);
    }
    const st = await fh.stat();
    if (st.isDirectory()) {
      await fh.close();
      throw new PosixError('EISDIR', 'open', path);
    }
    return new FileDevice(fh, path, st.size, readOnly, opts.maxRequestBytes ?? 1 << 20, opts.syncReadMaxBytes ?? 1 << 16);
  }

  async read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    assertRange(this, offsetBytes, dst.length);
    const sync = dst.length <= this.syncReadMaxBytes;
    let done = 0;
    while (done < dst.length) {
      let n: number;
      try {
        n = sync
          ? readSync(this.fh.fd, dst, done, dst.length - done, offsetBytes + done)
          : (await this.fh.read(dst, done, dst.length - done, offsetBytes + done)).bytesRead;
      } catch (e) {
        throw new IoError('read', String(e), offsetBytes + done, { cause: e });
      }
      if (n === 0) throw new IoError('read', 'unexpected end of file', offsetBytes + done);
      done += n;
    }
  }

  write(offsetBytes: number, src: Uint8Array): Promise<void> {
    return this.queueWrite(offsetBytes, [src]);
  }

  writev(offsetBytes: number, srcs: readonly Uint8Array[]): Promise<void> {
    return this.queueWrite(offsetBytes, srcs);
  }

  private plugged: PluggedWrite[] = [];

  private queueWrite(offsetBytes: number, bufs: readonly Uint8Array[]): Promise<void> {
    if (this.readOnly) return Promise.reject(new PosixError('EROFS', 'write', this.path));
    let lenBytes = 0;
    for (const b of bufs) lenBytes += b.length;
    assertRange(this, offsetBytes, lenBytes);
    return new Promise((resolve, reject) => {
      if (this.plugged.length === 0) setImmediate(() => this.unplug());
      this.plugged.push({ offsetBytes, lenBytes, bufs, resolve, reject });
    });
  }

  /** blk_finish_plug: merges contiguous queued writes and issues them. */
  private unplug(): void {
    const reqs = this.plugged.sort((a, b) => a.offsetBytes - b.offsetBytes);
    this.plugged = [];
    for (let i = 0; i < reqs.length; ) {
      const group = [reqs[i]!];
      let end = reqs[i]!.offsetBytes + reqs[i]!.lenBytes;
      let bytes = reqs[i]!.lenBytes;
      let iovs = reqs[i]!.bufs.length;
      let j = i + 1;
      for (; j < reqs.length; j++) {
        const r = reqs[j]!;
        if (r.offsetBytes !== end || bytes + r.lenBytes > PLUG_MAX_BYTES || iovs + r.bufs.length > PLUG_MAX_IOVS) break;
        group.push(r);
        end += r.lenBytes;
        bytes += r.lenBytes;
        iovs += r.bufs.length;
      }
      i = j;
      const bufs = group.length === 1 ? group[0]!.bufs : group.flatMap((g) => g.bufs);
      this.writeAll(group[0]!.offsetBytes, bufs).then(
        () => { for (const g of group) g.resolve(); },
        (e: unknown) => { for (const g of group) g.reject(e); },
      );
    }
  }

  /** pwritev until every byte went (short writes retried). */
  private async writeAll(offsetBytes: number, srcs: readonly Uint8Array[]): Promise<void> {
    let bufs = srcs.slice();
    let at = offsetBytes;
    while (bufs.length > 0) {
      let n: number;
      try {
        n = bufs.length === 1
          ? (await this.fh.write(bufs[0]!, 0, bufs[0]!.length, at)).bytesWritten
          : (await this.fh.writev(bufs, at)).bytesWritten;
      } catch (e) {
        throw new IoError('write', String(e), at, { cause: e });
      }
      if (n === 0) throw new IoError('write', 'no progress (0 bytes written)', at);
      at += n;
      // A short write: drop what went and retry the rest.
      while (n > 0 && bufs.length > 0) {
        const first = bufs[0]!;
        if (n >= first.length) {
          n -= first.length;
          bufs.shift();
        } else {
          bufs[0] = first.subarray(n);
          n = 0;
        }
      }
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    try {
      await this.fh.datasync();
    } catch (e) {
      throw new IoError('flush', String(e), undefined, { cause: e });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

function toPosix(e: unknown, syscall: string, path: string): unknown {
  const code = (e as { code?: unknown }).code;
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'EROFS' || code === 'EPERM') {
    return new PosixError(code, syscall, path);
  }
  return e;
}
