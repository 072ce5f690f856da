/**
 * `ext4ts mkfs [options] IMAGE [SIZE]`: makes an ext4 filesystem in an image file, with
 * mkfs.ext4's option letters (-b -L -U -N -I -i -m -O -E -q; -F is accepted and ignored, since
 * an image file needs no forcing). SIZE is read as mke2fs reads it: a number with a K, M, G, T
 * or P suffix (powers of 1024) or s (512-byte sectors); a bare number counts KiB, or blocks when
 * -b is given. Without SIZE an existing image keeps its size.
 */
import type { Command } from 'commander';
import { mkfs, PosixError, type MkfsTargetOptions, type MkfsResult } from '../index.js';

interface MkfsCliOptions {
  blockSize?: string;
  label?: string;
  uuid?: string;
  inodes?: string;
  inodeSize?: string;
  inodeRatio?: string;
  reservedPercent?: string;
  features: string[];
  extended: string[];
  quiet?: boolean;
  json?: boolean;
  force?: boolean;
}

function usage(detail: string): PosixError {
  return new PosixError('EINVAL', 'mkfs', undefined, detail);
}

/** An integer option, or a usage error naming it. */
function intOpt(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw usage(`${what} "${v}" is not a number`);
  return Number(v);
}

const SUFFIX: Readonly<Record<string, number>> = {
  k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5, s: 512,
};

/** mke2fs's parse_num_blocks2(): SIZE in bytes (see the module comment). */
export function parseSize(arg: string, blockSize: number | undefined): number {
  const m = /^(\d+)([kKmMgGtTpPsS]?)$/.exec(arg.trim());
  if (m === null) throw usage(`invalid size "${arg}" (a number with an optional K, M, G, T, P or s suffix)`);
  const n = Number(m[1]);
  const unit = m[2] === '' || m[2] === undefined ? (blockSize ?? 1024) : SUFFIX[m[2].toLowerCase()]!;
  const bytes = n * unit;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw usage(`size "${arg}" is out of range`);
  return bytes;
}

/** -E options: root_owner[=uid:gid] and hash_seed=UUID. */
function extendedOptions(list: readonly string[], out: MkfsTargetOptions): void {
  for (const item of list.flatMap((s) => s.split(','))) {
    if (item === '') continue;
    const [key, value] = item.split('=', 2) as [string, string | undefined];
    if (key === 'root_owner') {
      if (value === undefined) {
        out.rootOwner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
        continue;
      }
      const m = /^(\d+):(\d+)$/.exec(value);
      if (m === null) throw usage(`-E root_owner=${value}: expected uid:gid`);
      out.rootOwner = { uid: Number(m[1]), gid: Number(m[2]) };
    } else if (key === 'hash_seed' && value !== undefined) {
      out.hashSeed = value;
    } else if (key === 'lazy_itable_init' || key === 'lazy_journal_init' || key === 'nodiscard' || key === 'discard') {
      continue; // meaningless for an image file, which is always truncated and sparse
    } else {
      throw usage(`unknown extended option "${item}" (ext4ts supports root_owner[=uid:gid] and hash_seed=UUID)`);
    }
  }
}

/** The MkfsTargetOptions for the parsed command line. */
function toOptions(o: MkfsCliOptions, size: string | undefined): MkfsTargetOptions {
  const out: MkfsTargetOptions = {};
  const bs = intOpt(o.blockSize, 'block size');
  if (bs !== undefined) out.blockSize = bs;
  if (size !== undefined) out.sizeBytes = parseSize(size, bs);
  if (o.label !== undefined) out.label = o.label;
  if (o.uuid !== undefined && o.uuid !== 'random' && o.uuid !== 'time') {
    out.uuid = o.uuid === 'clear' || o.uuid === 'null' ? new Uint8Array(16) : o.uuid;
  }
  const n = intOpt(o.inodes, 'inode count');
  if (n !== undefined) out.inodesCount = n;
  const isz = intOpt(o.inodeSize, 'inode size');
  if (isz !== undefined) out.inodeSize = isz;
  const ratio = intOpt(o.inodeRatio, 'bytes per inode');
  if (ratio !== undefined) out.inodeRatio = ratio;
  if (o.reservedPercent !== undefined) {
    const pct = Number(o.reservedPercent);
    if (!Number.isFinite(pct)) throw usage(`invalid reserved blocks percent "${o.reservedPercent}"`);
    out.reservedPercent = pct;
  }
  if (o.features.length > 0) out.features = o.features;
  extendedOptions(o.extended, out);
  return out;
}

/** A short summary in mke2fs's words. */
function summary(image: string, r: MkfsResult): string {
  const lines = [
    `Creating filesystem with ${r.blocksCount} ${r.blockSize / 1024}k blocks and ${r.inodesCount} inodes`,
    `Filesystem UUID: ${r.uuid}`,
  ];
  if (r.backupSuperblocks.length > 0) {
    lines.push('Superblock backups stored on blocks: ', `\t${r.backupSuperblocks.join(', ')}`);
  }
  if (r.journalBlocks > 0) lines.push(`Journal: ${r.journalBlocks} blocks`);
  lines.push(`${image}: ${r.groupCount} block groups, ${r.freeBlocksCount} free blocks, features: ${r.features.join(' ')}`);
  return lines.join('\n');
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

export function registerMkfs(program: Command): void {
  program.command('mkfs').description('make an ext4 filesystem in an image file (like mkfs.ext4, no root needed)')
    .argument('<image>', 'image file (created or truncated; sparse)')
    .argument('[size]', 'size: a number with K/M/G/T suffix (bare numbers count KiB, or blocks with -b)')
    .option('-b, --block-size <bytes>', 'block size: 1024, 2048 or 4096')
    .option('-L, --label <label>', 'volume label (at most 16 bytes)')
    .option('-U, --uuid <uuid>', 'filesystem UUID (or random, clear)')
    .option('-N, --inodes <count>', 'number of inodes')
    .option('-I, --inode-size <bytes>', 'inode size (128 .. block size, a power of two)')
    .option('-i, --inode-ratio <bytes>', 'bytes per inode')
    .option('-m, --reserved-percent <pct>', 'percentage of blocks reserved for root (default 5)')
    .option('-O, --features <list>', 'feature edits, e.g. ^has_journal,^metadata_csum (repeatable)', collect, [])
    .option('-E, --extended <list>', 'extended options: root_owner[=uid:gid], hash_seed=UUID (repeatable)', collect, [])
    .option('-F, --force', 'accepted for mkfs.ext4 compatibility (no effect)')
    .option('-q, --quiet', 'print nothing but errors')
    .option('--json', 'print the result as JSON')
    .action(async (image: string, size: string | undefined, o: MkfsCliOptions) => {
      const r = await mkfs(image, toOptions(o, size));
      for (const w of r.warnings) process.stderr.write(`ext4ts: warning: ${w}\n`);
      if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
      else if (!o.quiet) process.stdout.write(summary(image, r) + '\n');
    });
}
