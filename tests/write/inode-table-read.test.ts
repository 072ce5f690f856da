/**
 * A new inode's table block is read only when it holds another inode in use
 * (__ext4_get_inode_loc for a new inode): a block whose other inodes are all free starts as
 * zeros, and a block shared with a live inode is read first, so that inode survives. Oracles:
 * the device's own count of reads of the block, e2fsck, and the files read back after a
 * remount with a cold cache.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4 } from '../../src/index.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-itable-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

/** A MemDevice that records which blocks were read. */
class ReadLog extends MemDevice {
  readonly blocks = new Set<number>();
  constructor(data: Uint8Array, private readonly blockSize: number) {
    super(data);
  }
  override async read(offsetBytes: number, dst: Uint8Array): Promise<void> {
    for (let b = Math.floor(offsetBytes / this.blockSize); b * this.blockSize < offsetBytes + dst.length; b++) this.blocks.add(b);
    await super.read(offsetBytes, dst);
  }
}

function assertClean(dev: MemDevice, name: string): void {
  const img = join(work, `${name}.img`);
  writeFileSync(img, dev.data);
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
}

test('new inode: a table block with no other inode in use is not read; one shared with a live inode is read and the live inode kept', async () => {
  const bs = 4096;
  const mem = new MemDevice(new Uint8Array(32 << 20));
  await Ext4.mkfs(mem, { sizeBytes: 32 << 20, blockSize: bs, inodeSize: 256 });
  // A first mount leaves inodes 12 and 13 in use; 16 inodes share a 4 KiB table block.
  let fs = await Ext4.open(mem, { readOnly: false });
  await fs.writeFile('/a', 'first');
  await fs.writeFile('/b', 'second');
  const a = (await fs.stat('/a')).ino;
  const b = (await fs.stat('/b')).ino;
  assert.deepEqual([a, b], [12, 13]);
  await fs.rm('/b');
  await fs.close();

  // Cold cache: the next inode (13, or the first free one) shares its block with inode 12.
  const dev = new ReadLog(mem.data, bs);
  fs = await Ext4.open(dev, { readOnly: false });
  const tableBlock = (ino: number): number => {
    const perGroup = fs.info().inodesPerGroup;
    return fs.sup.group(Math.floor((ino - 1) / perGroup)).inodeTable + Math.floor((((ino - 1) % perGroup) * 256) / bs);
  };
  await fs.writeFile('/c', 'third');
  const c = (await fs.stat('/c')).ino;
  assert.equal(tableBlock(c), tableBlock(a), `inode ${c} shares a table block with inode ${a}`);
  assert.ok(dev.blocks.has(tableBlock(a)), 'the shared table block was read before the new inode went in');

  // Inodes of the next table block: no neighbour in use, so no read of it.
  const per = bs / 256;
  const names: string[] = [];
  for (let i = 0; ; i++) {
    const n = `/f${i}`;
    await fs.writeFile(n, `file ${i}`);
    names.push(n);
    if ((await fs.stat(n)).ino % per === 1) break;
  }
  const fresh = (await fs.stat(names[names.length - 1]!)).ino;
  assert.notEqual(tableBlock(fresh), tableBlock(a));
  assert.ok(!dev.blocks.has(tableBlock(fresh)), `table block ${tableBlock(fresh)} of inode ${fresh} was read though no inode in it was in use`);
  await fs.close();
  assertClean(dev, 'itable');

  // Every inode kept its own record, the old one included.
  const ro = await Ext4.open(new MemDevice(dev.data));
  assert.equal(new TextDecoder().decode(await ro.readFile('/a')), 'first');
  assert.equal(new TextDecoder().decode(await ro.readFile('/c')), 'third');
  for (const [i, n] of names.entries()) assert.equal(new TextDecoder().decode(await ro.readFile(n)), `file ${i}`);
  await ro.close();
});
