/**
 * Unit tests for format/inode.ts and format/extent.ts on hand-built bytes: timestamp encoding
 * with epoch bits (pre-1970 and post-2038), uid/gid high bits, checksum fields, device numbers,
 * and every rejection of parseExtentNode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  Inode, INODE_VIEW_SIZE, inodeTime, setInodeTime, setInodeUid, inodeUid, setInodeGid, inodeGid,
  setInodeCsum, verifyInodeCsum, decodeRdev,
} from '../../../src/format/inode.js';
import {
  ExtentHeader, Extent, ExtentIdx, parseExtentNode, setExtentLen, setEePblk, setEiLeaf, eeActualLen,
  isUnwritten, EXT4_EXT_MAGIC, setExtentBlockCsum, verifyExtentBlockCsum,
} from '../../../src/format/extent.js';
import { Corrupt, BadCrc } from '../../../src/util/errors.js';

function newInode(extra = 32): InstanceType<typeof Inode> {
  const v = new Inode(new Uint8Array(INODE_VIEW_SIZE), 0);
  v.i_extra_isize = extra;
  return v;
}

test('inodeTime/setInodeTime: round trip over the whole 34-bit range with nanoseconds', () => {
  fc.assert(fc.property(
    fc.integer({ min: -(2 ** 31), max: 2 ** 34 - 2 ** 31 - 1 }), fc.integer({ min: 0, max: 999_999_999 }),
    (sec, nsec) => {
      const v = newInode();
      setInodeTime(v, 'mtime', { sec, nsec }, 256);
      assert.deepEqual(inodeTime(v, 'mtime', 256), { sec, nsec });
    }), { numRuns: 2000 });
});

test('inodeTime: known encodings (1969, 2038+, 2242) match the kernel rules', () => {
  const v = newInode();
  setInodeTime(v, 'atime', { sec: -14182940, nsec: 5 }, 256); // 1969-07-20
  assert.equal(v.i_atime, (-14182940) >>> 0);
  assert.equal(v.i_atime_extra & 3, 0);
  setInodeTime(v, 'mtime', { sec: 2 ** 31, nsec: 0 }, 256); // 2038-01-19T03:14:08Z
  assert.equal(v.i_mtime_extra & 3, 1);
  assert.equal(v.i_mtime, 0x8000_0000);
  setInodeTime(v, 'ctime', { sec: 8574383600, nsec: 123 }, 256); // 2241/2242
  assert.deepEqual(inodeTime(v, 'ctime', 256), { sec: 8574383600, nsec: 123 });
});

test('inodeTime: a 128-byte inode has no nanoseconds and no crtime', () => {
  const v = newInode(0);
  setInodeTime(v, 'mtime', { sec: -5, nsec: 999 }, 128);
  assert.deepEqual(inodeTime(v, 'mtime', 128), { sec: -5, nsec: 0 });
  assert.equal(inodeTime(v, 'crtime', 128), undefined);
});

test('inodeUid/inodeGid: 32-bit owners use the high 16 bits', () => {
  const v = newInode();
  setInodeUid(v, 100000);
  setInodeGid(v, 0xfffffffe);
  assert.equal(inodeUid(v), 100000);
  assert.equal(inodeGid(v), 0xfffffffe);
  assert.equal(v.i_uid, 100000 & 0xffff);
});

test('verifyInodeCsum: accepts its own checksum, rejects a flipped byte with BadCrc', () => {
  const rec = new Uint8Array(256);
  const v = new Inode(rec, 0);
  v.i_mode = 0o100644;
  v.i_extra_isize = 32;
  v.i_generation = 77;
  setInodeCsum(v, rec, 12, 0x1234);
  verifyInodeCsum(v, rec, 12, 0x1234, 5);
  rec[200]! ^= 1;
  assert.throws(() => verifyInodeCsum(v, rec, 12, 0x1234, 5), (e) => e instanceof BadCrc && /inode.*\(inode 12\)/.test(e.message));
});

test('decodeRdev: old and new encodings', () => {
  const b = new Uint8Array(60);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, (8 << 8) | 1, true);
  assert.deepEqual(decodeRdev(b), { major: 8, minor: 1 });
  dv.setUint32(0, 0, true);
  dv.setUint32(4, (300 & 0xff) | (259 << 8) | ((300 & ~0xff) << 12), true);
  assert.deepEqual(decodeRdev(b), { major: 259, minor: 300 });
});

/** Builds a 60-byte root node with the given leaf extents. */
function root(extents: { lblk: number; len: number; pblk: number; unwritten?: boolean }[], depth = 0, max = 4): Uint8Array {
  const b = new Uint8Array(60);
  const h = new ExtentHeader(b, 0);
  h.eh_magic = EXT4_EXT_MAGIC;
  h.eh_entries = extents.length;
  h.eh_max = max;
  h.eh_depth = depth;
  extents.forEach((x, i) => {
    if (depth === 0) {
      const e = new Extent(b, 12 + 12 * i);
      e.ee_block = x.lblk;
      setExtentLen(e, x.len, x.unwritten ?? false);
      setEePblk(e, x.pblk);
    } else {
      const ix = new ExtentIdx(b, 12 + 12 * i);
      ix.ei_block = x.lblk;
      setEiLeaf(ix, x.pblk);
    }
  });
  return b;
}
const CTX = { ino: 12, block: undefined, expectDepth: 0, blocksCount: 1000, firstDataBlock: 1 };

test('parseExtentNode: parses leaves with the unwritten bit masked', () => {
  const n = parseExtentNode(root([{ lblk: 0, len: 10, pblk: 100 }, { lblk: 10, len: 32767, pblk: 200, unwritten: true }]), { ...CTX, blocksCount: 40000 });
  assert.deepEqual(n.leaves, [
    { lblk: 0, len: 10, pblk: 100, unwritten: false },
    { lblk: 10, len: 32767, pblk: 200, unwritten: true },
  ]);
  const e = new Extent(root([{ lblk: 0, len: 32768, pblk: 5 }]), 12);
  assert.equal(eeActualLen(e), 32768);
  assert.equal(isUnwritten(e), false);
});

const bad: { desc: string; node: Uint8Array; ctx?: Partial<typeof CTX>; re: RegExp }[] = [
  { desc: 'bad magic', node: new Uint8Array(60), re: /extent header \(inode root\) magic 0x0000 \(inode 12\)/ },
  { desc: 'depth above 5', node: root([], 6), ctx: { expectDepth: 6 }, re: /depth 6 > 5/ },
  { desc: 'depth differs from the parent\'s expectation', node: root([], 1), re: /depth 1, expected 0/ },
  { desc: 'eh_max larger than the node', node: root([], 0, 5), re: /eh_max 5 \(capacity 4\)/ },
  { desc: 'entries above eh_max', node: (() => { const b = root([], 0, 2); new ExtentHeader(b, 0).eh_entries = 3; return b; })(), re: /eh_entries 3 > eh_max 2/ },
  { desc: 'overlapping extents', node: root([{ lblk: 0, len: 10, pblk: 100 }, { lblk: 5, len: 1, pblk: 300 }]), re: /overlaps or is out of order/ },
  { desc: 'extent past the end of the fs', node: root([{ lblk: 0, len: 10, pblk: 995 }]), re: /outside the filesystem/ },
  { desc: 'extent in block 0 (before first data block)', node: root([{ lblk: 0, len: 1, pblk: 0 }]), re: /outside the filesystem/ },
  { desc: 'index child outside the fs', node: root([{ lblk: 0, len: 0, pblk: 5000 }], 1), ctx: { expectDepth: 1 }, re: /child block 5000 outside/ },
];
for (const c of bad) {
  test(`parseExtentNode: rejects ${c.desc} with Corrupt`, () => {
    assert.throws(() => parseExtentNode(c.node, { ...CTX, ...c.ctx }), (e) => e instanceof Corrupt && c.re.test(e.message));
  });
}

test('verifyExtentBlockCsum: round trip and BadCrc on change', () => {
  const blk = new Uint8Array(1024);
  const h = new ExtentHeader(blk, 0);
  h.eh_magic = EXT4_EXT_MAGIC;
  h.eh_max = 84;
  setExtentBlockCsum(blk, 99);
  verifyExtentBlockCsum(blk, 99, 12, 50);
  blk[20] = 1;
  assert.throws(() => verifyExtentBlockCsum(blk, 99, 12, 50), BadCrc);
});
