/**
 * The jbd2 superblock as open() and `info` see it, against dumpe2fs on the kernel-made fixtures
 * (a clean journal, one needing recovery, one whose log holds the only copy of a batch), and
 * the kernel's refusal of a damaged journal superblock (ignored, and reported, with noRecovery).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Ext4, Ext4Error } from '../../../src/index.js';
import { loadFixture } from '../../helpers/fixtures.js';
import type { JournalInfo } from '../../../src/fs/journal.js';

function dumpe2fsJournal(img: string): Map<string, string> {
  const out = execFileSync('dumpe2fs', ['-h', img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const r = /^(Journal [a-z ]+|Total journal blocks):\s+(.*)$/.exec(line);
    if (r) m.set(r[1]!, r[2]!.trim());
  }
  return m;
}

function isJournal(j: unknown): j is JournalInfo {
  return typeof j === 'object' && j !== null && 'sequence' in j;
}

for (const name of ['ext4-4k', 'ext3', 'needs-recovery', 'journal-replay']) {
  test(`journal superblock of ${name} agrees with dumpe2fs`, async () => {
    const fx = await loadFixture(name);
    try {
      const fs = await Ext4.open(fx.imagePath, { readOnly: true, noRecovery: fx.manifest.needsRecovery === true });
      const info = fs.info();
      await fs.close();
      const d = dumpe2fsJournal(fx.imagePath);
      const j = info.journal;
      assert.ok(isJournal(j), `journal read: ${JSON.stringify(j)}`);
      assert.equal(j.ino, info.journalInode);
      assert.equal(String(j.maxlenBlocks), d.get('Total journal blocks'));
      assert.equal(`0x${j.sequence.toString(16).padStart(8, '0')}`, d.get('Journal sequence'));
      assert.equal(String(j.start), d.get('Journal start'));
      assert.equal(j.needsRecovery, j.start !== 0);
      assert.equal(info.needsRecovery, fx.manifest.needsRecovery === true, 'needs_recovery flag');
      const feats = d.get('Journal features') ?? '(none)';
      assert.equal(j.csumVersion === 3, feats.includes('journal_checksum_v3'), feats);
      assert.equal(j.tagBytes, j.csumVersion === 3 ? 16 : feats.includes('journal_64bit') ? 12 : 8);
      if (name === 'journal-replay') assert.notEqual(j.start, 0, 'the late batch is in the log');
      if (name === 'ext4-4k') assert.equal(j.start, 0, 'cleanly unmounted: empty log');
    } finally {
      await fx.cleanup();
    }
  });
}

test('a damaged journal superblock refuses the open by name and block; noRecovery ignores and reports it', async () => {
  const fx = await loadFixture('ext4-4k');
  try {
    const fs0 = await Ext4.open(fx.imagePath);
    const ino = fs0.info().journalInode;
    const layout = await fs0.layout(`/`); // warm: prove the fs reads before the damage
    assert.equal(layout.kind, 'extents');
    await fs0.close();
    // Where debugfs says the journal superblock is.
    const bmap = execFileSync('debugfs', ['-R', `bmap <${ino}> 0`, fx.imagePath], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    const blk = Number(bmap);
    assert.ok(blk > 0, `bmap: ${bmap}`);
    const img = readFileSync(fx.imagePath);
    const bs = 4096;
    const cases: { patch: (b: Buffer) => void; expect: RegExp; code: string }[] = [
      { patch: (b) => b.writeUInt32BE(0xdeadbeef, blk * bs), expect: /jbd2 superblock.*h_magic 0xdeadbeef/, code: 'EFSCORRUPTED' },
      { patch: (b) => b.writeUInt32BE(0x10, blk * bs + 0x18), expect: /jbd2 superblock/, code: 'EFSBADCRC' },
      { patch: (b) => b.writeUInt32BE(8192, blk * bs + 0x0c), expect: /s_blocksize 8192/, code: 'EFSCORRUPTED' },
    ];
    for (const c of cases) {
      const bad = Buffer.from(img);
      c.patch(bad);
      writeFileSync(fx.imagePath, bad);
      await assert.rejects(Ext4.open(fx.imagePath), (e: unknown) => {
        assert.ok(e instanceof Ext4Error, String(e));
        assert.equal(e.code, c.code);
        assert.match(e.message, c.expect);
        assert.match(e.message, new RegExp(`block ${blk}`));
        return true;
      });
      const fs = await Ext4.open(fx.imagePath, { noRecovery: true });
      const j = fs.info().journal;
      assert.ok(j !== undefined && 'error' in j, JSON.stringify(j));
      assert.match(j.error, c.expect);
      assert.equal((await fs.readdir('/')).includes('lost+found'), true, 'the rest still reads');
      await fs.close();
    }
  } finally {
    await fx.cleanup();
  }
});
