/**
 * Extended attributes of a host directory tree, for a directory source (what `mke2fs -d` copies
 * with llistxattr/lgetxattr). Node.js has no xattr API and a native addon would need a compiler
 * at install time, so one `getfattr` run (Debian package attr) dumps the whole tree:
 * `getfattr --absolute-names -R -P -h -d -m - -e base64 ROOT`: recursive, symlinks neither
 * followed nor dereferenced (a link's own attributes), every namespace the caller may list
 * (trusted.* only as root), values in base64. One process for the tree costs about 70 ms for
 * 20,000 entries; only entries that have attributes are printed and kept, so memory follows the
 * number of attributes, not the size of the tree.
 *
 * Output format: blocks of `# file: PATH` then `name=VALUE` lines, a blank line between blocks.
 * getfattr escapes a backslash, CR and LF in paths (and "=" in names) as \ooo octal; values
 * come as 0s + base64, 0x + hex, or "quoted text" (the last two with other -e encodings).
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { badEntry, decodeBase64, decodeHex, type Xattr } from './source.js';

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });
const NL = 0x0a;
const BACKSLASH = 0x5c;
const FILE_TAG = new TextEncoder().encode('# file: ');

/** Bytes with getfattr's \ooo escapes undone. */
function unescapeOctal(b: Uint8Array): Uint8Array {
  if (!b.includes(BACKSLASH)) return b;
  const out = new Uint8Array(b.length);
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    // OK to index: i < b.length; the escape's digits are checked before use.
    const c = b[i]!;
    if (c === BACKSLASH && i + 3 < b.length && isOctal(b[i + 1]) && isOctal(b[i + 2]) && isOctal(b[i + 3])) {
      out[n++] = ((b[i + 1]! - 0x30) << 6) | ((b[i + 2]! - 0x30) << 3) | (b[i + 3]! - 0x30);
      i += 3;
    } else out[n++] = c;
  }
  return out.subarray(0, n);
}

function isOctal(c: number | undefined): boolean {
  return c !== undefined && c >= 0x30 && c <= 0x37;
}

/** A value as getfattr prints it: 0s + base64, 0x + hex, "text" with \ooo escapes, or nothing. */
function decodeValue(text: Uint8Array, where: string): Uint8Array {
  const s = new TextDecoder('latin1').decode(text);
  let v: Uint8Array | undefined;
  if (s.startsWith('0s')) v = decodeBase64(s.slice(2));
  else if (s.startsWith('0x')) v = decodeHex(s.slice(2));
  else if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) v = unescapeOctal(text.subarray(1, text.length - 1));
  else if (s.length === 0) v = new Uint8Array(0);
  if (v === undefined) throw badEntry(where, `getfattr printed a value ext4ts cannot decode: ${s.slice(0, 40)}`);
  return v;
}

/**
 * Parses a `getfattr -d` dump: path (as printed, escapes undone, UTF-8) → its attributes sorted
 * by name. A path or name that is not valid UTF-8 is left out (the directory walk refuses such a
 * name itself, by its path).
 */
export function parseGetfattrDump(out: Uint8Array, origin = 'getfattr'): Map<string, Xattr[]> {
  const byPath = new Map<string, Xattr[]>();
  let cur: Xattr[] | undefined;
  let curPath = origin;
  for (let at = 0; at < out.length; ) {
    let end = out.indexOf(NL, at);
    if (end < 0) end = out.length;
    const line = out.subarray(at, end);
    at = end + 1;
    if (line.length === 0) {
      cur = undefined;
      continue;
    }
    if (startsWith(line, FILE_TAG)) {
      cur = undefined;
      try {
        curPath = fatalUtf8.decode(unescapeOctal(line.subarray(FILE_TAG.length)));
      } catch {
        continue;
      }
      cur = [];
      byPath.set(curPath, cur);
      continue;
    }
    if (cur === undefined) continue;
    const eq = line.indexOf(0x3d);
    const rawName = eq < 0 ? line : line.subarray(0, eq);
    let name: string;
    try {
      name = fatalUtf8.decode(unescapeOctal(rawName));
    } catch {
      continue;
    }
    cur.push({ name, value: eq < 0 ? new Uint8Array(0) : decodeValue(line.subarray(eq + 1), curPath) });
  }
  for (const list of byPath.values()) list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return byPath;
}

function startsWith(b: Uint8Array, prefix: Uint8Array): boolean {
  if (b.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[i] !== prefix[i]) return false;
  return true;
}

/** Names ext4 has a handler for (user, trusted, security and the two POSIX ACLs). */
export function ext4StoresXattr(name: string): boolean {
  return name.startsWith('user.') || name.startsWith('trusted.') || name.startsWith('security.')
    || name === 'system.posix_acl_access' || name === 'system.posix_acl_default';
}

/** What readHostXattrs found. */
export interface HostXattrs {
  /** Image path ("/", "/etc/passwd", …) → its attributes, sorted by name; only entries with some. */
  byPath: Map<string, Xattr[]>;
  /** Attributes left out because ext4 has no handler for their names (e.g. system.nfs4_acl). */
  skipped: { count: number; first?: { name: string; path: string } };
}

/**
 * Every attribute under the host directory `root`, by image path; undefined when getfattr is
 * not installed. A getfattr failure (an unreadable entry) fails the build, naming what getfattr
 * said, as the walk would for the same entry.
 */
export function readHostXattrs(root: string): HostXattrs | undefined {
  const abs = resolve(root);
  const r = spawnSync('getfattr', ['--absolute-names', '-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--', abs], {
    stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30,
  });
  if (r.error !== undefined) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw badEntry(root, `cannot run getfattr to read extended attributes: ${r.error.message}`);
  }
  if (r.status !== 0) {
    const said = r.stderr.toString('utf8').trim().split('\n')[0] ?? '';
    throw badEntry(root, `getfattr could not read the extended attributes (exit ${r.status ?? r.signal}): ${said}`);
  }
  const printed = parseGetfattrDump(r.stdout, root);
  const byPath = new Map<string, Xattr[]>();
  const skipped: HostXattrs['skipped'] = { count: 0 };
  const base = abs === '/' ? '' : abs;
  for (const [p, list] of printed) {
    let path: string;
    if (p === abs) path = '/';
    else if (p.startsWith(`${base}/`)) path = p.slice(base.length);
    else continue;
    const kept = list.filter((x) => {
      if (ext4StoresXattr(x.name)) return true;
      skipped.count++;
      skipped.first ??= { name: x.name, path };
      return false;
    });
    if (kept.length > 0) byPath.set(path, kept);
  }
  return { byPath, skipped };
}
