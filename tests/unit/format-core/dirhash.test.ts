/**
 * ext4fsDirhash against the real oracle: debugfs's dx_hash (e2fsprogs) computes the expected
 * hash and minor hash at test time, for all six hash versions, default and explicit seeds, and
 * names that exercise every path (empty-ish, 1 byte, > 32 bytes so several transform rounds run,
 * 255 bytes, and bytes >= 0x80 where the signed and unsigned variants differ).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ext4fsDirhash } from '../../../src/format/dirhash.js';

const dir = mkdtempSync(join(tmpdir(), 'ext4ts-dirhash-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const img = join(dir, 'h.img');
execFileSync('mkfs.ext4', ['-q', '-F', img, '4M'], { stdio: 'pipe' });

const NAMES = ['a', 'hello', 'file-with-a-longer-name-over-32-bytes-long.txt', 'caf\u00e9-\u00ff\u0080-x', '\u00e4'.repeat(20), 'n'.repeat(255), 'x'.repeat(31) + '\u00f6'];
const SEEDS: { words: number[]; uuid: string | undefined }[] = [
  { words: [0, 0, 0, 0], uuid: undefined },
  { words: [0x11223344, 0x55667788, 0x99aabbcc, 0xddeeff00], uuid: '44332211-8877-6655-ccbb-aa9900ffeedd' },
];

/** Runs every dx_hash query in one debugfs process and returns [hash, minor] per query. */
function oracle(queries: { version: number; name: string; seed: string | undefined }[]): [number, number][] {
  const cmds = queries.map((q) => `dx_hash ${q.seed ? `-s ${q.seed} ` : ''}-h ${q.version} ${q.name}`).join('\n') + '\n';
  const cmdFile = join(dir, 'cmds');
  writeFileSync(cmdFile, cmds);
  const out = execFileSync('debugfs', ['-f', cmdFile, img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  return [...out.matchAll(/Hash of .* is (0x[0-9a-f]+) \(minor (0x[0-9a-f]+)\)/g)].map((m) => [Number(m[1]), Number(m[2])]);
}

test('ext4fsDirhash: equals debugfs dx_hash for every version, seed and name', () => {
  const queries = [];
  for (let version = 0; version <= 5; version++) {
    for (const name of NAMES) for (const s of SEEDS) queries.push({ version, name, seed: s.uuid, words: s.words });
  }
  const expected = oracle(queries);
  assert.equal(expected.length, queries.length, 'debugfs answered every query');
  queries.forEach((q, i) => {
    const ours = ext4fsDirhash(Buffer.from(q.name, 'utf8'), q.version, q.words);
    assert.deepEqual([ours.hash, ours.minorHash], expected[i], `version ${q.version} name ${JSON.stringify(q.name)} seed ${q.seed ?? 'default'}`);
  });
});

test('ext4fsDirhash: signed and unsigned variants differ only for bytes >= 0x80', () => {
  const seed = [0, 0, 0, 0];
  const ascii = Buffer.from('plain-ascii-name');
  const high = Buffer.from('caf\u00e9');
  for (const [s, u] of [[0, 3], [1, 4], [2, 5]] as const) {
    assert.deepEqual(ext4fsDirhash(ascii, s, seed), ext4fsDirhash(ascii, u, seed));
    assert.notDeepEqual(ext4fsDirhash(high, s, seed), ext4fsDirhash(high, u, seed));
  }
});

test('ext4fsDirhash: siphash (casefold) is refused as Incompatible', () => {
  assert.throws(() => ext4fsDirhash(Buffer.from('x'), 6, [0, 0, 0, 0]), /casefold|hash version 6/);
});
