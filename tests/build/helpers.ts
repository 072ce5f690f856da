/**
 * Test kit for the image builder: a seeded "spec" of an image (nested directories, files of many
 * sizes, a sparse file, a directory with 1000 entries, short and long symlinks, hard links, device
 * nodes, a FIFO, a socket, xattrs, times before 1970 and after 2038 with nanoseconds), writers that
 * turn it into each kind of source (a JSON manifest, a tar via tar-stream's pack, plain or gzip, and
 * a host directory), and a verifier that reads an image back through the Linux kernel (loop
 * mount, read-only) or, without root, through ext4ts's read path, and compares every entry.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  mkdirSync, writeFileSync, symlinkSync, linkSync, openSync, writeSync, closeSync, ftruncateSync, utimesSync,
  lutimesSync, lstatSync, readdirSync, readFileSync, readlinkSync, mkdtempSync, rmdirSync, chownSync, lchownSync, chmodSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { Ext4 } from '../../src/index.js';
import { seededPrng, type Prng } from '../../src/runtime/random.js';
import { assertFsckClean, withKernelMount } from '../helpers/check-image.js';

export { assertFsckClean };

export interface Time {
  sec: number;
  nsec: number;
}

export type SpecType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo' | 'sock';

/** One entry of an image as a test wants it. */
export interface SpecEntry {
  path: string;
  type: SpecType;
  mode: number;
  uid: number;
  gid: number;
  atime: Time;
  mtime: Time;
  /** Files: the bytes (zero blocks of `sparse` files are holes). */
  content?: Uint8Array;
  /** Files: a size past the content (a trailing hole). */
  size?: number;
  /** Files whose zero blocks should become holes (host sparse files). */
  sparse?: boolean;
  /** Symlink target text, or a hard link's target path. */
  target?: string;
  major?: number;
  minor?: number;
  xattrs: Record<string, Uint8Array>;
}

const MiB = 1 << 20;

/** A v2 security.capability value granting cap_net_raw (permitted and effective). */
export const CAP_NET_RAW = new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

/** A POSIX ACL in the xattr (v2) format: user::rw-, user:1000:rwx, group::r--, mask::rwx, other::r--. */
export function aclXattr(): Uint8Array {
  const ents: [number, number, number][] = [[1, 6, 0xffffffff], [2, 7, 1000], [4, 4, 0xffffffff], [0x10, 7, 0xffffffff], [0x20, 4, 0xffffffff]];
  const b = Buffer.alloc(4 + 8 * ents.length);
  b.writeUInt32LE(2, 0);
  ents.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeUInt32LE(id, 8 + 8 * i);
  });
  return b;
}

function bytes(r: Prng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  r.fill(out);
  return out;
}

/** A time from a spread that includes before 1970 and after 2038, with nanoseconds. */
function time(r: Prng): Time {
  const secs = [-2_000_000_000 + r.below(1000), -1, 0, 1_500_000_000 + r.below(1e8), 4_102_444_800 + r.below(1e6), 15_000_000_000];
  return { sec: secs[r.below(secs.length)]!, nsec: r.below(1_000_000_000) };
}

export interface SpecOptions {
  seed: number;
  /** Entries in the big directory (default 1000). */
  bigDir?: number;
  /** Include device nodes, a socket and xattrs (not for host directories). */
  special?: boolean;
}

/** The seeded spec (see the module comment). Parents come before children. */
export function makeSpec(opts: SpecOptions): SpecEntry[] {
  const r = seededPrng(opts.seed);
  const out: SpecEntry[] = [];
  const add = (e: Partial<SpecEntry> & Pick<SpecEntry, 'path' | 'type'>): SpecEntry => {
    const full: SpecEntry = {
      mode: e.type === 'dir' ? 0o755 : 0o644, uid: [0, 1000, 65534, 100000][r.below(4)]!, gid: [0, 100, 1000][r.below(3)]!,
      atime: time(r), mtime: time(r), xattrs: {}, ...e,
    };
    out.push(full);
    return full;
  };
  add({ path: '/', type: 'dir', mode: 0o755 });
  add({ path: '/etc', type: 'dir' });
  add({ path: '/usr', type: 'dir' });
  const dirs = ['/', '/etc', '/usr'];
  const names = ['with space', 'ünïcødé', 'x'.repeat(200), 'deep'];
  for (let i = 0; i < 12; i++) {
    const parent = dirs[r.below(dirs.length)]!;
    const p = `${parent === '/' ? '' : parent}/${names[i] ?? `d${i}`}`;
    add({ path: p, type: 'dir', mode: [0o755, 0o700, 0o2775, 0o1777][r.below(4)]! });
    dirs.push(p);
  }
  const pick = (): string => {
    const d = dirs[r.below(dirs.length)]!;
    return d === '/' ? '' : d;
  };
  // The last two are large files (direct I/O in the builder): one ends mid-block, one is 8 MiB + 1 MiB.
  const sizes = [0, 1, 2, 100, 4095, 4096, 4097, 12288, 65537, 300_000, MiB + 12345, 2 * MiB + 1, 4 * MiB + 12345, 9 * MiB];
  for (let i = 0; i < 36; i++) {
    const n = sizes[i % sizes.length]!;
    add({ path: `${pick()}/f${i}.bin`, type: 'file', mode: [0o644, 0o600, 0o755, 0o4755, 0o2750][r.below(5)]!, content: bytes(r, n) });
  }
  // A sparse file: two data runs and a trailing hole.
  const sparse = new Uint8Array(3 * MiB);
  sparse.set(bytes(r, 4096), 0);
  sparse.set(bytes(r, 8192), MiB);
  add({ path: '/sparse.bin', type: 'file', content: sparse, sparse: true, size: 3 * MiB + 123 });
  add({ path: '/big', type: 'dir' });
  for (let i = 0; i < (opts.bigDir ?? 1000); i++) add({ path: `/big/entry-${String(i).padStart(4, '0')}-${'n'.repeat(i % 40)}`, type: 'file', content: new Uint8Array(0) });
  for (const [i, len] of [3, 59, 60, 300, 2000].entries()) {
    add({ path: `${pick()}/link${i}`, type: 'symlink', mode: 0o777, target: ('../' + 'abcdefghij'.repeat(300)).slice(0, len) });
  }
  // Hard links: one name sorts before the file it links to.
  const hl = add({ path: '/usr/hl-target', type: 'file', content: bytes(r, 5000) });
  add({ path: '/aaa-hardlink', type: 'hardlink', target: hl.path });
  add({ path: `${pick()}/hl-second`, type: 'hardlink', target: hl.path });
  add({ path: '/etc/fifo', type: 'fifo', mode: 0o620 });
  if (opts.special) {
    add({ path: '/etc/null', type: 'chr', mode: 0o666, major: 1, minor: 3 });
    add({ path: '/etc/sda1', type: 'blk', mode: 0o660, major: 8, minor: 1 });
    add({ path: '/etc/bigdev', type: 'chr', mode: 0o600, major: 300, minor: 70000 });
    add({ path: '/etc/sock', type: 'sock', mode: 0o755 });
    const cap = add({ path: '/usr/ping', type: 'file', mode: 0o755, content: bytes(r, 3000) });
    cap.xattrs['security.capability'] = CAP_NET_RAW;
    cap.xattrs['user.origin'] = new TextEncoder().encode('build-42');
    out.find((e) => e.path === '/etc')!.xattrs['user.dir'] = new TextEncoder().encode('x'.repeat(300));
    out.find((e) => e.path === '/etc/null')!.xattrs['security.selinux'] = new TextEncoder().encode('system_u:object_r:null_device_t:s0\0');
    out.find((e) => e.type === 'symlink')!.xattrs['security.selinux'] = new TextEncoder().encode('system_u:object_r:bin_t:s0\0');
  }
  return out;
}

// ---- writers -------------------------------------------------------------------------------

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A JSON manifest of the spec; big and sparse files as host files in `dir`. */
export function writeManifest(spec: readonly SpecEntry[], dir: string): string {
  mkdirSync(join(dir, 'blobs'), { recursive: true });
  const entries = spec.map((e, i) => {
    const o: Record<string, unknown> = {
      path: e.path, type: e.type, mode: `0${e.mode.toString(8)}`, uid: e.uid, gid: e.gid,
      atime: { sec: e.atime.sec, nsec: e.atime.nsec }, mtime: paxTime(e.mtime),
    };
    if (e.type === 'symlink' || e.type === 'hardlink') o['target'] = e.target;
    if (e.major !== undefined) Object.assign(o, { major: e.major, minor: e.minor });
    if (Object.keys(e.xattrs).length > 0) o['xattrs'] = Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, { hex: hex(v) }]));
    if (e.type === 'file' && e.content !== undefined) {
      if (e.content.length > 64 * 1024 || e.sparse) {
        const blob = join(dir, 'blobs', `b${i}`);
        writeHostFile(blob, e.content, e.sparse === true);
        o['source'] = `blobs/b${i}`;
      } else if (e.content.length > 0) o['content'] = { base64: Buffer.from(e.content).toString('base64') };
      if (e.size !== undefined) o['size'] = e.size;
    }
    return o;
  });
  const path = join(dir, 'manifest.json');
  writeFileSync(path, JSON.stringify({ entries }, null, 1));
  return path;
}

/** A PAX decimal time: "S.NNNNNNNNN", negative times as "-S.F" meaning -(S.F). */
export function paxTime(t: Time): string {
  if (t.nsec === 0) return `${t.sec}`;
  if (t.sec >= 0) return `${t.sec}.${String(t.nsec).padStart(9, '0')}`;
  return `-${-t.sec - 1}.${String(1e9 - t.nsec).padStart(9, '0')}`;
}

/** A tar of the spec made with tar-stream's pack (PAX records for times, big ids and xattrs). */
export async function writeTar(spec: readonly SpecEntry[]): Promise<Uint8Array> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  const TYPE: Record<string, string> = {
    file: 'file', dir: 'directory', symlink: 'symlink', hardlink: 'link', chr: 'character-device', blk: 'block-device', fifo: 'fifo',
  };
  for (const e of spec) {
    if (e.type === 'sock') continue;
    const pax: Record<string, string> = { mtime: paxTime(e.mtime), atime: paxTime(e.atime) };
    for (const [k, v] of Object.entries(e.xattrs)) pax[`SCHILY.xattr.${k}`] = Buffer.from(v).toString('latin1');
    const name = e.path === '/' ? './' : `.${e.path}`;
    const header = {
      name, type: TYPE[e.type] as 'file', mode: e.mode, uid: e.uid, gid: e.gid, mtime: new Date(Math.max(0, Math.min(e.mtime.sec, 2 ** 32)) * 1000),
      linkname: e.type === 'hardlink' ? `.${e.target!}` : e.target ?? '', devmajor: e.major ?? 0, devminor: e.minor ?? 0, pax,
    };
    const body = e.type === 'file' ? Buffer.from(fullContent(e)) : undefined;
    await new Promise<void>((res, rej) => (body !== undefined ? p.entry(header, body, (err) => (err ? rej(err) : res())) : p.entry(header, (err) => (err ? rej(err) : res()))));
  }
  p.finalize();
  await done;
  return new Uint8Array(Buffer.concat(chunks));
}

export function gzip(b: Uint8Array): Uint8Array {
  return new Uint8Array(gzipSync(b));
}

/** A file's whole content, trailing hole included. */
export function fullContent(e: SpecEntry): Uint8Array {
  const c = e.content ?? new Uint8Array(0);
  if (e.size === undefined || e.size <= c.length) return c;
  const out = new Uint8Array(e.size);
  out.set(c);
  return out;
}

/** Writes a host file; with `sparse`, only the non-zero 4 KiB blocks (the rest stays a hole). */
export function writeHostFile(path: string, content: Uint8Array, sparse: boolean, size = content.length): void {
  const fd = openSync(path, 'w');
  try {
    if (!sparse) writeSync(fd, content, 0, content.length, 0);
    else {
      for (let off = 0; off < content.length; off += 4096) {
        const blk = content.subarray(off, Math.min(content.length, off + 4096));
        if (blk.some((b) => b !== 0)) writeSync(fd, blk, 0, blk.length, off);
      }
    }
    ftruncateSync(fd, Math.max(size, content.length));
  } finally {
    closeSync(fd);
  }
}

/**
 * The spec as a host directory at `root` (no devices, sockets or xattrs: those need root or a
 * native API). Owners are set only as root. Times are set last, bottom-up.
 */
export function writeHostTree(spec: readonly SpecEntry[], root: string): void {
  const asRoot = process.getuid?.() === 0;
  for (const e of spec) {
    const h = join(root, e.path);
    if (e.type === 'dir') mkdirSync(h, { recursive: true });
    else if (e.type === 'file') writeHostFile(h, e.content ?? new Uint8Array(0), e.sparse === true, e.size ?? e.content?.length ?? 0);
    else if (e.type === 'symlink') symlinkSync(e.target!, h);
    else if (e.type === 'hardlink') linkSync(join(root, e.target!), h);
    else if (e.type === 'fifo') execFileSync('mkfifo', [h]);
    else continue;
    if (e.type === 'hardlink') continue;
    if (asRoot) (e.type === 'symlink' ? lchownSync : chownSync)(h, e.uid, e.gid);
    if (e.type !== 'symlink') chmodSync(h, e.mode);
  }
  for (const e of [...spec].reverse()) {
    if (e.type === 'hardlink' || e.type === 'chr' || e.type === 'blk' || e.type === 'sock') continue;
    const secs = (t: Time): number => t.sec + t.nsec / 1e9;
    (e.type === 'symlink' ? lutimesSync : utimesSync)(join(root, e.path), secs(e.atime), secs(e.mtime));
  }
}

// ---- expectations and the verifier -------------------------------------------------------------

/** One entry as it must appear in the image. */
export interface Expect {
  path: string;
  type: string;
  perm: number;
  uid: number;
  gid: number;
  atime: string;
  mtime: string;
  size?: number;
  sha256?: string;
  /** At most this many 512-byte sectors allocated (sparse files). */
  maxSectors?: number;
  targetHex?: string;
  /** Names of one hard-link group share this key (and an inode). */
  group?: string;
  rdev?: string;
  xattrs: Record<string, string>;
}

const ts = (t: Time): string => `${t.sec}.${String(t.nsec).padStart(9, '0')}`;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** The expectation for a spec built from a manifest or tar (hard links resolved to their file). */
export function expectFromSpec(spec: readonly SpecEntry[], opts: { xattrs: boolean; sockets: boolean; holes: boolean }): Expect[] {
  const byPath = new Map(spec.map((e) => [e.path, e]));
  const out: Expect[] = [];
  for (const e of spec) {
    if (e.type === 'sock' && !opts.sockets) continue;
    const inode = e.type === 'hardlink' ? byPath.get(e.target!)! : e;
    const x: Expect = {
      path: e.path, type: inode.type, perm: inode.type === 'symlink' ? 0o777 : inode.mode, uid: inode.uid, gid: inode.gid,
      atime: ts(inode.atime), mtime: ts(inode.mtime),
      xattrs: opts.xattrs ? Object.fromEntries(Object.entries(inode.xattrs).map(([k, v]) => [k, hex(v)]).sort()) : {},
    };
    if (inode.type === 'file') {
      const c = fullContent(inode);
      x.size = c.length;
      x.sha256 = sha(c);
      if (inode.sparse && opts.holes) x.maxSectors = 8 * (1 + 2) + 8;
    }
    if (inode.type === 'symlink') x.targetHex = hex(new TextEncoder().encode(inode.target!));
    if (inode.type === 'chr' || inode.type === 'blk') x.rdev = `${inode.major}:${inode.minor}`;
    if (spec.some((o) => o.type === 'hardlink' && o.target === inode.path)) x.group = inode.path;
    out.push(x);
  }
  return out;
}

/**
 * The expectation for a host directory: what lstat says about it (times exactly as stored). Call
 * it before anything reads the files (reading moves atimes).
 */
export function expectFromHost(root: string, spec: readonly SpecEntry[]): Expect[] {
  const byPath = new Map(spec.map((e) => [e.path, e]));
  const out: Expect[] = [];
  for (const e of spec) {
    if (e.type === 'chr' || e.type === 'blk' || e.type === 'sock') continue;
    const h = join(root, e.path);
    const st = lstatSync(h, { bigint: true });
    const inode = e.type === 'hardlink' ? byPath.get(e.target!)! : e;
    const x: Expect = {
      path: e.path, type: inode.type, perm: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid),
      atime: nsText(st.atimeNs), mtime: nsText(st.mtimeNs), xattrs: {},
    };
    if (inode.type === 'file') {
      // From the spec, not by reading the host file: a read would move its atime (relatime).
      const c = fullContent(inode);
      x.size = c.length;
      x.sha256 = sha(c);
      if (inode.sparse) x.maxSectors = 8 * (1 + 2) + 8;
    }
    // From the spec: readlink of a slow symlink moves its atime too.
    if (inode.type === 'symlink') x.targetHex = hex(new TextEncoder().encode(inode.target!));
    if (spec.some((o) => o.type === 'hardlink' && o.target === inode.path)) x.group = inode.path;
    out.push(x);
  }
  return out;
}

function nsText(ns: bigint): string {
  let sec = ns / 1_000_000_000n;
  let rem = ns % 1_000_000_000n;
  if (rem < 0n) {
    sec -= 1n;
    rem += 1_000_000_000n;
  }
  return `${sec}.${String(rem).padStart(9, '0')}`;
}

/** `e2fsck -fn` exits 0 and says nothing but its pass lines. */

const TYPE_OF_MODE: Record<number, string> = {
  0o100000: 'file', 0o040000: 'dir', 0o120000: 'symlink', 0o020000: 'chr', 0o060000: 'blk', 0o010000: 'fifo', 0o140000: 'sock',
};

/** What one view (a kernel mount or ext4ts) shows for a path, in Expect's terms plus the inode. */
type Seen = Omit<Expect, 'maxSectors' | 'group'> & { ino: string; nlink: number; sectors?: number };

/** Reads every entry under `mnt` (a kernel mount of the image), with xattrs and inode flags. */
function seenByKernel(mnt: string): { seen: Map<string, Seen>; flags: Map<string, string> } {
  const xattrs = getfattrDump(mnt);
  const flags = new Map<string, string>();
  const ls = spawnSync('lsattr', ['-R', '-a', mnt], { encoding: 'utf8', maxBuffer: 1 << 26 });
  for (const line of ls.stdout.split('\n')) {
    const m = /^(\S{10,}) (.+)$/.exec(line);
    if (m) flags.set(m[2]!.slice(mnt.length) || '/', m[1]!);
  }
  const d = spawnSync('lsattr', ['-d', mnt], { encoding: 'utf8' });
  flags.set('/', d.stdout.split(' ')[0] ?? '');
  const seen = new Map<string, Seen>();
  const walk = (host: string, p: string): void => {
    const st = lstatSync(host, { bigint: true });
    const type = TYPE_OF_MODE[Number(st.mode) & 0o170000] ?? 'other';
    const s: Seen = {
      path: p, type, perm: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), atime: nsText(st.atimeNs),
      mtime: nsText(st.mtimeNs), xattrs: xattrs.get(host) ?? {}, ino: String(st.ino), nlink: Number(st.nlink), sectors: Number(st.blocks),
    };
    if (type === 'file') {
      s.size = Number(st.size);
      s.sha256 = sha(readFileSync(host));
    }
    if (type === 'symlink') s.targetHex = hex(readlinkSync(host, { encoding: 'buffer' }));
    if (type === 'chr' || type === 'blk') s.rdev = `${Number((st.rdev >> 8n) & 0xfffn | ((st.rdev >> 32n) & ~0xfffn))}:${Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn))}`;
    seen.set(p, s);
    if (type === 'dir') for (const n of readdirSync(host)) walk(join(host, n), p === '/' ? `/${n}` : `${p}/${n}`);
  };
  walk(mnt, '/');
  return { seen, flags };
}

/** getfattr -R -h -d -m - -e hex: host path → name → hex. */
function getfattrDump(mnt: string): Map<string, Record<string, string>> {
  const r = spawnSync('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', mnt], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const out = new Map<string, Record<string, string>>();
  let cur: Record<string, string> | undefined;
  // getfattr escapes \\, CR and LF in paths, and "=" in names, as \\ooo octal.
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of (r.stdout ?? '').split('\n')) {
    const f = /^# file: (.*)$/.exec(line);
    if (f) {
      cur = {};
      out.set(unescape(f[1]!), cur);
      continue;
    }
    const kv = /^([^=]+)=0x([0-9a-f]*)$/.exec(line);
    if (kv && cur) cur[unescape(kv[1]!)] = kv[2]!;
  }
  for (const [k, v] of out) out.set(Buffer.from(k, 'latin1').toString('utf8'), Object.fromEntries(Object.entries(v).sort()));
  return out;
}

/** The same through ext4ts's read path (no root needed). */
async function seenByExt4ts(img: string): Promise<Map<string, Seen>> {
  const fs = await Ext4.open(img);
  const seen = new Map<string, Seen>();
  try {
    const walk = async (p: string): Promise<void> => {
      const st = await fs.lstat(p);
      const xs: Record<string, string> = {};
      for (const n of (await fs.listxattr(p)).sort()) xs[n] = hex(await fs.getxattr(p, n));
      const s: Seen = {
        path: p, type: st.type, perm: st.mode & 0o7777, uid: st.uid, gid: st.gid, atime: ts(st.atimeSpec), mtime: ts(st.mtimeSpec),
        xattrs: xs, ino: String(st.ino), nlink: st.nlink, sectors: st.blocks,
      };
      if (st.type === 'file') {
        s.size = st.size;
        s.sha256 = sha(await fs.readFile(p));
      }
      if (st.type === 'symlink') s.targetHex = hex(await fs.readlinkBytes(p));
      if (st.type === 'chr' || st.type === 'blk') {
        const d = await fs.rdev(p);
        s.rdev = `${d.major}:${d.minor}`;
      }
      seen.set(p, s);
      if (st.type === 'dir') for (const n of await fs.readdir(p)) await walk(p === '/' ? `/${n}` : `${p}/${n}`);
    };
    await walk('/');
  } finally {
    await fs.close();
  }
  return seen;
}

/**
 * Checks `img` against `expected`: e2fsck clean; then every expected entry (type, mode, owner,
 * atime/mtime to the nanosecond, size and sha256, holes, symlink target bytes, device numbers,
 * xattrs, hard-link identity and count), nothing unexpected besides lost+found, regular files
 * extent-mapped and `indexedDirs` htree-indexed. Reads through the kernel where loop mounts work,
 * else through ext4ts (saying so on `t`'s output). Returns which view was used.
 */
export async function verifyImage(t: TestContext, img: string, expected: readonly Expect[], indexedDirs: readonly string[] = []): Promise<'kernel' | 'ext4ts'> {
  assertFsckClean(img);
  const mnt = mkdtempSync(join(tmpdir(), 'ext4ts-build-mnt-'));
  let byKernel: ReturnType<typeof seenByKernel> | undefined;
  try {
    byKernel = await withKernelMount(t, img, mnt, seenByKernel);
  } finally {
    rmdirSync(mnt); // never recursive: withKernelMount has unmounted it (or detached it lazily)
  }
  const kernel = byKernel !== undefined;
  const got = byKernel ?? { seen: await seenByExt4ts(img), flags: undefined };
  const problems: string[] = [];
  const groups = new Map<string, Seen[]>();
  for (const x of expected) {
    const s = got.seen.get(x.path);
    if (s === undefined) {
      problems.push(`${x.path}: missing`);
      continue;
    }
    const { ino: _i, nlink: _n, sectors, ...view } = s;
    const { maxSectors, group, ...want } = x;
    const cmp = Object.fromEntries(Object.keys(want).map((k) => [k, (view as Record<string, unknown>)[k]]));
    try {
      assert.deepEqual(cmp, want);
    } catch {
      problems.push(`${x.path}: want ${JSON.stringify(want)}\n   got ${JSON.stringify(cmp)}`);
    }
    if (maxSectors !== undefined && (sectors ?? 0) > maxSectors) problems.push(`${x.path}: ${sectors} sectors allocated, holes not kept (<= ${maxSectors} wanted)`);
    if (group !== undefined) groups.set(group, [...(groups.get(group) ?? []), s]);
    const f = got.flags?.get(x.path);
    if (f !== undefined && x.type === 'file' && !f.includes('e')) problems.push(`${x.path}: not extent-mapped (${f})`);
  }
  for (const [g, members] of groups) {
    if (new Set(members.map((m) => m.ino)).size !== 1 || members.some((m) => m.nlink !== members.length)) {
      problems.push(`hard-link group ${g}: ${JSON.stringify(members.map((m) => [m.path, m.ino, m.nlink]))}`);
    }
  }
  const want = new Set(expected.map((x) => x.path));
  for (const p of got.seen.keys()) if (!want.has(p) && p !== '/lost+found') problems.push(`${p}: unexpected entry`);
  for (const d of indexedDirs) {
    // lsattr's I flag through the kernel; else debugfs's inode flags (EXT4_INDEX_FL 0x1000).
    const flags = got.flags?.get(d) ?? '';
    const debugfsFlags = got.flags === undefined ? /Flags: 0x([0-9a-f]+)/.exec(execFileSync('debugfs', ['-R', `stat "${d}"`, img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString())?.[1] : undefined;
    const indexed = got.flags !== undefined ? flags.includes('I') : (parseInt(debugfsFlags ?? '0', 16) & 0x1000) !== 0;
    if (!indexed) problems.push(`${d}: not htree-indexed (${flags || debugfsFlags})`);
  }
  assert.deepEqual(problems, [], problems.slice(0, 20).join('\n'));
  return kernel ? 'kernel' : 'ext4ts';
}
