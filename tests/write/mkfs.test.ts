/**
 * mkfs: images made by ext4ts, checked against every oracle we have.
 * - mkfs.ext4 1.47 itself: with the same UUID, hash seed and time (E2FSPROGS_FAKE_TIME) and a
 *   pinned mke2fs.conf, our image equals mkfs.ext4's byte for byte, except s_kbytes_written and
 *   the superblock checksum in each superblock copy;
 * - e2fsck -fn: exit 0 and nothing but its pass lines, for a matrix of options;
 * - dumpe2fs -h: label, UUID, features and counts as mkfs reported them;
 * - our own read path (Ext4.open) and, as root with loop devices, the Linux kernel;
 * - reproducibility under SOURCE_DATE_EPOCH, a 4 TiB sparse image, the CLI, the error paths, and
 *   the free-block search against a literal model of libext2fs's loop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, statSync, mkdirSync, openSync, readSync, closeSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import {
  mkfs, Ext4, MemDevice, seededRandom, fixedClock, PosixError, Incompatible, type MkfsTargetOptions, type MkfsResult,
} from '../../src/index.js';
import { UsedSpace } from '../../src/fs/mkfs/space.js';
import { sizeTypeOf, applyFeatureEdits } from '../../src/fs/mkfs/options.js';
import { computeGeometry, lostFoundBlockCount } from '../../src/fs/mkfs/layout.js';
import { defaultJournalBlocks } from '../../src/fs/mkfs/mkfs.js';
import { parseSize } from '../../src/cli/mkfs-command.js';
import { requireCommands, skipBecause } from '../helpers/env.js';
import { canLoopMount } from '../helpers/fixtures.js';
import { withKernelMount } from '../helpers/check-image.js';

const dir = mkdtempSync(join(tmpdir(), 'ext4ts-mkfs-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const CLI = resolve(import.meta.dirname, '../../src/cli/main.js');

const UUID = '11111111-2222-4333-8444-555555555555';
const SEED = '66666666-7777-4888-9999-aaaaaaaaaaaa';
const TIME = 1700000000;
const MiB = 1 << 20;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

/** mke2fs.conf as e2fsprogs 1.47 ships it, so the comparisons do not depend on the host's. */
const CONF = join(dir, 'mke2fs.conf');
writeFileSync(CONF, `[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t\tblocksize = 1024
\t\tinode_ratio = 4096
\t}
\tfloppy = {
\t\tblocksize = 1024
\t\tinode_ratio = 8192
\t}
\tbig = {
\t\tinode_ratio = 32768
\t}
\thuge = {
\t\tinode_ratio = 65536
\t}
`);

/** mke2fs's version, or undefined when e2fsprogs is missing. */
const MKE2FS_VERSION = (() => {
  const r = spawnSync('mke2fs', ['-V']);
  return /mke2fs (\d+\.\d+)/.exec(r.stderr?.toString() ?? '')?.[1];
})();
/** e2fsck, dumpe2fs and mkfs.ext4 are this file's oracles: missing, a test fails. */
function requireE2fsprogs(): void {
  requireCommands('e2fsprogs', 'mke2fs', 'mkfs.ext4', 'e2fsck', 'dumpe2fs', 'filefrag');
}
const SAME_MKE2FS = MKE2FS_VERSION === '1.47';

let counter = 0;
function imgPath(name: string): string {
  return join(dir, `${name.replace(/[^a-z0-9]+/gi, '_')}-${counter++}.img`);
}

/** Runs e2fsck -fn and asserts exit 0 with nothing but the five pass lines and the summary. */
function assertFsckClean(img: string): void {
  const r = spawnSync('e2fsck', ['-fn', img], { maxBuffer: 1 << 24 });
  const out = r.stdout.toString();
  assert.equal(r.status, 0, `e2fsck -fn ${img} exited ${r.status}:\n${out}${r.stderr}`);
  const lines = out.trim().split('\n');
  assert.deepEqual(lines.slice(0, 5).map((l) => l.replace(/:.*/, '')), ['Pass 1', 'Pass 2', 'Pass 3', 'Pass 4', 'Pass 5'], out);
  assert.equal(lines.length, 6, `e2fsck printed more than its pass lines:\n${out}`);
  assert.match(lines[5]!, /: \d+\/\d+ files \(.*\), \d+\/\d+ blocks$/);
}

/** dumpe2fs -h as a map of field name to value. */
function dumpe2fs(img: string): Map<string, string> {
  const out = execFileSync('dumpe2fs', ['-h', img], { stdio: 'pipe' }).toString();
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return m;
}

/** The byte ranges of a file that hold data (filefrag -e), or undefined when that is unknown. */
function dataRanges(path: string): [number, number][] | undefined {
  const r = spawnSync('filefrag', ['-e', path]);
  if (r.status !== 0) return undefined;
  const out = r.stdout.toString();
  const bsz = Number(/blocks of (\d+) bytes/.exec(out)?.[1]);
  if (!Number.isFinite(bsz)) return undefined;
  const ranges: [number, number][] = [];
  for (const m of out.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) ranges.push([Number(m[1]) * bsz, (Number(m[2]) + 1) * bsz]);
  return ranges;
}

/** Superblock fields mke2fs fills differently by design: s_kbytes_written and s_checksum. */
const SB_MASKS: [number, number][] = [[0x178, 0x180], [0x3fc, 0x400]];

/**
 * Compares two images block by block where either holds data, masking SB_MASKS inside every
 * superblock copy. Returns the differing blocks (at most 10) or a skip reason.
 */
function compareImages(a: string, b: string, r: MkfsResult): number[] | string {
  const size = statSync(a).size;
  if (statSync(b).size !== size) return [-1];
  const ra = dataRanges(a);
  const rb = dataRanges(b);
  let ranges = [...(ra ?? []), ...(rb ?? [])];
  if (ra === undefined || rb === undefined) {
    if (size > 4 * GiB) return 'filefrag cannot map the images on this host filesystem and they are too big to read whole';
    ranges = [[0, size]];
  }
  const bs = r.blockSize;
  const blocks = new Set<number>();
  for (const [s, e] of ranges) for (let x = Math.floor(s / bs); x * bs < Math.min(e, size); x++) blocks.add(x);
  const sbAt = new Map<number, number>([[Math.floor(1024 / bs), 1024 % bs]]);
  for (const blk of r.backupSuperblocks) sbAt.set(blk, 0);
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  const diffs: number[] = [];
  const x = Buffer.alloc(bs);
  const y = Buffer.alloc(bs);
  try {
    for (const blk of [...blocks].sort((p, q) => p - q)) {
      readSync(fa, x, 0, bs, blk * bs);
      readSync(fb, y, 0, bs, blk * bs);
      const off = sbAt.get(blk);
      if (off !== undefined) for (const [s, e] of SB_MASKS) { x.fill(0, off + s, off + e); y.fill(0, off + s, off + e); }
      if (!x.equals(y) && diffs.push(blk) >= 10) break;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
  return diffs;
}

/** One configuration, as our options and as mkfs.ext4 arguments. */
interface Case {
  desc: string;
  size: number;
  opts?: MkfsTargetOptions;
  /** Extra mkfs.ext4 arguments (besides -U, hash_seed and the feature edits). */
  args?: string[];
  /** mkfs.ext4 -O list equivalent to opts.features (defaults to it). */
  mkFeatures?: string;
  /** Extra mkfs.ext4 -E options (mke2fs keeps only the last -E, so they join hash_seed's). */
  ext?: string;
}

const CASES: Case[] = [
  { desc: '1 MiB (floppy, too small for a journal)', size: MiB },
  { desc: '2 MiB (floppy with a 1024-block journal)', size: 2 * MiB },
  { desc: '8 MiB (small, one group)', size: 8 * MiB },
  { desc: '64 MiB (small, 1 KiB blocks, 8 groups)', size: 64 * MiB },
  { desc: '300 MiB (small, last group short)', size: 300 * MiB },
  { desc: '512 MiB (default, 4 KiB blocks)', size: 512 * MiB },
  { desc: '2 GiB', size: 2 * GiB },
  { desc: '64 MiB with -b 2048', size: 64 * MiB, opts: { blockSize: 2048 }, args: ['-b', '2048'] },
  { desc: '8 MiB with -b 4096', size: 8 * MiB, opts: { blockSize: 4096 }, args: ['-b', '4096'] },
  { desc: '300 MiB with -b 4096', size: 300 * MiB, opts: { blockSize: 4096 }, args: ['-b', '4096'] },
  { desc: '64 MiB with -I 128', size: 64 * MiB, opts: { inodeSize: 128 }, args: ['-I', '128'] },
  { desc: '64 MiB with -N 5000', size: 64 * MiB, opts: { inodesCount: 5000 }, args: ['-N', '5000'] },
  { desc: '64 MiB with -L and root_owner', size: 64 * MiB, opts: { label: 'ext4ts-label', rootOwner: { uid: 1000, gid: 100 } }, args: ['-L', 'ext4ts-label'], ext: 'root_owner=1000:100' },
  { desc: '300 MiB -O ^has_journal', size: 300 * MiB, opts: { features: '^has_journal' } },
  { desc: '300 MiB -O ^flex_bg', size: 300 * MiB, opts: { features: '^flex_bg' } },
  { desc: '300 MiB -O ^64bit', size: 300 * MiB, opts: { features: '^64bit' } },
  { desc: '300 MiB -O ^metadata_csum (uninit_bg, crc16)', size: 300 * MiB, opts: { features: '^metadata_csum' }, mkFeatures: '^metadata_csum,uninit_bg' },
  { desc: '300 MiB -O ^metadata_csum,^uninit_bg (no checksums)', size: 300 * MiB, opts: { features: '^metadata_csum,^uninit_bg' } },
  { desc: '300 MiB -O ^metadata_csum,^64bit,^flex_bg (ext3-like layout)', size: 300 * MiB, opts: { features: '^metadata_csum,^64bit,^flex_bg' }, mkFeatures: '^metadata_csum,^64bit,^flex_bg,uninit_bg' },
  { desc: '2 GiB -O ^dir_index,^huge_file,^dir_nlink,^metadata_csum_seed', size: 2 * GiB, opts: { features: '^dir_index,^huge_file,^dir_nlink,^metadata_csum_seed' } },
  { desc: '16 MiB with -I 512', size: 16 * MiB, opts: { inodeSize: 512 }, args: ['-I', '512'] },
  { desc: '64 MiB with -b 2048 -I 2048', size: 64 * MiB, opts: { blockSize: 2048, inodeSize: 2048 }, args: ['-b', '2048', '-I', '2048'] },
  { desc: '64 MiB -O ^sparse_super (a backup in every group)', size: 64 * MiB, opts: { features: '^sparse_super' } },
  { desc: '64 MiB -O ^filetype,large_dir', size: 64 * MiB, opts: { features: '^filetype,large_dir' } },
  { desc: '64 MiB with -m 0', size: 64 * MiB, opts: { reservedPercent: 0 }, args: ['-m', '0'] },
  { desc: '1 GiB with -i 65536', size: GiB, opts: { inodeRatio: 65536 }, args: ['-i', '65536'] },
  { desc: '3 GiB with -b 1024 (flex tables run past backup groups)', size: 3 * GiB, opts: { blockSize: 1024 }, args: ['-b', '1024'] },
  { desc: '1 TiB (journal with an extent tree block)', size: TiB },
  { desc: '4805 groups (journal crosses a backup group: tree block after extent 5)', size: 4805 * 128 * MiB },
];

/** Makes the mkfs.ext4 twin of a case; returns false (and why) when the host cannot. */
function mkfsExt4(c: Case, path: string): string | undefined {
  try {
    writeFileSync(path, '');
    truncateSync(path, c.size);
  } catch (e) {
    return `cannot make a ${c.size}-byte sparse file here: ${String(e)}`;
  }
  const f = c.mkFeatures ?? c.opts?.features;
  const list = ['^resize_inode', ...(typeof f === 'string' && f.includes('^metadata_csum') ? [] : ['metadata_csum_seed']), ...(f !== undefined ? [String(f)] : [])];
  execFileSync('mkfs.ext4', ['-q', '-F', '-O', list.join(','), '-U', UUID, '-E', [`hash_seed=${SEED}`, ...(c.ext !== undefined ? [c.ext] : [])].join(','), ...(c.args ?? []), path], {
    stdio: 'pipe', env: { ...process.env, E2FSPROGS_FAKE_TIME: String(TIME), MKE2FS_CONFIG: CONF },
  });
  return undefined;
}

for (const c of CASES) {
  test(`mkfs: ${c.desc} — e2fsck clean, dumpe2fs agrees, equals mkfs.ext4 byte for byte`, async (t) => {
    requireE2fsprogs();
    const ours = imgPath(c.desc);
    let r: MkfsResult;
    try {
      r = await mkfs(ours, { sizeBytes: c.size, uuid: UUID, hashSeed: SEED, clock: fixedClock(TIME), ...c.opts });
    } catch (e) {
      if (e instanceof PosixError && e.code === 'EFBIG') return skipBecause(t, `host filesystem: ${e.message}`);
      throw e;
    }
    assertFsckClean(ours);
    const d = dumpe2fs(ours);
    assert.equal(d.get('Filesystem UUID'), UUID);
    assert.equal(d.get('Filesystem volume name'), c.opts?.label ?? '<none>');
    assert.equal(Number(d.get('Block count')), r.blocksCount);
    assert.equal(Number(d.get('Inode count')), r.inodesCount);
    assert.equal(Number(d.get('Free blocks')), r.freeBlocksCount);
    assert.equal(Number(d.get('Reserved block count')), r.reservedBlocksCount);
    assert.deepEqual((d.get('Filesystem features') ?? '').split(/\s+/).sort(), r.features.map((x) => (x === 'gdt_csum' ? 'uninit_bg' : x)).sort());
    if (!SAME_MKE2FS) return skipBecause(t, `mke2fs ${MKE2FS_VERSION} is not 1.47: no byte comparison`);
    const ref = imgPath(`${c.desc}-ref`);
    const why = mkfsExt4(c, ref);
    if (why !== undefined) return skipBecause(t, why);
    const diffs = compareImages(ours, ref, r);
    rmSync(ref, { force: true });
    if (typeof diffs === 'string') return skipBecause(t, diffs);
    assert.deepEqual(diffs, [], `blocks differing from mkfs.ext4's image: ${diffs.join(', ')}`);
    rmSync(ours, { force: true });
  });
}

test('mkfs: geometry choices equal plain mkfs.ext4 -O ^resize_inode (inodes, groups, journal, reserved)', async (t) => {
  requireE2fsprogs();
  for (const [size, bs] of [[MiB, 0], [8 * MiB, 0], [64 * MiB, 0], [300 * MiB, 0], [2 * GiB, 0], [64 * MiB, 4096], [300 * MiB, 2048], [2 * GiB, 1024]] as const) {
    const ours = imgPath('geo');
    const ref = imgPath('geo-ref');
    const r = await mkfs(ours, { sizeBytes: size, ...(bs ? { blockSize: bs } : {}) });
    writeFileSync(ref, '');
    truncateSync(ref, size);
    spawnSync('mkfs.ext4', ['-q', '-F', '-O', '^resize_inode', ...(bs ? ['-b', String(bs)] : []), ref], { env: { ...process.env, MKE2FS_CONFIG: CONF } });
    const d = dumpe2fs(ref);
    const what = `${size} bytes, -b ${bs || 'default'}`;
    assert.equal(r.blockSize, Number(d.get('Block size')), what);
    assert.equal(r.inodesCount, Number(d.get('Inode count')), what);
    assert.equal(r.blocksCount, Number(d.get('Block count')), what);
    assert.equal(r.blocksPerGroup, Number(d.get('Blocks per group')), what);
    assert.equal(r.inodesPerGroup, Number(d.get('Inodes per group')), what);
    assert.equal(r.groupCount, Math.ceil((r.blocksCount - Number(d.get('First block'))) / r.blocksPerGroup), what);
    assert.equal(r.journalBlocks, Number(d.get('Total journal blocks') ?? 0), what);
    assert.equal(r.reservedBlocksCount, Number(d.get('Reserved block count')), what);
    assert.equal(r.freeBlocksCount, Number(d.get('Free blocks')), what);
    t.diagnostic(`${what}: ${r.inodesCount} inodes, ${r.groupCount} groups of ${r.blocksPerGroup}, journal ${r.journalBlocks}, reserved ${r.reservedBlocksCount} — same as mkfs.ext4`);
    rmSync(ours);
    rmSync(ref);
  }
});

test('mkfs: the read path opens the image and reads root and lost+found', async () => {
  const img = imgPath('read');
  await mkfs(img, { sizeBytes: 64 * MiB, label: 'readme', rootOwner: { uid: 42, gid: 43 }, clock: fixedClock(TIME, 123456789) });
  const fs = await Ext4.open(img);
  try {
    assert.deepEqual(await fs.readdir('/'), ['lost+found']);
    const root = await fs.stat('/');
    assert.equal(root.mode & 0o7777, 0o755);
    assert.equal(root.nlink, 3);
    assert.equal(root.uid, 42);
    assert.equal(root.gid, 43);
    assert.deepEqual(root.mtimeSpec, { sec: TIME, nsec: 123456789 });
    assert.deepEqual(root.birthtimeSpec, { sec: TIME, nsec: 123456789 });
    const lpf = await fs.stat('/lost+found');
    assert.ok(lpf.isDirectory());
    assert.equal(lpf.mode & 0o7777, 0o700);
    assert.equal(lpf.nlink, 2);
    assert.equal(lpf.size, lostFoundBlockCount(1024) * 1024);
    assert.equal(lpf.uid, 0);
    assert.deepEqual(await fs.readdir('/lost+found'), []);
    const info = fs.info();
    assert.equal(info.label, 'readme');
    assert.equal(info.state, 'clean');
    assert.equal(info.journalInode, 8);
    assert.ok(info.journal !== undefined && 'maxlenBlocks' in info.journal && info.journal.maxlenBlocks === 4096);
  } finally {
    await fs.close();
  }
});

test('mkfs: the Linux kernel mounts the image, takes a file, and e2fsck stays clean', async (t) => {
  const loop = canLoopMount();
  if (!loop.ok) return skipBecause(t, `no loop mount here: ${loop.reason}`);
  requireE2fsprogs();
  for (const opts of [{}, { features: '^metadata_csum' }, { blockSize: 4096 }] as MkfsTargetOptions[]) {
    const img = imgPath('kernel');
    await mkfs(img, { sizeBytes: 64 * MiB, rootOwner: { uid: 1000, gid: 1000 }, ...opts });
    // Loop mounts work here: the kernel refusing our image (withKernelMount fails then) is the
    // failure this test looks for. Read-write, so the kernel takes a file.
    await withKernelMount(t, img, join(dir, `mnt-${counter++}`), (mnt) => {
      const ls = execFileSync('ls', ['-la', mnt]).toString();
      assert.match(ls, /drwx------ +2 root +root +\d+ .* lost\+found/);
      assert.equal(execFileSync('stat', ['-c', '%a %u %g %h', mnt]).toString().trim(), '755 1000 1000 3');
      writeFileSync(join(mnt, 'hello.txt'), 'hello from the kernel\n');
      mkdirSync(join(mnt, 'sub'));
      writeFileSync(join(mnt, 'sub', 'big.bin'), Buffer.alloc(3 * MiB, 7));
    }, { rw: true });
    assertFsckClean(img);
    const fs = await Ext4.open(img);
    assert.equal(new TextDecoder().decode(await fs.readFile('/hello.txt')), 'hello from the kernel\n');
    assert.equal((await fs.stat('/sub/big.bin')).size, 3 * MiB);
    await fs.close();
  }
});

test('mkfs: SOURCE_DATE_EPOCH and a fixed UUID give byte-identical images; another UUID does not', async () => {
  const env = { SOURCE_DATE_EPOCH: '1234567890' };
  const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
  const a = imgPath('repro-a');
  const b = imgPath('repro-b');
  const c = imgPath('repro-c');
  const ra = await mkfs(a, { sizeBytes: 64 * MiB, uuid: UUID, env });
  const rb = await mkfs(b, { sizeBytes: 64 * MiB, uuid: UUID, env });
  await mkfs(c, { sizeBytes: 64 * MiB, uuid: '99999999-2222-4333-8444-555555555555', env });
  assert.equal(ra.hashSeed, rb.hashSeed, 'the hash seed derives from the UUID');
  assert.equal(sha(a), sha(b));
  assert.notEqual(sha(a), sha(c));
  // Without SOURCE_DATE_EPOCH the hash seed is random.
  const d = await mkfs(imgPath('repro-d'), { sizeBytes: 8 * MiB, uuid: UUID, env: {} });
  const e = await mkfs(imgPath('repro-e'), { sizeBytes: 8 * MiB, uuid: UUID, env: {} });
  assert.notEqual(d.hashSeed, e.hashSeed);
});

test('mkfs: a 4 TiB sparse image is made in moments, writes little, and e2fsck passes', async (t) => {
  const img = imgPath('4t');
  const t0 = process.hrtime.bigint();
  let r: MkfsResult;
  try {
    r = await mkfs(img, { sizeBytes: 4 * TiB });
  } catch (e) {
    if (e instanceof PosixError && e.code === 'EFBIG') return skipBecause(t, `host filesystem: ${e.message}`);
    throw e;
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const du = statSync(img).blocks * 512;
  t.diagnostic(`4 TiB mkfs: ${ms.toFixed(0)} ms, ${r.groupCount} groups, ${(r.bytesWritten / MiB).toFixed(1)} MiB written, du ${(du / MiB).toFixed(1)} MiB, rss ${(process.memoryUsage().rss / MiB).toFixed(0)} MiB`);
  assert.equal(r.blocksCount, 1024 * 1024 * 1024);
  assert.equal(r.inodesCount, 4 * TiB / 32768, 'big: one inode per 32 KiB');
  assert.ok(du < 256 * MiB, `only metadata is written (du ${du})`);
  requireE2fsprogs();
  const f0 = process.hrtime.bigint();
  assertFsckClean(img);
  t.diagnostic(`e2fsck -fn on 4 TiB: ${(Number(process.hrtime.bigint() - f0) / 1e6).toFixed(0)} ms`);
  rmSync(img);
});

test('mkfs: a BlockDevice with stale contents — journal zeroed, lazy inode tables, e2fsck clean', async (t) => {
  requireE2fsprogs();
  for (const features of [undefined, '^metadata_csum', '^metadata_csum,^uninit_bg', '^flex_bg,^64bit']) {
    const data = seededRandom(99).fill(new Uint8Array(64 * MiB));
    const r = await mkfs(new MemDevice(data), { ...(features !== undefined ? { features } : {}), random: seededRandom(5), clock: fixedClock(TIME) });
    const img = imgPath('mem');
    writeFileSync(img, data);
    assertFsckClean(img);
    const fs = await Ext4.open(new MemDevice(data, true));
    assert.deepEqual(await fs.readdir('/'), ['lost+found']);
    await fs.close();
    assert.equal(r.uuid, (await mkfs(new MemDevice(new Uint8Array(8 * MiB)), { random: seededRandom(5) })).uuid, 'the seeded Random decides the UUID');
  }
  await assert.rejects(mkfs(new MemDevice(new Uint8Array(8 * MiB), true)), (e) => e instanceof PosixError && e.code === 'EROFS');
});

test('mkfs: bad options are typed errors, and leave an existing image untouched', async () => {
  const img = imgPath('keep');
  writeFileSync(img, Buffer.alloc(4096, 0xab));
  const cases: [MkfsTargetOptions, (e: unknown) => boolean][] = [
    [{ features: 'bogus' }, (e) => e instanceof PosixError && e.code === 'EINVAL' && /unknown feature "bogus"/.test(e.message)],
    [{ features: '^extent' }, (e) => e instanceof Incompatible],
    [{ features: 'resize_inode' }, (e) => e instanceof Incompatible && /online resize/.test(e.message)],
    [{ features: 'inline_data' }, (e) => e instanceof Incompatible],
    [{ features: '^metadata_csum,metadata_csum_seed' }, (e) => e instanceof Incompatible],
    [{ label: 'x'.repeat(17) }, (e) => e instanceof PosixError && /17 bytes/.test(e.message)],
    [{ blockSize: 8192 }, (e) => e instanceof PosixError && e.code === 'EINVAL'],
    [{ inodeSize: 8192 }, (e) => e instanceof PosixError && /inode size/.test(e.message)],
    [{ inodeSize: 200 }, (e) => e instanceof PosixError && /inode size/.test(e.message)],
    [{ uuid: 'not-a-uuid' }, (e) => e instanceof PosixError && /UUID/.test(e.message)],
    [{ sizeBytes: 4096 }, (e) => e instanceof PosixError && /too small/.test(e.message)],
    [{ inodesCount: 20, sizeBytes: 300 * MiB }, (e) => e instanceof PosixError && /reserved inodes/.test(e.message)],
  ];
  for (const [opts, ok] of cases) {
    await assert.rejects(mkfs(img, { sizeBytes: 8 * MiB, ...opts }), ok, JSON.stringify(opts));
    assert.ok(readFileSync(img).equals(Buffer.alloc(4096, 0xab)), `${JSON.stringify(opts)} changed the image`);
  }
  await assert.rejects(mkfs(join(dir, 'missing.img')), (e) => e instanceof PosixError && e.code === 'ENOENT');
  await assert.rejects(mkfs(dir, { sizeBytes: MiB }), (e) => e instanceof PosixError && e.code === 'EINVAL');
  // ^resize_inode and ^orphan_file name features mkfs never makes: accepted as no-ops.
  const r = await mkfs(img, { sizeBytes: 8 * MiB, features: ['^resize_inode', '^orphan_file', 'uninit_bg', '^metadata_csum'] });
  assert.ok(r.features.includes('gdt_csum') && !r.features.includes('metadata_csum'));
});

test('mkfs: an existing image keeps its size when none is given (rounded down to 4 KiB)', async () => {
  const img = imgPath('exist');
  writeFileSync(img, Buffer.alloc(0));
  truncateSync(img, 8 * MiB + 1000);
  const r = await mkfs(img);
  assert.equal(statSync(img).size, 8 * MiB + 1000);
  assert.equal(r.blocksCount * r.blockSize, 8 * MiB);
});

test('ext4ts mkfs: the command makes an image, prints a summary, and fails in one line', (t) => {
  const img = imgPath('cli');
  const run = (...args: string[]): { code: number | null; out: string; err: string } => {
    const r = spawnSync(process.execPath, [CLI, ...args]);
    return { code: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
  };
  const ok = run('mkfs', '-L', 'cli', '-U', UUID, '-O', '^has_journal', '-E', 'root_owner=5:6', '-N', '4096', img, '16M');
  assert.equal(ok.code, 0, ok.err);
  assert.match(ok.out, /^Creating filesystem with 16384 1k blocks and 4096 inodes$/m);
  assert.match(ok.out, new RegExp(`Filesystem UUID: ${UUID}`));
  assert.match(ok.out, /Superblock backups stored on blocks: \n\t8193$/m);
  const j = JSON.parse(run('mkfs', '--json', '-q', '-b', '4096', img, '4096').out) as MkfsResult;
  assert.equal(j.blocksCount, 4096, 'a bare size counts blocks when -b is given');
  assert.equal(statSync(img).size, 16 * MiB);
  const bad = run('mkfs', '-O', 'nonsense', img, '8M');
  assert.equal(bad.code, 1);
  assert.equal(bad.err.trim().split('\n').length, 1);
  assert.match(bad.err, /^ext4ts: EINVAL: unknown feature "nonsense"/);
  const badSize = run('mkfs', img, '12Q');
  assert.equal(badSize.code, 1);
  assert.match(badSize.err, /invalid size "12Q"/);
  requireE2fsprogs();
  assertFsckClean(img);
});

test('parseSize: mke2fs suffixes; bare numbers count KiB, or blocks with -b', () => {
  assert.equal(parseSize('64M', undefined), 64 * MiB);
  assert.equal(parseSize('1g', undefined), GiB);
  assert.equal(parseSize('2T', undefined), 2 * TiB);
  assert.equal(parseSize('100s', undefined), 51200);
  assert.equal(parseSize('1024', undefined), MiB);
  assert.equal(parseSize('1024', 4096), 4 * MiB);
  assert.throws(() => parseSize('-1', undefined), PosixError);
});

test('sizeTypeOf / defaultJournalBlocks / geometry: mke2fs.conf and libext2fs tables', () => {
  assert.deepEqual([MiB, 3 * MiB, 511 * MiB, 512 * MiB, 4 * TiB - 1, 4 * TiB, 16 * TiB].map((b) => sizeTypeOf(b).name),
    ['floppy', 'small', 'small', 'default', 'default', 'big', 'huge']);
  assert.deepEqual([2047, 2048, 32768, 262144, 524288, 4194304, 8388608, 16777216, 33554432].map(defaultJournalBlocks),
    [-1, 1024, 4096, 8192, 16384, 32768, 65536, 131072, 262144]);
  assert.deepEqual([1024, 2048, 4096].map(lostFoundBlockCount), [12, 8, 4]);
  // 300 MiB at 1 KiB: 38 groups of 2024 inodes (2022 rounded up to fill 506 table blocks).
  const g = computeGeometry({ blockSize: 1024, blocksCount: 307200, inodesWanted: 76800, inodeSize: 256, rBlocksCount: 15360, is64bit: true, flexBg: true, sparseSuper: true });
  assert.deepEqual([g.groupCount, g.inodesPerGroup, g.inodeTableBlocks, g.inodesCount], [38, 2024, 506, 76912]);
  // A last group too small for its own tables plus 50 blocks is dropped.
  const d = computeGeometry({ blockSize: 4096, blocksCount: 32768 + 100, inodesWanted: 8192, inodeSize: 256, rBlocksCount: 1643, is64bit: true, flexBg: true, sparseSuper: true });
  assert.deepEqual([d.blocksCount, d.groupCount], [32768, 1]);
  const f = applyFeatureEdits('^has_journal,uninit_bg,^flex_bg');
  assert.deepEqual([f.features.has_journal, f.features.gdt_csum, f.features.flex_bg], [false, true, false]);
});

/** ext2fs_get_free_blocks2's loop, literally, over a bitmap (the model for UsedSpace). */
function modelGetFree(used: boolean[], fdb: number, count: number, start: number, finish: number, num: number): number | undefined | 'forever' {
  let b = start === 0 ? fdb : start;
  const fin = finish === 0 ? start : finish;
  const n = num === 0 ? 1 : num;
  const free = (x: number): boolean => {
    if (x + n > count) return false;
    for (let i = x; i < x + n; i++) if (used[i]) return false;
    return true;
  };
  for (let steps = 0; steps < 4 * count + 20; steps++) {
    if (b + n - 1 >= count) {
      if (fin > start) return undefined;
      b = fdb;
    }
    if (free(b)) return b;
    b++;
    if (b === fin) return undefined;
  }
  return 'forever'; // the C loop would spin forever (mkfs never asks this); UsedSpace says no room
}

test('UsedSpace.getFreeBlocks: equals ext2fs_get_free_blocks2 on random maps', () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 1 }), fc.integer({ min: 8, max: 120 }),
    fc.array(fc.tuple(fc.nat(130), fc.integer({ min: 1, max: 12 })), { maxLength: 12 }),
    fc.nat(130), fc.nat(140), fc.integer({ min: 1, max: 10 }),
    (fdb, count, runs, start0, finish0, num) => {
      const space = new UsedSpace(fdb, count);
      const used: boolean[] = new Array<boolean>(count).fill(false);
      for (const [s, n] of runs) {
        if (s < fdb || s + n > count || !space.isFree(s, n)) continue;
        space.mark(s, n);
        for (let i = s; i < s + n; i++) used[i] = true;
      }
      const start = start0 % count;
      const finish = finish0 % (count + 10);
      const want = modelGetFree(used, fdb, count, start, finish, num);
      if (want === 'forever') {
        assert.equal(space.getFreeBlocks(start, finish, num), undefined);
        return;
      }
      assert.equal(space.getFreeBlocks(start, finish, num), want, `start ${start} finish ${finish} num ${num}`);
    }), { numRuns: 3000, seed: 20240601 });
});

test('seededRandom: the same seed gives the same bytes; different seeds differ', () => {
  const a = seededRandom(new Uint8Array([1, 2, 3])).fill(new Uint8Array(64));
  const b = seededRandom(new Uint8Array([1, 2, 3])).fill(new Uint8Array(64));
  const c = seededRandom(new Uint8Array([1, 2, 4])).fill(new Uint8Array(64));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  assert.notDeepEqual(seededRandom(1).fill(new Uint8Array(16)), seededRandom(2).fill(new Uint8Array(16)));
});
