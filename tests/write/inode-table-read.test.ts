/**
 * A new inode's table block is read only when it holds another inode in use
 * (__ext4_get_inode_loc for a new inode): a block whose other inodes are all free starts as
 * zeros, and a block shared with a live inode is read first, so that inode survives. Oracles:
 * the device's own log of block reads, e2fsck, the kernel's view of the tree, and the files'
 * bytes read back through the kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4 } from '../../src/index.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import { checkImageBytes } from '../helpers/check-image.js';

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

test('new inode: a table block shared with a live inode is read first and that inode kept; a block with no inode in use is not read', async (t) => {
  const bs = 4096;
  const per = bs / 256;
  const mem = new MemDevice(new Uint8Array(32 << 20));
  await Ext4.mkfs(mem, { sizeBytes: 32 << 20, blockSize: bs, inodeSize: 256 });
  // First mount: inodes 12..per+1 made, all but the first of the second table block removed,
  // so that block (inodes per+1..2*per) holds one live inode and no reserved one.
  let fs = await Ext4.open(mem, { readOnly: false });
  const made: string[] = [];
  for (let i = 0; ; i++) {
    await fs.writeFile(`/m${i}`, `made ${i}`);
    made.push(`/m${i}`);
    if ((await fs.stat(`/m${i}`)).ino === per + 1) break;
  }
  const live = made[made.length - 1]!;
  for (const p of made.slice(0, -1)) await fs.rm(p);
  await fs.close();

  const dev = new ReadLog(mem.data, bs);
  fs = await Ext4.open(dev, { readOnly: false });
  const tableBlock = (ino: number): number => {
    const perGroup = fs.info().inodesPerGroup;
    return fs.sup.group(Math.floor((ino - 1) / perGroup)).inodeTable + Math.floor((((ino - 1) % perGroup) * 256) / bs);
  };
  const shared = tableBlock(per + 1);
  const fresh = tableBlock(2 * per + 1);
  assert.ok(!dev.blocks.has(shared) && !dev.blocks.has(fresh), 'the mount read neither table block');
  // New inodes fill the first block's holes, then the second block's, then start the third.
  const names: string[] = [];
  for (let i = 0; ; i++) {
    await fs.writeFile(`/n${i}`, `new ${i}`);
    names.push(`/n${i}`);
    const ino = (await fs.stat(`/n${i}`)).ino;
    if (ino === per + 2) assert.ok(dev.blocks.has(shared), `table block ${shared} was read before inode ${ino} went in beside live inode ${per + 1}`);
    if (ino === 2 * per + 1) break;
  }
  assert.ok(!dev.blocks.has(fresh), `table block ${fresh} was read though no inode in it was in use`);
  await fs.close();

  // Every inode kept its own record, the live one included: e2fsck, the kernel's view, and
  // the bytes through the kernel.
  await checkImageBytes(t, dev.data, work, 'itable', (mnt) => {
    assert.equal(readFileSync(join(mnt, live), 'utf8'), `made ${made.length - 1}`);
    for (const [i, n] of names.entries()) assert.equal(readFileSync(join(mnt, n), 'utf8'), `new ${i}`);
  });
  const ro = await Ext4.open(new MemDevice(dev.data, true));
  assert.equal(new TextDecoder().decode(await ro.readFile(live)), `made ${made.length - 1}`);
  await ro.close();
});
