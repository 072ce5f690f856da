/**
 * AddressSpace: the page index, dirty/writeback tags walked in index order, and the write-error
 * state reported once per open file like the kernel's errseq_t (lib/errseq.c) and AS_EIO
 * (IO-DESIGN.md invariant 14: "the error is reported once through fsync").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AddressSpace, ErrSeq, type ErrCursor } from '../../../src/cache/address-space.js';
import { PG } from '../../../src/cache/page.js';
import { Ext4Bug } from '../../../src/util/assert.js';
import type { ErrnoCode } from '../../../src/util/errors.js';

function mapping(): AddressSpace {
  return new AddressSpace({ blockSizeBytes: 1024, pageSizeBytes: 16384 });
}

test('AddressSpace: findOrCreatePage caches one page per index', () => {
  const m = mapping();
  const p = m.findOrCreatePage(7);
  assert.equal(m.findOrCreatePage(7), p);
  assert.equal(m.findPage(8), undefined);
  assert.equal(m.nrPages, 1);
  assert.equal(p.offsetBytes, 7 * 16384);
  assert.equal(m.buffersPerPage, 16);
});

test('AddressSpace: dirty pages are found in index order from a start index', () => {
  const m = mapping();
  for (const i of [9, 2, 40, 5, 17]) m.findOrCreatePage(i).markDirty();
  m.findOrCreatePage(3);
  assert.deepEqual(m.dirtyPages().map((p) => p.index), [2, 5, 9, 17, 40]);
  assert.deepEqual(m.dirtyPages(6).map((p) => p.index), [9, 17, 40]);
  assert.deepEqual(m.dirtyPages(6, 2).map((p) => p.index), [9, 17]);
  assert.deepEqual(m.findTagged('writeback'), []);
});

test('AddressSpace: writeback moves a page from the dirty tag to the writeback tag (invariant 22 tags)', () => {
  const m = mapping();
  const p = m.findOrCreatePage(4);
  p.markDirty();
  p.trylock();
  assert.ok(p.clearDirtyForIo());
  assert.ok(m.isTagged(4, 'dirty'), 'tag stays until writeback starts');
  p.startWriteback();
  assert.equal(m.isTagged(4, 'dirty'), false);
  assert.deepEqual(m.findTagged('writeback').map((x) => x.index), [4]);
  p.markDirty(); // redirtied while under writeback: both tags
  assert.ok(m.isTagged(4, 'dirty'));
  p.unlock();
  p.endWriteback();
  assert.deepEqual(m.findTagged('writeback'), []);
  assert.deepEqual(m.dirtyPages().map((x) => x.index), [4]);
});

test('AddressSpace: deletePage requires a locked, clean page not under writeback', () => {
  const m = mapping();
  const p = m.findOrCreatePage(1);
  assert.throws(() => m.deletePage(p), Ext4Bug, 'unlocked');
  p.trylock();
  p.markDirty();
  assert.throws(() => m.deletePage(p), Ext4Bug, 'dirty');
  p.clearDirtyForIo();
  p.startWriteback();
  assert.throws(() => m.deletePage(p), Ext4Bug, 'writeback');
  p.endWriteback();
  m.deletePage(p);
  assert.equal(m.nrPages, 0);
  assert.deepEqual(m.dirtyPages(), []);
  assert.ok(PG.testLocked(p));
});

test('errseq (invariant 14): each open file sees an error once; a later error is seen again', () => {
  const m = mapping();
  const a = m.openErrCursor();
  const b = m.openErrCursor();
  assert.equal(m.fileErrorCheck(a), undefined);
  m.setError('EIO');
  assert.equal(m.fileErrorCheck(a), 'EIO');
  assert.equal(m.fileErrorCheck(a), undefined, 'a second fsync on the same fd is clean');
  const c = m.openErrCursor(); // opened after the error was seen: not reported to it
  assert.equal(m.fileErrorCheck(b), 'EIO', 'the other fd still sees it once');
  assert.equal(m.fileErrorCheck(b), undefined);
  assert.equal(m.fileErrorCheck(c), undefined);
  m.setError('ENOSPC');
  assert.equal(m.fileErrorCheck(c), 'ENOSPC');
  assert.equal(m.fileErrorCheck(a), 'ENOSPC');
  assert.equal(m.fileErrorCheck(b), 'ENOSPC');
  for (const x of [a, b, c]) assert.equal(m.fileErrorCheck(x), undefined);
});

test('errseq (invariant 14): an error nobody has seen is reported to a file opened after it', () => {
  const m = mapping();
  m.setError('EIO');
  const late = m.openErrCursor();
  assert.equal(m.fileErrorCheck(late), 'EIO');
  assert.equal(m.fileErrorCheck(m.openErrCursor()), undefined, 'now seen: a newer opener is clean');
});

test('errseq (invariant 14): errors before anyone looks are reported once, as the latest', () => {
  const m = mapping();
  const a = m.openErrCursor();
  m.setError('EIO');
  m.setError('EIO');
  m.setError('ENOSPC');
  assert.equal(m.fileErrorCheck(a), 'ENOSPC');
  assert.equal(m.fileErrorCheck(a), undefined);
});

test('errseq: the counter advances only after a sighting and wraps as a u32', () => {
  const e = new ErrSeq();
  e.set(5);
  const v1 = e.raw;
  e.set(5);
  assert.equal(e.raw, v1, 'unseen: same value');
  const cur: ErrCursor = { since: 0 };
  assert.equal(e.checkAndAdvance(cur), 5);
  e.set(5);
  assert.notEqual(e.raw, cur.since);
  assert.throws(() => e.set(0), Ext4Bug);
  assert.throws(() => e.set(4096), Ext4Bug);
  for (let i = 0; i < 600_000; i++) {
    e.checkAndAdvance(cur);
    e.set(5);
  }
  assert.ok(e.raw >= 0 && e.raw <= 0xffff_ffff);
  assert.equal(e.checkAndAdvance(cur), 5);
});

test('AS_EIO/AS_ENOSPC: legacy check reports once, EIO wins; fileErrorCheck clears them; sb errseq records', () => {
  const sb = new ErrSeq();
  const m = new AddressSpace({ blockSizeBytes: 4096, sbWbErr: sb });
  m.setError('ENOSPC');
  m.setError('EIO');
  assert.equal(m.checkAndClearLegacyError(), 'EIO');
  assert.equal(m.checkAndClearLegacyError(), undefined);
  m.setError('ENOSPC');
  assert.equal(m.fileErrorCheck({ since: 0 }), 'ENOSPC');
  assert.equal(m.checkAndClearLegacyError(), undefined);
  assert.equal(sb.check(0), 28);
});

type Op = { kind: 'open' } | { kind: 'set'; code: ErrnoCode } | { kind: 'check'; fd: number };

test('errseq (invariant 14): random open/error/fsync sequences match the reported-once model', () => {
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.constant({ kind: 'open' as const }),
    fc.constantFrom('EIO', 'ENOSPC').map((code) => ({ kind: 'set' as const, code: code as ErrnoCode })),
    fc.nat(7).map((fd) => ({ kind: 'check' as const, fd })),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
      const m = mapping();
      // Model: the latest error, its serial, and whether any fd has seen it; per fd the serial
      // of the last error it saw or that was already seen when it opened.
      let serial = 0;
      let latest: ErrnoCode | undefined;
      let seenByAnyone = false;
      const fds: { cur: ErrCursor; seenSerial: number }[] = [];
      for (const o of ops) {
        if (o.kind === 'open') {
          fds.push({ cur: m.openErrCursor(), seenSerial: seenByAnyone ? serial : 0 });
        } else if (o.kind === 'set') {
          m.setError(o.code);
          serial++;
          latest = o.code;
          seenByAnyone = false;
        } else if (fds.length > 0) {
          const fd = fds[o.fd % fds.length]!;
          const want = fd.seenSerial < serial ? latest : undefined;
          assert.equal(m.fileErrorCheck(fd.cur), want);
          if (want !== undefined) seenByAnyone = true;
          fd.seenSerial = serial;
        }
      }
    }),
    { numRuns: 500 },
  );
});
