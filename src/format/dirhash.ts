/**
 * Directory-index name hashes (fs/ext4/hash.c: ext4fs_dirhash(), dx_hack_hash_{signed,unsigned},
 * str2hashbuf_{signed,unsigned}, half_md4_transform, TEA_transform; Documentation/filesystems/
 * ext4/directory.rst "Hash Tree Directories").
 *
 * Three algorithms, each in a signed-char and an unsigned-char flavour: the C code reads name
 * bytes through `signed char` or `unsigned char`, which differs for bytes >= 0x80. dx_root
 * stores only 0 (legacy), 1 (half-MD4) or 2 (TEA); the filesystem's s_flags (signed/unsigned
 * directory hash) turns them into 3/4/5 for the unsigned flavour (see hashVersionFor). The seed
 * is s_hash_seed as four little-endian words; an all-zero seed means the MD4 initial constants.
 * The result's low bit is cleared (index entries use it to mark hash-collision continuation)
 * and the 32-bit EOF value is avoided, as the kernel does. Everything here is pure 32-bit
 * unsigned arithmetic: `>>> 0` brings each JS number back to u32 after a shift or sum.
 */
import { Incompatible } from '../util/errors.js';
import { assert } from '../util/assert.js';

export const DX_HASH_LEGACY = 0;
export const DX_HASH_HALF_MD4 = 1;
export const DX_HASH_TEA = 2;
export const DX_HASH_LEGACY_UNSIGNED = 3;
export const DX_HASH_HALF_MD4_UNSIGNED = 4;
export const DX_HASH_TEA_UNSIGNED = 5;
export const DX_HASH_SIPHASH = 6;
/** The largest hash a 32-bit readdir cookie can carry; (EOF << 1) is never returned. */
export const EXT4_HTREE_EOF_32BIT = 0x7fffffff;

/** The MD4 initial state, used when s_hash_seed is all zero. */
const DEFAULT_SEED = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476] as const;

/** A directory hash and its minor hash (the minor one orders entries within a hash in readdir). */
export interface DirHash {
  hash: number;
  minorHash: number;
}

/**
 * The hash version to compute for a directory whose dx_root says `rootVersion` (dx_probe):
 * legacy, half-MD4 and TEA become their unsigned flavours when s_flags has
 * EXT2_FLAGS_UNSIGNED_HASH.
 */
export function hashVersionFor(rootVersion: number, unsignedHash: boolean): number {
  return rootVersion <= DX_HASH_TEA && unsignedHash ? rootVersion + 3 : rootVersion;
}

/** A name byte as the C code sees it: signed char (-128..127) or unsigned char (0..255). */
function charAt(name: Uint8Array, i: number, signed: boolean): number {
  // OK to index without a check: every caller keeps i < name.length.
  const b = name[i]!;
  return signed && b >= 0x80 ? b - 256 : b;
}

/** dx_hack_hash_{signed,unsigned}: the legacy ext3 hash; no minor hash. */
function dxHackHash(name: Uint8Array, signed: boolean): number {
  let hash0 = 0x12a3fe2d;
  let hash1 = 0x37abe8f9;
  for (let i = 0; i < name.length; i++) {
    // Math.imul wraps like C's int multiply; the sum wraps to u32 like the __u32 it is stored in.
    let hash = (hash1 + ((hash0 ^ Math.imul(charAt(name, i, signed), 7152373)) >>> 0)) >>> 0;
    if (hash & 0x80000000) hash = (hash - 0x7fffffff) >>> 0;
    hash1 = hash0;
    hash0 = hash;
  }
  return (hash0 << 1) >>> 0;
}

/**
 * str2hashbuf_{signed,unsigned}: packs up to num*4 bytes of name[start..start+len) into `num`
 * words, big-end first within each word, padding with a pattern made from `len` (the length
 * still to hash, not the length packed — that is how the kernel does it).
 */
function str2hashbuf(name: Uint8Array, start: number, len: number, num: number, signed: boolean): Uint32Array {
  const buf = new Uint32Array(num);
  let pad = (len | (len << 8)) >>> 0;
  pad = (pad | (pad << 16)) >>> 0;
  let val = pad;
  const n = Math.min(len, num * 4);
  let w = 0;
  for (let i = 0; i < n; i++) {
    val = (charAt(name, start + i, signed) + ((val << 8) >>> 0)) >>> 0;
    if (i % 4 === 3) {
      buf[w++] = val;
      val = pad;
    }
  }
  if (w < num) buf[w++] = val;
  while (w < num) buf[w++] = pad;
  return buf;
}

function rol32(x: number, s: number): number {
  return ((x << s) | (x >>> (32 - s))) >>> 0;
}

/** Round constants of half-MD4 (octal in the kernel source): K1 = 0. */
const K2 = 0o13240474631;
const K3 = 0o15666365641;

/** half_md4_transform: MD4's three rounds over 8 input words, added into buf. */
function halfMd4Transform(buf: Uint32Array, inp: Uint32Array): void {
  // OK to index: buf has 4 words and inp 8 (both built here).
  let a = buf[0]!, b = buf[1]!, c = buf[2]!, d = buf[3]!;
  const F = (x: number, y: number, z: number): number => (z ^ (x & (y ^ z))) >>> 0;
  const G = (x: number, y: number, z: number): number => (((x & y) >>> 0) + (((x ^ y) & z) >>> 0)) >>> 0;
  const H = (x: number, y: number, z: number): number => (x ^ y ^ z) >>> 0;
  const i = (k: number): number => inp[k]!;
  // Round 1 (K1 = 0).
  a = rol32((a + F(b, c, d) + i(0)) >>> 0, 3); d = rol32((d + F(a, b, c) + i(1)) >>> 0, 7);
  c = rol32((c + F(d, a, b) + i(2)) >>> 0, 11); b = rol32((b + F(c, d, a) + i(3)) >>> 0, 19);
  a = rol32((a + F(b, c, d) + i(4)) >>> 0, 3); d = rol32((d + F(a, b, c) + i(5)) >>> 0, 7);
  c = rol32((c + F(d, a, b) + i(6)) >>> 0, 11); b = rol32((b + F(c, d, a) + i(7)) >>> 0, 19);
  // Round 2.
  a = rol32((a + G(b, c, d) + i(1) + K2) >>> 0, 3); d = rol32((d + G(a, b, c) + i(3) + K2) >>> 0, 5);
  c = rol32((c + G(d, a, b) + i(5) + K2) >>> 0, 9); b = rol32((b + G(c, d, a) + i(7) + K2) >>> 0, 13);
  a = rol32((a + G(b, c, d) + i(0) + K2) >>> 0, 3); d = rol32((d + G(a, b, c) + i(2) + K2) >>> 0, 5);
  c = rol32((c + G(d, a, b) + i(4) + K2) >>> 0, 9); b = rol32((b + G(c, d, a) + i(6) + K2) >>> 0, 13);
  // Round 3.
  a = rol32((a + H(b, c, d) + i(3) + K3) >>> 0, 3); d = rol32((d + H(a, b, c) + i(7) + K3) >>> 0, 9);
  c = rol32((c + H(d, a, b) + i(2) + K3) >>> 0, 11); b = rol32((b + H(c, d, a) + i(6) + K3) >>> 0, 15);
  a = rol32((a + H(b, c, d) + i(1) + K3) >>> 0, 3); d = rol32((d + H(a, b, c) + i(5) + K3) >>> 0, 9);
  c = rol32((c + H(d, a, b) + i(0) + K3) >>> 0, 11); b = rol32((b + H(c, d, a) + i(4) + K3) >>> 0, 15);
  buf[0] = (buf[0]! + a) >>> 0;
  buf[1] = (buf[1]! + b) >>> 0;
  buf[2] = (buf[2]! + c) >>> 0;
  buf[3] = (buf[3]! + d) >>> 0;
}

/** TEA_transform: 16 rounds of the Tiny Encryption Algorithm over buf[0..1] keyed by inp. */
function teaTransform(buf: Uint32Array, inp: Uint32Array): void {
  let sum = 0;
  // OK to index: buf and inp have 4 words each (built here).
  let b0 = buf[0]!, b1 = buf[1]!;
  const a = inp[0]!, b = inp[1]!, c = inp[2]!, d = inp[3]!;
  for (let n = 0; n < 16; n++) {
    sum = (sum + 0x9e3779b9) >>> 0;
    // The XOR operands may exceed 2^32; ^ truncates them to 32 bits as C's u32 sums would.
    b0 = (b0 + ((((b1 << 4) >>> 0) + a) ^ (b1 + sum) ^ ((b1 >>> 5) + b))) >>> 0;
    b1 = (b1 + ((((b0 << 4) >>> 0) + c) ^ (b0 + sum) ^ ((b0 >>> 5) + d))) >>> 0;
  }
  buf[0] = (buf[0]! + b0) >>> 0;
  buf[1] = (buf[1]! + b1) >>> 0;
}

/** The initial state: the seed words, or the MD4 constants when the seed is all zero. */
function initialState(seed: ArrayLike<number>): Uint32Array {
  assert(seed.length === 4, () => `hash seed of ${seed.length} words, want 4`);
  let nonzero = false;
  for (let i = 0; i < 4; i++) if (seed[i] !== 0) nonzero = true;
  const src = nonzero ? seed : DEFAULT_SEED;
  // OK to index: both sources have exactly 4 words.
  return new Uint32Array([src[0]! >>> 0, src[1]! >>> 0, src[2]! >>> 0, src[3]! >>> 0]);
}

/**
 * ext4fs_dirhash(): hash and minor hash of `name` under hash `version` (DX_HASH_*, 0..5) with
 * the filesystem's s_hash_seed words. SipHash (6, casefolded+encrypted directories) and unknown
 * versions throw Incompatible (htree.ts already refuses unknown dx_root versions as Corrupt).
 */
export function ext4fsDirhash(name: Uint8Array, version: number, seed: ArrayLike<number>): DirHash {
  const buf = initialState(seed);
  let hash: number;
  let minorHash = 0;
  switch (version) {
    case DX_HASH_LEGACY:
    case DX_HASH_LEGACY_UNSIGNED:
      hash = dxHackHash(name, version === DX_HASH_LEGACY);
      break;
    case DX_HASH_HALF_MD4:
    case DX_HASH_HALF_MD4_UNSIGNED: {
      const signed = version === DX_HASH_HALF_MD4;
      // 32 name bytes per round; a name is at most 255 bytes, so at most 8 rounds.
      for (let p = 0, len = name.length; len > 0; len -= 32, p += 32) halfMd4Transform(buf, str2hashbuf(name, p, len, 8, signed));
      minorHash = buf[2]!;
      hash = buf[1]!;
      break;
    }
    case DX_HASH_TEA:
    case DX_HASH_TEA_UNSIGNED: {
      const signed = version === DX_HASH_TEA;
      for (let p = 0, len = name.length; len > 0; len -= 16, p += 16) teaTransform(buf, str2hashbuf(name, p, len, 4, signed));
      hash = buf[0]!;
      minorHash = buf[1]!;
      break;
    }
    case DX_HASH_SIPHASH:
      throw new Incompatible('directory hash version 6 (SipHash, casefolded encrypted directories) is not supported', ['casefold', 'encrypt']);
    default:
      throw new Incompatible(`directory hash version ${version} is not supported`);
  }
  hash = (hash & ~1) >>> 0;
  if (hash === (EXT4_HTREE_EOF_32BIT << 1) >>> 0) hash = ((EXT4_HTREE_EOF_32BIT - 1) << 1) >>> 0;
  return { hash, minorHash };
}
