/**
 * The text format of `getfattr -d` dumps, which `setfattr --restore` reads back (Debian package
 * attr): the host side of extended attributes, since Node.js has no xattr API. Blocks of
 * `# file: PATH` then `name=VALUE` lines, a blank line after each block. A backslash, CR and LF
 * in paths (and "=" in names) are escaped as \ooo octal; values come as 0s + base64, 0x + hex, or
 * "quoted text" with the same escapes (getfattr's -e base64, hex and text).
 */
import { PosixError } from './errors.js';
import { decodeBase64, decodeHex, decodeName, decodeUtf8Strict } from './bytes.js';
import { assert } from './assert.js';

/** One attribute: its full name and value bytes. */
export interface DumpXattr {
  name: string;
  value: Uint8Array;
}

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
  if (v === undefined) throw new PosixError('EINVAL', 'getfattr', where, `a value ext4ts cannot decode: ${s.slice(0, 40)}`);
  return v;
}

/**
 * Parses a `getfattr -d` dump: path (as printed, escapes undone, then decodeName: bytes that
 * are not UTF-8 escaped as the directory walk's names are) → its attributes sorted by name. An
 * attribute name that is not valid UTF-8 is left out.
 */
export function parseGetfattrDump(out: Uint8Array): Map<string, DumpXattr[]> {
  const byPath = new Map<string, DumpXattr[]>();
  let cur: DumpXattr[] | undefined;
  let curPath = '';
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
      // A path that is not UTF-8 keeps its bytes as decodeName escapes them (the walk's names).
      curPath = decodeName(unescapeOctal(line.subarray(FILE_TAG.length)));
      cur = [];
      byPath.set(curPath, cur);
      continue;
    }
    if (cur === undefined) continue;
    const eq = line.indexOf(0x3d);
    const rawName = eq < 0 ? line : line.subarray(0, eq);
    const name = decodeUtf8Strict(unescapeOctal(rawName));
    if (name === undefined) continue;
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

/** `s` as UTF-8 with the bytes getfattr escapes written as \ooo (`alsoEq`: "=" too, for names). */
function escapeOctal(s: string, alsoEq: boolean): string {
  if (!/[\\\n\r=]/.test(s)) return s;
  return s.replace(alsoEq ? /[\\\n\r=]/g : /[\\\n\r]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/** One block of a dump for `path` (values in base64), as `setfattr --restore` reads it. */
export function formatGetfattrBlock(path: string, xattrs: readonly DumpXattr[]): string {
  // setfattr's line reader stops at a NUL: one would cut a line short and desynchronise the dump.
  assert(!path.includes('\0') && xattrs.every((x) => !x.name.includes('\0')), () => `getfattr dump of ${JSON.stringify(path)}: a NUL in a path or name`);
  let out = `# file: ${escapeOctal(path, false)}\n`;
  for (const x of xattrs) out += `${escapeOctal(x.name, true)}=0s${Buffer.from(x.value).toString('base64')}\n`;
  return `${out}\n`;
}
