/**
 * The xattr write path (src/fs/xattr/xattr-write.ts) against real oracles: images made by
 * mkfs.ext4 and debugfs, changed by ext4ts, then `e2fsck -fn` clean, debugfs's view of every
 * attribute, ext4ts's own read path, and the Linux kernel (loop mount + getfattr, when root and
 * loop devices are available) must all equal a model. Seeded random sequences print their seed;
 * replay one with XATTR_SEED=<n>.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4Super } from '../../src/fs/super.js';
import { MemDevice } from '../../src/blockdev/mem-device.js';
import { Ext4 } from '../../src/index.js';
import { resolvePath } from '../../src/fs/namei.js';
import { readInode, type InodeInfo } from '../../src/fs/inode/inode.js';
import { readXattrs } from '../../src/fs/xattr/xattr-read.js';
import { setXattr, removeXattr, releaseXattrBlock, type SetXattrFlags } from '../../src/fs/xattr/xattr-write.js';
import type { BlockAllocator, AllocRequest, BlockRun } from '../../src/fs/alloc/allocator.js';
import { getBalloc, type Balloc } from '../../src/fs/alloc/balloc.js';
import {
  XattrHeader, parseXattrBlock, parseXattrIbody, xattrSpaceNeeded, splitXattrName, parsePosixAclXattr,
  encodeExt4Acl, encodePosixAclXattr, ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER,
  type XattrInput,
} from '../../src/format/xattr.js';
import { PosixError } from '../../src/util/errors.js';
import { requireCommands, skipBecause } from '../helpers/env.js';
import { canLoopMount } from '../helpers/fixtures.js';
import { withKernelMount } from '../helpers/check-image.js';

const dir = mkdtempSync(join(tmpdir(), 'ext4ts-xattrw-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------
// Images, mounts and a stand-in block allocator.
// ---------------------------------------------------------------------------------------------

/** Makes an image with mkfs.ext4 and creates empty files (and directories) with debugfs. */
function mkimg(name: string, mkfsArgs: string[], size: string, files: string[], dirs: string[] = [], dataBytes = 0): string {
  const p = join(dir, name);
  execFileSync('mkfs.ext4', ['-q', '-F', ...mkfsArgs, p, size], { stdio: 'pipe' });
  const src = join(dir, `${name}.data`);
  writeFileSync(src, bytesOf(dataBytes, 5));
  const cmds = [...files.map((f) => `write ${dataBytes > 0 ? src : '/dev/null'} ${f}`), ...dirs.map((d) => `mkdir ${d}`)];
  const cmdFile = join(dir, `${name}.cmds`);
  writeFileSync(cmdFile, cmds.join('\n') + '\n');
  execFileSync('debugfs', ['-w', '-f', cmdFile, p], { stdio: 'pipe' });
  return p;
}

/**
 * The mount's block allocator (src/fs/alloc/balloc.ts, with its bitmap recount checks on),
 * counting what the xattr code allocates and frees.
 */
class CountingAlloc implements BlockAllocator {
  allocated = 0;
  freed = 0;
  private readonly inner: Balloc;
  constructor(s: Ext4Super) {
    this.inner = getBalloc(s);
    this.inner.debugChecks = true;
  }
  async allocBlocks(req: AllocRequest): Promise<BlockRun> {
    const run = await this.inner.allocBlocks(req);
    this.allocated += run.len;
    return run;
  }
  async freeBlocks(pblk: number, len: number): Promise<void> {
    await this.inner.freeBlocks(pblk, len);
    this.freed += len;
  }
}

interface Rw {
  s: Ext4Super;
  bytes: Uint8Array;
  alloc: CountingAlloc;
  path: string;
}

async function openRw(path: string): Promise<Rw> {
  const bytes = new Uint8Array(readFileSync(path));
  const s = await Ext4Super.mount(new MemDevice(bytes), { readOnly: false });
  return { s, bytes, alloc: new CountingAlloc(s), path };
}

async function closeRw(rw: Rw): Promise<void> {
  await rw.s.close();
  writeFileSync(rw.path, rw.bytes);
}

async function inodeOf(rw: Rw, file: string): Promise<InodeInfo> {
  return resolvePath(rw.s, `/${file}`, false, 'test');
}

// ---------------------------------------------------------------------------------------------
// The model and the four views of it.
// ---------------------------------------------------------------------------------------------

/** file -> attribute name -> value as given to setXattr. */
type Model = Map<string, Map<string, Uint8Array>>;
/** file -> sorted "name=hex" lines. */
type View = Map<string, string[]>;

const isAcl = (name: string): boolean => name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The model as stored on disk (ext4's ACL format) or as the kernel returns it (xattr format). */
function viewOf(model: Model, how: 'disk' | 'kernel'): View {
  const out: View = new Map();
  for (const [f, attrs] of model) {
    const lines = [...attrs].map(([n, v]) => {
      if (!isAcl(n)) return `${n}=${hexOf(v)}`;
      const acl = parsePosixAclXattr(v);
      return `${n}=${hexOf(how === 'disk' ? encodeExt4Acl(acl) : encodePosixAclXattr(acl))}`;
    });
    out.set(f, lines.sort());
  }
  return out;
}

/** e2fsck -fn must exit 0 and print nothing but its pass lines and the summary. */
function assertFsckClean(path: string): void {
  const r = spawnSync('e2fsck', ['-fn', path], { encoding: 'utf8' });
  const extra = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) =>
    l.trim() !== '' && !/^Pass [1-5]: /.test(l) && !/^e2fsck \d/.test(l) && !/: \d+\/\d+ files .* blocks$/.test(l));
  assert.deepEqual(extra, [], `e2fsck -fn ${path}:\n${r.stdout}${r.stderr}`);
  assert.equal(r.status, 0, `e2fsck exit ${r.status}:\n${r.stdout}`);
}

/** debugfs's view: names from ea_list, raw values through `ea_get -r -f`. */
function debugfsView(path: string, files: string[]): View {
  const listCmds = join(dir, 'ea_list.cmds');
  writeFileSync(listCmds, files.map((f) => `ea_list ${f}`).join('\n') + '\n');
  const out = execFileSync('debugfs', ['-f', listCmds, path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const names = new Map<string, string[]>(files.map((f) => [f, []]));
  let cur: string | undefined;
  for (const line of out.split('\n')) {
    const cmd = /^debugfs: ea_list (\S+)$/.exec(line);
    if (cmd) cur = cmd[1];
    // Names debugfs cannot print as text come as hex bytes: "  75 73 65 72 2e 63 61 66 c3 a9  (1) = 01".
    const hexName = /^  ((?:[0-9a-f]{2} )+) \(\d+\)/.exec(line);
    const attr = /^  (\S+) \(\d+\)/.exec(line);
    if (cur === undefined) continue;
    if (hexName) names.get(cur)?.push(Buffer.from(hexName[1]!.replace(/ /g, ''), 'hex').toString('utf8'));
    else if (attr) names.get(cur)?.push(attr[1]!);
  }
  const getCmds: string[] = [];
  const outFiles: [string, string, string][] = [];
  for (const [f, ns] of names) {
    for (const n of ns) {
      const o = join(dir, `ea_get.${outFiles.length}`);
      getCmds.push(`ea_get -r -f ${o} ${f} ${n}`);
      outFiles.push([f, n, o]);
    }
  }
  const view: View = new Map(files.map((f) => [f, []]));
  if (getCmds.length > 0) {
    const getFile = join(dir, 'ea_get.cmds');
    writeFileSync(getFile, getCmds.join('\n') + '\n');
    execFileSync('debugfs', ['-f', getFile, path], { stdio: 'pipe' });
    for (const [f, n, o] of outFiles) view.get(f)?.push(`${n}=${hexOf(readFileSync(o))}`);
  }
  for (const v of view.values()) v.sort();
  return view;
}

/** ext4ts's read path through the public API. */
async function ext4tsView(path: string, files: string[]): Promise<View> {
  const fs = await Ext4.open(path);
  try {
    const view: View = new Map();
    for (const f of files) {
      const lines: string[] = [];
      for (const n of await fs.listxattr(`/${f}`)) {
        // The API hands ACLs out in the VFS's posix_acl_xattr format, as getxattr(2) does;
        // converting back to ext4's on-disk format compares them with the model (a round trip).
        let v = await fs.getxattr(`/${f}`, n);
        if (n.startsWith('system.posix_acl_')) v = encodeExt4Acl(parsePosixAclXattr(v));
        lines.push(`${n}=${hexOf(v)}`);
      }
      view.set(f, lines.sort());
    }
    return view;
  } finally {
    await fs.close();
  }
}

/**
 * Why the kernel cannot be asked here, or undefined when it can (root, loop devices, ext4): then
 * every kernel mount must work (withKernelMount fails the test otherwise).
 */
const kernelSkip: string | undefined = (() => {
  const loop = canLoopMount();
  if (!loop.ok) return loop.reason;
  // The kernel's view is read with getfattr: a missing tool fails here, it is no reason to skip.
  requireCommands('attr', 'getfattr');
  return undefined;
})();
// Without the kernel the views are still checked by e2fsck, debugfs and our reader: say so once.
if (kernelSkip !== undefined) process.stdout.write(`# xattr-write.test.ts: kernel comparisons skipped: ${kernelSkip}\n`);

let mountCount = 0;
/** A fresh mount point for withKernelMount. */
function nextMnt(): string {
  return join(dir, `mnt${mountCount++}`);
}

/** The kernel's view (read-only loop mount): getfattr -d -m - -e hex. */
function kernelView(t: TestContext, path: string, files: string[]): Promise<View | undefined> {
  return withKernelMount(t, path, nextMnt(), (mnt) => {
    const view: View = new Map();
    for (const f of files) {
      const out = execFileSync('getfattr', ['-d', '-m', '-', '-e', 'hex', '--absolute-names', join(mnt, f)], { encoding: 'utf8' });
      const lines = out.split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => {
        const eq = l.indexOf('=');
        return eq < 0 ? `${l}=` : `${l.slice(0, eq)}=${l.slice(eq + 1).replace(/^0x/, '')}`;
      });
      view.set(f, lines.sort());
    }
    return view;
  });
}

/** All oracles agree with the model. `files` are the paths checked (all files of the image). */
async function assertAllViews(t: TestContext, path: string, model: Model, ctx: string): Promise<void> {
  const files = [...model.keys()];
  assertFsckClean(path);
  const disk = viewOf(model, 'disk');
  assert.deepEqual(debugfsView(path, files), disk, `${ctx}: debugfs`);
  assert.deepEqual(await ext4tsView(path, files), disk, `${ctx}: ext4ts read path`);
  if (kernelSkip === undefined) {
    // Names the kernel does not list (none written here) would differ; the kernel view is complete.
    assert.deepEqual(await kernelView(t, path, files), viewOf(model, 'kernel'), `${ctx}: kernel getfattr`);
  }
}

/** Within a mount: readXattrs on a freshly read inode equals the model's disk view of `file`. */
async function assertInMount(rw: Rw, file: string, model: Model, ctx: string): Promise<void> {
  const info = await readInode(rw.s, (await inodeOf(rw, file)).ino);
  const got = (await readXattrs(rw.s, info)).map((e) => `${e.name}=${hexOf(e.value)}`).sort();
  assert.deepEqual(got, viewOf(new Map([[file, model.get(file) ?? new Map()]]), 'disk').get(file), ctx);
}

// ---------------------------------------------------------------------------------------------
// Small helpers for values and ACLs.
// ---------------------------------------------------------------------------------------------

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytesOf(n: number, salt: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt * 7 + (i >> 3)) & 0xff;
  return b;
}

/** An ACL in the xattr format (version 2); ids of USER_OBJ/GROUP_OBJ/MASK/OTHER given as 0. */
function aclXattr(users: number[], groups: number[], perm = 6): Uint8Array {
  const ents: [number, number, number][] = [[ACL_USER_OBJ, perm, 0]];
  for (const u of users) ents.push([ACL_USER, 4, u]);
  ents.push([ACL_GROUP_OBJ, 4, 0]);
  for (const g of groups) ents.push([ACL_GROUP, 5, g]);
  if (users.length + groups.length > 0) ents.push([ACL_MASK, 7, 0]);
  ents.push([ACL_OTHER, 4, 0]);
  const out = new Uint8Array(4 + 8 * ents.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 2, true);
  ents.forEach(([tag, p, id], i) => {
    dv.setUint16(4 + i * 8, tag, true);
    dv.setUint16(6 + i * 8, p, true);
    dv.setUint32(8 + i * 8, id, true);
  });
  return out;
}

function modelSet(model: Model, f: string, n: string, v: Uint8Array): void {
  const m = model.get(f) ?? new Map<string, Uint8Array>();
  m.set(n, v.slice());
  model.set(f, m);
}

/** Raw bytes of an inode's xattr block, or undefined. */
async function blockBytes(rw: Rw, info: InodeInfo): Promise<Uint8Array | undefined> {
  return info.fileAcl === 0 ? undefined : (await rw.s.cache.bread(info.fileAcl, 'xattr block')).data.slice();
}

async function refcountOf(rw: Rw, blk: number): Promise<number> {
  return new XattrHeader((await rw.s.cache.bread(blk, 'xattr block')).data, 0).h_refcount;
}

function code(e: unknown): string | undefined {
  return e instanceof PosixError ? e.code : undefined;
}

// ---------------------------------------------------------------------------------------------
// Targeted tests.
// ---------------------------------------------------------------------------------------------

test('setXattr: small values stay in the inode (e_hash 0, no block); larger ones spill to a sorted, hashed block', async (t) => {
  const path = mkimg('place.img', ['-b', '4096'], '32M', ['f1', 'f2']);
  const rw = await openRw(path);
  const model: Model = new Map([['f1', new Map()], ['f2', new Map()]]);
  let f1 = await inodeOf(rw, 'f1');
  await setXattr(rw.s, f1, rw.alloc, 'user.small', bytesOf(10, 1));
  modelSet(model, 'f1', 'user.small', bytesOf(10, 1));
  assert.equal(f1.fileAcl, 0, 'a 10-byte value fits in-inode');
  const ib = parseXattrIbody(f1.ibodyXattrArea);
  assert.deepEqual(ib.map((e) => [e.name, e.hash]), [['user.small', 0]]);
  // 96-byte area: magic 4 + entry 20 + value 12 + terminator 4 used; 100 bytes cannot fit.
  await setXattr(rw.s, f1, rw.alloc, 'user.zz', bytesOf(100, 2));
  await setXattr(rw.s, f1, rw.alloc, 'trusted.t', bytesOf(3, 3));
  await setXattr(rw.s, f1, rw.alloc, 'user.aa', bytesOf(200, 4));
  modelSet(model, 'f1', 'user.zz', bytesOf(100, 2));
  modelSet(model, 'f1', 'trusted.t', bytesOf(3, 3));
  modelSet(model, 'f1', 'user.aa', bytesOf(200, 4));
  assert.notEqual(f1.fileAcl, 0);
  const blk = await blockBytes(rw, f1);
  const entries = parseXattrBlock(blk!, { blockNr: f1.fileAcl });
  assert.deepEqual(entries.map((e) => e.name), ['user.aa', 'user.zz'], 'sorted by index, name length, name');
  for (const e of entries) assert.notEqual(e.hash, 0);
  assert.equal(f1.blocks512(false, 4096), 8, 'i_blocks counts the xattr block');
  await assertInMount(rw, 'f1', model, 'in-mount read after set');
  // Moving back: replace the big value with a small one: it moves in-inode and the block goes.
  await setXattr(rw.s, f1, rw.alloc, 'user.zz', bytesOf(4, 5));
  modelSet(model, 'f1', 'user.zz', bytesOf(4, 5));
  f1 = await inodeOf(rw, 'f1');
  assert.deepEqual(parseXattrIbody(f1.ibodyXattrArea).map((e) => e.name), ['user.small', 'trusted.t', 'user.zz']);
  assert.deepEqual(parseXattrBlock((await blockBytes(rw, f1))!, { blockNr: f1.fileAcl }).map((e) => e.name), ['user.aa']);
  await removeXattr(rw.s, f1, rw.alloc, 'user.aa');
  model.get('f1')!.delete('user.aa');
  assert.equal(f1.fileAcl, 0, 'the empty block is released');
  assert.equal(rw.alloc.allocated, rw.alloc.freed, 'every allocated xattr block was freed');
  assert.equal(f1.blocks512(false, 4096), 0);
  await assertInMount(rw, 'f1', model, 'in-mount read after moves');
  await closeRw(rw);
  await assertAllViews(t, path, model, 'placement');
});

test('setXattr: values up to the largest that fits a block; one byte more is ENOSPC and changes nothing', async (t) => {
  for (const bs of [1024, 4096]) {
    const path = mkimg(`big${bs}.img`, ['-b', String(bs)], bs === 1024 ? '8M' : '32M', ['f1', 'f2']);
    const rw = await openRw(path);
    const model: Model = new Map([['f1', new Map()], ['f2', new Map()]]);
    const f1 = await inodeOf(rw, 'f1');
    const max = bs - 32 - 20 - 4; // header, entry for "big" (16 + 3 → 20), terminator
    await setXattr(rw.s, f1, rw.alloc, 'user.big', bytesOf(max, 9));
    modelSet(model, 'f1', 'user.big', bytesOf(max, 9));
    const f2 = await inodeOf(rw, 'f2');
    await assert.rejects(setXattr(rw.s, f2, rw.alloc, 'user.big', bytesOf(max + 1, 9)), (e) => code(e) === 'ENOSPC');
    assert.equal(f2.fileAcl, 0);
    // A full block: nothing else fits in it, but a small value still fits in-inode.
    await assert.rejects(setXattr(rw.s, f1, rw.alloc, 'user.more', bytesOf(100, 1)), (e) => code(e) === 'ENOSPC');
    await setXattr(rw.s, f1, rw.alloc, 'user.more', bytesOf(8, 1));
    modelSet(model, 'f1', 'user.more', bytesOf(8, 1));
    // Many small values: fill the in-inode area and the block of f2.
    for (let i = 0; i < 400; i++) {
      const name = `user.k${i}`;
      try {
        await setXattr(rw.s, f2, rw.alloc, name, bytesOf(i % 13, i));
        modelSet(model, 'f2', name, bytesOf(i % 13, i));
      } catch (e) {
        assert.equal(code(e), 'ENOSPC');
        break;
      }
    }
    assert.ok(model.get('f2')!.size > 20, `f2 holds ${model.get('f2')!.size} small xattrs`);
    await assertInMount(rw, 'f2', model, 'many small');
    await closeRw(rw);
    await assertAllViews(t, path, model, `big values, ${bs}-byte blocks`);
  }
});

test('setXattr/removeXattr: flags and names fail like the kernel (EEXIST, ENODATA, EINVAL, ERANGE, EOPNOTSUPP, EPERM)', async (t) => {
  const path = mkimg('errs.img', ['-b', '1024'], '8M', ['f1'], ['d1']);
  const rw = await openRw(path);
  const f1 = await inodeOf(rw, 'f1');
  const d1 = await inodeOf(rw, 'd1');
  const v = bytesOf(5, 1);
  await assert.rejects(setXattr(rw.s, f1, rw.alloc, 'user.x', v, { replace: true }), (e) => code(e) === 'ENODATA');
  await setXattr(rw.s, f1, rw.alloc, 'user.x', v, { create: true });
  await assert.rejects(setXattr(rw.s, f1, rw.alloc, 'user.x', v, { create: true }), (e) => code(e) === 'EEXIST');
  await setXattr(rw.s, f1, rw.alloc, 'user.x', bytesOf(6, 1), { replace: true });
  await assert.rejects(removeXattr(rw.s, f1, rw.alloc, 'user.nope'), (e) => code(e) === 'ENODATA');
  const cases: [string, string][] = [
    ['user.', 'EINVAL'], ['user.a\0b', 'EINVAL'], [`user.${'n'.repeat(256)}`, 'ERANGE'], ['system.foo', 'EOPNOTSUPP'],
    ['gnu.x', 'EOPNOTSUPP'], ['other.x', 'EOPNOTSUPP'], ['system.data', 'EPERM'], ['', 'EOPNOTSUPP'],
  ];
  for (const [name, want] of cases) {
    await assert.rejects(setXattr(rw.s, f1, rw.alloc, name, v), (e) => code(e) === want, `${JSON.stringify(name).slice(0, 30)} → ${want}`);
  }
  // 255 bytes after the prefix is the limit (it goes to the block: the in-inode area is too small).
  await setXattr(rw.s, f1, rw.alloc, `user.${'n'.repeat(255)}`, v);
  // ACLs: validated; a default ACL only on a directory.
  await assert.rejects(setXattr(rw.s, f1, rw.alloc, 'system.posix_acl_default', aclXattr([], [])), (e) => code(e) === 'EACCES');
  const badOrder = aclXattr([], []);
  new DataView(badOrder.buffer).setUint16(4, ACL_OTHER, true);
  await assert.rejects(setXattr(rw.s, f1, rw.alloc, 'system.posix_acl_access', badOrder), (e) => code(e) === 'EINVAL');
  const noMask = aclXattr([1000], []).slice();
  await assert.rejects(setXattr(rw.s, f1, rw.alloc, 'system.posix_acl_access',
    Uint8Array.from([...noMask.subarray(0, 28), ...noMask.subarray(36)])), (e) => code(e) === 'EINVAL');
  await assert.rejects(setXattr(rw.s, f1, rw.alloc, 'system.posix_acl_access', bytesOf(7, 0)), (e) => code(e) === 'EOPNOTSUPP' || code(e) === 'EINVAL');
  await setXattr(rw.s, d1, rw.alloc, 'system.posix_acl_default', aclXattr([0], [100]));
  await setXattr(rw.s, f1, rw.alloc, 'system.posix_acl_access', aclXattr([1000, 1001], [50]));
  // An empty ACL removes the attribute (posix_acl_from_xattr gives NULL).
  await setXattr(rw.s, d1, rw.alloc, 'user.keep', v);
  await setXattr(rw.s, d1, rw.alloc, 'system.posix_acl_access', aclXattr([5], []));
  await setXattr(rw.s, d1, rw.alloc, 'system.posix_acl_access', Uint8Array.of(2, 0, 0, 0));
  const model: Model = new Map([
    ['f1', new Map([['user.x', bytesOf(6, 1)], [`user.${'n'.repeat(255)}`, v], ['system.posix_acl_access', aclXattr([1000, 1001], [50])]])],
    ['d1', new Map([['system.posix_acl_default', aclXattr([0], [100])], ['user.keep', v]])],
  ]);
  await closeRw(rw);
  // The kernel (getfattr) cannot list a 260-byte name: compare it through the other oracles only.
  assertFsckClean(path);
  assert.deepEqual(debugfsView(path, ['f1', 'd1']), viewOf(model, 'disk'));
  assert.deepEqual(await ext4tsView(path, ['f1', 'd1']), viewOf(model, 'disk'));
  if (kernelSkip === undefined) {
    const k = await kernelView(t, path, ['d1']);
    assert.deepEqual(k?.get('d1'), viewOf(model, 'kernel').get('d1'), 'kernel reads the ACLs back in the xattr format');
  }
});

test('setXattr: in-inode area and xattr block are byte-identical to what the kernel writes for the same calls', async (t) => {
  if (kernelSkip !== undefined) return skipBecause(t, kernelSkip);
  for (const bs of [1024, 4096]) {
    const path = mkimg(`same${bs}.img`, ['-b', String(bs)], bs === 1024 ? '8M' : '32M', ['fk', 'ft']);
    // Sorted names, so that the kernel's value placement (each new value below the last) and the
    // builder's (values in entry order from the end) coincide.
    const calls: [string, Uint8Array][] = [
      ['user.a0', bytesOf(8, 1)], ['user.a1', bytesOf(40, 2)], ['user.a2', bytesOf(90, 3)], ['user.a3', bytesOf(5, 4)],
      ['user.a4', bytesOf(300, 5)], ['user.a5', bytesOf(0, 6)], ['user.a6', bytesOf(17, 7)], ['user.b00', bytesOf(123, 8)],
    ];
    await withKernelMount(t, path, nextMnt(), (mnt) => {
      for (const [n, v] of calls) execFileSync('setfattr', ['-n', n, '-v', `0x${hexOf(v)}`, join(mnt, 'fk')]);
    }, { rw: true });
    const rw = await openRw(path);
    const ft = await inodeOf(rw, 'ft');
    for (const [n, v] of calls) await setXattr(rw.s, ft, rw.alloc, n, v);
    const fk = await inodeOf(rw, 'fk');
    assert.equal(hexOf(ft.ibodyXattrArea), hexOf(fk.ibodyXattrArea), `${bs}: in-inode areas`);
    const kb = (await blockBytes(rw, fk))!;
    const tb = (await blockBytes(rw, ft))!;
    for (const b of [kb, tb]) new XattrHeader(b, 0).h_checksum = 0;
    assert.equal(hexOf(tb), hexOf(kb), `${bs}: xattr blocks (checksum aside)`);
    await closeRw(rw);
    const model: Model = new Map([['fk', new Map(calls)], ['ft', new Map(calls)]]);
    await assertAllViews(t, path, model, `kernel-identical, ${bs}`);
  }
});

test('setXattr: a shared block (h_refcount 3, made by the kernel or by ext4ts) is copied on write and released by reference', async (t) => {
  const path = mkimg('share.img', ['-b', '1024', '-I', '128'], '8M', ['s1', 's2', 's3', 's4']);
  const attrs: [string, Uint8Array][] = [['user.one', bytesOf(30, 1)], ['user.two', bytesOf(70, 2)], ['trusted.t', bytesOf(9, 3)]];
  if (kernelSkip === undefined) {
    await withKernelMount(t, path, nextMnt(), (mnt) => {
      for (const f of ['s1', 's2', 's3']) for (const [n, v] of attrs) execFileSync('setfattr', ['-n', n, '-v', `0x${hexOf(v)}`, join(mnt, f)]);
    }, { rw: true });
  } else {
    const rw0 = await openRw(path);
    for (const f of ['s1', 's2', 's3']) for (const [n, v] of attrs) await setXattr(rw0.s, await inodeOf(rw0, f), rw0.alloc, n, v);
    await closeRw(rw0);
  }
  const rw = await openRw(path);
  const [s1, s2, s3, s4] = await Promise.all(['s1', 's2', 's3', 's4'].map((f) => inodeOf(rw, f)));
  const shared = s1!.fileAcl;
  assert.ok(shared !== 0 && s2!.fileAcl === shared && s3!.fileAcl === shared, 'one block shared by three inodes');
  assert.equal(await refcountOf(rw, shared), 3);
  // Copy-on-write: s2 gets its own block, the shared one drops to 2.
  await setXattr(rw.s, s2!, rw.alloc, 'user.two', bytesOf(71, 2));
  assert.notEqual(s2!.fileAcl, shared);
  assert.equal(await refcountOf(rw, shared), 2);
  assert.equal(await refcountOf(rw, s2!.fileAcl), 1);
  // Sharing on create: s4 reaches s1's exact set, so it joins the shared block (refcount 3 again).
  for (const [n, v] of attrs) await setXattr(rw.s, s4!, rw.alloc, n, v);
  assert.equal(s4!.fileAcl, shared, 'identical block reused from the sharing cache');
  assert.equal(await refcountOf(rw, shared), 3);
  // Releasing references: s3 by removing its attributes, s1 by releaseXattrBlock.
  for (const [n] of attrs) await removeXattr(rw.s, s3!, rw.alloc, n);
  assert.equal(s3!.fileAcl, 0);
  assert.equal(await refcountOf(rw, shared), 2);
  await releaseXattrBlock(rw.s, s1!, rw.alloc);
  assert.equal(s1!.fileAcl, 0);
  assert.equal(s1!.blocks512(false, 1024), 0);
  assert.equal(await refcountOf(rw, shared), 1);
  // The last reference: modified in place now (refcount 1), then released for good.
  const freedBefore = rw.alloc.freed;
  await setXattr(rw.s, s4!, rw.alloc, 'user.three', bytesOf(3, 3));
  assert.equal(s4!.fileAcl, shared, 'an unshared block is modified in place');
  await releaseXattrBlock(rw.s, s2!, rw.alloc);
  assert.equal(rw.alloc.freed, freedBefore + 1, 's2\'s private block is freed');
  const model: Model = new Map([
    ['s1', new Map()], ['s2', new Map()], ['s3', new Map()],
    ['s4', new Map([...attrs, ['user.three', bytesOf(3, 3)]])],
  ]);
  await closeRw(rw);
  await assertAllViews(t, path, model, 'shared block');
});

test('setXattr: without metadata_csum, with 128-byte inodes, on an image without ext_attr', async (t) => {
  const variants: [string, string[], string][] = [
    ['nocsum', ['-b', '1024', '-O', '^metadata_csum'], '8M'],
    ['nocsum128', ['-b', '4096', '-O', '^metadata_csum,^64bit', '-I', '128'], '32M'],
    ['noxattr', ['-b', '1024', '-O', '^ext_attr'], '8M'],
  ];
  for (const [name, args, size] of variants) {
    const path = mkimg(`${name}.img`, args, size, ['f1', 'f2']);
    const rw = await openRw(path);
    const model: Model = new Map([['f1', new Map()], ['f2', new Map()]]);
    for (const f of ['f1', 'f2']) {
      const info = await inodeOf(rw, f);
      for (let i = 0; i < 12; i++) {
        await setXattr(rw.s, info, rw.alloc, `user.v${i}`, bytesOf(i * 11, i));
        modelSet(model, f, `user.v${i}`, bytesOf(i * 11, i));
      }
      await removeXattr(rw.s, info, rw.alloc, 'user.v3');
      model.get(f)!.delete('user.v3');
    }
    await closeRw(rw);
    await assertAllViews(t, path, model, name);
  }
});

test('setXattr: an inline-data file keeps its system.data entry and its content', async (t) => {
  const path = mkimg('inline.img', ['-b', '1024', '-O', 'inline_data'], '8M', ['s'], [], 100);
  const content = bytesOf(100, 5);
  const rw = await openRw(path);
  const info = await inodeOf(rw, 's');
  assert.ok(info.hasInlineData);
  await assert.rejects(setXattr(rw.s, info, rw.alloc, 'system.data', bytesOf(4, 0)), (e) => code(e) === 'EPERM');
  await assert.rejects(removeXattr(rw.s, info, rw.alloc, 'system.data'), (e) => code(e) === 'EPERM');
  await setXattr(rw.s, info, rw.alloc, 'user.a', bytesOf(4, 1));
  assert.equal(info.fileAcl, 0, 'fits next to system.data in-inode');
  await setXattr(rw.s, info, rw.alloc, 'user.b', bytesOf(50, 2));
  assert.notEqual(info.fileAcl, 0);
  await setXattr(rw.s, info, rw.alloc, 'user.c', bytesOf(2, 3));
  await removeXattr(rw.s, info, rw.alloc, 'user.a');
  const model: Model = new Map([['s', new Map([['user.b', bytesOf(50, 2)], ['user.c', bytesOf(2, 3)]])]]);
  await closeRw(rw);
  assertFsckClean(path);
  const dbg = debugfsView(path, ['s']).get('s')!;
  assert.ok(dbg.some((l) => l.startsWith('system.data=')), 'system.data is still there');
  assert.deepEqual(dbg.filter((l) => !l.startsWith('system.data=')), viewOf(model, 'disk').get('s'));
  assert.deepEqual(await ext4tsView(path, ['s']), viewOf(model, 'disk'));
  const fs = await Ext4.open(path);
  assert.equal(hexOf(await fs.readFile('/s')), hexOf(content), 'ext4ts reads the inline data');
  await fs.close();
  if (kernelSkip === undefined) {
    assert.deepEqual(await kernelView(t, path, ['s']), viewOf(model, 'kernel'));
    await withKernelMount(t, path, nextMnt(), (mnt) => assert.equal(hexOf(readFileSync(join(mnt, 's'))), hexOf(content), 'the kernel reads the inline data'));
  }
});

test('setXattr: corrupt xattr state is reported as Corrupt/EFSBADCRC before anything changes', async () => {
  const path = mkimg('corrupt.img', ['-b', '1024', '-I', '128'], '8M', ['f1', 'f2', 'f3', 'f4']);
  const rw0 = await openRw(path);
  for (const f of ['f1', 'f2', 'f3', 'f4']) await setXattr(rw0.s, await inodeOf(rw0, f), rw0.alloc, `user.${f}`, bytesOf(40, 1));
  await closeRw(rw0);
  const rw = await openRw(path);
  const [f1, f2, f3, f4] = await Promise.all(['f1', 'f2', 'f3', 'f4'].map((f) => inodeOf(rw, f)));
  // f1: a flipped byte in its block's value: the checksum no longer matches.
  (await rw.s.cache.bread(f1!.fileAcl, 'xattr block')).data[1000]! ^= 1;
  await assert.rejects(setXattr(rw.s, f1!, rw.alloc, 'user.x', bytesOf(1, 1)), (e) => (e as { code?: string }).code === 'EFSBADCRC');
  // f2: i_file_acl outside the filesystem.
  f2!.view.i_file_acl_lo = rw.s.blocksCount + 5;
  await assert.rejects(setXattr(rw.s, f2!, rw.alloc, 'user.x', bytesOf(1, 1)), (e) => (e as { code?: string }).code === 'EFSCORRUPTED');
  // f3: i_blocks does not count the block it references.
  f3!.view.i_blocks_lo = 0;
  await assert.rejects(removeXattr(rw.s, f3!, rw.alloc, 'user.f3'), (e) => (e as { code?: string }).code === 'EFSCORRUPTED');
  await assert.rejects(releaseXattrBlock(rw.s, f3!, rw.alloc), (e) => (e as { code?: string }).code === 'EFSCORRUPTED');
  // f4: a bad magic in its block.
  const b4 = (await rw.s.cache.bread(f4!.fileAcl, 'xattr block'));
  b4.data[0]! ^= 0xff;
  b4.verified = false;
  await assert.rejects(setXattr(rw.s, f4!, rw.alloc, 'user.x', bytesOf(1, 1)), (e) => (e as { code?: string }).code === 'EFSCORRUPTED');
  assert.equal(rw.alloc.allocated + rw.alloc.freed, 0, 'nothing was allocated or freed');
});

// ---------------------------------------------------------------------------------------------
// Seeded random sequences against the model.
// ---------------------------------------------------------------------------------------------

/** Asserts that `value` under `name` fits neither in-inode nor in the block as they are now. */
async function assertNoRoom(rw: Rw, info: InodeInfo, name: string, value: Uint8Array): Promise<void> {
  const key = splitXattrName(name)!;
  const entry: XattrInput = { ...key, value: isAcl(name) ? encodeExt4Acl(parsePosixAclXattr(value)) : value };
  const same = (e: XattrInput): boolean => e.nameIndex === key.nameIndex && hexOf(e.nameBytes) === hexOf(key.nameBytes);
  const withEntry = (list: XattrInput[]): XattrInput[] => [...list.filter((e) => !same(e)), entry];
  const area = info.ibodyXattrArea;
  const ibody = parseXattrIbody(area);
  if (info.view.i_extra_isize !== 0 && area.length >= 8) {
    assert.ok(4 + xattrSpaceNeeded(withEntry(ibody)) > area.length, `ENOSPC but ${name} fits in-inode`);
  }
  const blk = await blockBytes(rw, info);
  const block = blk === undefined ? [] : parseXattrBlock(blk, { blockNr: info.fileAcl });
  assert.ok(32 + xattrSpaceNeeded(withEntry(block)) > rw.s.blockSize, `ENOSPC but ${name} fits in the block`);
}

interface RandomRun {
  seed: number;
  mkfs: string[];
  size: string;
  files: number;
  rounds: number;
  ops: number;
  /** Bytes of data in each file (so i_blocks counts data blocks too). */
  dataBytes: number;
}

const NAME_POOL = [
  'user.a', 'user.b', 'user.cc', 'user.dddd', 'user.color', 'user.mime_type', 'user.x1', 'user.x2', 'user.x3',
  `user.${'L'.repeat(120)}`, 'user.café', 'trusted.md5', 'trusted.overlay.opaque', 'security.selinux', 'security.ima',
];

function randomValue(r: () => number, bs: number): Uint8Array {
  const p = r();
  const n = p < 0.4 ? Math.floor(r() * 17) : p < 0.7 ? 17 + Math.floor(r() * 104) : p < 0.9 ? 121 + Math.floor(r() * 480) : 600 + Math.floor(r() * (bs - 700));
  // A few recurring patterns, so that files often end up with equal sets (block sharing).
  return bytesOf(n, r() < 0.5 ? 1 : Math.floor(r() * 1000));
}

function randomAcl(r: () => number): Uint8Array {
  const users = [...new Set(Array.from({ length: Math.floor(r() * 4) }, () => 1000 + Math.floor(r() * 50)))].sort((a, b) => a - b);
  const groups = [...new Set(Array.from({ length: Math.floor(r() * 3) }, () => 100 + Math.floor(r() * 20)))].sort((a, b) => a - b);
  return aclXattr(users, groups, Math.floor(r() * 8));
}

/** What a random run did, so the test can show it exercised each path. */
interface Stats {
  sets: number;
  removes: number;
  expectedErrors: number;
  enospc: number;
  mirrors: number;
  shares: number;
  cows: number;
  acls: number;
}

/** One operation of the random run. */
async function randomOp(rw: Rw, r: () => number, model: Model, files: string[], step: string, st: Stats): Promise<void> {
  const f = files[Math.floor(r() * files.length)]!;
  const info = await inodeOf(rw, f);
  const before = info.fileAcl;
  const sharedBefore = before !== 0 && (await refcountOf(rw, before)) > 1;
  const attrs = model.get(f)!;
  const p = r();
  if (p < 0.55) {
    const acl = r() < 0.08;
    const name = acl ? (f.startsWith('d') && r() < 0.5 ? 'system.posix_acl_default' : 'system.posix_acl_access') : NAME_POOL[Math.floor(r() * NAME_POOL.length)]!;
    const value = acl ? randomAcl(r) : randomValue(r, rw.s.blockSize);
    const q = r();
    const flags: SetXattrFlags = q < 0.15 ? { create: true } : q < 0.3 ? { replace: true } : {};
    const want = flags.create && attrs.has(name) ? 'EEXIST' : flags.replace && !attrs.has(name) ? 'ENODATA' : undefined;
    try {
      await setXattr(rw.s, info, rw.alloc, name, value, flags);
      assert.equal(want, undefined, `${step}: set ${name} should fail with ${want}`);
      modelSet(model, f, name, value);
      st.sets++;
      if (acl) st.acls++;
    } catch (e) {
      if (code(e) === 'ENOSPC' && want === undefined) {
        await assertNoRoom(rw, info, name, value);
        st.enospc++;
      } else {
        assert.equal(code(e), want, `${step}: set ${name}: ${String(e)}`);
        st.expectedErrors++;
      }
    }
  } else if (p < 0.85) {
    const names = [...attrs.keys()];
    const name = names.length > 0 && r() < 0.85 ? names[Math.floor(r() * names.length)]! : NAME_POOL[Math.floor(r() * NAME_POOL.length)]!;
    try {
      await removeXattr(rw.s, info, rw.alloc, name);
      assert.ok(attrs.has(name), `${step}: removed absent ${name}`);
      attrs.delete(name);
      st.removes++;
    } catch (e) {
      assert.ok(!attrs.has(name) && code(e) === 'ENODATA', `${step}: remove ${name}: ${String(e)}`);
      st.expectedErrors++;
    }
  } else {
    await mirror(rw, r, model, files, f, info, step, st);
  }
  if (sharedBefore && info.fileAcl !== before) st.cows++;
  await assertInMount(rw, f, model, `${step}: in-mount read of ${f}`);
}

/** Gives file `f` the exact attribute set of another file, in sorted order. */
async function mirror(rw: Rw, r: () => number, model: Model, files: string[], f: string, info: InodeInfo, step: string, st: Stats): Promise<void> {
  const src = files[Math.floor(r() * files.length)]!;
  if (src === f) return;
  st.mirrors++;
  for (const n of [...model.get(f)!.keys()]) {
    await removeXattr(rw.s, info, rw.alloc, n);
    model.get(f)!.delete(n);
  }
  for (const [n, v] of [...model.get(src)!].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (n === 'system.posix_acl_default' && !f.startsWith('d')) continue;
    try {
      await setXattr(rw.s, info, rw.alloc, n, v);
      modelSet(model, f, n, v);
    } catch (e) {
      assert.equal(code(e), 'ENOSPC', `${step}: mirror ${src} → ${f}: ${String(e)}`);
    }
  }
  const srcAcl = (await inodeOf(rw, src)).fileAcl;
  if (srcAcl !== 0 && srcAcl === info.fileAcl) st.shares++;
}

async function randomRun(t: TestContext, run: RandomRun, st: Stats): Promise<void> {
  const files = [...Array.from({ length: run.files }, (_, i) => `f${i}`), 'd0'];
  const path = mkimg(`rand${run.seed}.img`, run.mkfs, run.size, files.filter((f) => f.startsWith('f')), ['d0'], run.dataBytes);
  const r = prng(run.seed);
  const model: Model = new Map(files.map((f) => [f, new Map()]));
  for (let round = 0; round < run.rounds; round++) {
    const rw = await openRw(path);
    for (let i = 0; i < run.ops; i++) await randomOp(rw, r, model, files, `seed ${run.seed} round ${round} op ${i}`, st);
    await closeRw(rw);
    assertFsckClean(path);
  }
  await assertAllViews(t, path, model, `seed ${run.seed}`);
}

const SEED = process.env['XATTR_SEED'] !== undefined ? Number(process.env['XATTR_SEED']) : undefined;

test('setXattr/removeXattr: seeded random sequences match the model (e2fsck, debugfs, ext4ts, kernel)', async (t) => {
  const runs: RandomRun[] = [
    { seed: SEED ?? 1, mkfs: ['-b', '1024'], size: '8M', files: 5, rounds: 3, ops: 300, dataBytes: 3000 },
    { seed: SEED ?? 2, mkfs: ['-b', '4096', '-I', '128'], size: '32M', files: 6, rounds: 3, ops: 300, dataBytes: 0 },
    { seed: SEED ?? 3, mkfs: ['-b', '1024', '-I', '128', '-O', '^metadata_csum'], size: '8M', files: 4, rounds: 3, ops: 300, dataBytes: 5000 },
    { seed: SEED ?? 4, mkfs: ['-b', '4096', '-I', '512'], size: '32M', files: 5, rounds: 3, ops: 300, dataBytes: 10000 },
    { seed: SEED ?? 5, mkfs: ['-b', '2048', '-O', '^metadata_csum,^64bit,uninit_bg'], size: '16M', files: 5, rounds: 3, ops: 300, dataBytes: 0 },
  ];
  const st: Stats = { sets: 0, removes: 0, expectedErrors: 0, enospc: 0, mirrors: 0, shares: 0, cows: 0, acls: 0 };
  for (const run of runs) {
    try {
      await randomRun(t, run, st);
    } catch (e) {
      throw new Error(`random xattr run failed; replay with XATTR_SEED=${run.seed} (mkfs ${run.mkfs.join(' ')})`, { cause: e });
    }
  }
  t.diagnostic(`random runs: ${JSON.stringify(st)}; kernel oracle: ${kernelSkip ?? 'yes'}`);
  if (SEED === undefined) {
    assert.ok(st.shares > 0, 'mirrored sets shared a block');
    assert.ok(st.cows > 0, 'a shared block was copied on write');
    assert.ok(st.enospc > 0 && st.acls > 0 && st.expectedErrors > 0);
  }
});
