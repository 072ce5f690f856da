/**
 * A model of a filesystem tree for write tests: what should exist after a sequence of namespace
 * operations (names, types, modes, owners, sizes, symlink targets, xattrs, link counts), and
 * walkers that read the same description back from ext4ts and from a kernel mount, so a test
 * compares three views of one image.
 */
import { execFileSync } from 'node:child_process';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Ext4 } from '../../src/index.js';

export type MType = 'file' | 'dir' | 'symlink' | 'fifo';

export interface MNode {
  id: number;
  type: MType;
  perm: number;
  uid: number;
  gid: number;
  size: number;
  target?: string;
  xattrs: Map<string, string>;
  children?: Map<string, MNode>;
  /** Names pointing at this node (files: hard links). */
  links: number;
  /** mtime seconds set by utimes (undefined: not checked). */
  mtimeSec?: number;
}

/** One entry as every view describes it. */
export interface Described {
  path: string;
  type: MType | string;
  perm: number;
  uid: number;
  gid: number;
  nlink: number;
  size?: number;
  target?: string;
  xattrs: Record<string, string>;
  mtimeSec?: number;
}

export class ModelFs {
  private nextId = 1;
  readonly root: MNode;
  constructor() {
    this.root = this.node('dir', 0o755, 0, 0);
    this.root.children!.set('lost+found', this.node('dir', 0o700, 0, 0));
  }

  node(type: MType, perm: number, uid: number, gid: number): MNode {
    const n: MNode = { id: this.nextId++, type, perm, uid, gid, size: 0, xattrs: new Map(), links: 1 };
    if (type === 'dir') n.children = new Map();
    return n;
  }

  /** Node at `path` (no symlink following), or undefined. */
  get(path: string): MNode | undefined {
    let cur: MNode | undefined = this.root;
    for (const c of path.split('/').filter((x) => x.length > 0)) {
      cur = cur?.children?.get(c);
      if (cur === undefined) return undefined;
    }
    return cur;
  }

  parentOf(path: string): { dir: MNode | undefined; name: string } {
    const parts = path.split('/').filter((x) => x.length > 0);
    const name = parts.pop() ?? '';
    return { dir: this.get('/' + parts.join('/')), name };
  }

  /** Every path, parents first. */
  paths(): string[] {
    const out: string[] = ['/'];
    const walk = (n: MNode, p: string): void => {
      for (const [k, c] of n.children ?? []) {
        const cp = p === '/' ? `/${k}` : `${p}/${k}`;
        out.push(cp);
        if (c.type === 'dir') walk(c, cp);
      }
    };
    walk(this.root, '/');
    return out;
  }

  /** True when `anc` is `path` or one of its ancestors. */
  static isAncestor(anc: string, path: string): boolean {
    return path === anc || path.startsWith(anc === '/' ? '/' : anc + '/');
  }

  describe(): Described[] {
    const out: Described[] = [];
    const walk = (n: MNode, p: string): void => {
      const subdirs = [...(n.children?.values() ?? [])].filter((c) => c.type === 'dir').length;
      out.push({
        path: p, type: n.type, perm: n.perm, uid: n.uid, gid: n.gid,
        nlink: n.type === 'dir' ? 2 + subdirs : n.links,
        ...(n.type === 'file' ? { size: n.size } : {}),
        ...(n.type === 'symlink' ? { target: n.target ?? '' } : {}),
        xattrs: Object.fromEntries([...n.xattrs].sort()),
        ...(n.mtimeSec !== undefined ? { mtimeSec: n.mtimeSec } : {}),
      });
      for (const [k, c] of n.children ?? []) {
        if (p === '/' && k === 'lost+found') continue;
        walk(c, p === '/' ? `/${k}` : `${p}/${k}`);
      }
    };
    walk(this.root, '/');
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }
}

const TYPE_OF_MODE: Record<number, string> = {
  0o100000: 'file', 0o040000: 'dir', 0o120000: 'symlink', 0o010000: 'fifo', 0o020000: 'chr', 0o060000: 'blk', 0o140000: 'sock',
};

/** Strips fields the model does not track for an entry (mtime unless the model set it). */
export function alignTo(model: Described[], seen: Described[]): Described[] {
  const want = new Map(model.map((d) => [d.path, d]));
  return seen.map((d) => {
    const m = want.get(d.path);
    const { mtimeSec, ...rest } = d;
    return m?.mtimeSec !== undefined && mtimeSec !== undefined ? { ...rest, mtimeSec } : rest;
  });
}

/** What ext4ts reads from the image. */
export async function describeExt4(fs: Ext4): Promise<Described[]> {
  const out: Described[] = [];
  const walk = async (p: string): Promise<void> => {
    const st = await fs.lstat(p);
    const xattrs: Record<string, string> = {};
    for (const name of (await fs.listxattr(p)).sort()) xattrs[name] = Buffer.from(await fs.getxattr(p, name)).toString('hex');
    const type = st.type;
    out.push({
      path: p, type, perm: st.mode & 0o7777, uid: st.uid, gid: st.gid, nlink: st.nlink,
      ...(type === 'file' ? { size: st.size } : {}),
      ...(type === 'symlink' ? { target: await fs.readlink(p) } : {}),
      xattrs, mtimeSec: Math.floor(st.mtimeMs / 1000),
    });
    if (type === 'dir') {
      for (const n of await fs.readdir(p)) {
        if (p === '/' && n === 'lost+found') continue;
        await walk(p === '/' ? `/${n}` : `${p}/${n}`);
      }
    }
  };
  await walk('/');
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** What the kernel shows through a mount at `mnt` (xattrs via one getfattr run). */
export function describeMount(mnt: string): Described[] {
  const xattrsByPath = new Map<string, Record<string, string>>();
  let dump = '';
  try {
    dump = execFileSync('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', mnt], {
      stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 28,
    }).toString();
  } catch (e) {
    dump = (e as { stdout?: Buffer }).stdout?.toString() ?? '';
  }
  let cur: Record<string, string> | undefined;
  for (const line of dump.split('\n')) {
    const f = /^# file: (.*)$/.exec(line);
    if (f) {
      cur = {};
      xattrsByPath.set(unescapeGetfattr(f[1]!), cur);
      continue;
    }
    const kv = /^([^=]+)=0x([0-9a-f]*)$/.exec(line);
    if (kv && cur) cur[kv[1]!] = kv[2]!;
    else if (/^([^=]+)=""$/.exec(line) && cur) cur[line.slice(0, line.indexOf('='))] = '';
  }
  const out: Described[] = [];
  const walk = (host: string, p: string): void => {
    const st = lstatSync(host, { bigint: true });
    const type = TYPE_OF_MODE[Number(st.mode) & 0o170000] ?? 'other';
    out.push({
      path: p, type, perm: Number(st.mode) & 0o7777, uid: Number(st.uid), gid: Number(st.gid), nlink: Number(st.nlink),
      ...(type === 'file' ? { size: Number(st.size) } : {}),
      ...(type === 'symlink' ? { target: readlinkSync(host, 'utf8') } : {}),
      xattrs: Object.fromEntries(Object.entries(xattrsByPath.get(host) ?? {}).sort()),
      mtimeSec: Number(st.mtimeNs / 1_000_000_000n) - (st.mtimeNs < 0n && st.mtimeNs % 1_000_000_000n !== 0n ? 1 : 0),
    });
    if (type === 'dir') {
      for (const n of readdirSync(host).sort()) {
        if (p === '/' && n === 'lost+found') continue;
        walk(join(host, n), p === '/' ? `/${n}` : `${p}/${n}`);
      }
    }
  };
  walk(mnt, '/');
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** getfattr escapes unusual bytes in names as \ooo octal. */
function unescapeGetfattr(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** "sec.nnnnnnnnn" for exact comparison of nanosecond times. */
function ts(sec: bigint | number, nsec: bigint | number): string {
  return `${sec}.${String(nsec).padStart(9, '0')}`;
}

/** atime/mtime/ctime of every path as ext4ts reads them, with nanoseconds. */
export async function timesExt4(fs: Ext4, paths: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of paths) {
    const st = await fs.lstat(p);
    out.set(p, `a ${ts(st.atimeSpec.sec, st.atimeSpec.nsec)} m ${ts(st.mtimeSpec.sec, st.mtimeSpec.nsec)} c ${ts(st.ctimeSpec.sec, st.ctimeSpec.nsec)}`);
  }
  return out;
}

/** The same through a kernel mount (lstat with bigint nanoseconds). */
export function timesMount(mnt: string, paths: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  const split = (ns: bigint): string => {
    let sec = ns / 1_000_000_000n;
    let rem = ns % 1_000_000_000n;
    if (rem < 0n) {
      rem += 1_000_000_000n;
      sec -= 1n;
    }
    return ts(sec, rem);
  };
  for (const p of paths) {
    const st = lstatSync(p === '/' ? mnt : join(mnt, p), { bigint: true });
    out.set(p, `a ${split(st.atimeNs)} m ${split(st.mtimeNs)} c ${split(st.ctimeNs)}`);
  }
  return out;
}
