/**
 * Access to the golden fixture corpus in tests/fixtures/ (built by scripts/make-fixtures.sh:
 * real mkfs, populated through the Linux kernel, manifests recorded from the kernel's view by
 * scripts/manifest.mjs). See tests/fixtures/README.md for what each image exercises.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';

/** A timestamp as the kernel reports it: seconds (floored, may be negative) and 0 <= nsec < 1e9. */
export interface TimeSpec {
  sec: number;
  nsec: number;
}

export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'chr' | 'blk' | 'sock';

export interface ManifestEntry {
  /** Absolute path inside the file system ("/" for the root). */
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777), no type bits. */
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  /** st_size (for directories the directory's byte size, for symlinks the target length). */
  size: number;
  ino: number;
  atime: TimeSpec;
  mtime: TimeSpec;
  ctime: TimeSpec;
  /** Birth time; absent when the kernel reports none (128-byte inodes). */
  crtime?: TimeSpec;
  /** sha256 (hex) of the content, regular files only. */
  sha256?: string;
  /** Symlink target as a string (lossy when targetHex is present). */
  target?: string;
  /** Symlink target bytes in hex, only when the target is not valid UTF-8. */
  targetHex?: string;
  /** Device number, chr/blk only. */
  rdev?: { major: number; minor: number };
  /** Every xattr the kernel lists (getfattr -m -), name -> lowercase hex value. */
  xattrs?: Record<string, string>;
}

export interface Manifest {
  image: string;
  /** The exact mkfs (and tune2fs/debugfs) command line used to make the image. */
  mkfs: string;
  blockSize: number;
  populatedBy: 'kernel';
  /** `uname -r` of the kernel that populated the image. */
  kernel: string;
  /** Environment mkfs ran with (pinned mke2fs.conf, E2FSPROGS_FAKE_TIME). */
  mkfsEnv?: string;
  /** Size of the image file in bytes (made with truncate -s before mkfs). */
  imageBytes?: number;
  /** File system type it was mounted as (ext2/ext3/ext4). */
  fsType?: string;
  notes?: string;
  /** dumpe2fs "Filesystem features" of the final image. */
  features?: string[];
  inodeSize?: number;
  /** The superblock has needs_recovery set (image copied while mounted). */
  needsRecovery?: boolean;
  /** The entries are only correct after journal replay (home locations are stale). */
  replayRequired?: boolean;
  /** Sorted by path, including "/" and "/lost+found" (but not its contents). */
  entries: ManifestEntry[];
}

export interface LoadedFixture {
  /** Path of the decompressed image in a fresh temp dir (written sparse). */
  imagePath: string;
  manifest: Manifest;
  /** Removes the temp dir. */
  cleanup(): Promise<void>;
}

/** The repository root: the nearest ancestor of this module holding package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('fixtures: cannot find the repository root (package.json)');
    dir = up;
  }
}

/** tests/fixtures in the source tree (not copied into dist/). */
export function fixturesDir(): string {
  return process.env['EXT4TS_FIXTURES'] ?? join(repoRoot(), 'tests', 'fixtures');
}

/** Names of all fixtures that have both an image and a manifest, sorted. */
export function listFixtures(): string[] {
  const dir = fixturesDir();
  if (!existsSync(dir)) return [];
  const files = new Set(readdirSync(dir));
  return [...files]
    .filter((f) => f.endsWith('.img.gz') && files.has(f.replace(/\.img\.gz$/, '.manifest.json')))
    .map((f) => f.replace(/\.img\.gz$/, ''))
    .sort();
}

/** Reads and parses <name>.manifest.json. */
export function readManifest(name: string): Manifest {
  return JSON.parse(readFileSync(join(fixturesDir(), `${name}.manifest.json`), 'utf8')) as Manifest;
}

/** Path of a side file of a fixture, e.g. fixtureFile('ext4-1k', 'debugfs-ex.txt'). */
export function fixtureFile(name: string, suffix: string): string {
  return join(fixturesDir(), `${name}.${suffix}`);
}

const SPARSE_CHUNK = 4096;

/** Gunzips src into dst, skipping all-zero 4 KiB runs so the result is sparse. Returns its size. */
async function gunzipSparse(src: string, dst: string): Promise<number> {
  const fh = await open(dst, 'wx');
  try {
    const zero = Buffer.alloc(SPARSE_CHUNK);
    let pos = 0;
    const gz = createGunzip({ chunkSize: 1 << 20 });
    gz.end(await readFile(src));
    for await (const chunk of gz as AsyncIterable<Buffer>) {
      let runStart = -1;
      for (let off = 0; off < chunk.length; off += SPARSE_CHUNK) {
        const end = Math.min(off + SPARSE_CHUNK, chunk.length);
        const piece = chunk.subarray(off, end);
        const isZero = piece.length === SPARSE_CHUNK ? piece.equals(zero) : piece.every((b) => b === 0);
        if (!isZero && runStart < 0) runStart = off;
        if (isZero && runStart >= 0) {
          await fh.write(chunk, runStart, off - runStart, pos + runStart);
          runStart = -1;
        }
      }
      if (runStart >= 0) await fh.write(chunk, runStart, chunk.length - runStart, pos + runStart);
      pos += chunk.length;
    }
    await fh.truncate(pos);
    return pos;
  } finally {
    await fh.close();
  }
}

/** Decompresses fixture `name` into a fresh temp dir and returns it with its manifest. */
export async function loadFixture(name: string): Promise<LoadedFixture> {
  const gz = fixtureFile(name, 'img.gz');
  if (!existsSync(gz)) throw new Error(`fixture ${name}: ${gz} does not exist (run scripts/make-fixtures.sh)`);
  const manifest = readManifest(name);
  const dir = await mkdtemp(join(tmpdir(), `ext4ts-fx-${name}-`));
  const imagePath = join(dir, `${name}.img`);
  try {
    await gunzipSparse(gz, imagePath);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    imagePath,
    manifest,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Whether this process can loop-mount ext4 images through the kernel (root, loop, ext4). */
export function canLoopMount(): { ok: boolean; reason?: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `platform is ${process.platform}, not linux` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { ok: false, reason: 'not running as root' };
  if (!existsSync('/dev/loop-control')) return { ok: false, reason: 'no /dev/loop-control (loop devices unavailable)' };
  let fsList = '';
  try {
    fsList = readFileSync('/proc/filesystems', 'utf8');
  } catch {
    return { ok: false, reason: 'cannot read /proc/filesystems' };
  }
  if (!fsList.split('\n').some((l) => l.trim().split(/\s+/).pop() === 'ext4')) {
    return { ok: false, reason: 'the kernel has no ext4 in /proc/filesystems' };
  }
  return { ok: true };
}
