/**
 * Which kind of source a path is: a directory (by stat), a tar archive or a gzip-compressed one
 * (by magic bytes: gzip's 1f 8b, "ustar" at offset 257, or a valid pre-POSIX header checksum), or
 * a JSON manifest (the first non-blank byte is "{" or "["). Other compressions are named in the
 * error so the user knows to decompress first.
 */
import { open, stat } from 'node:fs/promises';
import { badEntry, type Source } from './source.js';
import { scanDirectory } from './dir-source.js';
import { scanTar } from './tar-source.js';
import { scanManifest } from './manifest-source.js';

export type SourceKind = 'dir' | 'tar' | 'tar.gz' | 'manifest';

const OTHER_COMPRESSIONS: readonly { magic: number[]; name: string }[] = [
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], name: 'xz' },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], name: 'zstd' },
  { magic: [0x42, 0x5a, 0x68], name: 'bzip2' },
  { magic: [0x04, 0x22, 0x4d, 0x18], name: 'lz4' },
];

/** A tar header's checksum field matches its bytes (the check every tar reader makes). */
function tarChecksumOk(h: Uint8Array): boolean {
  if (h.length < 512) return false;
  const field = new TextDecoder().decode(h.subarray(148, 156)).replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  // OK to index: h has 512 bytes (checked above); the checksum field itself counts as spaces.
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum === parseInt(field, 8);
}

/** Detects the kind of `path` (see the module comment). */
export async function detectSource(path: string): Promise<SourceKind> {
  const st = await stat(path).catch((e: Error) => {
    throw badEntry(path, `cannot open the source: ${e.message}`);
  });
  if (st.isDirectory()) return 'dir';
  if (!st.isFile()) throw badEntry(path, 'the source must be a directory, a tar archive or a JSON manifest');
  const fh = await open(path, 'r');
  const head = new Uint8Array(512);
  let n: number;
  try {
    n = (await fh.read(head, 0, 512, 0)).bytesRead;
  } finally {
    await fh.close();
  }
  const h = head.subarray(0, n);
  if (h[0] === 0x1f && h[1] === 0x8b) return 'tar.gz';
  const magic = new TextDecoder().decode(h.subarray(257, 262));
  if (magic === 'ustar' || tarChecksumOk(h)) return 'tar';
  for (const c of OTHER_COMPRESSIONS) {
    if (c.magic.every((b, i) => h[i] === b)) throw badEntry(path, `a ${c.name}-compressed file: decompress it first (ext4ts reads plain and gzip tars)`);
  }
  const first = new TextDecoder().decode(h).trimStart()[0];
  if (first === '{' || first === '[') return 'manifest';
  if (n === 0) throw badEntry(path, 'the source is an empty file');
  throw badEntry(path, 'not a directory, a tar archive (plain or gzip) or a JSON manifest');
}

/** How openSource reads a source. */
export interface OpenSourceOptions {
  /** See scanTar. */
  memoryBytes?: number | undefined;
  /** See scanDirectory. */
  keepEntries?: number | undefined;
  /** Read a directory's extended attributes (default true; see scanDirectory). */
  xattrs?: boolean | undefined;
}

/** Detects and scans a source. */
export async function openSource(path: string, opts: OpenSourceOptions = {}): Promise<Source> {
  const { memoryBytes, keepEntries, xattrs } = opts;
  const kind = await detectSource(path);
  switch (kind) {
    case 'dir':
      return scanDirectory(path, keepEntries, xattrs);
    case 'tar':
      return scanTar(path, 'none');
    case 'tar.gz':
      return scanTar(path, 'gzip', memoryBytes);
    case 'manifest':
      return scanManifest(path);
  }
}
