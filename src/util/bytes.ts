/**
 * Byte helpers shared by all layers: zero checks, concatenation, text decoding of on-disk
 * names (which are bytes, not necessarily UTF-8), and strict base64 and hex decoding.
 */

/** True when every byte of `b` is zero. */
export function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });
const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const enc = new TextEncoder();

/**
 * Decodes on-disk name bytes (which need not be UTF-8): valid UTF-8 as text, and each byte of
 * an invalid sequence as the lone surrogate U+DC80..U+DCFF (Python's "surrogateescape", PEP
 * 383), so that every name gives a distinct string and encodeUtf8 gives its bytes back: a name
 * readdir returns can be passed back to stat, open or unlink.
 */
export function decodeName(b: Uint8Array): string {
  return decodeUtf8Strict(b) ?? decodeEscaped(b);
}

/** decodeName's slow path: UTF-8 decoded by hand, invalid bytes escaped one by one. */
function decodeEscaped(b: Uint8Array): string {
  let out = '';
  for (let i = 0; i < b.length; ) {
    // OK to index: i < b.length.
    const c = b[i]!;
    if (c < 0x80) {
      out += String.fromCharCode(c);
      i++;
      continue;
    }
    // Lead byte: continuation count, payload bits, smallest code point (no overlong forms).
    const [n, cp0, min] = c >= 0xc2 && c <= 0xdf ? [1, c & 0x1f, 0x80] : c >= 0xe0 && c <= 0xef ? [2, c & 0x0f, 0x800] : c >= 0xf0 && c <= 0xf4 ? [3, c & 0x07, 0x10000] : [0, 0, 0];
    let cp = cp0;
    let ok = n > 0 && i + n < b.length;
    for (let k = 1; ok && k <= n; k++) {
      // OK to index: i + n < b.length.
      const d = b[i + k]!;
      if ((d & 0xc0) !== 0x80) ok = false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (ok && cp >= min && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff)) {
      out += String.fromCodePoint(cp);
      i += n + 1;
    } else {
      out += String.fromCharCode(0xdc00 + c);
      i++;
    }
  }
  return out;
}

/** Decodes bytes that must be valid UTF-8, or returns undefined. */
export function decodeUtf8Strict(b: Uint8Array): string | undefined {
  try {
    return utf8Strict.decode(b);
  } catch {
    return undefined;
  }
}

/** Encodes a JS string as UTF-8 bytes. */
export function encodeUtf8(s: string): Uint8Array {
  // Path components are short and nearly always ASCII: a plain loop beats TextEncoder's call.
  if (s.length <= 64) {
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) return encodeWide(s);
      out[i] = c;
    }
    return out;
  }
  return encodeWide(s);
}

/** encodeUtf8 past ASCII: TextEncoder, unless a surrogate needs decodeName's escape undone. */
function encodeWide(s: string): Uint8Array {
  if (!SURROGATE.test(s)) return enc.encode(s);
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
    if (c >= 0xd800 && c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      out.push(...enc.encode(s.slice(i, i + 2)));
      i++;
    } else if (c >= 0xdc80 && c <= 0xdcff) {
      // A byte decodeName escaped.
      out.push(c - 0xdc00);
    } else {
      // Anything else, a lone surrogate included (U+FFFD, as TextEncoder writes it).
      out.push(...enc.encode(s[i]!));
    }
  }
  return Uint8Array.from(out);
}

const SURROGATE = /[\uD800-\uDFFF]/;
/** A surrogate that is not half of a pair (as decodeName's escapes are). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * A host path for node:fs: the string itself, or, when it holds bytes decodeName escaped (a
 * host name that is not UTF-8), its exact bytes (node:fs would write the escapes as U+FFFD).
 */
export function hostFsPath(p: string): string | Buffer {
  return hasEscapedBytes(p) ? Buffer.from(encodeUtf8(p)) : p;
}

/** True when `s` came from bytes that are not UTF-8 (decodeName escaped some). */
export function hasEscapedBytes(s: string): boolean {
  return LONE_SURROGATE.test(s);
}

/** Byte-wise equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Decodes standard base64 (with or without padding); undefined if it is not base64. */
export function decodeBase64(s: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.replace(/=+$/, '').length % 4 === 1) return undefined;
  const bin = atob(s.replace(/=+$/, ''));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Decodes hex digits (an even number of them); undefined otherwise. */
export function decodeHex(s: string): Uint8Array | undefined {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) return undefined;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}
