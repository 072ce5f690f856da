/**
 * The public mkfs: `mkfs(target, opts)` makes an ext4 filesystem on an image file or a
 * BlockDevice, no e2fsprogs involved (see src/fs/mkfs/ for how and what).
 *
 * A path target is an image file: it is created if missing, truncated to 0 and then to the size
 * (so every block reads as zeros, sparse), and only metadata is written; without
 * opts.sizeBytes an existing file keeps its size. Options are checked before the file is
 * touched. A BlockDevice target is written in place (see MkfsTargetOptions.deviceIsZeroed).
 *
 * Determinism: time comes from opts.clock, else SOURCE_DATE_EPOCH, else the system clock;
 * randomness from opts.random, else the operating system. With SOURCE_DATE_EPOCH (or
 * opts.reproducible) the hash seed derives from the UUID, so a fixed UUID gives a byte-identical
 * image.
 */
import { stat, truncate, open, unlink } from 'node:fs/promises';
import type { BlockDevice } from '../blockdev/block-device.js';
import { FileDevice } from '../blockdev/file-device.js';
import { clockFromSourceDateEpoch, systemClock, type Clock } from '../runtime/clock.js';
import { cryptoRandom, type Random } from '../runtime/random.js';
import { PosixError } from '../util/errors.js';
import type { MkfsOptions } from '../fs/mkfs/options.js';
import { planMkfs, writeMkfs, mkfsResult, type MkfsResult } from '../fs/mkfs/mkfs.js';

export type { MkfsOptions } from '../fs/mkfs/options.js';
export { defaultBlockSize } from '../fs/mkfs/options.js';
export type { MkfsResult } from '../fs/mkfs/mkfs.js';
// The determinism seams mkfs takes, re-exported for src/index.ts (which imports api/ only).
export { seededRandom, cryptoRandom, type Random } from '../runtime/random.js';
export { fixedClock, systemClock, type Clock, type ClockTime } from '../runtime/clock.js';

/** Options that concern the target and the sources of time and randomness. */
export interface MkfsTargetOptions extends MkfsOptions {
  /** Source of every timestamp (default: SOURCE_DATE_EPOCH if set, else the system clock). */
  clock?: Clock;
  /** Source of the UUID and hash seed when not given (default: node:crypto). */
  random?: Random;
  /**
   * A BlockDevice target already reads as zeros everywhere (a new sparse file, a fresh
   * MemDevice, a discarded SSD): nothing is zeroed and inode tables are marked zeroed. Default
   * false for BlockDevices; image files given by path are always truncated, hence zeroed.
   */
  deviceIsZeroed?: boolean;
  /** Environment to read SOURCE_DATE_EPOCH from (default process.env). */
  env?: Record<string, string | undefined>;
}

/**
 * Makes an ext4 filesystem. Throws PosixError (EINVAL for bad options, ENOENT for a missing
 * image without a size, ENOSPC, …), Incompatible for unsupported features, IoError on device
 * failures.
 */
export async function mkfs(target: string | BlockDevice, opts: MkfsTargetOptions = {}): Promise<MkfsResult> {
  const sde = clockFromSourceDateEpoch(opts.env ?? process.env);
  const ctx = {
    clock: opts.clock ?? sde ?? systemClock,
    random: opts.random ?? cryptoRandom,
    reproducible: opts.reproducible ?? (opts.clock === undefined && sde !== undefined),
  };
  if (typeof target !== 'string') {
    const plan = planMkfs(opts, target.sizeBytes, ctx);
    if (target.readOnly) throw new PosixError('EROFS', 'mkfs');
    return mkfsResult(plan, await writeMkfs(target, plan, opts.deviceIsZeroed ?? false));
  }
  const existing = await stat(target).catch((e: { code?: string }) => {
    if (e.code === 'ENOENT') return undefined;
    throw new PosixError(e.code === 'EACCES' ? 'EACCES' : 'EIO', 'stat', target);
  });
  if (existing !== undefined && !existing.isFile()) {
    throw new PosixError('EINVAL', 'mkfs', target, 'not a regular file (pass a BlockDevice to format a device)');
  }
  if (existing === undefined && opts.sizeBytes === undefined) {
    throw new PosixError('ENOENT', 'mkfs', target, 'no such image file; give a size to create one');
  }
  // Plan against the size the file will have, before touching it. OK to assert `existing`:
  // without sizeBytes it was checked to exist just above.
  const size = opts.sizeBytes ?? existing!.size;
  const plan = planMkfs({ ...opts, sizeBytes: opts.sizeBytes ?? Math.floor(size / 4096) * 4096 }, size, ctx);
  if (existing === undefined) await (await open(target, 'wx')).close();
  try {
    await truncate(target, 0);
    await truncate(target, size);
  } catch (e) {
    // A file we just created is removed again (e.g. EFBIG: the host filesystem's size limit).
    if (existing === undefined) await unlink(target).catch(() => undefined);
    const code = (e as { code?: string }).code;
    if (code === 'EFBIG') throw new PosixError('EFBIG', 'truncate', target, `the host filesystem cannot hold a ${size}-byte file`);
    throw e;
  }
  const dev = await FileDevice.open(target);
  try {
    return mkfsResult(plan, await writeMkfs(dev, plan, true));
  } finally {
    await dev.close();
  }
}
