/**
 * A JSON manifest as a build source: the image described entry by entry, so a build script can
 * say exactly what it wants (owners, device nodes, xattrs, times before 1970 or after 2038)
 * without root and without staging a tree on the host.
 *
 * Format (JSON, UTF-8):
 *
 *   { "entries": [ ENTRY, … ] }          (a bare array of entries is accepted too)
 *
 *   ENTRY fields:
 *   path     string, required. Absolute path in the image ("/" is the root directory). No "." or
 *            ".." components. Each path at most once. Missing parent directories are created
 *            with mode 0755, owner 0:0.
 *   type     required: "file" | "dir" | "symlink" | "hardlink" | "chr" | "blk" | "fifo" | "sock".
 *   mode     permission bits including setuid/setgid/sticky: a number (JSON has no octal, so
 *            0o755 is 493) or an octal string ("0755", "4755"). Default 0644, directories 0755
 *            (ignored for symlinks, which are always 0777, and hard links, which share the inode).
 *   uid, gid numeric owner, default 0.
 *   atime, mtime   a time: {"sec": S, "nsec": N} (exact; S may be negative or past 2038), a
 *            decimal string "S[.NNNNNNNNN]" (exact), or a number of seconds (fractions are
 *            rounded to what a double holds). Default: the build's clock (SOURCE_DATE_EPOCH when
 *            reproducible). ctime is accepted and ignored: no API sets it; the image's ctime is
 *            the build's clock, as after `cp -a`.
 *   xattrs   {"NAME": VALUE, …} with NAME including its namespace ("user.x",
 *            "security.capability", "security.selinux", "trusted.…"); VALUE a UTF-8 string, or
 *            {"utf8": "…"}, {"base64": "…"} or {"hex": "…"} for binary values.
 *   target   symlink: the target text; hardlink: the image path of the file it names.
 *   major, minor   chr/blk device numbers (default 0).
 *   source   file: a host file to copy (relative paths are relative to the manifest's directory);
 *            sparse host files keep their holes.
 *   content  file: inline bytes, a UTF-8 string or {"utf8"|"base64"|"hex": "…"}; or a sparse map,
 *            a list of pieces [{"offset": N, "utf8"|"base64"|"hex": "…"}, …] in ascending,
 *            non-overlapping order, everything between them a hole (give "size" for a tail).
 *   size     file: its size in bytes; default the content's length. Bigger than the content: the
 *            rest is a hole (no content at all makes a file that is one hole).
 *
 * Every problem is EINVAL naming the manifest and the entry (`entries[3] (/etc/x): …`).
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  badEntry, finishEntries, normalizePath, parseDecimalTime, symlinkTarget, checkU32, checkTime, decodeBase64, decodeHex,
  type BuildEntry, type Chunk, type EntryKind, type Source, type Timespec, type Xattr,
} from './source.js';

const KINDS: ReadonlySet<string> = new Set(['file', 'dir', 'symlink', 'hardlink', 'chr', 'blk', 'fifo', 'sock']);
const FIELDS: ReadonlySet<string> = new Set([
  'path', 'type', 'mode', 'uid', 'gid', 'atime', 'mtime', 'ctime', 'xattrs', 'target', 'major', 'minor',
  'source', 'content', 'size',
]);

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Bytes from a manifest value: a string (UTF-8) or {utf8|base64|hex: string}. */
function bytesOf(v: Json | undefined, what: string, origin: string): Uint8Array {
  if (typeof v === 'string') return new TextEncoder().encode(v);
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    const k = keys[0];
    const s = k === undefined ? undefined : v[k];
    if (keys.length === 1 && typeof s === 'string') {
      if (k === 'utf8') return new TextEncoder().encode(s);
      const b = k === 'base64' ? decodeBase64(s) : k === 'hex' ? decodeHex(s) : undefined;
      if (b !== undefined) return b;
    }
  }
  throw badEntry(origin, `${what} must be a string or {"utf8"|"base64"|"hex": "…"}`);
}

/** A mode field: a number or an octal string. */
function modeOf(v: Json | undefined, dflt: number, origin: string): number {
  if (v === undefined) return dflt;
  const n = typeof v === 'string' && /^[0-7]{1,6}$/.test(v) ? parseInt(v, 8) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 0o7777) {
    throw badEntry(origin, `mode ${JSON.stringify(v)} is not a permission mode (0..0o7777, a number or an octal string)`);
  }
  return n;
}

/** A time field (see the module comment). */
function timeOf(v: Json | undefined, what: string, origin: string): Timespec | undefined {
  if (v === undefined) return undefined;
  let t: Timespec | undefined;
  if (typeof v === 'string') t = parseDecimalTime(v);
  else if (typeof v === 'number' && Number.isFinite(v)) {
    const sec = Math.floor(v);
    t = { sec, nsec: Math.min(999_999_999, Math.round((v - sec) * 1e9)) };
  } else if (v !== null && typeof v === 'object' && !Array.isArray(v) && typeof v['sec'] === 'number') {
    const nsec = v['nsec'] ?? 0;
    if (typeof nsec === 'number') t = { sec: v['sec'], nsec };
  }
  if (t === undefined) throw badEntry(origin, `${what} ${JSON.stringify(v)} is not a time ({sec, nsec}, "S.NNNNNNNNN" or seconds)`);
  return checkTime(t, what, origin);
}

function numberOf(v: Json | undefined, dflt: number, what: string, origin: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number') throw badEntry(origin, `${what} must be a number`);
  return checkU32(v, what, origin);
}

function xattrsOf(v: Json | undefined, origin: string): Xattr[] {
  if (v === undefined) return [];
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badEntry(origin, 'xattrs must be an object {"name": value}');
  return Object.entries(v).map(([name, value]) => {
    if (!/^[a-z]+\.[^\0]+$/.test(name)) throw badEntry(origin, `xattr name "${name}" needs a namespace prefix (user., security., trusted., system.)`);
    return { name, value: bytesOf(value, `xattr ${name}`, origin) };
  });
}

/** A sparse map: pieces at ascending, non-overlapping offsets. */
function piecesOf(list: Json[], origin: string): Chunk[] {
  const out: Chunk[] = [];
  let end = 0;
  for (const [i, item] of list.entries()) {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw badEntry(origin, `content[${i}] must be {"offset": N, "base64"|"utf8"|"hex": …}`);
    const { offset, ...rest } = item;
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < end) {
      throw badEntry(origin, `content[${i}].offset ${JSON.stringify(offset)} must be an integer at or after the previous piece's end (${end})`);
    }
    const bytes = bytesOf(rest, `content[${i}]`, origin);
    out.push({ pos: offset, bytes });
    end = offset + bytes.length;
  }
  return out;
}

/** File content: a host file, inline bytes, a sparse map, or none (a hole of `size` bytes). */
function fileContent(o: { [k: string]: Json }, e: BuildEntry, baseDir: string, origin: string): void {
  if (o['source'] !== undefined && o['content'] !== undefined) throw badEntry(origin, 'give "source" or "content", not both');
  let len = 0;
  if (typeof o['source'] === 'string') {
    const hostPath = resolve(baseDir, o['source']);
    let st;
    try {
      st = statSync(hostPath);
    } catch (err) {
      throw badEntry(origin, `source ${hostPath}: ${(err as Error).message}`);
    }
    if (!st.isFile()) throw badEntry(origin, `source ${hostPath} is not a regular file`);
    const sparse = st.blocks * 512 < st.size;
    e.content = { kind: 'host', hostPath, sparse };
    len = st.size;
    e.allocBytes = sparse ? st.blocks * 512 : st.size;
  } else if (o['source'] !== undefined) {
    throw badEntry(origin, 'source must be a host path');
  } else if (Array.isArray(o['content'])) {
    const pieces = piecesOf(o['content'], origin);
    e.content = { kind: 'pieces', pieces };
    const last = pieces[pieces.length - 1];
    len = last === undefined ? 0 : last.pos + last.bytes.length;
    e.allocBytes = pieces.reduce((n, p) => n + p.bytes.length, 0);
  } else if (o['content'] !== undefined) {
    const bytes = bytesOf(o['content'], 'content', origin);
    e.content = { kind: 'bytes', bytes };
    len = bytes.length;
    e.allocBytes = len;
  }
  const size = o['size'];
  if (size !== undefined && (typeof size !== 'number' || !Number.isSafeInteger(size) || size < len)) {
    throw badEntry(origin, `size ${JSON.stringify(size)} must be an integer >= the content's ${len} bytes`);
  }
  e.sizeBytes = size ?? len;
  if (e.sizeBytes === 0) delete e.content;
}

/** One manifest entry, validated. */
function entryOf(o: Json, i: number, manifest: string, baseDir: string): BuildEntry {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw badEntry(`${manifest}: entries[${i}]`, 'an entry must be an object');
  const rawPath = o['path'];
  const origin = `${manifest}: entries[${i}]${typeof rawPath === 'string' ? ` (${rawPath})` : ''}`;
  if (typeof rawPath !== 'string') throw badEntry(origin, '"path" (a string) is required');
  for (const k of Object.keys(o)) if (!FIELDS.has(k)) throw badEntry(origin, `unknown field "${k}"`);
  const type = o['type'];
  if (typeof type !== 'string' || !KINDS.has(type)) {
    throw badEntry(origin, `bad type ${JSON.stringify(type)} (file, dir, symlink, hardlink, chr, blk, fifo or sock)`);
  }
  const kind = type as EntryKind;
  const e: BuildEntry = {
    path: normalizePath(rawPath, origin, 'absolute'), kind, perm: modeOf(o['mode'], kind === 'dir' ? 0o755 : 0o644, origin),
    uid: numberOf(o['uid'], 0, 'uid', origin), gid: numberOf(o['gid'], 0, 'gid', origin),
    xattrs: xattrsOf(o['xattrs'], origin), sizeBytes: 0, allocBytes: 0, origin,
  };
  const mtime = timeOf(o['mtime'], 'mtime', origin);
  const atime = timeOf(o['atime'], 'atime', origin);
  timeOf(o['ctime'], 'ctime', origin); // checked, then ignored (see the module comment)
  if (mtime !== undefined) e.mtime = mtime;
  if (atime !== undefined) e.atime = atime;
  const target = o['target'];
  if ((kind === 'symlink' || kind === 'hardlink') !== (target !== undefined)) {
    throw badEntry(origin, kind === 'symlink' || kind === 'hardlink' ? `a ${kind} needs "target"` : `"target" is only for symlinks and hard links`);
  }
  if (kind !== 'file' && (o['source'] !== undefined || o['content'] !== undefined || o['size'] !== undefined)) {
    throw badEntry(origin, '"source", "content" and "size" are only for files');
  }
  if (kind === 'symlink') e.target = symlinkTarget(typeof target === 'string' ? target : bytesOf(target, 'target', origin), origin);
  else if (kind === 'hardlink') {
    if (typeof target !== 'string') throw badEntry(origin, 'a hard link target is an image path');
    e.linkTo = normalizePath(target, origin, 'absolute');
  } else if (kind === 'chr' || kind === 'blk') {
    e.major = numberOf(o['major'], 0, 'major', origin);
    e.minor = numberOf(o['minor'], 0, 'minor', origin);
  } else if (kind === 'file') fileContent(o, e, baseDir, origin);
  return e;
}

/** Reads and validates a manifest file into a Source. */
export function scanManifest(manifestPath: string): Source {
  let doc: Json;
  try {
    doc = JSON.parse(readFileSync(manifestPath, 'utf8')) as Json;
  } catch (e) {
    throw badEntry(manifestPath, `not a JSON manifest: ${(e as Error).message}`);
  }
  const list = Array.isArray(doc) ? doc : doc !== null && typeof doc === 'object' ? doc['entries'] : undefined;
  if (!Array.isArray(list)) throw badEntry(manifestPath, 'a manifest is {"entries": [...]} or an array of entries');
  const baseDir = dirname(resolve(manifestPath));
  const entries = list.map((o, i) => entryOf(o, i, manifestPath, baseDir));
  const finished = finishEntries(entries, 'error');
  return { kind: 'manifest', walk: () => finished, warnings: [] };
}
