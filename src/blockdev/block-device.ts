/**
 * The block device seam (STYLE.md §11): everything above talks to storage only through this
 * interface, so a file, memory, or the simulator's seeded device can stand underneath. Offsets
 * and lengths are in bytes, multiples of `sectorSize`; `assertRange` enforces the safe-integer
 * boundary (STYLE.md §4) where numbers enter from the engine.
 */
import { assert } from '../util/assert.js';

export interface BlockDevice {
  /** Size of the device in bytes. */
  readonly sizeBytes: number;
  /** The unit of addressing, in bytes (512). */
  readonly sectorSize: number;
  /** Largest single request in bytes (the kernel's max_sectors); callers split above it. */
  readonly maxRequestBytes: number;
  /** True when writes are refused. */
  readonly readOnly: boolean;
  /** Reads `dst.length` bytes at `offsetBytes` into `dst`. */
  read(offsetBytes: number, dst: Uint8Array): Promise<void>;
  /** Writes `src` at `offsetBytes`. Durable only after flush(). */
  write(offsetBytes: number, src: Uint8Array): Promise<void>;
  /** Optional gather write (pwritev): the buffers back to back at `offsetBytes`, no copy. */
  writev?(offsetBytes: number, srcs: readonly Uint8Array[]): Promise<void>;
  /** A cache barrier: every write completed before the call is durable when it resolves. */
  flush(): Promise<void>;
  /** Releases the device. */
  close(): Promise<void>;
}

/** Asserts that [offsetBytes, offsetBytes + len) is a valid request on `dev`. */
export function assertRange(dev: BlockDevice, offsetBytes: number, len: number): void {
  assert(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0, () => `bad device offset ${offsetBytes}`);
  assert(Number.isSafeInteger(len) && len >= 0, () => `bad device length ${len}`);
  assert(offsetBytes + len <= dev.sizeBytes, () =>
    `request [${offsetBytes}, +${len}) past the end of a ${dev.sizeBytes}-byte device`);
}
