/**
 * `ext4ts mkfs [options] IMAGE [SIZE]`: makes an ext4 filesystem in an image file, with
 * mkfs.ext4's option letters (-b -L -U -N -I -i -m -O -E -q; -F is accepted and ignored, since
 * an image file needs no forcing). SIZE is read as mke2fs reads it: a number with a K, M, G, T
 * or P suffix (powers of 1024) or s (512-byte sectors); a bare number counts KiB, or blocks when
 * -b is given. Without SIZE an existing image keeps its size.
 *
 * With `-d SRC` (like `mke2fs -d`) the filesystem is built from SRC, a directory, a tar archive
 * (plain or gzip) or a JSON manifest (see src/build/): SIZE becomes optional (the image is sized
 * to fit the content plus --margin), owners can be overridden (--root-owner, --all-root,
 * --uid-map, --gid-map), and SOURCE_DATE_EPOCH (or --reproducible) makes the image reproducible.
 * A progress bar shows on a terminal; the last line sums up what was built.
 */
import type { Command } from 'commander';
import { SingleBar } from 'cli-progress';
import {
  mkfs, build, PosixError, type MkfsTargetOptions, type MkfsResult, type BuildOptions, type BuildProgress,
  type BuildSummary,
} from '../index.js';

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
  rootDirectory?: string;
  rootOwner?: string | boolean;
  allRoot?: boolean;
  uidMap?: string;
  gidMap?: string;
  margin?: string;
  reproducible?: boolean;
  /** false with --no-xattrs. */
  xattrs: boolean;
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

/** "a:b,c:d" as a Map a→b, c→d. */
function idMap(v: string | undefined, what: string): Map<number, number> | undefined {
  if (v === undefined) return undefined;
  const m = new Map<number, number>();
  for (const pair of v.split(',')) {
    const r = /^(\d+):(\d+)$/.exec(pair.trim());
    if (r === null) throw usage(`${what} "${pair}": expected FROM:TO[,FROM:TO…] with numeric ids`);
    m.set(Number(r[1]), Number(r[2]));
  }
  return m;
}

/** --root-owner: uid:gid, or with no value the caller's ids (like -E root_owner). */
function rootOwnerOpt(v: string | boolean | undefined): { uid: number; gid: number } | undefined {
  if (v === undefined || v === false) return undefined;
  if (v === true) return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const m = /^(\d+):(\d+)$/.exec(v);
  if (m === null) throw usage(`--root-owner ${v}: expected uid:gid`);
  return { uid: Number(m[1]), gid: Number(m[2]) };
}

/** The BuildOptions for `mkfs -d SRC IMAGE [SIZE]`. */
function buildOptions(image: string, size: string | undefined, o: MkfsCliOptions): BuildOptions {
  // OK to assert rootDirectory: only called with -d.
  const { sizeBytes, inodesCount, rootOwner, ...mkfsOpts } = toOptions(o, size);
  const margin = o.margin === undefined ? undefined : Number(o.margin);
  if (margin !== undefined && !(margin >= 0 && margin <= 1000)) throw usage(`--margin ${o.margin}: a percentage from 0 to 1000`);
  return {
    source: o.rootDirectory!, image, sizeBytes, inodesCount, marginPercent: margin, mkfs: mkfsOpts,
    rootOwner: rootOwnerOpt(o.rootOwner) ?? rootOwner, allRoot: o.allRoot, uidMap: idMap(o.uidMap, '--uid-map'),
    gidMap: idMap(o.gidMap, '--gid-map'), reproducible: o.reproducible, xattrs: o.xattrs,
  };
}

/** A terminal progress bar fed by the builder's callback (entries while creating, then bytes). */
function progressBar(): { onProgress: (p: BuildProgress) => void; stop(): void } {
  const bar = new SingleBar({
    format: '{phase} [{bar}] {percentage}% | {files} files | {mib} MiB | {rate} MiB/s | ETA {etaText}',
    hideCursor: true, clearOnComplete: true, barsize: 30, fps: 8,
  });
  let started = false;
  let phase = '';
  let dataStart = 0;
  const onProgress = (p: BuildProgress): void => {
    // Content dominates the time: the bar follows bytes once writing starts (entries if no bytes).
    const inData = (p.phase === 'write' || p.phase === 'stream') && p.bytesTotal > 0;
    const total = inData ? Math.max(1, p.bytesTotal) : Math.max(1, p.entriesTotal);
    const value = inData ? p.bytesDone : p.entriesDone;
    if (inData && dataStart === 0) dataStart = performance.now();
    const secs = dataStart === 0 ? 0 : (performance.now() - dataStart) / 1000;
    // Our own ETA from the content rate: cli-progress's restarts with every phase's new total.
    const rate = secs > 0.5 ? p.bytesDone / secs : 0;
    const payload = {
      phase: p.phase.padEnd(6), files: `${p.filesDone}/${p.filesTotal}`,
      mib: `${(p.bytesDone / 2 ** 20).toFixed(0)}/${(p.bytesTotal / 2 ** 20).toFixed(0)}`,
      rate: rate > 0 ? (rate / 2 ** 20).toFixed(1) : '-',
      etaText: inData && rate > 0 ? `${Math.ceil((p.bytesTotal - p.bytesDone) / rate)}s` : '-',
    };
    if (!started) {
      bar.start(total, value, payload);
      started = true;
    } else if (p.phase !== phase) {
      bar.setTotal(total);
      bar.update(value, payload);
    } else bar.update(value, payload);
    phase = p.phase;
  };
  return { onProgress, stop: () => started && bar.stop() };
}

/** The last line: `built IMAGE: 20000 files, 2000 dirs, … 442118466 bytes in 9.8 s (43.0 MiB/s)`. */
function buildLine(s: BuildSummary, seconds: number): string {
  const parts = [`${s.files} files`, `${s.dirs} dirs`, `${s.symlinks} symlinks`];
  if (s.hardlinks > 0) parts.push(`${s.hardlinks} hard links`);
  if (s.devices > 0) parts.push(`${s.devices} devices`);
  if (s.fifos > 0) parts.push(`${s.fifos} fifos`);
  if (s.sockets > 0) parts.push(`${s.sockets} sockets`);
  if (s.xattrs > 0) parts.push(`${s.xattrs} xattrs`);
  const rate = seconds > 0 ? s.bytes / 2 ** 20 / seconds : 0;
  return `built ${s.image}: ${parts.join(', ')}, ${s.bytes} bytes in ${seconds.toFixed(2)} s (${rate.toFixed(1)} MiB/s); `
    + `${(s.sizeBytes / 2 ** 20).toFixed(0)} MiB image, ${s.inodesCount} inodes, UUID ${s.uuid}${s.reproducible ? ' (reproducible)' : ''}`;
}

/** `mkfs -d`: builds the image, with a progress bar on a terminal and a summary line. */
async function runBuild(image: string, size: string | undefined, o: MkfsCliOptions): Promise<void> {
  const opts = buildOptions(image, size, o);
  const showBar = !o.quiet && !o.json && process.stdout.isTTY === true && process.stderr.isTTY === true;
  const bar = showBar ? progressBar() : undefined;
  const t0 = performance.now();
  let s: BuildSummary;
  try {
    s = await build({ ...opts, ...(bar !== undefined ? { onProgress: bar.onProgress } : {}) });
  } finally {
    bar?.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  if (!o.quiet) for (const w of s.warnings) process.stderr.write(`ext4ts: warning: ${w}\n`);
  if (o.json) process.stdout.write(JSON.stringify({ ...s, seconds }) + '\n');
  else if (!o.quiet) process.stdout.write(buildLine(s, seconds) + '\n');
}

export function registerMkfs(program: Command): void {
  program.command('mkfs').description('make an ext4 filesystem in an image file (like mkfs.ext4, no root needed); with -d, built from a directory, tar or manifest')
    .argument('<image>', 'image file (created or truncated; sparse)')
    .argument('[size]', 'size: a number with K/M/G/T suffix (bare numbers count KiB, or blocks with -b); with -d, default: fit the content')
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
    .option('-d, --root-directory <src>', 'build from SRC: a directory, a tar archive (plain or gzip) or a JSON manifest')
    .option('--root-owner [uid:gid]', 'with -d: owner of the root directory (no value: your uid:gid)')
    .option('--all-root', 'with -d: every entry owned by 0:0')
    .option('--uid-map <from:to,...>', 'with -d: translate uids')
    .option('--gid-map <from:to,...>', 'with -d: translate gids')
    .option('--margin <percent>', 'with -d and no SIZE: free space over the content, in percent (default 10)')
    .option('--no-xattrs', 'with -d: copy no extended attributes (a directory\'s are read with getfattr)')
    .option('--reproducible', 'with -d: fixed clock, UUID derived from the content, times clamped (default when SOURCE_DATE_EPOCH is set)')
    .action(async (image: string, size: string | undefined, o: MkfsCliOptions) => {
      if (o.rootDirectory !== undefined) return runBuild(image, size, o);
      for (const [flag, v] of [['--root-owner', o.rootOwner], ['--all-root', o.allRoot], ['--uid-map', o.uidMap], ['--gid-map', o.gidMap], ['--margin', o.margin], ['--reproducible', o.reproducible]] as const) {
        if (v !== undefined) throw usage(`${flag} needs -d SRC`);
      }
      if (!o.xattrs) throw usage('--no-xattrs needs -d SRC');
      const r = await mkfs(image, toOptions(o, size));
      for (const w of r.warnings) process.stderr.write(`ext4ts: warning: ${w}\n`);
      if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
      else if (!o.quiet) process.stdout.write(summary(image, r) + '\n');
    });
}
