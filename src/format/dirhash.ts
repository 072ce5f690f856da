/**
 * Directory-index hashes (fs/ext4/hash.c: ext4fs_dirhash): the legacy dx_hack_hash, half-MD4
 * and TEA, each in the signed-char and unsigned-char flavours (which differ for name bytes >=
 * 0x80; s_flags says which one a filesystem uses). The result's low bit is cleared (it marks
 * hash collisions in index entries) and the 32-bit EOF value is avoided, as the kernel does.
 */
import { Incompatible } from '../util/errors.js';

export const DX_HASH_LEGACY = 0;
export const DX_HASH_HALF_MD4 = 1;
export const DX_HASH_TEA = 2;
export const DX_HASH_LEGACY_UNSIGNED = 3;
export const DX_HASH_HALF_MD4_UNSIGNED = 4;
export const DX_HASH_TEA_UNSIGNED = 5;
export const DX_HASH_SIPHASH = 6;
const EXT4_HTREE_EOF_32BIT = 0x7fffffff;

/** A name byte as the C code sees it: signed char or unsigned char. */
function charAt(name: Uint8Array, i: number, signed: boolean): number {
  // OK to index: callers stay below name.length.
  const b = name[i]!;
  return signed && b >= 0x80 ? b - 256 : b;
}

function dxHackHash(name: Uint8Array, signed: boolean): number {
  let hash0 = 0x12a3fe2d;
  let hash1 = 0x37abe8f9;
  for (let i = 0; i < name.length; i++) {
    let hash = (hash1 + ((hash0 ^ Math.imul(charAt(name, i, signed), 7152373)) >>> 0)) >>> 0;
    if (hash & 0x80000000) hash = (hash - 0x7fffffff) >>> 0;
    hash1 = hash0;
    hash0 = hash;
  }
  return (hash0 << 1) >>> 0;
}

/** str2hashbuf_{signed,unsigned}: packs up to num*4 name bytes into `num` words with padding. */
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

const K2 = 0o13240474631;
const K3 = 0o15666365641;

function halfMd4Transform(buf: Uint32Array, inp: Uint32Array): void {
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

function teaTransform(buf: Uint32Array, inp: Uint32Array): void {
  let sum = 0;
  let b0 = buf[0]!, b1 = buf[1]!;
  const a = inp[0]!, b = inp[1]!, c = inp[2]!, d = inp[3]!;
  for (let n = 0; n < 16; n++) {
    sum = (sum + 0x9e3779b9) >>> 0;
    b0 = (b0 + ((((b1 << 4) >>> 0) + a) ^ (b1 + sum) ^ ((b1 >>> 5) + b))) >>> 0;
    b1 = (b1 + ((((b0 << 4) >>> 0) + c) ^ (b0 + sum) ^ ((b0 >>> 5) + d))) >>> 0;
  }
  buf[0] = (buf[0]! + b0) >>> 0;
  buf[1] = (buf[1]! + b1) >>> 0;
}

/**
 * ext4fs_dirhash(): hash and minor hash of `name` under hash `version` with the filesystem's
 * s_hash_seed words (an all-zero seed means the default MD4 constants).
 */
export function ext4fsDirhash(
  name: Uint8Array, version: number, seed: ArrayLike<number>,
): { hash: number; minorHash: number } {
  const buf = new Uint32Array([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476]);
  if (seed.length === 4 && Array.from(seed).some((w) => w !== 0)) for (let i = 0; i < 4; i++) buf[i] = seed[i]! >>> 0;
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
    default:
      throw new Incompatible(`directory hash version ${version} is not supported`, version === DX_HASH_SIPHASH ? ['casefold'] : []);
  }
  hash = (hash & ~1) >>> 0;
  if (hash === EXT4_HTREE_EOF_32BIT * 2) hash = (EXT4_HTREE_EOF_32BIT - 1) * 2;
  return { hash, minorHash };
}
