/**
 * `get` is a security boundary: images come from strangers. Each case builds a real image with
 * mke2fs -d, then patches it the way an attacker would — directory entry names with '/', NUL,
 * '.' or '..', duplicate names (a symlink and a directory called the same), entries pointing
 * at an ancestor directory (a cycle), symlinks climbing out, absurd sizes, an xattr name that spells
 * lines of setfattr's restore format — recomputing every
 * checksum so the image is "valid". Extraction must skip these with a warning (or fail under
 * strict) and must not create, follow or change anything outside HOSTDEST: the whole
 * surrounding directory, including a victim directory the attack aims at, is snapshotted before
 * and after and must be identical.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  mkdtempSync, rmSync, mkdirSync, writeFileSync, symlinkSync, readFileSync, readdirSync, lstatSync, existsSync, linkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4, MemDevice, extract, ExtractRefused } from '../../src/index.js';
import { parseDirBlock } from '../../src/format/dirent.js';
import { setDirBlockCsum } from '../../src/format/dirent.js';
import { Inode, setInodeCsum, setInodeSizeBytes } from '../../src/format/inode.js';
import { inodeLocation } from '../../src/fs/inode/inode.js';
import { requireCommands, skipBecause } from '../helpers/env.js';
import { CAP_NET_RAW, aclXattr } from '../build/helpers.js';

const root = mkdtempSync(join(tmpdir(), 'ext4ts-hostile-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

/** Every path under `dir` with its type, mode, size, mtime and content hash. */
function snapshot(dir: string, skip: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (p === skip) continue;
      const st = lstatSync(p);
      const h = st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex') : '';
      out.push(`${p} ${st.mode} ${st.size} ${st.mtimeMs} ${st.nlink} ${h}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

/** Builds an image from a tree made by `populate` (`mkfsArgs`: more mke2fs options); returns its bytes. */
function buildImage(name: string, populate: (tree: string) => void, mkfsArgs: string[] = []): Uint8Array {
  const tree = join(root, `${name}-tree`);
  mkdirSync(tree);
  populate(tree);
  const img = join(root, `${name}.img`);
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '1024', ...mkfsArgs, '-d', tree, img, '4M'], { stdio: 'pipe' });
  rmSync(tree, { recursive: true, force: true });
  return new Uint8Array(readFileSync(img));
}

/**
 * Patches the entry `oldName` in directory `dirPath` of the image: new name bytes (same
 * length) and/or a new inode number, then recomputes the block's checksum.
 */
async function patchEntry(img: Uint8Array, dirPath: string, oldName: string, change: { name?: Uint8Array; ino?: number }): Promise<void> {
  const fs = await Ext4.open(new MemDevice(img, true));
  const dirSt = await fs.lstat(dirPath);
  const dirInfo = await fs.inode(dirSt.ino);
  const layout = await fs.layout(dirPath);
  const bs = fs.sup.blockSize;
  for (const ex of layout.extents) {
    for (let b = ex.pblk; b < ex.pblk + ex.len; b++) {
      const block = img.subarray(b * bs, (b + 1) * bs);
      const entries = parseDirBlock(block, { blockNr: b, ino: dirSt.ino, hasFiletype: true, csumSeed: dirInfo.csumSeed });
      const e = entries.find((x) => Buffer.from(x.nameBytes).toString() === oldName);
      if (e === undefined) continue;
      if (change.name) {
        assert.equal(change.name.length, e.nameBytes.length, 'patched names keep their length');
        block.set(change.name, e.offset + 8);
      }
      if (change.ino !== undefined) new DataView(block.buffer, block.byteOffset + e.offset, 4).setUint32(0, change.ino, true);
      setDirBlockCsum(dirInfo.csumSeed, block);
      return;
    }
  }
  throw new Error(`entry ${oldName} not found in ${dirPath}`);
}

/** Sets an inode's i_size and recomputes its checksum. */
async function patchSize(img: Uint8Array, path: string, size: number): Promise<void> {
  const fs = await Ext4.open(new MemDevice(img, true));
  const st = await fs.lstat(path);
  const loc = inodeLocation(fs.sup, st.ino);
  const isz = fs.sup.inodeSize;
  const rec = img.subarray(loc.block * fs.sup.blockSize + loc.offset, loc.block * fs.sup.blockSize + loc.offset + isz);
  const padded = new Uint8Array(Math.max(isz, 160));
  padded.set(rec);
  const v = new Inode(padded, 0);
  setInodeSizeBytes(v, size);
  setInodeCsum(v, padded.subarray(0, isz), st.ino, fs.sup.csumSeed);
  rec.set(padded.subarray(0, isz));
}

/** Runs extraction of the whole image into a fresh HOSTDEST next to a victim directory. */
async function extractChecked(img: Uint8Array, opts: { strict?: boolean; xattrs?: boolean } = {}) {
  const arena = mkdtempSync(join(root, 'arena-'));
  const victim = join(arena, 'victim');
  mkdirSync(victim);
  writeFileSync(join(victim, 'sentinel'), 'do not touch');
  const dest = join(arena, 'dest');
  const before = snapshot(arena, dest);
  const warnings: string[] = [];
  const fs = await Ext4.open(new MemDevice(img, true));
  let error: unknown;
  let summary;
  try {
    summary = await extract(fs, '/', dest, { onWarning: (w) => warnings.push(`${w.path}: ${w.reason}`), ...opts });
  } catch (e) {
    error = e;
  }
  assert.deepEqual(snapshot(arena, dest), before, 'nothing outside HOSTDEST changed');
  return { dest, victim, warnings, error, summary };
}

test('get: a name containing "/" is skipped, nothing is written outside', async () => {
  const img = buildImage('slash', (t) => { mkdirSync(join(t, 'd')); writeFileSync(join(t, 'd/aaaaaaaaaaaa'), 'evil'); });
  await patchEntry(img, '/d', 'aaaaaaaaaaaa', { name: Buffer.from('../../victim') });
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.match(r.warnings.join('\n'), /name contains '\/'/);
  assert.deepEqual(readdirSync(r.victim), ['sentinel']);
});

test('get: names with NUL, "." and ".." in the wrong place are skipped', async () => {
  const img = buildImage('dots', (t) => { writeFileSync(join(t, 'ab'), 'x'); writeFileSync(join(t, 'c'), 'y'); writeFileSync(join(t, 'nulnul'), 'z'); });
  await patchEntry(img, '/', 'ab', { name: Buffer.from('..') });
  await patchEntry(img, '/', 'c', { name: Buffer.from('.') });
  await patchEntry(img, '/', 'nulnul', { name: Buffer.from('nu\0nul') });
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  const w = r.warnings.join('\n');
  assert.match(w, /entry named '\.\.' in the wrong place/);
  assert.match(w, /entry named '\.' in the wrong place/);
  assert.match(w, /NUL byte/);
});

test('get: a symlink and a directory with the same name cannot redirect writes (x -> victim, x/payload)', async () => {
  const img = buildImage('dup', (t) => {
    symlinkSync('../victim', join(t, 'sx'));
    mkdirSync(join(t, 'dx'));
    writeFileSync(join(t, 'dx/payload'), 'planted');
  });
  await patchEntry(img, '/', 'dx', { name: Buffer.from('sx') });
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.deepEqual(readdirSync(r.victim), ['sentinel']);
  assert.match(r.warnings.join('\n'), /second entry with the same name|points outside/);
});

test('get: absolute-target duplicate (x -> /abs/victim and directory x) writes nothing through the link', async () => {
  const victimAbs = join(root, 'abs-victim');
  mkdirSync(victimAbs, { recursive: true });
  const img = buildImage('dupabs', (t) => {
    symlinkSync(victimAbs, join(t, 'sx'));
    mkdirSync(join(t, 'dx'));
    writeFileSync(join(t, 'dx/payload'), 'planted');
  });
  await patchEntry(img, '/', 'dx', { name: Buffer.from('sx') });
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.deepEqual(readdirSync(victimAbs), [], 'the absolute target was never written through');
});

test('get: symlinks climbing out of the tree are skipped; inside ones are kept', async () => {
  const img = buildImage('escape', (t) => {
    mkdirSync(join(t, 'a/b'), { recursive: true });
    symlinkSync('../../../../etc/passwd', join(t, 'a/b/out'));
    symlinkSync('/../../etc', join(t, 'a/out2'));
    symlinkSync('../b/../../a', join(t, 'a/b/in'));
    symlinkSync('/usr/lib/libc.so', join(t, 'abs-in'));
  });
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.match(r.warnings.join('\n'), /a\/b\/out.*points outside/);
  assert.match(r.warnings.join('\n'), /a\/out2.*points outside/);
  assert.ok(lstatSync(join(r.dest, 'a/b/in')).isSymbolicLink());
  assert.ok(lstatSync(join(r.dest, 'abs-in')).isSymbolicLink());
  assert.equal(existsSync(join(r.dest, 'a/b/out')), false);
});

test('get: a directory entry pointing at an ancestor (cycle) is skipped, extraction terminates', async () => {
  const img = buildImage('cycle', (t) => { mkdirSync(join(t, 'd/sub'), { recursive: true }); writeFileSync(join(t, 'd/sub/f'), 'x'); mkdirSync(join(t, 'd/sub/loop')); });
  const fs = await Ext4.open(new MemDevice(img, true));
  const dIno = (await fs.lstat('/d')).ino;
  await patchEntry(img, '/d/sub', 'loop', { ino: dIno });
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.match(r.warnings.join('\n'), /reached twice/);
  assert.equal(readFileSync(join(r.dest, 'd/sub/f'), 'utf8'), 'x');
});

test('get: hard links stay hard links inside HOSTDEST', async () => {
  const img = buildImage('hard', (t) => { mkdirSync(join(t, 'a')); writeFileSync(join(t, 'a/f'), 'shared'); linkSync(join(t, 'a/f'), join(t, 'g')); });
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.equal(lstatSync(join(r.dest, 'a/f')).ino, lstatSync(join(r.dest, 'g')).ino);
});

test('get: absurd sizes are skipped; a large sparse size stays sparse', async () => {
  const img = buildImage('size', (t) => { writeFileSync(join(t, 'huge'), 'a'); writeFileSync(join(t, 'sparse'), 'b'); });
  await patchSize(img, '/huge', 2 ** 52);
  await patchSize(img, '/sparse', 100 * 2 ** 30);
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.match(r.warnings.join('\n'), /huge.*larger than ext4 can address/);
  const st = lstatSync(join(r.dest, 'sparse'));
  assert.equal(st.size, 100 * 2 ** 30);
  assert.ok(st.blocks < 64, `sparse copy uses ${st.blocks} blocks`);
});

test('get --strict: the first suspicious entry fails the extraction, still nothing outside', async () => {
  const img = buildImage('strict', (t) => { writeFileSync(join(t, 'aaaa'), 'x'); });
  await patchEntry(img, '/', 'aaaa', { name: Buffer.from('a/bc') });
  const r = await extractChecked(img, { strict: true });
  assert.ok(r.error instanceof ExtractRefused, String(r.error));
});

/** `setfattr ARGS`, false when the host refuses (no xattr support, not root for trusted.*). */
function setfattr(args: string[]): boolean {
  return spawnSync('setfattr', args).status === 0;
}

/** One attribute of a host entry, raw (getfattr --only-values), or undefined. */
function hostXattr(path: string, name: string): string | undefined {
  const r = spawnSync('getfattr', ['-h', '--only-values', '-n', name, '--', path]);
  return r.status === 0 ? Buffer.from(r.stdout).toString('hex') : undefined;
}

test('get: extended attributes come back through setfattr (capabilities, ACLs, binary values, a link\'s own); a name spelling dump lines writes nothing elsewhere; xattrs: false restores none', async (t) => {
  requireCommands('attr', 'setfattr', 'getfattr');
  const victimFile = join(root, 'xattr-victim');
  writeFileSync(victimFile, 'v');
  const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
  const acl = hex(aclXattr());
  const evil = `user.a\n\n# file: ${victimFile}\nuser.pwned`;
  const want: [string, string, string][] = [
    ['ping', 'user.bin', '00ff0a3d5c'], ['ping', evil, '31'], ['d', 'system.posix_acl_default', acl],
    ['shared', 'system.posix_acl_access', acl],
  ];
  // A file capability and trusted.* take privileges: root only.
  if (process.getuid?.() === 0) want.push(['ping', 'security.capability', hex(CAP_NET_RAW)], ['ln', 'trusted.t', '7476']);
  let refused = '';
  // mke2fs -d copies the host tree's attributes: the image is written by e2fsprogs, not by us.
  const img = buildImage('xattrs', (tree) => {
    writeFileSync(join(tree, 'ping'), 'x');
    writeFileSync(join(tree, 'shared'), 'y', { mode: 0o644 });
    mkdirSync(join(tree, 'd'));
    symlinkSync('ping', join(tree, 'ln'));
    for (const [p, name, v] of want) if (!setfattr(['-h', '-n', name, '-v', `0x${v}`, join(tree, p)])) refused ||= name;
  });
  // Only a host filesystem without user xattrs is a reason to skip; any other refusal fails.
  if (refused === 'user.bin') {
    skipBecause(t, `the host filesystem of ${tmpdir()} takes no user xattrs`);
    return;
  }
  assert.equal(refused, '', `setfattr refused ${JSON.stringify(refused)}`);
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.deepEqual(r.warnings, []);
  for (const [p, name, v] of want) assert.equal(hostXattr(join(r.dest, p), name), v, `${p} ${JSON.stringify(name)}`);
  assert.equal(r.summary?.xattrs, want.length);
  assert.equal(hostXattr(victimFile, 'user.pwned'), undefined, 'nothing reached the file the name spells out');
  // The access ACL's mask (rwx) is the group bits, as on the source.
  assert.equal(lstatSync(join(r.dest, 'shared')).mode & 0o777, 0o674);
  const bare = await extractChecked(img, { xattrs: false });
  assert.equal(bare.summary?.xattrs, 0);
  for (const [p, name] of want) assert.equal(hostXattr(join(bare.dest, p), name), undefined, `${p} ${name} not restored`);
});

/**
 * Rewrites one in-inode xattr entry of `path`, found by its name bytes (after the prefix): a new
 * name index and/or new name bytes of the same length; the inode checksum is recomputed.
 */
async function patchIbodyXattr(img: Uint8Array, path: string, oldName: string, change: { index?: number; name?: Uint8Array }): Promise<void> {
  const fs = await Ext4.open(new MemDevice(img, true));
  const st = await fs.lstat(path);
  const loc = inodeLocation(fs.sup, st.ino);
  const isz = fs.sup.inodeSize;
  const rec = img.subarray(loc.block * fs.sup.blockSize + loc.offset, loc.block * fs.sup.blockSize + loc.offset + isz);
  const at = Buffer.from(rec).indexOf(Buffer.from(oldName));
  assert.ok(at > 128, `xattr name ${oldName} not found in the in-inode area of ${path}`);
  // The entry header is 16 bytes before the name: e_name_len, e_name_index, ...
  if (change.index !== undefined) rec[at - 15] = change.index;
  if (change.name !== undefined) {
    assert.equal(change.name.length, oldName.length, 'patched names keep their length');
    rec.set(change.name, at);
  }
  const padded = new Uint8Array(Math.max(isz, 160));
  padded.set(rec);
  setInodeCsum(new Inode(padded, 0), padded.subarray(0, isz), st.ino, fs.sup.csumSeed);
  rec.set(padded.subarray(0, isz));
}

test('get: an xattr of a name index with no handler is neither listed nor restored; a name holding a NUL fails that entry\'s attributes as corrupt; a name that is not UTF-8 is skipped with a warning; nothing outside HOSTDEST is touched', async () => {
  requireCommands('attr', 'setfattr', 'getfattr');
  const victimFile = join(root, 'nul-victim');
  writeFileSync(victimFile, 'v');
  const pad = (s: string): string => s.padEnd(80, 'z').slice(0, 80);
  const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
  const img = buildImage('oddxattr', (tree) => {
    for (const f of ['f', 'g', 'h']) {
      writeFileSync(join(tree, f), 'x');
      for (const [name, v] of [['odd', '68'], ['ok', '6f6b']] as const) {
        assert.ok(setfattr(['-n', `user.${pad(name)}`, '-v', `0x${v}`, join(tree, f)]), `setfattr user.${name} on ${f}`);
      }
    }
  }, ['-I', '512']);
  // f: index 0 has no handler, so its name is bare bytes, here a dump header for the victim.
  const header = pad(`\n# file: ${victimFile}\n`);
  await patchIbodyXattr(img, '/f', pad('odd'), { index: 0, name: enc(header) });
  // g: a NUL, which setfattr's line reader would stop at.
  await patchIbodyXattr(img, '/g', pad('odd'), { name: enc(pad(`nul\0\n# file: ${victimFile}`)) });
  // h: bytes that are not UTF-8.
  const notUtf8 = enc(pad('odd'));
  notUtf8[3] = 0xff;
  await patchIbodyXattr(img, '/h', pad('odd'), { name: notUtf8 });
  const ro = await Ext4.open(new MemDevice(img, true));
  assert.deepEqual(await ro.listxattr('/f'), [`user.${pad('ok')}`], 'listxattr shows no entry of an index without a handler');
  await assert.rejects(ro.getxattr('/f', header), /ENODATA/);
  await ro.close();
  const r = await extractChecked(img);
  assert.equal(r.error, undefined);
  assert.equal(r.warnings.length, 2, JSON.stringify(r.warnings));
  assert.match(r.warnings.find((w) => w.startsWith('/g:')) ?? '', /extended attributes not restored: .*NUL/);
  assert.match(r.warnings.find((w) => w.startsWith('/h:')) ?? '', /not valid UTF-8/);
  assert.equal(hostXattr(join(r.dest, 'f'), `user.${pad('ok')}`), '6f6b');
  assert.equal(hostXattr(join(r.dest, 'h'), `user.${pad('ok')}`), '6f6b');
  assert.equal(spawnSync('getfattr', ['-d', '-m', '-', join(r.dest, 'f')], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith('user.')).length, 1, 'f got only its listed attribute');
  assert.equal(r.summary?.xattrs, 2);
  assert.equal(spawnSync('getfattr', ['-d', '-m', '-', victimFile], { encoding: 'utf8' }).stdout, '', 'the victim got no attribute');
});
