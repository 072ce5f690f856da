/**
 * NoBarrierDevice: what the `barrier: false` mount option puts under a mount (the kernel's
 * `nobarrier`). flush() returns at once, so commits cost no cache flush; close() flushes once
 * before releasing the device, so everything is durable when the unmount returns. A power cut
 * before then may keep any subset of the writes: meant for images that are thrown away when
 * their making fails (the builder's temporary image), never for data someone relies on.
 */
import type { BlockDevice } from './block-device.js';

export class NoBarrierDevice implements BlockDevice {
  readonly sectorSize: number;
  readonly maxRequestBytes: number;
  readonly readOnly: boolean;
  readonly writev?: (offsetBytes: number, srcs: readonly Uint8Array[]) => Promise<void>;

  constructor(private readonly inner: BlockDevice) {
    this.sectorSize = inner.sectorSize;
    this.maxRequestBytes = inner.maxRequestBytes;
    this.readOnly = inner.readOnly;
    const wv = inner.writev?.bind(inner);
    if (wv !== undefined) this.writev = wv;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    return this.inner.read(offsetBytes, dst);
  }

  write(offsetBytes: number, src: Uint8Array): Promise<void> {
    return this.inner.write(offsetBytes, src);
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** The one flush of the mount, then the device's own close (even if the flush failed). */
  async close(): Promise<void> {
    try {
      if (!this.inner.readOnly) await this.inner.flush();
    } finally {
      await this.inner.close();
    }
  }
}
