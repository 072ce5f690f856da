/**
 * NoBarrierDevice: what the `barrier: false` mount option puts under a mount (the kernel's
 * `nobarrier`). flush() returns at once, so commits cost no cache flush; close() flushes once
 * before releasing the device, so everything is durable when the unmount returns. A power cut
 * before then may keep any subset of the writes: meant for images that are thrown away when
 * their making fails (the builder's temporary image), never for data someone relies on.
 *
 * Write-behind: with no flush until close, the host keeps every written byte dirty in its page
 * cache (Linux starts background writeback only past dirty_background_ratio, gigabytes on a
 * large machine), and the flush at close then writes it all while nothing else runs. So after
 * every `writeBehindBytes` written, a flush is started in the background, not awaited (the
 * kernel's flusher threads): the host writes earlier bytes out while later ones are written.
 * Measured on 8 × 128 MiB: the build's flush at close 0.6-0.8 s -> 0.25 s, the build 1.7 s ->
 * 1.15 s. A background flush that fails fails close(), like the flush it stands for.
 */
import type { BlockDevice } from './block-device.js';

/** Default bytes written between background flushes. */
export const WRITE_BEHIND_BYTES = 32 << 20;

export interface NoBarrierOptions {
  /** Bytes written between background flushes (default WRITE_BEHIND_BYTES; 0 for none). */
  writeBehindBytes?: number;
}

export class NoBarrierDevice implements BlockDevice {
  readonly sectorSize: number;
  readonly maxRequestBytes: number;
  readonly readOnly: boolean;
  readonly writev?: (offsetBytes: number, srcs: readonly Uint8Array[]) => Promise<void>;
  private readonly writeBehindBytes: number;
  /** Bytes written since the last background flush started. */
  private sinceFlush = 0;
  /** The background flush in flight, if any (one at a time). */
  private behind: Promise<void> | undefined;
  /** The first background flush failure, thrown by close(). */
  private behindError: unknown;
  /** Background flushes started (for tests and statistics). */
  backgroundFlushes = 0;

  constructor(private readonly inner: BlockDevice, opts: NoBarrierOptions = {}) {
    this.sectorSize = inner.sectorSize;
    this.maxRequestBytes = inner.maxRequestBytes;
    this.readOnly = inner.readOnly;
    this.writeBehindBytes = opts.writeBehindBytes ?? WRITE_BEHIND_BYTES;
    const wv = inner.writev?.bind(inner);
    if (wv !== undefined) {
      this.writev = (offsetBytes, srcs) => {
        const p = wv(offsetBytes, srcs);
        let n = 0;
        for (const b of srcs) n += b.length;
        this.wrote(n);
        return p;
      };
    }
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    return this.inner.read(offsetBytes, dst);
  }

  write(offsetBytes: number, src: Uint8Array): Promise<void> {
    const p = this.inner.write(offsetBytes, src);
    this.wrote(src.length);
    return p;
  }

  /** Counts written bytes and starts a background flush every writeBehindBytes. */
  private wrote(n: number): void {
    if (this.writeBehindBytes <= 0 || this.readOnly) return;
    this.sinceFlush += n;
    if (this.sinceFlush < this.writeBehindBytes || this.behind !== undefined) return;
    this.sinceFlush = 0;
    this.backgroundFlushes++;
    this.behind = this.inner.flush().then(
      () => { this.behind = undefined; },
      (e: unknown) => {
        this.behindError ??= e;
        this.behind = undefined;
      },
    );
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** The one flush of the mount, then the device's own close (even if the flush failed). */
  async close(): Promise<void> {
    try {
      await this.behind;
      if (this.behindError !== undefined) throw this.behindError;
      if (!this.inner.readOnly) await this.inner.flush();
    } finally {
      await this.inner.close();
    }
  }
}
