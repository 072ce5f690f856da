/**
 * On-disk names are bytes, the API's names are strings: decodeName escapes the bytes of invalid
 * UTF-8 as U+DC80..U+DCFF (surrogateescape) and encodeUtf8 undoes it, so every name survives
 * readdir → stat/open/unlink, and valid UTF-8 is plain text both ways.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeName, encodeUtf8, hostFsPath } from '../../../src/util/bytes.js';

const enc = new TextEncoder();

test('names: any byte string survives decodeName then encodeUtf8, so distinct names stay distinct', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 255 }), (b) => {
    assert.deepEqual(encodeUtf8(decodeName(b)), b);
  }), { numRuns: 5000 });
  // The edges: a lone continuation byte, truncated sequences, overlong forms, encoded surrogates,
  // code points past U+10FFFF, and a valid sequence right after an invalid byte.
  for (const hex of ['80', 'c3', 'e282', 'c0af', 'e080af', 'eda080', 'f4908080', 'ff41', 'c328', 'ffc3a9', 'f09f9880']) {
    const b = Uint8Array.from(Buffer.from(hex, 'hex'));
    assert.deepEqual(encodeUtf8(decodeName(b)), b, hex);
  }
  assert.equal(decodeName(Uint8Array.from([0x61, 0xff, 0xc3, 0xa9])), 'a\udcffé');
});

test('names: valid UTF-8 is plain text both ways, as TextEncoder and a strict TextDecoder have it', () => {
  fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 80 }), (s) => {
    const b = encodeUtf8(s);
    assert.deepEqual(b, enc.encode(s));
    assert.equal(decodeName(b), s);
    assert.equal(hostFsPath(s), s);
  }), { numRuns: 3000 });
  // A lone surrogate that no decodeName makes is written as U+FFFD, like TextEncoder does.
  assert.deepEqual(encodeUtf8('a\ud800b'), enc.encode('a\ud800b'));
  assert.deepEqual(hostFsPath('/x/\udcff'), Buffer.from([0x2f, 0x78, 0x2f, 0xff]));
});
