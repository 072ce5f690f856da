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

/** Decodes on-disk name bytes for display; invalid UTF-8 becomes U+FFFD. */
export function decodeName(b: Uint8Array): string {
  return utf8.decode(b);
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
      if (c > 0x7f) return enc.encode(s);
      out[i] = c;
    }
    return out;
  }
  return enc.encode(s);
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
