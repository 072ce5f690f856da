/**
 * Host names that are not UTF-8, for the tests of the paths that must keep their bytes (the
 * builder's directory source, `ext4ts put`, extraction): node:fs takes them as Buffers.
 */

/** A directory name with a byte no UTF-8 sequence starts with: "d\xff". */
export const BAD_DIR = Buffer.from([0x64, 0xff]);
/** A Latin-1 file name: "f\xe9". */
export const BAD_FILE = Buffer.from([0x66, 0xe9]);
/** "l" and a broken two-byte sequence. */
export const BAD_LINK = Buffer.from([0x6c, 0xc3, 0x28]);

/** A host path as bytes: `base` and the components joined with '/'. */
export function bytePath(base: string, ...parts: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from(base), ...parts.flatMap((p) => [Buffer.from('/'), p])]);
}
