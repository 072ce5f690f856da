/**
 * The oracles every written image goes through: e2fsck -fn with no complaint at all, and where
 * loop mounts work the kernel's view of the tree against ours.
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
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

/** How withKernelMount mounts; without options, `mount -o loop,ro`. */
export interface KernelMountOptions {
  /** Read-write (the kernel may then replay a journal, release orphans, take writes); read-only when absent. */
  rw?: boolean;
  /** More `-o` options (noatime, ...), after loop and ro. */
  options?: readonly string[];
  /** The filesystem type given as `-t` (ext2, ext3, ext4); the kernel probes when absent. */
  type?: string;
}

/**
 * Runs `fn` on `img` mounted by the kernel at `mnt` (made if absent; read-only unless
 * `opts.rw`), unmounting after, and returns what `fn` returned; where loop mounts do not work,
 * says why on the test output, runs nothing and returns undefined. Where they do, a mount the
 * kernel refuses fails the test. The unmount always happens: retried while busy, else detached
 * lazily (so removing `mnt`'s parent later cannot reach into the image); a failed unmount fails
 * the test (or, when `fn` failed already, is reported next to that failure).
 */
export async function withKernelMount<T>(
  t: TestContext,
  img: string,
  mnt: string,
  fn: (mnt: string) => Promise<T> | T,
  opts: KernelMountOptions = {},
): Promise<T | undefined> {
  const loop = canLoopMount();
  if (!loop.ok) {
    t.diagnostic(`${img}: kernel comparison skipped: ${loop.reason}`);
    return undefined;
  }
  mkdirSync(mnt, { recursive: true });
  const args = [...(opts.type !== undefined ? ['-t', opts.type] : []), '-o', ['loop', ...(opts.rw === true ? [] : ['ro']), ...(opts.options ?? [])].join(','), img, mnt];
  const m = spawnSync('mount', args, { encoding: 'utf8' });
  assert.equal(m.status, 0, `mount ${args.join(' ')}: ${m.error?.message ?? m.stderr.trim()}`);
  let done = false;
  try {
    const r = await fn(mnt);
    done = true;
    return r;
  } finally {
    const problem = await unmount(mnt);
    if (problem !== undefined) {
      if (done) throw new Error(problem);
      t.diagnostic(problem);
    }
  }
}

/** Unmounts `mnt`, retrying while it is busy, else detaching it lazily; says what went wrong, if anything. */
async function unmount(mnt: string): Promise<string | undefined> {
  let why = '';
  for (let i = 0; i < 5; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 200));
    const u = spawnSync('umount', [mnt], { encoding: 'utf8' });
    if (u.status === 0) return undefined;
    why = u.error?.message ?? u.stderr.trim();
  }
  const lazy = spawnSync('umount', ['-l', mnt], { encoding: 'utf8' });
  return `umount ${mnt}: ${why}; ${lazy.status === 0 ? 'detached lazily' : `umount -l failed too: ${lazy.error?.message ?? lazy.stderr.trim()}`}`;
}
