/**
 * MemDevice: a BlockDevice over a Uint8Array, for tests, browsers and small images built in
 * memory. Writes are immediately durable; flush() is a no-op.
 */
import { PosixError } from '../util/errors.js';
import { assertRange, type BlockDevice } from './block-device.js';

export class MemDevice implements BlockDevice {
  readonly sectorSize = 512;
  readonly maxRequestBytes = 1 << 20;
  readonly sizeBytes: number;
  constructor(readonly data: Uint8Array, readonly readOnly = false) {
    this.sizeBytes = data.length;
  }
  async read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    assertRange(this, offsetBytes, dst.length);
    dst.set(this.data.subarray(offsetBytes, offsetBytes + dst.length));
  }
  async write(offsetBytes: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) throw new PosixError('EROFS', 'write');
    assertRange(this, offsetBytes, src.length);
    this.data.set(src, offsetBytes);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
