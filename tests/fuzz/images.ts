/**
 * The pristine images the fuzzer mutates: every golden fixture that exists (tests/fixtures, via
 * tests/helpers/fixtures.ts when it is there) plus small images this module builds at test time
 * with mkfs + debugfs, so the fuzzer never depends on the fixture corpus. The built images are
 * deterministic (pinned mke2fs.conf, fixed UUID and hash seed, E2FSPROGS_FAKE_TIME, seeded file
 * contents), so a seed replays on any machine with e2fsprogs 1.47.
 *
 * Built images cover: 1, 2 and 4 KiB blocks; metadata_csum (default), crc16 group checksums with
 * 32-byte descriptors, no checksums (ext2), inline_data, meta_bg with 128-byte inodes; htree
 * directories (e2fsck -D), extent trees of depth 1 (punched holes), block maps with double
 * indirection, xattrs in the inode and in a block, fast, slow, looping and dangling symlinks,
 * unwritten extents (fallocate), hard links, FIFOs and device nodes.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { Prng } from './prng.js';

/** Where a pristine image comes from. */
export interface ImageSource {
  name: string;
  kind: 'gz' | 'raw';
  path: string;
}

/** Reads a pristine image into memory (decompressing fixtures). */
export function loadImage(src: ImageSource): Uint8Array {
  const raw = readFileSync(src.path);
  const bytes = src.kind === 'gz' ? gunzipSync(raw) : raw;
  // A private, exactly-sized ArrayBuffer (Buffers may share a pool; the mutator writes in place).
  return new Uint8Array(bytes);
}

/** The fixture images that exist now, as sources (empty when there is no corpus). */
export async function fixtureSources(): Promise<ImageSource[]> {
  // The helper may not exist yet while the corpus is being built; fall back to the directory.
  const helperPath = '../helpers/fixtures.js';
  try {
    const helper = (await import(helperPath)) as { listFixtures(): string[]; fixtureFile(name: string, suffix: string): string };
    return helper.listFixtures().map((name) => ({ name, kind: 'gz' as const, path: helper.fixtureFile(name, 'img.gz') }));
  } catch {
    const dir = join(repoRoot(), 'tests', 'fixtures');
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((f) => f.endsWith('.img.gz')).sort()
      .map((f) => ({ name: f.replace(/\.img\.gz$/, ''), kind: 'gz' as const, path: join(dir, f) }));
  }
}

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root');
    dir = up;
  }
  return dir;
}

/** The e2fsprogs 1.47.0 default configuration, pinned so the built images never change. */
const MKE2FS_CONF = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext3 = {
		features = has_journal
	}
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	small = {
		blocksize = 1024
		inode_ratio = 4096
	}
	floppy = {
		blocksize = 1024
		inode_ratio = 8192
	}
`;

interface BuildSpec {
  name: string;
  /** mkfs program and its options (before the image path and size). */
  mkfs: string;
  args: string[];
  size: string;
  blockSize: number;
}

const SPECS: readonly BuildSpec[] = [
  { name: 'gen-ext4-1k', mkfs: 'mkfs.ext4', args: ['-b', '1024'], size: '4M', blockSize: 1024 },
  { name: 'gen-ext4-4k', mkfs: 'mkfs.ext4', args: ['-b', '4096'], size: '8M', blockSize: 4096 },
  { name: 'gen-oldcsum', mkfs: 'mkfs.ext4', args: ['-b', '1024', '-O', '^metadata_csum,^64bit,uninit_bg'], size: '4M', blockSize: 1024 },
  { name: 'gen-inline', mkfs: 'mkfs.ext4', args: ['-b', '1024', '-O', 'inline_data'], size: '4M', blockSize: 1024 },
  { name: 'gen-ext2', mkfs: 'mkfs.ext2', args: ['-b', '1024'], size: '4M', blockSize: 1024 },
  { name: 'gen-metabg-2k', mkfs: 'mkfs.ext4', args: ['-b', '2048', '-I', '128', '-O', 'meta_bg,^resize_inode'], size: '8M', blockSize: 2048 },
];

/** True when mkfs, debugfs and e2fsck can be run. */
export function canBuildImages(): boolean {
  try {
    execFileSync('debugfs', ['-V'], { stdio: 'pipe' });
    execFileSync('mke2fs', ['-V'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Builds every generated image under `dir` (which must exist); returns their sources. */
export function buildImages(dir: string): ImageSource[] {
  const conf = join(dir, 'mke2fs.conf');
  writeFileSync(conf, MKE2FS_CONF);
  const env = { ...process.env, MKE2FS_CONFIG: conf, E2FSPROGS_FAKE_TIME: '1700000000', E2FSCK_TIME: '1700000000' };
  const out: ImageSource[] = [];
  for (const spec of SPECS) {
    const work = join(dir, spec.name);
    mkdirSync(work, { recursive: true });
    const img = join(dir, `${spec.name}.img`);
    execFileSync(spec.mkfs, [
      '-q', '-F', ...spec.args, '-U', '6f1d3a52-8c4e-4b7a-9d2f-0e5c7b1a3d90', '-E', 'hash_seed=2b7e1516-28ae-d2a6-abf7-158809cf4f3c',
      img, spec.size,
    ], { stdio: 'pipe', env });
    const cmds = join(work, 'cmds');
    writeFileSync(cmds, populateCommands(work, spec.blockSize));
    execFileSync('debugfs', ['-w', '-f', cmds, img], { stdio: 'pipe', env });
    // e2fsck -D turns every multi-block directory into an htree and fixes link counts.
    try {
      execFileSync('e2fsck', ['-fyD', img], { stdio: 'pipe', env });
    } catch (e) {
      // Exit status 1 means "file system was modified", which -D always does.
      if ((e as { status?: number }).status !== 1) throw e;
    }
    execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe', env });
    out.push({ name: spec.name, kind: 'raw', path: img });
  }
  return out;
}

/** Writes the host files the debugfs script copies in and returns the script. */
function populateCommands(work: string, bs: number): string {
  const rng = new Prng(0x5eed);
  const file = (name: string, len: number): string => {
    const p = join(work, name);
    writeFileSync(p, Uint8Array.from({ length: len }, () => 0x20 + rng.below(95)));
    return p;
  };
  const small = file('small', 6);
  const mid = file('mid', 5000);
  const big = file('big', 400 * 1024);
  const val = file('xattr-value', Math.floor(bs * 0.6));
  const longTarget = '/' + 'target-'.repeat(20);
  const lines = [
    'mkdir d', 'mkdir d/sub', 'mkdir d/sub/deeper', 'mkdir many', 'mkdir empty',
    `write ${small} d/small`, `write ${mid} d/mid`, `write ${big} big`, `write ${small} d/sub/deeper/leaf`,
    `write ${small} fa`, 'fallocate fa 0 40',
    'symlink d/link /d/small', `symlink d/slowlink ${longTarget}`, 'symlink loop1 /loop2', 'symlink loop2 /loop1',
    'symlink dangling /nowhere', 'symlink up ../../..',
    'ea_set d/small user.a hello', 'ea_set / user.root rootvalue', `ea_set -f ${val} d/mid user.big`,
    'ea_set d trusted.t 0123456789abcdef',
    'ln d/small d/hard', 'sif d/small links_count 2',
    'mknod pipe p', 'mknod cdev c 1 3', 'mknod bdev b 8 1',
  ];
  // Holes in the big file: more extents than the inode holds (a depth-1 tree), or indirect holes.
  for (let b = 10; b < 380; b += 20) lines.push(`punch big ${b} ${b + 4}`);
  const names = Math.ceil((bs * 3) / 48);
  for (let i = 0; i < names; i++) lines.push(`write ${small} many/entry-with-a-longer-name-${String(i).padStart(4, '0')}`);
  return lines.join('\n') + '\n';
}
