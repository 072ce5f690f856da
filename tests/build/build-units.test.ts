/**
 * The builder's pure helpers on hand-made input: path normalization and order, PAX decimal
 * times, hard-link grouping (the smallest name carries the inode), raw PAX records, hole
 * detection, the size plan, and getfattr dumps.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  normalizePath, comparePaths, parseDecimalTime, finishEntries, impliedDir, decodeBase64, type BuildEntry,
} from '../../src/build/source.js';
import { parsePaxRecords } from '../../src/build/tar-source.js';
import { scanSparse, ChunkPool, LARGE_CHUNK_BYTES } from '../../src/build/content.js';
import { contentNeed, planSize } from '../../src/build/plan.js';
import { timespecOfNs, splitRdev } from '../../src/build/dir-source.js';
import { hasXattrHandler } from '../../src/api/ext4.js';
import { parseGetfattrDump, formatGetfattrBlock } from '../../src/util/getfattr-dump.js';
import { paxTime } from './helpers.js';

test('normalizePath: relative tar names and absolute manifest paths; ".." and absolute members refused', () => {
  assert.equal(normalizePath('./a//b/./c/', 'o', 'relative'), '/a/b/c');
  assert.equal(normalizePath('.', 'o', 'relative'), '/');
  assert.equal(normalizePath('/', 'o', 'absolute'), '/');
  assert.throws(() => normalizePath('a/../b', 'o', 'relative'), /"\.\."/);
  assert.throws(() => normalizePath('/etc', 'o', 'relative'), /absolute member name/);
  assert.throws(() => normalizePath('etc', 'o', 'absolute'), /must be absolute/);
  assert.throws(() => normalizePath('/' + 'x'.repeat(256), 'o', 'absolute'), /longer than 255 bytes/);
  assert.throws(() => normalizePath('a\0b', 'o', 'relative'), /NUL/);
});

test('comparePaths: a directory\'s subtree right after it, siblings by name', () => {
  const paths = ['/a-b', '/a/z', '/a', '/', '/a/b/c', '/a.b', '/b'];
  assert.deepEqual([...paths].sort(comparePaths), ['/', '/a', '/a/b/c', '/a/z', '/a-b', '/a.b', '/b']);
});

test('parseDecimalTime: exact nanoseconds, negative times, PAX round trip', () => {
  assert.deepEqual(parseDecimalTime('1700000000.123456789'), { sec: 1700000000, nsec: 123456789 });
  assert.deepEqual(parseDecimalTime('1.5'), { sec: 1, nsec: 500000000 });
  assert.deepEqual(parseDecimalTime('-1.5'), { sec: -2, nsec: 500000000 });
  assert.deepEqual(parseDecimalTime('-7'), { sec: -7, nsec: 0 });
  assert.deepEqual(parseDecimalTime('12.1234567891'), { sec: 12, nsec: 123456789 });
  assert.equal(parseDecimalTime('1e9'), undefined);
  for (const t of [{ sec: -2000000000, nsec: 1 }, { sec: -1, nsec: 999999999 }, { sec: 15000000000, nsec: 5 }]) {
    assert.deepEqual(parseDecimalTime(paxTime(t)), t);
  }
  assert.deepEqual(timespecOfNs(-1n), { sec: -1, nsec: 999999999 });
  assert.deepEqual(splitRdev(BigInt((300 & 0xfff) << 8 | (70000 & 0xff)) | (BigInt(70000 & ~0xff) << 12n)), { major: 300, minor: 70000 });
});

function file(path: string, extra: Partial<BuildEntry> = {}): BuildEntry {
  return { path, kind: 'file', perm: 0o644, uid: 0, gid: 0, xattrs: [], sizeBytes: 0, allocBytes: 0, origin: path, ...extra };
}

test('finishEntries: implied parents, later-wins duplicates, hard links moved to the smallest name', () => {
  const list: BuildEntry[] = [
    file('/z/data', { sizeBytes: 5, uid: 7, content: { kind: 'bytes', bytes: new Uint8Array(5) } }),
    { ...file('/a/link'), kind: 'hardlink', linkTo: '/z/data' },
    { ...file('/m/link2'), kind: 'hardlink', linkTo: '/a/link' },
    file('/dup', { uid: 1 }),
    file('/dup', { uid: 2 }),
  ];
  const out = finishEntries(list, 'later-wins');
  assert.deepEqual(out.map((e) => `${e.path}:${e.kind}`), ['/:dir', '/a:dir', '/a/link:file', '/dup:file', '/m:dir', '/m/link2:hardlink', '/z:dir', '/z/data:hardlink']);
  const first = out.find((e) => e.path === '/a/link')!;
  assert.equal(first.uid, 7);
  assert.equal(first.sizeBytes, 5);
  assert.deepEqual(out.filter((e) => e.kind === 'hardlink').map((e) => e.linkTo), ['/a/link', '/a/link']);
  assert.equal(out.find((e) => e.path === '/dup')!.uid, 2);
  assert.throws(() => finishEntries([file('/x'), file('/x')], 'error'), /listed twice/);
  assert.throws(() => finishEntries([file('/f'), file('/f/g')], 'error'), /parent \/f is a file/);
  assert.throws(() => finishEntries([{ ...file('/l'), kind: 'hardlink', linkTo: '/d' }, impliedDir('/d', 'd')], 'error'), /hard link to the directory/);
});

test('parsePaxRecords keeps binary values; decodeBase64', () => {
  const rec = (k: string, v: Uint8Array): Uint8Array => {
    const body = new Uint8Array([...new TextEncoder().encode(` ${k}=`), ...v, 0x0a]);
    let len = body.length + 1;
    if (String(len).length + body.length !== len) len = String(len + 1).length + body.length;
    return new Uint8Array([...new TextEncoder().encode(String(len)), ...body]);
  };
  const bin = new Uint8Array([0xff, 0x00, 0x0a, 0x80]);
  const buf = new Uint8Array([...rec('SCHILY.xattr.user.b', bin), ...rec('mtime', new TextEncoder().encode('1.5'))]);
  const m = parsePaxRecords(buf);
  assert.deepEqual([...m.get('SCHILY.xattr.user.b')!], [...bin]);
  assert.equal(new TextDecoder().decode(m.get('mtime')), '1.5');
  assert.deepEqual([...decodeBase64('AQID')!], [1, 2, 3]);
  assert.equal(decodeBase64('!!'), undefined);
});

test('scanSparse: zero blocks become gaps; non-zero sectors counted', () => {
  const b = new Uint8Array(4 * 4096);
  b[5] = 1;
  b[2 * 4096 + 600] = 1;
  b[2 * 4096 + 4000] = 1;
  const s = scanSparse(8192, b, 4096);
  assert.deepEqual(s.runs.map((r) => [r.pos, r.bytes.length]), [[8192, 4096], [8192 + 2 * 4096, 4096]]);
  assert.equal(s.nonZeroSectors, 3);
  assert.deepEqual(scanSparse(0, new Uint8Array(100), 4096).runs, []);
});

test('planSize: room for the content plus margin, inodes for every entry, whole MiB', () => {
  const entries = finishEntries([
    ...Array.from({ length: 300 }, (_, i) => file(`/d/f${i}`, { sizeBytes: 10000, allocBytes: 10000 })),
    file('/big', { sizeBytes: 100 << 20, allocBytes: 100 << 20 }),
  ], 'error');
  const need = contentNeed(entries, 4096);
  assert.ok(need.blocks >= 300 * 3 + 25600 && need.blocks < 300 * 3 + 25600 + 100, `${need.blocks} blocks`);
  assert.equal(need.inodes, 303);
  const p = planSize({ need, blockSize: 4096, inodeSize: 256, marginPercent: 10, reservedPercent: 5 });
  assert.equal(p.sizeBytes % (1 << 20), 0);
  assert.ok(p.sizeBytes > need.blocks * 4096 * 1.1 && p.sizeBytes < need.blocks * 4096 * 1.3 + (16 << 20), `${p.sizeBytes}`);
  assert.ok(p.inodesCount >= 303 * 1.1);
});

/** A parsed dump's attributes of `p` as [name, value in hex]. */
function hex0(m: ReturnType<typeof parseGetfattrDump>, p: string): [string, string][] {
  return m.get(p)!.map((x) => [x.name, Buffer.from(x.value).toString('hex')]);
}

test('parseGetfattrDump: escaped paths and names, base64, hex, quoted and empty values, sorted names; non-UTF-8 paths keep their bytes (decodeName); formatGetfattrBlock round trip', () => {
  const enc = new TextEncoder();
  const dump = new Uint8Array([
    ...enc.encode('# file: /src/we=ird\\012name\\134\nuser.z=0sMQ==\nuser.a\\075b=0x00ff0a\n\n'),
    ...enc.encode('# file: /src\nsecurity.selinux="system_u\\000x"\nuser.empty=0s\nuser.bare\n\n'),
    ...enc.encode('# file: /src/bad'), 0xff, ...enc.encode('\nuser.x=0s\n\n'),
    ...enc.encode('# file: /src/ünï\ntrusted.t=0sdHY='),
  ]);
  const m = parseGetfattrDump(dump);
  assert.deepEqual([...m.keys()], ['/src/we=ird\nname\\', '/src', '/src/bad\udcff', '/src/ünï']);
  assert.deepEqual(hex0(m, '/src/bad\udcff'), [['user.x', '']]);
  const hex = (p: string): [string, string][] => hex0(m, p);
  assert.deepEqual(hex('/src/we=ird\nname\\'), [['user.a=b', '00ff0a'], ['user.z', '31']]);
  assert.deepEqual(hex('/src'), [['security.selinux', Buffer.from('system_u\0x').toString('hex')], ['user.bare', ''], ['user.empty', '']]);
  assert.deepEqual(hex('/src/ünï'), [['trusted.t', '7476']]);
  assert.throws(() => parseGetfattrDump(enc.encode('# file: /a\nuser.x=0q12\n')), /cannot decode/);
  // What extraction hands to setfattr --restore parses back to the same names and bytes.
  const xs = [{ name: 'user.a=b\\c', value: new Uint8Array([0, 10, 13, 92]) }, { name: 'user.e', value: new Uint8Array(0) }];
  const back = parseGetfattrDump(new TextEncoder().encode(formatGetfattrBlock('/d/we=ird\nname\\\r', xs) + formatGetfattrBlock('/x', [])));
  assert.deepEqual([...back.keys()], ['/d/we=ird\nname\\\r', '/x']);
  assert.deepEqual(back.get('/d/we=ird\nname\\\r')!.map((x) => [x.name, [...x.value]]), [['user.a=b\\c', [0, 10, 13, 92]], ['user.e', []]]);
  assert.equal(hasXattrHandler('system.posix_acl_default'), true);
  assert.equal(hasXattrHandler('system.nfs4_acl'), false);
});

test('ChunkPool: large read buffers are reused once released, never twice, at most `keep` kept; other sizes are fresh and not pooled', () => {
  const pool = new ChunkPool(2);
  const a = pool.take(LARGE_CHUNK_BYTES);
  const b = pool.take(LARGE_CHUNK_BYTES);
  assert.notEqual(a.buf, b.buf, 'two buffers in use are distinct');
  const small = pool.take(LARGE_CHUNK_BYTES - 1);
  assert.equal(small.release, undefined, 'a short last chunk is not pooled');
  a.release!();
  assert.throws(() => a.release!(), /released twice/);
  const c = pool.take(LARGE_CHUNK_BYTES);
  assert.equal(c.buf, a.buf, 'a released buffer is handed out again');
  const d = pool.take(LARGE_CHUNK_BYTES);
  b.release!();
  c.release!();
  d.release!();
  assert.equal(pool.size, 2, 'no more than `keep` wait for reuse');
});
