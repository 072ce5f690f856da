/**
 * The oracles every written image goes through: e2fsck -fn with no complaint at all, and where
 * loop mounts work the kernel's view of the tree against ours.
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ext4 } from '../../src/index.js';
import { canLoopMount } from './fixtures.js';
import { describeExt4, describeMount } from './model-fs.js';

/** e2fsck -fn exits 0 and prints nothing past its pass lines and summary. */
export function assertFsckClean(img: string): void {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  assert.equal(r.status, 0, `e2fsck -fn ${img}:\n${r.stdout}${r.stderr}`);
  const noise = r.stdout.split('\n').filter((l) => l !== '' && !/^Pass \d|^e2fsck \d|^[^:]+: \d+\/\d+ files/.test(l));
  assert.deepEqual(noise, [], r.stdout);
}

/**
 * Writes `data` (an image's bytes) to `dir`/`name`.img, checks it with e2fsck, and, where loop
 * mounts work, compares the kernel's view with ext4ts's; `onMount` checks more through the
 * kernel's mount (file contents). Without loop mounts it says so on the test output.
 */
export async function checkImageBytes(t: TestContext, data: Uint8Array, dir: string, name: string, onMount?: (mnt: string) => void): Promise<void> {
  const img = join(dir, `${name}.img`);
  writeFileSync(img, data);
  assertFsckClean(img);
  await withKernelMount(t, img, join(dir, `mnt-${name}`), async (mnt) => {
    const kern = describeMount(mnt);
    onMount?.(mnt);
    const ro = await Ext4.open(img);
    try {
      assert.deepEqual(await describeExt4(ro), kern);
    } finally {
      await ro.close();
    }
  });
}

/**
 * Runs `fn` on `img` mounted read-only by the kernel at `mnt` (made if absent), unmounting
 * after; where loop mounts do not work, says why on the test output and runs nothing.
 */
export async function withKernelMount(t: TestContext, img: string, mnt: string, fn: (mnt: string) => Promise<void> | void): Promise<void> {
  const loop = canLoopMount();
  if (!loop.ok) {
    t.diagnostic(`${img}: kernel comparison skipped: ${loop.reason}`);
    return;
  }
  mkdirSync(mnt, { recursive: true });
  execFileSync('mount', ['-o', 'loop,ro', img, mnt]);
  try {
    await fn(mnt);
  } finally {
    execFileSync('umount', [mnt]);
  }
}
