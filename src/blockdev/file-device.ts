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
 */
import { open, type FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';
import { IoError, PosixError } from '../util/errors.js';
import { assertRange, type BlockDevice } from './block-device.js';

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

  async write(offsetBytes: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) throw new PosixError('EROFS', 'write', this.path);
    assertRange(this, offsetBytes, src.length);
    let done = 0;
    while (done < src.length) {
      try {
        const { bytesWritten } = await this.fh.write(src, done, src.length - done, offsetBytes + done);
        done += bytesWritten;
      } catch (e) {
        throw new IoError('write', String(e), offsetBytes + done, { cause: e });
      }
    }
  }

  async writev(offsetBytes: number, srcs: readonly Uint8Array[]): Promise<void> {
    if (this.readOnly) throw new PosixError('EROFS', 'write', this.path);
    let total = 0;
    for (const b of srcs) total += b.length;
    assertRange(this, offsetBytes, total);
    let bufs = srcs.slice();
    let at = offsetBytes;
    while (bufs.length > 0) {
      let n: number;
      try {
        n = (await this.fh.writev(bufs, at)).bytesWritten;
      } catch (e) {
        throw new IoError('write', String(e), at, { cause: e });
      }
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
