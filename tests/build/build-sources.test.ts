/**
 * build(): one seeded spec of an image (every entry type, xattrs, holes, hard links, a 1000-entry
 * directory, times before 1970 and after 2038 with nanoseconds) built from each kind of source —
 * a JSON manifest, a tar made with tar-stream's pack, the same tar gzip-compressed, a host
 * directory, and a tar made by GNU tar with binary xattrs — then checked with e2fsck -fn and read
 * back through the Linux kernel (loop mount, read-only), entry by entry. Without root the read-back
 * goes through ext4ts's own read path instead (said in the test output).
 * SEED=n replays another spec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, existsSync, utimesSync, readdirSync, readFileSync, symlinkSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import nodeFs, { type PathLike } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { build, Ext4, extract } from '../../src/index.js';
import { decodeName } from '../../src/util/bytes.js';
import { withKernelMount } from '../helpers/check-image.js';
import { BAD_DIR, BAD_FILE, BAD_LINK, bytePath } from '../helpers/byte-names.js';
import {
  makeSpec, writeManifest, assertFsckClean, writeTar, writeHostTree, gzip, expectFromSpec, expectFromHost, verifyImage, writeHostFile, CAP_NET_RAW, aclXattr,
  type SpecEntry, type Expect,
} from './helpers.js';
import { haveCommands, requireCommands, skipBecause } from '../helpers/env.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-build-src-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const SEED = Number(process.env['SEED'] ?? 7);
const spec = makeSpec({ seed: SEED, special: true });

const hasGetfattr = haveCommands('getfattr', 'setfattr');

/** Runs `fn` counting readdirSync calls on `dir` (the host walks of a directory source). */
async function countReaddirs<T>(dir: string, fn: () => Promise<T>): Promise<{ calls: number; result: T }> {
  const real = nodeFs.readdirSync;
  let calls = 0;
  nodeFs.readdirSync = ((p: PathLike, ...rest: unknown[]) => {
    if (resolve(String(p)) === resolve(dir)) calls++;
    return (real as (...a: unknown[]) => unknown)(p, ...rest);
  }) as typeof real;
  syncBuiltinESMExports();
  try {
    const result = await fn();
    return { calls, result };
  } finally {
    nodeFs.readdirSync = real;
    syncBuiltinESMExports();
  }
}

function counts(spec: readonly SpecEntry[], t: SpecEntry['type']): number {
  return spec.filter((e) => e.type === t).length;
}

test(`build from a manifest: every entry type, xattrs, holes and extreme times read back exactly (seed ${SEED})`, async (t) => {
  const m = writeManifest(spec, join(work, 'm'));
  const img = join(work, 'manifest.img');
  const s = await build({ source: m, image: img });
  assert.equal(s.sourceKind, 'manifest');
  assert.equal(s.files, counts(spec, 'file'));
  assert.equal(s.hardlinks, counts(spec, 'hardlink'));
  assert.equal(s.devices, counts(spec, 'chr') + counts(spec, 'blk'));
  assert.equal(s.sockets, 1);
  assert.equal(s.sparseFiles, 1);
  const how = await verifyImage(t, img, expectFromSpec(spec, { xattrs: true, sockets: true, holes: true }), ['/big']);
  t.diagnostic(`${spec.length} entries compared through ${how}`);
});

test('build from a tar (tar-stream pack, PAX times and xattrs) and from the same tar gzipped', async (t) => {
  const tarBytes = await writeTar(spec);
  const expected = expectFromSpec(spec, { xattrs: true, sockets: false, holes: false });
  for (const [name, bytes] of [['spec.tar', tarBytes], ['spec.tar.gz', gzip(tarBytes)]] as const) {
    const src = join(work, name);
    writeFileSync(src, bytes);
    const img = join(work, `${name}.img`);
    const s = await build({ source: src, image: img });
    assert.equal(s.sourceKind, 'tar');
    assert.equal(s.files, counts(spec, 'file'));
    const how = await verifyImage(t, img, expected, ['/big']);
    t.diagnostic(`${name}: ${expected.length} entries compared through ${how}`);
  }
});

test('build from a host directory: types, modes, owners, ns times, hard links, FIFOs, holes', async (t) => {
  const plain = makeSpec({ seed: SEED, special: false });
  const root = join(work, 'tree');
  writeHostTree(plain, root);
  const expected = expectFromHost(root, plain);
  const img = join(work, 'dir.img');
  const s = await build({ source: root, image: img });
  assert.equal(s.sourceKind, 'dir');
  // With getfattr the tree's (absent) attributes are read; without it the build says they are not.
  if (hasGetfattr) assert.doesNotMatch(s.warnings.join('\n'), /extended attributes/);
  else assert.match(s.warnings.join('\n'), /extended attributes of a directory source are not copied/);
  const how = await verifyImage(t, img, expected, ['/big']);
  t.diagnostic(`${expected.length} entries compared through ${how}`);
});

test('build from a host directory walked twice (keepEntries 0: no list kept between the planning and the writing walk): the same entries, atimes as the first walk saw them', async (t) => {
  const plain = makeSpec({ seed: SEED + 1, special: false });
  const root = join(work, 'tree2');
  writeHostTree(plain, root);
  const expected = expectFromHost(root, plain);
  const img = join(work, 'dir2.img');
  await build({ source: root, image: img, keepEntries: 0 });
  // The first walk's readdir and readlink moved directory and symlink atimes on the host: the
  // image must still show the atimes from before the build.
  const how = await verifyImage(t, img, expected, ['/big']);
  t.diagnostic(`${expected.length} entries compared through ${how}`);
});

test('build from a host directory that changes between its two walks fails, naming the change, and leaves no image', async () => {
  const root = join(work, 'tree3');
  mkdirSync(join(root, 'a'), { recursive: true });
  writeFileSync(join(root, 'a', 'one'), 'one');
  const img = join(work, 'dir3.img');
  let added = false;
  const onProgress = (p: { phase: string }): void => {
    if (p.phase === 'write' && !added) {
      added = true;
      writeFileSync(join(root, 'zz-late'), 'arrived after the planning walk');
    }
  };
  await assert.rejects(build({ source: root, image: img, keepEntries: 0, onProgress }), /the source changed during the build \(3 entries and 3 content bytes when it was sized, 4 and 34 when written\)/);
  assert.equal(existsSync(img), false);
});

test('build from a host directory with extended attributes (read by getfattr): every namespace, ACLs, binary and empty values, escaped names; xattrs: false copies none', async (t) => {
  requireCommands('attr', 'getfattr', 'setfattr');
  const plain = makeSpec({ seed: SEED + 3, special: false });
  const t0 = { sec: 1_600_000_000, nsec: 5 };
  // A name getfattr must escape (\012, \134) and one with "=".
  plain.push({ path: '/we=ird\nname\\', type: 'file', mode: 0o644, uid: 0, gid: 0, atime: t0, mtime: t0, xattrs: {}, content: new Uint8Array([1, 2, 3]) });
  const root = join(work, 'xattr-tree');
  writeHostTree(plain, root);
  const file = plain.find((e) => e.type === 'file' && e.path.split('/').length > 2)!;
  const dir = plain.find((e) => e.type === 'dir' && e.path !== '/')!;
  const link = plain.find((e) => e.type === 'symlink')!;
  const want = new Map<string, Record<string, Uint8Array>>([
    ['/', { 'user.root': new TextEncoder().encode('r') }],
    [file.path, {
      'user.bin': new Uint8Array([0, 0xff, 0x0a, 0, 0x3d]), 'user.empty': new Uint8Array(0),
      'system.posix_acl_access': aclXattr(),
      // Setting a file capability takes CAP_SETFCAP: root only, as trusted.* below.
      ...(process.getuid?.() === 0 ? { 'security.capability': CAP_NET_RAW } : {}),
    }],
    [dir.path, { 'user.long': new TextEncoder().encode('y'.repeat(700)), 'system.posix_acl_default': aclXattr() }],
    ['/we=ird\nname\\', { 'user.a=b': new TextEncoder().encode('odd') }],
  ]);
  if (process.getuid?.() === 0) want.set(link.path, { 'trusted.link': new TextEncoder().encode('tv') });
  for (const [p, xs] of want) {
    for (const [name, value] of Object.entries(xs)) {
      const r = spawnSync('setfattr', ['-h', '-n', name, ...(value.length > 0 ? ['-v', `0x${Buffer.from(value).toString('hex')}`] : []), join(root, p)]);
      if (r.status !== 0 && name === 'user.root') {
        skipBecause(t, `the host filesystem of ${tmpdir()} takes no user xattrs: ${r.stderr}`);
        return;
      }
      assert.equal(r.status, 0, `setfattr ${name} on ${p}: ${r.stderr}`);
    }
  }
  // After setfattr: an ACL moves the group bits of the mode.
  const expected = expectFromHost(root, plain);
  const withXattrs = expected.map((x) => ({
    ...x, xattrs: Object.fromEntries(Object.entries(want.get(x.path) ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('hex')]).sort()),
  }));
  const img = join(work, 'xattr-dir.img');
  const s = await build({ source: root, image: img });
  const total = [...want.values()].reduce((n, xs) => n + Object.keys(xs).length, 0);
  assert.equal(s.xattrs, total);
  assert.deepEqual(s.warnings, []);
  t.diagnostic(`with xattrs: compared through ${await verifyImage(t, img, withXattrs, ['/big'])}`);
  // The first build read the directories, which moved their atimes on the host: expect those.
  const later = expectFromHost(root, plain);
  const bare = join(work, 'xattr-none.img');
  const n = await build({ source: root, image: bare, xattrs: false });
  assert.equal(n.xattrs, 0);
  t.diagnostic(`xattrs: false: compared through ${await verifyImage(t, bare, later, ['/big'])}`);
  // A tree too large to keep (keepEntries 0): walked twice, once to plan (getfattr runs after it,
  // its xattrs folded into the plan) and once to write.
  const walkedImg = join(work, 'xattr-walked.img');
  // Reading moved atimes again (mtimes in the future make relatime update every time).
  const now = expectFromHost(root, plain);
  const walked = await countReaddirs(root, () => build({ source: root, image: walkedImg, keepEntries: 0 }));
  assert.equal(walked.calls, 2, 'host walks of the source (readdir of its root)');
  assert.equal(walked.result.xattrs, total);
  const laterWithXattrs = now.map((x) => ({ ...x, xattrs: withXattrs.find((w) => w.path === x.path)!.xattrs }));
  t.diagnostic(`walked twice: compared through ${await verifyImage(t, walkedImg, laterWithXattrs, ['/big'])}`);
  // The folded plan is the kept one: a reproducible build derives the same UUID either way.
  const keptUuid = (await build({ source: root, image: walkedImg, reproducible: true })).uuid;
  assert.equal((await build({ source: root, image: walkedImg, reproducible: true, keepEntries: 0 })).uuid, keptUuid);
});

test('build from a GNU tar made with --xattrs: binary xattr values survive (tar-stream would corrupt them)', async (t) => {
  requireCommands('tar', 'tar');
  requireCommands('attr', 'setfattr');
  const root = join(work, 'xtree');
  const t0 = { sec: 0, nsec: 0 };
  const tool = new Uint8Array(5000).fill(7);
  const hostSpec: SpecEntry[] = [
    { path: '/', type: 'dir', mode: 0o755, uid: 0, gid: 0, atime: t0, mtime: t0, xattrs: {} },
    { path: '/bin', type: 'dir', mode: 0o755, uid: 0, gid: 0, atime: t0, mtime: t0, xattrs: {} },
    { path: '/bin/tool', type: 'file', mode: 0o755, uid: 0, gid: 0, atime: t0, mtime: t0, xattrs: {}, content: tool },
  ];
  mkdirSync(join(root, 'bin'), { recursive: true });
  writeHostFile(join(root, 'bin/tool'), tool, false);
  const bin = spawnSync('setfattr', ['-n', 'user.bin', '-v', '0xff00fe80c3', join(root, 'bin/tool')]);
  if (bin.status !== 0) {
    skipBecause(t, `the host filesystem of ${tmpdir()} takes no user xattrs: ${bin.stderr}`);
    return;
  }
  spawnSync('setfattr', ['-n', 'user.text', '-v', 'hello', join(root, 'bin')]);
  // Fixed times with atime == mtime: whether GNU tar records the atime (it may, in a PAX
  // header) or not (the builder then uses the mtime), the image must show these. Left to the
  // clock, /bin's atime is its mkdir time and its mtime a tick later when that tick passes.
  for (const [i, p] of ['', 'bin', 'bin/tool'].entries()) utimesSync(join(root, p), 1_700_000_000 + i, 1_700_000_000 + i);
  const expected: Expect[] = expectFromHost(root, hostSpec);
  for (const x of expected) assert.equal(x.atime, x.mtime, `${x.path}: atime set equal to mtime`);
  expected[1]!.xattrs = { 'user.text': Buffer.from('hello').toString('hex') };
  expected[2]!.xattrs = { 'user.bin': 'ff00fe80c3' };
  const tarPath = join(work, 'gnu.tar');
  const r = spawnSync('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '-C', root, '-cf', tarPath, '.']);
  assert.equal(r.status, 0, String(r.stderr));
  const img = join(work, 'gnu.img');
  const s = await build({ source: tarPath, image: img });
  assert.equal(s.xattrs, 2);
  const how = await verifyImage(t, img, expected);
  t.diagnostic(`compared through ${how}`);
  assert.ok(existsSync(img));
});

test('build from a host directory with names that are not UTF-8: the image holds their exact bytes (kernel), the API reopens what readdir gives, ext4ts get writes them back', async (t) => {
  const root = join(work, 'bytes-tree');
  const content = Buffer.from('bytes, not text\n');
  mkdirSync(root);
  mkdirSync(bytePath(root, BAD_DIR));
  writeFileSync(bytePath(root, BAD_DIR, BAD_FILE), content);
  symlinkSync('target', bytePath(root, BAD_LINK));
  // setfattr takes paths as text arguments; its --restore input carries the bytes.
  const dump = Buffer.concat([Buffer.from('# file: '), bytePath(root, BAD_DIR, BAD_FILE), Buffer.from('\nuser.k=0x7631\n\n')]);
  const xattr = haveCommands('setfattr', 'getfattr') && spawnSync('setfattr', ['--restore=-'], { input: dump }).status === 0;
  if (!xattr) t.diagnostic('no user xattr on the non-UTF-8 name: setfattr is missing or the host filesystem takes none');
  const img = join(work, 'bytes.img');
  const s = await build({ source: root, image: img });
  assert.equal(s.xattrs, xattr ? 1 : 0);
  assertFsckClean(img);
  await withKernelMount(t, img, join(work, 'mnt-bytes'), (mnt) => {
    const names = readdirSync(mnt, { encoding: 'buffer' }).map((b) => b.toString('hex')).sort();
    assert.deepEqual(names, [BAD_DIR, BAD_LINK, Buffer.from('lost+found')].map((b) => b.toString('hex')).sort());
    assert.deepEqual(readFileSync(bytePath(mnt, BAD_DIR, BAD_FILE)), content);
    assert.equal(readlinkSync(bytePath(mnt, BAD_LINK)), 'target');
  });
  const fs = await Ext4.open(img);
  try {
    const top = await fs.readdir('/');
    assert.ok(top.includes(decodeName(BAD_DIR)) && top.includes(decodeName(BAD_LINK)), JSON.stringify(top));
    const file = `/${decodeName(BAD_DIR)}/${decodeName(BAD_FILE)}`;
    assert.deepEqual(Buffer.from(await fs.readFile(file)), content);
    if (xattr) assert.deepEqual(Buffer.from(await fs.getxattr(file, 'user.k')), Buffer.from('v1'));
    const dest = join(work, 'bytes-out');
    const got = await extract(fs, '/', dest);
    assert.deepEqual(got.skipped, []);
    assert.deepEqual(readFileSync(bytePath(dest, BAD_DIR, BAD_FILE)), content);
    if (xattr) {
      // Restored on the file of that name (the dump names it by its bytes).
      const dumped = spawnSync('getfattr', ['-R', '-d', '-e', 'hex', '-m', 'user.', dest]).stdout;
      assert.ok(dumped.includes(Buffer.concat([Buffer.from('# file: '), bytePath(dest.slice(1), BAD_DIR, BAD_FILE), Buffer.from('\nuser.k=0x7631\n')])), dumped.toString('latin1'));
    }
    assert.equal(readlinkSync(bytePath(dest, BAD_LINK)), 'target');
  } finally {
    await fs.close();
  }
});
