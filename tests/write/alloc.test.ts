/**
 * The block and inode allocators (src/fs/alloc/balloc.ts, ialloc.ts) on real images made by
 * mkfs.ext4 in several configurations (4 KiB and 1 KiB blocks with flex_bg and uninit groups,
 * crc16 descriptors, no group checksums, meta_bg, no flex_bg with lazily zeroed inode tables).
 *
 * The oracles are e2fsprogs': after allocating blocks and inodes that nothing owns, `e2fsck -fn`
 * must report exactly those blocks and inodes as bitmap differences (and the directory counts
 * they imply) and nothing else; after freeing everything again it must find the filesystem
 * clean and `dumpe2fs` must show the free maps mkfs made.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getBalloc, blocksInGroup, numBaseMetaBlocks } from '../../src/fs/alloc/balloc.js';
import { allocInode, freeInode, inodeTableNeedsZero } from '../../src/fs/alloc/ialloc.js';
import type { BlockRun } from '../../src/fs/alloc/allocator.js';
import { FileDevice } from '../../src/blockdev/file-device.js';
import type { BlockDevice } from '../../src/blockdev/block-device.js';
import { BadCrc, Corrupt, PosixError } from '../../src/util/errors.js';
import { EXT4_BG_BLOCK_UNINIT, EXT4_BG_INODE_UNINIT } from '../../src/format/group-desc.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4Super } from '../../src/fs/super.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';

const dir = mkdtempSync(join(tmpdir(), 'ext4ts-alloc-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
let seq = 0;

/** An image file and its bytes (the MemDevice writes into `bytes`; `sync()` writes the file). */
export interface Img {
  path: string;
  bytes: Uint8Array;
}

/** A temp path for a big image a test makes itself. */
export function tempPath(name: string): string {
  return join(dir, name);
}

/** Runs mkfs.ext4 -q -F with `args` on a fresh `size` image and reads it into memory. */
export function mkfs(args: readonly string[], size: string): Img {
  const path = join(dir, `img${seq++}.img`);
  execFileSync('mkfs.ext4', ['-q', '-F', ...args, path, size], { stdio: 'pipe' });
  return { path, bytes: new Uint8Array(readFileSync(path)) };
}

/** Mounts an image's bytes read-write. */
export async function mountRw(img: Img): Promise<Ext4Super> {
  return Ext4Super.mount(new MemDevice(img.bytes), { readOnly: false });
}

/** Writes the in-memory bytes back to the image file (for e2fsck and dumpe2fs). */
export function syncFile(img: Img): void {
  writeFileSync(img.path, img.bytes);
}

/** What `e2fsck -fn` said, parsed. */
export interface Fsck {
  code: number;
  out: string;
  /** Blocks marked in use that e2fsck found unused ("-N" in "Block bitmap differences"). */
  blocksMinus: Set<number>;
  /** Blocks in use but marked free ("+N"). */
  blocksPlus: Set<number>;
  inodesMinus: Set<number>;
  inodesPlus: Set<number>;
  /** "Directories count wrong for group #g (x, counted=y)": g -> x - y. */
  dirsExcess: Map<number, number>;
  /** Every line that is none of the above nor e2fsck's usual chatter. */
  unexpected: string[];
}

const CHATTER = [
  /^$/, /^Pass \d[A-Z]?: /, /^e2fsck \d/, /^Fix\? no$/, /WARNING: Filesystem still has errors/,
  /: \d+\/\d+ files \([\d.]+% non-contiguous\), \d+\/\d+ blocks$/,
  /^Free (blocks|inodes) count wrong (for group #\d+ )?\(\d+, counted=\d+\)\.$/,
];

function addTokens(list: string, plus: Set<number>, minus: Set<number>, unexpected: string[]): void {
  for (const tok of list.trim().split(/\s+/)) {
    if (tok === '') continue;
    const m = /^([+-])(?:\((\d+)--(\d+)\)|(\d+))$/.exec(tok);
    if (m === null) {
      unexpected.push(`bad token ${tok}`);
      continue;
    }
    const lo = Number(m[2] ?? m[4]);
    const hi = Number(m[3] ?? m[4]);
    for (let n = lo; n <= hi; n++) (m[1] === '+' ? plus : minus).add(n);
  }
}

/** Writes the bytes to the file and runs e2fsck -fn on it. */
export function fsck(img: Img): Fsck {
  syncFile(img);
  const r = spawnSync('e2fsck', ['-fn', img.path], { encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`;
  const f: Fsck = {
    code: r.status ?? -1, out, blocksMinus: new Set(), blocksPlus: new Set(), inodesMinus: new Set(),
    inodesPlus: new Set(), dirsExcess: new Map(), unexpected: [],
  };
  for (const line of out.split('\n')) {
    const bd = /^(Block|Inode) bitmap differences:(.*)$/.exec(line);
    if (bd !== null) {
      if (bd[1] === 'Block') addTokens(bd[2] ?? '', f.blocksPlus, f.blocksMinus, f.unexpected);
      else addTokens(bd[2] ?? '', f.inodesPlus, f.inodesMinus, f.unexpected);
      continue;
    }
    const dc = /^Directories count wrong for group #(\d+) \((\d+), counted=(\d+)\)\.$/.exec(line);
    if (dc !== null) {
      f.dirsExcess.set(Number(dc[1]), Number(dc[2]) - Number(dc[3]));
      continue;
    }
    if (!CHATTER.some((re) => re.test(line))) f.unexpected.push(line);
  }
  return f;
}

/** One group as dumpe2fs shows it. */
export interface GroupDump {
  flags: string[];
  freeBlocks: number;
  freeInodes: number;
  dirs: number;
  unusedInodes: number;
  freeBlockRanges: string;
  freeInodeRanges: string;
  inodeTable: [number, number];
}

/** Writes the bytes to the file and parses `dumpe2fs` per group. */
export function dumpe2fs(img: Img): GroupDump[] {
  syncFile(img);
  const out = execFileSync('dumpe2fs', [img.path], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const groups: GroupDump[] = [];
  let cur: GroupDump | undefined;
  for (const line of out.split('\n')) {
    const g = /^Group (\d+): \(Blocks [^)]*\)(?: csum 0x[0-9a-f]+)?(?: \[([^\]]*)\])?/.exec(line);
    if (g !== null) {
      cur = {
        flags: g[2] === undefined ? [] : g[2].split(', '), freeBlocks: -1, freeInodes: -1, dirs: -1,
        unusedInodes: 0, freeBlockRanges: '', freeInodeRanges: '', inodeTable: [-1, -1],
      };
      groups.push(cur);
      continue;
    }
    if (cur === undefined) continue;
    const c = /^\s+(\d+) free blocks, (\d+) free inodes, (\d+) directories(?:, (\d+) unused inodes)?/.exec(line);
    if (c !== null) {
      cur.freeBlocks = Number(c[1]);
      cur.freeInodes = Number(c[2]);
      cur.dirs = Number(c[3]);
      cur.unusedInodes = Number(c[4] ?? 0);
    }
    const fb = /^\s+Free blocks: ?(.*)$/.exec(line);
    if (fb !== null) cur.freeBlockRanges = fb[1] ?? '';
    const fi = /^\s+Free inodes: ?(.*)$/.exec(line);
    if (fi !== null) cur.freeInodeRanges = fi[1] ?? '';
    const it = /^\s+Inode table at (\d+)-(\d+)/.exec(line);
    if (it !== null) cur.inodeTable = [Number(it[1]), Number(it[2])];
  }
  return groups;
}

/** The blocks of a list of runs, as a set. */
export function blocksOf(runs: readonly { pblk: number; len: number }[]): Set<number> {
  const out = new Set<number>();
  for (const r of runs) for (let b = r.pblk; b < r.pblk + r.len; b++) out.add(b);
  return out;
}

/** The first number of a dumpe2fs range list ("2199-4095, 5000"), or -1. */
export function firstOfRanges(ranges: string): number {
  const m = /^(\d+)/.exec(ranges.trim());
  return m === null ? -1 : Number(m[1]);
}

/** Sorted array of a set, for readable assertion diffs. */
export function sorted(s: Iterable<number>): number[] {
  return [...s].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------
// Variants and a workload shared by the oracle tests.

interface Variant {
  name: string;
  args: string[];
  size: string;
  /** mkfs leaves BLOCK_UNINIT / INODE_UNINIT groups (group descriptor checksums are on). */
  uninit: boolean;
}

// -g 4096 gives a 128 MiB 4 KiB-block image 8 groups; -N 4096 gives 512 inodes per group, so
// a few hundred inodes spill into INODE_UNINIT groups.
const V4K: Variant = { name: '4 KiB, metadata_csum, flex_bg', args: ['-b', '4096', '-g', '4096', '-N', '4096'], size: '128M', uninit: true };
const V1K: Variant = { name: '1 KiB, metadata_csum, flex_bg', args: ['-b', '1024', '-N', '4096'], size: '64M', uninit: true };
const VCRC16: Variant = {
  name: 'crc16 uninit_bg, 32-byte descriptors',
  args: ['-b', '4096', '-g', '4096', '-N', '4096', '-O', '^metadata_csum,^64bit,uninit_bg'], size: '128M', uninit: true,
};
const VNONE: Variant = {
  name: 'no group checksums', args: ['-b', '4096', '-g', '4096', '-N', '4096', '-O', '^metadata_csum,^uninit_bg'], size: '128M', uninit: false,
};
const VMETA: Variant = { name: 'meta_bg, 1 KiB', args: ['-b', '1024', '-N', '4096', '-O', 'meta_bg,^resize_inode'], size: '64M', uninit: true };
const VNOFLEX: Variant = {
  name: 'no flex_bg, lazy inode tables, 1 KiB',
  args: ['-b', '1024', '-N', '4096', '-O', '^flex_bg', '-E', 'lazy_itable_init=1,nodiscard'], size: '64M', uninit: true,
};
const VARIANTS = [V4K, V1K, VCRC16, VNONE, VMETA, VNOFLEX];

interface Workload {
  runs: BlockRun[];
  inodes: { ino: number; isDir: boolean }[];
}

/**
 * Allocates runs of 1, 7 and 130 blocks with goals in every group, one request for more than a
 * group, more inodes than one group holds (every 7th a directory, all made in the root) and
 * files whose parents are in other groups.
 */
async function workload(s: Ext4Super): Promise<Workload> {
  const b = getBalloc(s);
  const runs: BlockRun[] = [];
  for (let g = 0; g < s.groupCount; g++) {
    const n = blocksInGroup(s, g);
    for (const [frac, len] of [[0.1, 1], [0.5, 7], [0.8, 130]] as const) {
      runs.push(await b.allocBlocks({ goal: s.groupFirstBlock(g) + Math.floor(n * frac), maxLen: len }));
    }
  }
  runs.push(await b.allocBlocks({ goal: 0, maxLen: 100_000 }));
  const inodes: { ino: number; isDir: boolean }[] = [];
  for (let i = 0; i < s.inodesPerGroup + 40; i++) {
    const isDir = i % 7 === 0;
    inodes.push({ ino: await allocInode(s, { parentIno: 2, isDir }), isDir });
  }
  for (const g of [3, s.groupCount - 1]) {
    const isDir = g % 2 === 0;
    inodes.push({ ino: await allocInode(s, { parentIno: g * s.inodesPerGroup + 1, isDir }), isDir });
  }
  return { runs, inodes };
}

function isEnospc(e: unknown): boolean {
  return e instanceof PosixError && e.code === 'ENOSPC' && e.errno === 28;
}

// ---------------------------------------------------------------------------------------------
// Oracle (1) and (2) on every variant.

for (const v of VARIANTS) {
  test(`Balloc+ialloc (${v.name}): allocating then freeing everything leaves e2fsck clean and the free maps as mkfs made them`, async () => {
    const img = mkfs(v.args, v.size);
    const before = dumpe2fs(img);
    const s = await mountRw(img);
    getBalloc(s).debugChecks = true;
    const w = await workload(s);
    await s.commit();
    for (const r of [...w.runs].reverse()) await getBalloc(s).freeBlocks(r.pblk, r.len);
    for (const i of w.inodes) await freeInode(s, i.ino, i.isDir);
    await s.close();
    const f = fsck(img);
    assert.equal(f.code, 0, f.out);
    const after = dumpe2fs(img);
    assert.equal(after.length, before.length);
    after.forEach((g, i) => {
      const b = before[i]!;
      assert.deepEqual(
        [g.freeBlocks, g.freeInodes, g.dirs, g.freeBlockRanges, g.freeInodeRanges],
        [b.freeBlocks, b.freeInodes, b.dirs, b.freeBlockRanges, b.freeInodeRanges], `group ${i}`);
    });
    if (v.uninit) {
      const cleared = (flag: string): boolean => after.some((g, i) => before[i]!.flags.includes(flag) && !g.flags.includes(flag));
      assert.ok(cleared('BLOCK_UNINIT'), 'some BLOCK_UNINIT group was initialised');
      assert.ok(cleared('INODE_UNINIT'), 'some INODE_UNINIT group was initialised');
    } else {
      assert.ok(after.every((g) => !g.flags.includes('BLOCK_UNINIT') && !g.flags.includes('INODE_UNINIT')));
    }
  });

  test(`Balloc+ialloc (${v.name}): unowned allocations are exactly e2fsck's bitmap differences`, async () => {
    const img = mkfs(v.args, v.size);
    const before = dumpe2fs(img);
    const s = await mountRw(img);
    getBalloc(s).debugChecks = true;
    const w = await workload(s);
    const { firstDataBlock: fdb, blocksPerGroup: bpg, inodesPerGroup: ipg } = s;
    await s.close();
    const blocks = blocksOf(w.runs);
    assert.equal(blocks.size, w.runs.reduce((n, r) => n + r.len, 0), 'runs are disjoint');
    const f = fsck(img);
    assert.deepEqual(f.unexpected, [], f.out);
    assert.deepEqual(sorted(f.blocksMinus), sorted(blocks));
    assert.deepEqual(sorted(f.blocksPlus), []);
    assert.deepEqual(sorted(f.inodesMinus), sorted(w.inodes.map((i) => i.ino)));
    assert.deepEqual(sorted(f.inodesPlus), []);
    const dirs = new Map<number, number>();
    for (const i of w.inodes) if (i.isDir) dirs.set(Math.floor((i.ino - 1) / ipg), (dirs.get(Math.floor((i.ino - 1) / ipg)) ?? 0) + 1);
    assert.deepEqual([...f.dirsExcess].sort(), [...dirs].sort());
    const after = dumpe2fs(img);
    const perGroup = new Map<number, number>();
    for (const b of blocks) perGroup.set(Math.floor((b - fdb) / bpg), (perGroup.get(Math.floor((b - fdb) / bpg)) ?? 0) + 1);
    after.forEach((g, i) => assert.equal(before[i]!.freeBlocks - g.freeBlocks, perGroup.get(i) ?? 0, `group ${i} free blocks`));
  });
}

// ---------------------------------------------------------------------------------------------
// Oracle (3): goals and long runs.

test('Balloc.freeBlocks: freed blocks are not reused before the next commit (an on-disk tree may still point at them), unless space runs out', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const s = await mountRw(img);
  const b = getBalloc(s);
  const g2 = s.groupFirstBlock(2) + 1000;
  assert.deepEqual(await b.allocBlocks({ goal: g2, maxLen: 4 }), { pblk: g2, len: 4 });
  const free0 = b.freeBlocksCount();
  await b.freeBlocks(g2, 4);
  assert.equal(b.freeBlocksCount(), free0 + 4, 'counted free at once (statfs, reservations)');
  assert.notEqual((await b.allocBlocks({ goal: g2, maxLen: 1 })).pblk, g2, 'not reused before the commit');
  await assert.rejects(b.freeBlocks(g2 + 1, 1), /freed twice before a commit/);
  await s.commit();
  assert.deepEqual(await b.allocBlocks({ goal: g2, maxLen: 2 }), { pblk: g2, len: 2 }, 'reusable after the commit');
  await s.close();
  assert.deepEqual(fsck(img).unexpected, []);
});

test('Balloc.allocBlocks: takes the goal, then the first long-enough run after it, and a whole run elsewhere rather than fragments', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const d = dumpe2fs(img);
  const s = await mountRw(img);
  const b = getBalloc(s);
  b.debugChecks = true;
  const first = await b.allocBlocks({ goal: b.goalForInode(12), maxLen: 1 });
  assert.equal(first.pblk, firstOfRanges(d[0]!.freeBlockRanges), 'goalForInode leads to the first free data block');
  const g2 = s.groupFirstBlock(2) + 1000;
  assert.deepEqual(await b.allocBlocks({ goal: g2, maxLen: 16 }), { pblk: g2, len: 16 });
  assert.deepEqual(await b.allocBlocks({ goal: g2, maxLen: 4 }), { pblk: g2 + 16, len: 4 });
  // A 2-block hole at the goal is too short for 8: the first run of 8 after it is taken.
  await b.freeBlocks(g2 + 5, 2);
  // Freed blocks are reused only after the commit that frees them is on disk.
  await s.commit();
  assert.deepEqual(await b.allocBlocks({ goal: g2 + 5, maxLen: 8 }), { pblk: g2 + 20, len: 8 });
  assert.deepEqual(await b.allocBlocks({ goal: g2 + 5, maxLen: 8, minLen: 1 }), { pblk: g2 + 28, len: 8 });
  // Fill group 3 block by block, then punch 1-block holes: an 8-block request near them is
  // served whole from another group, a 1-block request takes the hole at its goal.
  const n3 = s.group(3).freeBlocksCount;
  const singles: number[] = [];
  for (let i = 0; i < n3; i++) singles.push((await b.allocBlocks({ goal: s.groupFirstBlock(3), maxLen: 1 })).pblk);
  assert.equal(s.group(3).freeBlocksCount, 0);
  assert.ok(singles.every((p) => Math.floor(p / s.blocksPerGroup) === 3), 'a 1-block request stays in the goal group');
  for (let i = 0; i < 40; i += 2) await b.freeBlocks(singles[i]!, 1);
  await s.commit();
  const r = await b.allocBlocks({ goal: singles[0]!, maxLen: 8 });
  assert.equal(r.len, 8);
  assert.notEqual(Math.floor(r.pblk / s.blocksPerGroup), 3);
  assert.deepEqual(await b.allocBlocks({ goal: singles[0]!, maxLen: 1 }), { pblk: singles[0]!, len: 1 });
  await s.close();
  assert.deepEqual(fsck(img).unexpected, []);
});

test('Balloc.allocBlocks: with no run of maxLen anywhere, the longest run of at least minLen, then ENOSPC', async () => {
  const img = mkfs(V1K.args, V1K.size);
  const s = await mountRw(img);
  const b = getBalloc(s);
  b.debugChecks = true;
  const runs: BlockRun[] = [];
  for (;;) {
    try {
      runs.push(await b.allocBlocks({ goal: 0, maxLen: 1 << 20 }));
    } catch (e) {
      assert.ok(isEnospc(e), String(e));
      break;
    }
  }
  const hole = async (group: number, len: number): Promise<BlockRun> => {
    // OK to use `!`: every group has a run of at least 100 blocks after the fill.
    const run = runs.find((x) => Math.floor((x.pblk - s.firstDataBlock) / s.blocksPerGroup) === group && x.len >= 100)!;
    await b.freeBlocks(run.pblk + 50, len);
    return { pblk: run.pblk + 50, len };
  };
  const h3 = await hole(1, 3);
  const h7 = await hole(5, 7);
  const h5 = await hole(6, 5);
  assert.equal(b.freeBlocksCount(), 15);
  assert.deepEqual(await b.allocBlocks({ goal: s.firstDataBlock, maxLen: 10 }), h7);
  await assert.rejects(b.allocBlocks({ goal: 0, maxLen: 10, minLen: 6 }), isEnospc);
  assert.deepEqual(await b.allocBlocks({ goal: 0, maxLen: 10, minLen: 2 }), h5);
  assert.deepEqual(await b.allocBlocks({ goal: 0, maxLen: 10 }), h3);
  await assert.rejects(b.allocBlocks({ goal: 0, maxLen: 1 }), isEnospc);
  await s.close();
  const f = fsck(img);
  assert.deepEqual(f.unexpected, [], f.out);
  assert.equal(f.blocksPlus.size, 0);
});

// ---------------------------------------------------------------------------------------------
// Oracle (4): ENOSPC.

for (const v of [V4K, V1K]) {
  test(`Balloc+ialloc (${v.name}): filling every block and inode ends in a clean ENOSPC that changes nothing`, async () => {
    const img = mkfs(v.args, v.size);
    const s = await mountRw(img);
    const b = getBalloc(s);
    b.debugChecks = true;
    const freeBlocks = b.freeBlocksCount();
    const freeInodes = s.groups.reduce((n, gd) => n + gd.freeInodesCount, 0);
    const runs: BlockRun[] = [];
    for (;;) {
      try {
        runs.push(await b.allocBlocks({ goal: 0, maxLen: 5000, minLen: 1 }));
      } catch (e) {
        assert.ok(isEnospc(e), String(e));
        break;
      }
    }
    assert.equal(runs.reduce((n, r) => n + r.len, 0), freeBlocks);
    assert.equal(b.freeBlocksCount(), 0);
    const inodes: number[] = [];
    for (;;) {
      try {
        inodes.push(await allocInode(s, { parentIno: 2, isDir: inodes.length % 50 === 0 }));
      } catch (e) {
        assert.ok(isEnospc(e), String(e));
        break;
      }
    }
    assert.equal(inodes.length, freeInodes);
    await s.commit();
    const snapshot = img.bytes.slice();
    await assert.rejects(b.allocBlocks({ goal: 12345, maxLen: 1 }), isEnospc);
    await assert.rejects(allocInode(s, { parentIno: 2, isDir: true }), isEnospc);
    await s.commit();
    assert.ok(Buffer.from(snapshot).equals(Buffer.from(img.bytes)), 'a failed allocation wrote nothing');
    await s.close();
    const f = fsck(img);
    assert.deepEqual(f.unexpected, [], f.out);
    assert.deepEqual(sorted(f.blocksMinus), sorted(blocksOf(runs)));
    assert.deepEqual(sorted(f.inodesMinus), sorted(inodes));
  });
}

test('Balloc.allocBlocks: a minLen longer than a group is ENOSPC at once', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const s = await mountRw(img);
  await assert.rejects(getBalloc(s).allocBlocks({ goal: 0, maxLen: 10_000, minLen: 5000 }), isEnospc);
  await s.close();
});

// ---------------------------------------------------------------------------------------------
// Oracle (5): uninitialised groups.

for (const v of [V4K, V1K, VCRC16, VMETA, VNOFLEX]) {
  test(`Balloc (${v.name}): the first allocation in each BLOCK_UNINIT group starts at its first free block and clears the flag`, async () => {
    const img = mkfs(v.args, v.size);
    const d = dumpe2fs(img);
    const s = await mountRw(img);
    const b = getBalloc(s);
    b.debugChecks = true;
    const runs: BlockRun[] = [];
    const touched: number[] = [];
    for (let g = 0; g < s.groupCount; g++) {
      if ((s.group(g).flags & EXT4_BG_BLOCK_UNINIT) === 0) continue;
      assert.ok(d[g]!.flags.includes('BLOCK_UNINIT'));
      const r = await b.allocBlocks({ goal: s.groupFirstBlock(g), maxLen: 10 });
      assert.deepEqual(r, { pblk: firstOfRanges(d[g]!.freeBlockRanges), len: 10 }, `group ${g}`);
      if (s.features.flexBg) {
        // With flex_bg the group's bitmaps and inode table live in its flex group's first group.
        assert.equal(r.pblk, s.groupFirstBlock(g) + numBaseMetaBlocks(s, g), `group ${g}: data starts after its base metadata`);
      }
      assert.equal(s.group(g).flags & EXT4_BG_BLOCK_UNINIT, 0);
      runs.push(r);
      touched.push(g);
    }
    assert.ok(touched.length > 0, 'mkfs made BLOCK_UNINIT groups');
    await s.close();
    const after = dumpe2fs(img);
    for (const g of touched) {
      assert.ok(!after[g]!.flags.includes('BLOCK_UNINIT'), `group ${g} flag on disk`);
      assert.equal(after[g]!.freeBlocks, d[g]!.freeBlocks - 10);
    }
    const f = fsck(img);
    assert.deepEqual(f.unexpected, [], f.out);
    assert.deepEqual(sorted(f.blocksMinus), sorted(blocksOf(runs)));
  });
}

test('allocInode (no flex_bg, lazy inode tables): an INODE_UNINIT group is initialised, itable_unused lowered, garbage records zeroed', async () => {
  const img = mkfs(VNOFLEX.args, VNOFLEX.size);
  const d = dumpe2fs(img);
  const g = d.findIndex((x, i) => i > 0 && x.flags.includes('INODE_UNINIT') && x.flags.includes('BLOCK_UNINIT'));
  assert.ok(g > 0, 'an INODE_UNINIT + BLOCK_UNINIT group exists');
  assert.ok(!d[g]!.flags.includes('ITABLE_ZEROED'));
  // What a never-zeroed inode table may hold: garbage that e2fsck would read as inodes.
  const bs = 1024;
  const [t0, t1] = d[g]!.inodeTable;
  img.bytes.fill(0xa5, t0 * bs, (t1 + 1) * bs);
  const s = await mountRw(img);
  getBalloc(s).debugChecks = true;
  const ipg = s.inodesPerGroup;
  assert.ok(inodeTableNeedsZero(s, g));
  const a = await allocInode(s, { parentIno: g * ipg + 1, isDir: false });
  assert.equal(a, g * ipg + 1);
  const gd = s.group(g);
  assert.equal(gd.flags & (EXT4_BG_INODE_UNINIT | EXT4_BG_BLOCK_UNINIT), 0, 'both uninit flags cleared');
  assert.equal(gd.itableUnused, ipg - 1);
  const c = await allocInode(s, { parentIno: g * ipg + 1, isDir: false });
  assert.equal(c, g * ipg + 2);
  assert.equal(gd.itableUnused, ipg - 2);
  await freeInode(s, a, false);
  assert.equal(gd.itableUnused, ipg - 2, 'freeing does not raise itable_unused');
  assert.equal(gd.freeInodesCount, ipg - 1);
  const isz = s.inodeSize;
  await s.close();
  const rec = img.bytes.subarray(t0 * bs + isz, t0 * bs + 2 * isz);
  assert.ok(rec.every((x) => x === 0), 'the new record was zeroed');
  const after = dumpe2fs(img);
  assert.ok(!after[g]!.flags.includes('INODE_UNINIT') && !after[g]!.flags.includes('BLOCK_UNINIT'));
  assert.equal(after[g]!.unusedInodes, ipg - 2);
  const f = fsck(img);
  assert.deepEqual(f.unexpected, [], f.out);
  assert.deepEqual(sorted(f.inodesMinus), [c]);
  assert.equal(f.blocksMinus.size + f.blocksPlus.size, 0);
});

test('allocInode: top-level directories spread over the roomy flex groups, files stay with their parent', async () => {
  const img = mkfs(['-b', '1024', '-N', '4096', '-G', '2'], '64M');
  const s = await mountRw(img);
  getBalloc(s).debugChecks = true;
  const ipg = s.inodesPerGroup;
  const flexOf = (ino: number): number => Math.floor(Math.floor((ino - 1) / ipg) / 2);
  // Flex group 0 holds the reserved inodes (fewer free inodes than average) and flex group 1
  // the journal (fewer free blocks than average), so Orlov passes them over.
  const dirs: number[] = [];
  for (let i = 0; i < 4; i++) dirs.push(await allocInode(s, { parentIno: 2, isDir: true }));
  assert.deepEqual(dirs.map(flexOf), [2, 3, 2, 3], `top-level directories alternate: ${dirs}`);
  const sub = await allocInode(s, { parentIno: dirs[0]!, isDir: true });
  assert.equal(flexOf(sub), flexOf(dirs[0]!), 'a subdirectory stays near its parent');
  for (const dir of dirs) {
    const file = await allocInode(s, { parentIno: dir, isDir: false });
    assert.equal(flexOf(file), flexOf(dir), 'a file goes to its parent\'s flex group');
  }
  await s.close();
  const f = fsck(img);
  assert.deepEqual(f.unexpected, [], f.out);
});

// ---------------------------------------------------------------------------------------------
// Oracle (6) and input validation: corruption is reported, and nothing changes.

/** Byte offset of group 0's block (or inode) bitmap in an image with `bs`-byte blocks. */
async function bitmapOffset(img: Img, which: 'block' | 'inode'): Promise<number> {
  const s = await Ext4Super.mount(new MemDevice(img.bytes, true), { readOnly: true });
  const gd = s.group(0);
  const off = (which === 'block' ? gd.blockBitmap : gd.inodeBitmap) * s.blockSize;
  await s.close();
  return off;
}

test('Balloc.readBlockBitmap: a flipped bit in a block bitmap is EFSBADCRC naming group and block', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const off = await bitmapOffset(img, 'block');
  img.bytes[off + 500]! ^= 0x10; // a free block of group 0
  const s = await mountRw(img);
  await assert.rejects(getBalloc(s).allocBlocks({ goal: 0, maxLen: 1 }),
    (e) => e instanceof BadCrc && e.code === 'EFSBADCRC' && /block bitmap .*group 0/.test(e.message) && e.block === off / 4096);
  await s.close();
});

test('readInodeBitmap: a flipped bit in an inode bitmap is EFSBADCRC', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const off = await bitmapOffset(img, 'inode');
  img.bytes[off + 40]! ^= 0x01;
  const s = await mountRw(img);
  await assert.rejects(allocInode(s, { parentIno: 2, isDir: false }),
    (e) => e instanceof BadCrc && /inode bitmap .*group 0/.test(e.message));
  await s.close();
});

test('Balloc.readBlockBitmap: an inode table marked free, or a free count that disagrees, is Corrupt naming group and block', async () => {
  const img = mkfs(VNONE.args, VNONE.size);
  const d = dumpe2fs(img);
  const off = await bitmapOffset(img, 'block');
  const it = d[0]!.inodeTable[0];
  img.bytes[off + (it >> 3)]! &= ~(1 << (it & 7));
  let s = await mountRw(img);
  await assert.rejects(getBalloc(s).allocBlocks({ goal: 0, maxLen: 1 }),
    (e) => e instanceof Corrupt && e.code === 'EFSCORRUPTED' && e.message.includes(`block ${it} (the group's inode table) free`) && /group 0/.test(e.message));
  await s.close();
  img.bytes[off + (it >> 3)]! |= 1 << (it & 7);
  img.bytes[off + 400]! |= 0x01; // block 3200, free, now marked in use: one more than counted
  s = await mountRw(img);
  await assert.rejects(getBalloc(s).allocBlocks({ goal: 0, maxLen: 1 }),
    (e) => e instanceof Corrupt && /free blocks but the group descriptor says/.test(e.message));
  await s.close();
});

test('Balloc.freeBlocks / freeInode: bad frees are Corrupt and change nothing', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const s = await mountRw(img);
  const b = getBalloc(s);
  b.debugChecks = true;
  const g5end = s.groupFirstBlock(6) - 10;
  const r1 = await b.allocBlocks({ goal: g5end, maxLen: 10 });
  const r2 = await b.allocBlocks({ goal: s.groupFirstBlock(6), maxLen: 5 });
  assert.deepEqual([r1, r2], [{ pblk: g5end, len: 10 }, { pblk: s.groupFirstBlock(6), len: 5 }]);
  const ino = await allocInode(s, { parentIno: 2, isDir: false });
  await s.commit();
  const snapshot = img.bytes.slice();
  const corrupt = (re: RegExp) => (e: unknown): boolean => e instanceof Corrupt && re.test(e.message);
  await assert.rejects(b.freeBlocks(g5end, 16), corrupt(new RegExp(`freeing free block ${s.groupFirstBlock(6) + 5}`)));
  await assert.rejects(b.freeBlocks(g5end - 1, 2), corrupt(new RegExp(`freeing free block ${g5end - 1}`)));
  await assert.rejects(b.freeBlocks(s.group(0).blockBitmap, 1), corrupt(/freeing filesystem metadata block/));
  await assert.rejects(b.freeBlocks(0, 1), corrupt(/freeing filesystem metadata block 0/));
  await assert.rejects(b.freeBlocks(s.blocksCount - 1, 2), corrupt(/outside the filesystem/));
  await assert.rejects(freeInode(s, 5, false), corrupt(/freeing reserved or nonexistent inode 5/));
  await assert.rejects(freeInode(s, ino + 1, false), corrupt(new RegExp(`freeing free inode ${ino + 1}`)));
  await s.commit();
  assert.ok(Buffer.from(snapshot).equals(Buffer.from(img.bytes)), 'failed frees wrote nothing');
  // A free across the group boundary.
  await b.freeBlocks(g5end, 15);
  await freeInode(s, ino, false);
  await s.close();
  const f = fsck(img);
  assert.equal(f.code, 0, f.out);
});

test('Balloc/allocInode: a read-only mount refuses with EROFS', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const s = await Ext4Super.mount(new MemDevice(img.bytes, true), { readOnly: true });
  await assert.rejects(getBalloc(s).allocBlocks({ goal: 0, maxLen: 1 }), (e) => e instanceof PosixError && e.code === 'EROFS');
  await assert.rejects(allocInode(s, { parentIno: 2, isDir: false }), (e) => e instanceof PosixError && e.code === 'EROFS');
  await s.close();
});

test('Balloc/allocInode: concurrent requests never share a block or an inode', async () => {
  const img = mkfs(V4K.args, V4K.size);
  const s = await mountRw(img);
  const b = getBalloc(s);
  b.debugChecks = true;
  const runs = await Promise.all(Array.from({ length: 64 }, (_, i) => b.allocBlocks({ goal: s.groupFirstBlock(i % 8), maxLen: 1 + (i % 5) })));
  const inos = await Promise.all(Array.from({ length: 64 }, (_, i) => allocInode(s, { parentIno: 2, isDir: i % 3 === 0 })));
  assert.equal(blocksOf(runs).size, runs.reduce((n, r) => n + r.len, 0));
  assert.equal(new Set(inos).size, 64);
  await s.close();
  const f = fsck(img);
  assert.deepEqual(f.unexpected, [], f.out);
  assert.deepEqual(sorted(f.blocksMinus), sorted(blocksOf(runs)));
  assert.deepEqual(sorted(f.inodesMinus), sorted(inos));
});

// ---------------------------------------------------------------------------------------------
// Speed: a 1 TiB filesystem.

/** A device that counts reads. */
class CountingDevice implements BlockDevice {
  reads = 0;
  constructor(private readonly inner: BlockDevice) {}
  get sizeBytes(): number { return this.inner.sizeBytes; }
  get sectorSize(): number { return this.inner.sectorSize; }
  get maxRequestBytes(): number { return this.inner.maxRequestBytes; }
  get readOnly(): boolean { return this.inner.readOnly; }
  read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    this.reads++;
    return this.inner.read(offsetBytes, dst);
  }
  write(offsetBytes: number, src: Uint8Array): Promise<void> { return this.inner.write(offsetBytes, src); }
  flush(): Promise<void> { return this.inner.flush(); }
  close(): Promise<void> { return this.inner.close(); }
}

test('Balloc: allocations in a 1 TiB filesystem (8192 groups) read at most one bitmap each', async () => {
  const path = tempPath('big.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', '^has_journal', '-E', 'lazy_itable_init=1,nodiscard', path, '1T'], { stdio: 'pipe' });
  const dev = new CountingDevice(await FileDevice.open(path));
  const s = await Ext4Super.mount(dev, { readOnly: false });
  assert.equal(s.groupCount, 8192);
  const b = getBalloc(s);
  b.debugChecks = true;
  const runs: BlockRun[] = [];
  const reads = async <T>(max: number, what: string, fn: () => Promise<T>): Promise<T> => {
    const before = dev.reads;
    const t = await fn();
    assert.ok(dev.reads - before <= max, `${what}: ${dev.reads - before} reads`);
    return t;
  };
  runs.push(await reads(1, 'near the root', () => b.allocBlocks({ goal: b.goalForInode(12), maxLen: 1 })));
  const far = 5000 * s.inodesPerGroup + 1;
  runs.push(await reads(1, 'far flex group', () => b.allocBlocks({ goal: b.goalForInode(far), maxLen: 8 })));
  assert.equal(Math.floor(runs[1]!.pblk / s.blocksPerGroup), 5000 - (5000 % 16), 'in the far flex group');
  runs.push(await reads(1, 'a whole group', () => b.allocBlocks({ goal: s.groupFirstBlock(7000), maxLen: 32768 })));
  assert.equal(runs[2]!.len, 32768);
  const ino = await reads(2, 'an inode', () => allocInode(s, { parentIno: 2, isDir: false }));
  await reads(0, 'a free', () => b.freeBlocks(runs[0]!.pblk, 1));
  runs.shift();
  await s.close();
  const out = spawnSync('e2fsck', ['-fn', path], { encoding: 'utf8' }).stdout;
  assert.match(out, new RegExp(`Inode bitmap differences:\\s+-${ino}\\n`));
  const blocks = sorted(blocksOf(runs));
  assert.match(out, new RegExp(`Block bitmap differences:\\s+-\\(${blocks[0]}--${blocks[7]}\\) -\\(${blocks[8]}--${blocks[blocks.length - 1]}\\)\\n`));
});
