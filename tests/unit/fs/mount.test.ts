/**
 * Mounting real images made by mkfs.ext4 (the oracle): superblock and every group descriptor
 * checksum (crc32c and crc16 variants, 32- and 64-byte descriptors, 1/2/4 KiB blocks, meta_bg),
 * and the typed errors for a bad magic, a flipped checksum, unknown features and truncation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4Super } from '../../../src/fs/super.js';
import { MemDevice } from '../../../src/blockdev/mem-device.js';
import { Corrupt, BadCrc, Incompatible, PosixError } from '../../../src/util/errors.js';
import { SuperBlock, setSuperblockCsum } from '../../../src/format/superblock.js';

const dir = mkdtempSync(join(tmpdir(), 'ext4ts-mount-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function mkfs(name: string, args: string[], size = '16M'): Uint8Array {
  const p = join(dir, name);
  // mke2fs picks 1 KiB blocks for small images unless told otherwise.
  const bs = args.includes('-b') ? [] : ['-b', '4096'];
  execFileSync('mkfs.ext4', ['-q', '-F', ...bs, ...args, p, size], { stdio: 'pipe' });
  return new Uint8Array(readFileSync(p));
}

const variants: { desc: string; args: string[]; size?: string }[] = [
  { desc: 'defaults (metadata_csum, 64bit, 4 KiB)', args: [] },
  { desc: '1 KiB blocks', args: ['-b', '1024'] },
  { desc: '2 KiB blocks', args: ['-b', '2048'] },
  { desc: 'crc16 gdt_csum, 32-byte descriptors', args: ['-O', '^metadata_csum,^64bit,uninit_bg'] },
  { desc: 'no group checksums at all', args: ['-O', '^metadata_csum,^uninit_bg,^64bit'] },
  { desc: 'meta_bg without resize_inode', args: ['-b', '1024', '-O', 'meta_bg,^resize_inode'], size: '64M' },
  { desc: 'metadata_csum_seed and orphan_file', args: ['-O', 'metadata_csum_seed,orphan_file'] },
  { desc: '128-byte inodes', args: ['-I', '128'] },
];
for (const v of variants) {
  test(`Ext4Super.mount: ${v.desc} — superblock and all group descriptors verify`, async () => {
    const img = mkfs(`v${variants.indexOf(v)}.img`, v.args, v.size);
    const s = await Ext4Super.mount(new MemDevice(img, true), { readOnly: true });
    assert.ok(s.groupCount >= 1);
    const dump = execFileSync('dumpe2fs', ['-h', join(dir, `v${variants.indexOf(v)}.img`)], { stdio: 'pipe' }).toString();
    const count = Number(/Block count:\s+(\d+)/.exec(dump)?.[1]);
    assert.equal(s.blocksCount, count);
    assert.equal(s.inodeSize, Number(/Inode size:\s+(\d+)/.exec(dump)?.[1]));
  });
}

test('Ext4Super.mount: a zeroed superblock is Corrupt naming the magic', async () => {
  const img = mkfs('z.img', []);
  img.fill(0, 1024, 2048);
  await assert.rejects(Ext4Super.mount(new MemDevice(img, true), { readOnly: true }),
    (e) => e instanceof Corrupt && e.message === 'EFSCORRUPTED: superblock magic is 0x0000 at block 0');
});

test('Ext4Super.mount: a flipped superblock byte is EFSBADCRC', async () => {
  const img = mkfs('c.img', []);
  img[1024 + 0x78]! ^= 0x40; // inside s_volume_name
  await assert.rejects(Ext4Super.mount(new MemDevice(img, true), { readOnly: true }), (e) => e instanceof BadCrc && e.code === 'EFSBADCRC');
});

test('Ext4Super.mount: a flipped group descriptor byte is EFSBADCRC naming the group', async () => {
  const img = mkfs('g.img', []);
  img[4096 + 0xc]! ^= 1; // group 0's free blocks count
  await assert.rejects(Ext4Super.mount(new MemDevice(img, true), { readOnly: true }),
    (e) => e instanceof BadCrc && /group descriptor .*group 0/.test(e.message));
});

test('Ext4Super.mount: unknown incompat bits are refused by name', async () => {
  const img = mkfs('i.img', []);
  const sb = new SuperBlock(img, 1024);
  sb.s_feature_incompat = (sb.s_feature_incompat | 0x10000 | 0x80000000) >>> 0; // encrypt + an unknown bit
  setSuperblockCsum(sb);
  await assert.rejects(Ext4Super.mount(new MemDevice(img, true), { readOnly: true }),
    (e) => e instanceof Incompatible && e.features.includes('encrypt') && e.features.includes('0x80000000'));
});

test('Ext4Super.mount: unknown ro_compat bits allow read-only, refuse read-write', async () => {
  const img = mkfs('r.img', []);
  const sb = new SuperBlock(img, 1024);
  sb.s_feature_ro_compat |= 0x8000; // verity
  setSuperblockCsum(sb);
  const s = await Ext4Super.mount(new MemDevice(img, true), { readOnly: true });
  assert.equal(s.verdict.writable, false);
  assert.match(s.verdict.readOnlyReason ?? '', /verity/);
  await assert.rejects(Ext4Super.mount(new MemDevice(img, false), { readOnly: false }), (e) => e instanceof PosixError && e.code === 'EROFS');
});

test('Ext4Super.mount: a journal needing recovery is reported, and readable with noRecovery', async () => {
  const img = mkfs('j.img', []);
  const sb = new SuperBlock(img, 1024);
  sb.s_feature_incompat |= 0x4; // recover
  setSuperblockCsum(sb);
  await assert.rejects(Ext4Super.mount(new MemDevice(img, true), { readOnly: true }), /journal needs recovery/);
  const s = await Ext4Super.mount(new MemDevice(img, true), { readOnly: true, noRecovery: true });
  assert.equal(s.verdict.needsRecovery, true);
});

test('Ext4Super.mount: a truncated image is Corrupt (blocks past the device end)', async () => {
  const img = mkfs('t.img', []).slice(0, 8 << 20);
  await assert.rejects(Ext4Super.mount(new MemDevice(img, true), { readOnly: true }), (e) => e instanceof Corrupt && /exceeds the device/.test(e.message));
});
