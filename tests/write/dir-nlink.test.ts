/**
 * dir_nlink: a directory with more than EXT4_LINK_MAX (65,000) subdirectories keeps working;
 * its link count becomes 1 ("many") exactly as the kernel sets it, e2fsck accepts the result and
 * the kernel mounts it and counts the subdirectories.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4 } from '../../src/index.js';
import { withKernelMount } from '../helpers/check-image.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-nlink-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

test('more than 65,000 subdirectories: i_links_count 1 with dir_nlink, e2fsck clean, kernel agrees', async (t) => {
  const img = join(work, 'many.img');
  execFileSync(process.execPath, [join(import.meta.dirname, '../../src/cli/main.js'), 'mkfs', '-q', '-b', '1024', '-N', '70000', img, '160M']);
  const fs = await Ext4.open(img, { readOnly: false });
  await fs.mkdir('/p');
  const N = 65_010;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await fs.mkdir(`/p/${i}`);
  const secs = (performance.now() - t0) / 1000;
  assert.equal((await fs.lstat('/p')).nlink, 1, 'link count "many"');
  await fs.rmdir('/p/7');
  assert.equal((await fs.lstat('/p')).nlink, 1, 'stays 1 after a removal, as in the kernel');
  await fs.close();
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout);
  const ro = await Ext4.open(img);
  assert.equal((await ro.readdir('/p')).length, N - 1);
  assert.ok(ro.info().features.includes('dir_nlink'));
  await ro.close();
  await withKernelMount(t, img, join(work, 'mnt'), (mnt) => {
    assert.equal(readdirSync(join(mnt, 'p')).length, N - 1);
  });
  t.diagnostic(`${N} mkdirs in ${secs.toFixed(1)} s (${Math.round(N / secs)}/s)`);
});
