/**
 * Seeded random namespace operations against a model (issue 3's verification): for each image
 * variant, thousands of mkdir/create/symlink/link/unlink/rmdir/rename/chmod/chown/utimes/
 * truncate/setxattr/removexattr operations — invalid ones included, whose error codes must
 * match POSIX — then close(); `e2fsck -fn` must be silent, ext4ts must read back exactly the
 * model, and the Linux kernel (loop mount, where root allows) must show the same tree; after
 * unmounting, ext4ts reads it again. Any failure names its seed: RANDOM_SEED=<n> replays it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ext4, PosixError } from '../../src/index.js';
import { ModelFs, describeExt4, describeMount, alignTo, timesExt4, timesMount, type MNode } from '../helpers/model-fs.js';
import { withKernelMount } from '../helpers/check-image.js';

const work = mkdtempSync(join(tmpdir(), 'ext4ts-nsrand-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

const OPS = Number(process.env['RANDOM_OPS'] ?? '3000');
const ONLY_SEED = process.env['RANDOM_SEED'] !== undefined ? Number(process.env['RANDOM_SEED']) : undefined;

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 0x1_0000_0000;
  };
}

export function e2fsckClean(img: string): void {
  const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
  const noise = r.stdout.split('\n').filter((l) => l !== '' && !/^Pass \d|^e2fsck \d|^[^:]+: \d+\/\d+ files/.test(l));
  assert.equal(r.status, 0, `e2fsck -fn exit ${r.status}:\n${r.stdout}${r.stderr}`);
  assert.deepEqual(noise, [], `e2fsck -fn printed:\n${r.stdout}`);
}

interface Variant {
  name: string;
  mkfs: string[];
  /** Made by ext4ts's own mkfs instead of mkfs.ext4. */
  ours?: boolean;
}

const VARIANTS: Variant[] = [
  { name: '4k-default', mkfs: ['-b', '4096'] },
  { name: '1k-default', mkfs: ['-b', '1024'] },
  { name: '1k-nocsum-crc16', mkfs: ['-b', '1024', '-O', '^metadata_csum,^64bit,uninit_bg'] },
  { name: '2k-128inode', mkfs: ['-b', '2048', '-I', '128'] },
  { name: 'ext4ts-mkfs-1k', mkfs: ['-b', '1024'], ours: true },
  { name: 'ext4ts-mkfs-4k', mkfs: ['-b', '4096'], ours: true },
];

const NAME_POOL = ['a', 'b', 'c', 'data', 'x y', 'ünï', '🙂', 'long-' + 'n'.repeat(200), 'z'.repeat(255), '.hidden', 'e', 'f', 'g'];

class Runner {
  readonly rnd: () => number;
  readonly model = new ModelFs();
  ops = 0;
  errorsMatched = 0;
  counts: Record<string, number> = {};
  constructor(readonly fs: Ext4, seed: number, readonly smallInodes: boolean) {
    this.rnd = prng(seed);
  }
  pick<T>(xs: readonly T[]): T {
    // OK to assert: callers pass non-empty arrays.
    return xs[Math.floor(this.rnd() * xs.length)] as T;
  }
  dirs(): string[] {
    return this.model.paths().filter((p) => this.model.get(p)?.type === 'dir' && p !== '/lost+found');
  }
  nonRoot(): string[] {
    return this.model.paths().filter((p) => p !== '/' && p !== '/lost+found' && !p.startsWith('/lost+found/'));
  }
  newName(dir: string): string {
    const d = this.model.get(dir);
    for (let i = 0; i < 8; i++) {
      const base = this.rnd() < 0.5 ? this.pick(NAME_POOL) : `n${Math.floor(this.rnd() * 100000)}`;
      if (!d?.children?.has(base)) return base;
    }
    return `u${this.ops}-${Math.floor(this.rnd() * 1e9)}`;
  }
  join(dir: string, name: string): string {
    return dir === '/' ? `/${name}` : `${dir}/${name}`;
  }

  /** Runs `fn`; if the model says it must fail with `expect`, checks the code instead. */
  async attempt(kind: string, expect: string | undefined, fn: () => Promise<unknown>, apply: () => void, allowed: readonly string[] = []): Promise<void> {
    this.ops++;
    this.counts[kind] = (this.counts[kind] ?? 0) + 1;
    try {
      await fn();
    } catch (e) {
      if (expect !== undefined && e instanceof PosixError && e.code === expect) {
        this.errorsMatched++;
        return;
      }
      if (e instanceof PosixError && allowed.includes(e.code)) {
        this.counts[`${kind}:${e.code}`] = (this.counts[`${kind}:${e.code}`] ?? 0) + 1;
        return;
      }
      throw new Error(`op ${this.ops} ${kind}: expected ${expect ?? 'success'}, got ${(e as Error).stack}`);
    }
    if (expect !== undefined) throw new Error(`op ${this.ops} ${kind}: expected ${expect}, but it succeeded`);
    apply();
  }

  async step(): Promise<void> {
    const r = this.rnd();
    const m = this.model;
    const dirs = this.dirs();
    // Half the new entries go to one hot directory so it grows into a multi-level htree.
    const hot = dirs.find((d) => d === '/hot') ?? '/';
    const dir = this.rnd() < 0.45 ? hot : this.pick(dirs);
    if (r < 0.16) {
      const name = this.rnd() < 0.05 && dirs.length > 1 ? 'hot' : this.newName(dir);
      const p = this.join(dir, name);
      const exists = m.get(p) !== undefined;
      const perm = this.pick([0o755, 0o700, 0o1777, 0o2750]);
      await this.attempt('mkdir', exists ? 'EEXIST' : undefined, () => this.fs.mkdir(p, { mode: perm }), () => {
        m.parentOf(p).dir!.children!.set(name, m.node('dir', perm, 0, 0));
      });
    } else if (r < 0.40) {
      const name = this.newName(dir);
      const p = this.join(dir, name);
      const fifo = this.rnd() < 0.1;
      const perm = this.pick([0o644, 0o600, 0o4755, 0o000]);
      await this.attempt(fifo ? 'mkfifo' : 'create', undefined, () => this.fs.mknod(p, { mode: perm, ...(fifo ? { node: { type: 'fifo' as const } } : {}) }), () => {
        m.parentOf(p).dir!.children!.set(name, m.node(fifo ? 'fifo' : 'file', perm, 0, 0));
      });
    } else if (r < 0.48) {
      const name = this.newName(dir);
      const p = this.join(dir, name);
      const long = this.rnd() < 0.4;
      const target = long ? `../${'t'.repeat(60 + Math.floor(this.rnd() * 900))}` : this.pick(['a', '../b', '/etc/passwd', 'x y/ü']);
      await this.attempt('symlink', undefined, () => this.fs.symlink(target, p), () => {
        const n = m.node('symlink', 0o777, 0, 0);
        n.target = target;
        n.size = Buffer.byteLength(target);
        m.parentOf(p).dir!.children!.set(name, n);
      });
    } else if (r < 0.54) {
      const files = this.nonRoot().filter((p) => m.get(p)?.type === 'file');
      if (files.length === 0) return;
      const src = this.pick(files);
      const name = this.newName(dir);
      const p = this.join(dir, name);
      await this.attempt('link', undefined, () => this.fs.link(src, p), () => {
        const n = m.get(src)!;
        n.links++;
        m.parentOf(p).dir!.children!.set(name, n);
      });
    } else if (r < 0.64) {
      const all = this.nonRoot();
      if (all.length === 0) return;
      const p = this.pick(all);
      const n = m.get(p)!;
      const expect = n.type === 'dir' ? 'EISDIR' : undefined;
      await this.attempt('unlink', expect, () => this.fs.unlink(p), () => {
        m.parentOf(p).dir!.children!.delete(p.split('/').pop()!);
        n.links--;
      });
    } else if (r < 0.70) {
      const ds = this.nonRoot().filter((p) => m.get(p)?.type === 'dir');
      if (ds.length === 0) return;
      const p = this.pick(ds);
      const n = m.get(p)!;
      const expect = n.children!.size > 0 ? 'ENOTEMPTY' : undefined;
      await this.attempt('rmdir', expect, () => this.fs.rmdir(p), () => {
        m.parentOf(p).dir!.children!.delete(p.split('/').pop()!);
      });
    } else if (r < 0.80) {
      await this.renameStep(dirs);
    } else if (r < 0.85) {
      const all = this.nonRoot().filter((p) => m.get(p)?.type !== 'symlink');
      if (all.length === 0) return;
      const p = this.pick(all);
      const perm = Math.floor(this.rnd() * 0o10000);
      await this.attempt('chmod', undefined, () => this.fs.chmod(p, perm), () => { m.get(p)!.perm = perm; });
    } else if (r < 0.89) {
      const all = this.nonRoot();
      if (all.length === 0) return;
      const p = this.pick(all);
      const uid = this.pick([0, 1000, 65535, 65536, 100000, 4294967294]);
      const gid = this.pick([0, 100, 70000]);
      await this.attempt('chown', undefined, () => this.fs.chown(p, uid, gid, false), () => {
        const n = m.get(p)!;
        n.uid = uid;
        n.gid = gid;
      });
    } else if (r < 0.92) {
      // Not directories: adding an entry later moves their mtime again.
      const all = this.nonRoot().filter((p) => m.get(p)?.type === 'file' || m.get(p)?.type === 'fifo');
      if (all.length === 0) return;
      const p = this.pick(all);
      const sec = this.pick([0, 1, 1_700_000_000, -14182940, 2_147_483_648, 8_589_934_592]);
      // 128-byte inodes hold 32-bit signed seconds: the kernel clamps, and so must we.
      const stored = this.smallInodes ? Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, sec)) : sec;
      await this.attempt('utimes', undefined, () => this.fs.utimes(p, { sec, nsec: 5 }, { sec, nsec: 123456789 }), () => { m.get(p)!.mtimeSec = stored; });
    } else if (r < 0.95) {
      const files = this.nonRoot().filter((p) => m.get(p)?.type === 'file');
      if (files.length === 0) return;
      const p = this.pick(files);
      const size = this.pick([0, 1, 4095, 1 << 20, 3 * 2 ** 30, 123456789]);
      await this.attempt('truncate', undefined, () => this.fs.truncate(p, size), () => {
        const n = m.get(p)!;
        n.size = size;
        delete n.mtimeSec; // truncate sets mtime to now
      });
    } else if (r < 0.985) {
      // user.* exists only on files and directories (the VFS refuses it elsewhere).
      const all = this.nonRoot().filter((p) => m.get(p)?.type === 'file' || m.get(p)?.type === 'dir');
      if (all.length === 0) return;
      const p = this.pick(all);
      const name = this.pick(['user.a', 'user.b', 'trusted.t', 'user.' + 'k'.repeat(40), 'security.s']);
      const len = this.pick([0, 1, 16, 100, 300, 700]);
      const value = Buffer.alloc(len, Math.floor(this.rnd() * 256));
      // No room left for it (in-inode area and one block) is ENOSPC, like the kernel without ea_inode.
      await this.attempt('setxattr', undefined, () => this.fs.setxattr(p, name, value), () => { m.get(p)!.xattrs.set(name, value.toString('hex')); }, ['ENOSPC']);
    } else {
      const withX = this.nonRoot().filter((p) => (m.get(p)?.xattrs.size ?? 0) > 0);
      if (withX.length === 0) return;
      const p = this.pick(withX);
      const name = this.pick([...m.get(p)!.xattrs.keys()]);
      await this.attempt('removexattr', undefined, () => this.fs.removexattr(p, name), () => { m.get(p)!.xattrs.delete(name); });
    }
  }

  async renameStep(dirs: string[]): Promise<void> {
    const m = this.model;
    const all = this.nonRoot();
    if (all.length === 0) return;
    const from = this.pick(all);
    const src = m.get(from)!;
    const toDir = this.pick(dirs);
    // Sometimes onto an existing entry, sometimes a fresh name.
    const existing = [...(m.get(toDir)?.children?.keys() ?? [])].filter((k) => !(toDir === '/' && k === 'lost+found'));
    const name = existing.length > 0 && this.rnd() < 0.35 ? this.pick(existing) : this.newName(toDir);
    const to = this.join(toDir, name);
    const dst = m.get(to);
    let expect: string | undefined;
    if (src.type === 'dir' && ModelFs.isAncestor(from, toDir)) expect = 'EINVAL';
    else if (dst !== undefined && dst !== src && dst.type === 'dir' && ModelFs.isAncestor(to, from)) expect = 'ENOTEMPTY';
    else if (dst !== undefined && dst !== src) {
      if (src.type === 'dir' && dst.type !== 'dir') expect = 'ENOTDIR';
      else if (src.type !== 'dir' && dst.type === 'dir') expect = 'EISDIR';
      else if (dst.type === 'dir' && dst.children!.size > 0) expect = 'ENOTEMPTY';
    }
    await this.attempt('rename', expect, () => this.fs.rename(from, to), () => {
      if (dst === src) return;
      m.parentOf(from).dir!.children!.delete(from.split('/').pop()!);
      if (dst !== undefined) dst.links--;
      m.parentOf(to).dir!.children!.set(name, src);
    });
  }
}

const CLI = join(import.meta.dirname, '../../src/cli/main.js');

function mkfs(img: string, v: Variant): void {
  if (v.ours) {
    execFileSync(process.execPath, [CLI, 'mkfs', '-q', ...v.mkfs, img, '64M'], { stdio: 'pipe' });
    return;
  }
  execFileSync('mkfs.ext4', ['-q', '-F', ...v.mkfs, img, '64M'], { stdio: 'pipe', env: { ...process.env, E2FSPROGS_FAKE_TIME: '1700000000' } });
}

let totalOps = 0;
let totalImages = 0;

VARIANTS.forEach((v, i) => {
  const seed = ONLY_SEED ?? 1000 + i;
  test(`random namespace ops (${v.name}, seed ${seed}): e2fsck silent, ext4ts and the kernel see the model`, async (t) => {
    const img = join(work, `${v.name}.img`);
    mkfs(img, v);
    let fs = await Ext4.open(img, { readOnly: false });
    const run = new Runner(fs, seed, v.mkfs.includes('128'));
    try {
      for (let k = 0; k < OPS; k++) await run.step();
    } catch (e) {
      await fs.close().catch(() => undefined);
      throw new Error(`seed ${seed} (${v.name}; replay with RANDOM_SEED=${seed}): ${(e as Error).message}`);
    }
    await fs.close();
    totalOps += run.ops;
    totalImages++;
    e2fsckClean(img);
    const want = run.model.describe();
    fs = await Ext4.open(img);
    const seen = await describeExt4(fs);
    const ourTimes = await timesExt4(fs, want.map((d) => d.path));
    await fs.close();
    assert.deepEqual(alignTo(want, seen), want, `seed ${seed}: ext4ts view vs model`);
    const kernelCompared = await withKernelMount(t, img, join(work, `mnt-${v.name}`), (mnt) => {
      const kern = describeMount(mnt);
      assert.deepEqual(alignTo(want, kern), want, `seed ${seed}: kernel view vs model`);
      // Every a/m/c time, to the nanosecond, as the kernel reads what we wrote.
      assert.deepEqual(timesMount(mnt, want.map((d) => d.path)), ourTimes, `seed ${seed}: times, kernel vs ext4ts`);
      return true;
    });
    if (kernelCompared === true) {
      fs = await Ext4.open(img);
      assert.deepEqual(alignTo(want, await describeExt4(fs)), want, 'after the kernel mount');
      await fs.close();
      e2fsckClean(img);
    }
    t.diagnostic(`${run.ops} operations (${run.errorsMatched} expected errors matched): ${JSON.stringify(run.counts)}; ${want.length} entries`);
  });
});

test('random namespace ops: totals', () => {
  assert.ok(totalImages === VARIANTS.length || ONLY_SEED !== undefined, 'every variant ran');
  console.log(`# namespace-random: ${totalOps} operations over ${totalImages} images verified by e2fsck, ext4ts and the kernel`);
});

export type { MNode };
