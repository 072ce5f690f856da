/**
 * A tar archive (plain or gzip-compressed) as a build source, parsed with tar-stream.
 *
 * Pass 1 reads every header and records where each member's bytes are: at a byte offset of a
 * plain archive (read later at random, like a host file), in memory for the small members of a
 * compressed archive (up to CAPTURE_TOTAL_BYTES in all), or "in the stream" for the rest, which a
 * second pass over the compressed archive delivers in archive order (streamContents).
 *
 * What is taken from each member:
 * - name (GNU long names and PAX `path` included); names are relative: an absolute name or any
 *   ".." component is refused with an error naming the member (nothing may land outside the root);
 * - types: file, hard link (target by member name), symlink, directory, char/block device
 *   (devmajor/devminor), FIFO; GNU sparse members and other types are refused by name;
 * - numeric uid/gid (PAX `uid`/`gid` when present; user and group names are ignored, as with
 *   `tar --numeric-owner`), permission bits, mtime (PAX `mtime` with nanoseconds, else the header's
 *   seconds), atime (PAX `atime`, else the mtime);
 * - xattrs from PAX records `SCHILY.xattr.NAME` (GNU tar --xattrs, star), `LIBARCHIVE.xattr.NAME`
 *   (bsdtar; URL-encoded name, base64 value) and `RHT.security.selinux` (GNU tar --selinux). Their
 *   values are binary (security.capability), which tar-stream 3.2.2 decodes as UTF-8 and so
 *   corrupts; the raw PAX records are therefore parsed here (rawPaxOf), per extractor instance.
 * A path listed twice keeps the later member, as extraction would.
 */
import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import type { Readable, Transform } from 'node:stream';
import { extract as tarExtract, type Extract, type Header } from 'tar-stream';
import {
  badEntry, finishEntries, normalizePath, parseDecimalTime, symlinkTarget, checkU32, decodeBase64,
  type BuildEntry, type Chunk, type Source, type Timespec, type Xattr,
} from './source.js';
import { CHUNK_BYTES } from './content.js';
import { isExt4Error } from '../util/errors.js';

/**
 * A tar-stream header as 3.2.2 really makes it: `type` is null for typeflags it does not know,
 * and `byteOffset` is where the member's data starts in the (decompressed) archive.
 */
type Headers = Omit<Header, 'type'> & { type: Header['type'] | null; byteOffset?: number };

/** A member's data stream (a streamx Readable), as tar-stream's async iteration yields it. */
interface MemberStream extends AsyncIterable<Uint8Array> {
  header: Headers;
  resume(): unknown;
}

/** Members of a compressed archive up to this size are kept in memory in pass 1. */
const CAPTURE_FILE_BYTES = 1 << 20;
/** The most member bytes pass 1 keeps in memory in all (default of scanTar's `memoryBytes`). */
export const CAPTURE_TOTAL_BYTES = 64 << 20;

export type TarCompression = 'none' | 'gzip';

/** Raw PAX records of a header: key → value bytes. */
type RawPax = Map<string, Uint8Array>;

const utf8 = new TextDecoder();

/** Parses PAX extended-header records ("LEN KEY=VALUE\n") keeping values as bytes. */
export function parsePaxRecords(buf: Uint8Array): RawPax {
  const out: RawPax = new Map();
  let off = 0;
  while (off < buf.length) {
    let sp = off;
    while (sp < buf.length && buf[sp] !== 0x20) sp++;
    const len = Number(utf8.decode(buf.subarray(off, sp)));
    if (!Number.isSafeInteger(len) || len <= sp - off || off + len > buf.length) break;
    const rec = buf.subarray(sp + 1, off + len - 1); // without the trailing "\n"
    const eq = rec.indexOf(0x3d);
    if (eq > 0) out.set(utf8.decode(rec.subarray(0, eq)), rec.slice(eq + 1));
    off += len;
  }
  return out;
}

/** Internals of tar-stream 3.2.2's Extract that rawPaxOf hooks (pinned version). */
interface ExtractInternals {
  _header: { type: string } | null;
  _decodeLongHeader(buf: Uint8Array): void;
}

/**
 * Makes an extractor that also records the raw PAX records of each member: the returned
 * `take()` gives (and forgets) those of the member just emitted, global records merged in.
 */
function extractorWithRawPax(): { extract: Extract; take(): RawPax } {
  const extract = tarExtract();
  const ex = extract as unknown as ExtractInternals;
  let global: RawPax = new Map();
  let pending: RawPax | undefined;
  const decode = ex._decodeLongHeader.bind(ex);
  ex._decodeLongHeader = (buf: Uint8Array): void => {
    const type = ex._header?.type;
    if (type === 'pax-header') pending = parsePaxRecords(buf);
    else if (type === 'pax-global-header') global = new Map([...global, ...parsePaxRecords(buf)]);
    decode(buf);
  };
  return {
    extract,
    take(): RawPax {
      const p = pending;
      pending = undefined;
      return p === undefined ? global : new Map([...global, ...p]);
    },
  };
}

/** Xattrs carried by PAX records. */
function xattrsOf(pax: RawPax, origin: string): { xattrs: Xattr[]; acls: boolean } {
  const xattrs: Xattr[] = [];
  let acls = false;
  for (const [k, v] of pax) {
    if (k.startsWith('SCHILY.xattr.')) xattrs.push({ name: k.slice('SCHILY.xattr.'.length), value: v });
    else if (k.startsWith('LIBARCHIVE.xattr.')) {
      let name: string;
      try {
        name = decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length));
      } catch {
        throw badEntry(origin, `bad xattr name in PAX record ${k}`);
      }
      const value = decodeBase64(utf8.decode(v));
      if (value === undefined) throw badEntry(origin, `PAX record ${k} is not base64`);
      xattrs.push({ name, value });
    } else if (k === 'RHT.security.selinux') xattrs.push({ name: 'security.selinux', value: v });
    else if (k.startsWith('SCHILY.acl.')) acls = true;
  }
  return { xattrs, acls };
}

/** A PAX time record, or `fallback`. */
function paxTime(pax: RawPax, key: string, origin: string, fallback: Timespec | undefined): Timespec | undefined {
  const v = pax.get(key);
  if (v === undefined) return fallback;
  const t = parseDecimalTime(utf8.decode(v));
  if (t === undefined) throw badEntry(origin, `bad PAX ${key} "${utf8.decode(v)}"`);
  return t;
}

/** A PAX numeric record (uid, gid), or `fallback`. */
function paxNumber(pax: RawPax, key: string, origin: string, fallback: number): number {
  const v = pax.get(key);
  if (v === undefined) return fallback;
  const n = Number(utf8.decode(v));
  return checkU32(n, key, origin);
}

const KINDS: Readonly<Record<string, BuildEntry['kind']>> = {
  file: 'file', 'contiguous-file': 'file', link: 'hardlink', symlink: 'symlink',
  'character-device': 'chr', 'block-device': 'blk', directory: 'dir', fifo: 'fifo',
};

/** One member's header as a BuildEntry (content decided by the caller). */
function entryOfHeader(h: Headers, pax: RawPax, origin: string, warn: Set<string>): BuildEntry {
  const kind = h.type === null ? undefined : KINDS[h.type];
  if (kind === undefined) throw badEntry(origin, `tar member type ${h.type ?? '(unknown: GNU sparse, volume or multi-volume header?)'} is not supported`);
  if ([...pax.keys()].some((k) => k.startsWith('GNU.sparse.'))) throw badEntry(origin, 'GNU sparse tar members are not supported (make the archive without --sparse)');
  const path = normalizePath(h.name, origin, 'relative');
  const mtime = paxTime(pax, 'mtime', origin, { sec: Math.floor((h.mtime?.getTime() ?? 0) / 1000), nsec: 0 });
  const { xattrs, acls } = xattrsOf(pax, origin);
  if (acls) warn.add('POSIX ACLs in tar PAX records (SCHILY.acl.*) are not converted; use SCHILY.xattr.system.posix_acl_* instead');
  const e: BuildEntry = {
    path, kind, perm: (h.mode ?? 0o644) & 0o7777, uid: paxNumber(pax, 'uid', origin, h.uid ?? 0),
    gid: paxNumber(pax, 'gid', origin, h.gid ?? 0), xattrs, sizeBytes: 0, allocBytes: 0, origin,
  };
  if (mtime !== undefined) {
    e.mtime = mtime;
    e.atime = paxTime(pax, 'atime', origin, mtime) ?? mtime;
  }
  const linkname = h.linkname ?? '';
  if (kind === 'hardlink') e.linkTo = normalizePath(linkname, origin, 'relative');
  else if (kind === 'symlink') e.target = symlinkTarget(linkname, origin);
  else if (kind === 'chr' || kind === 'blk') {
    e.major = h.devmajor ?? 0;
    e.minor = h.devminor ?? 0;
  } else if (kind === 'file') {
    e.sizeBytes = h.size ?? 0;
    e.allocBytes = e.sizeBytes;
  }
  return e;
}

/** Reads a whole member stream into one buffer. */
async function collect(stream: MemberStream, size: number): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  let off = 0;
  for await (const c of stream) {
    out.set(c.subarray(0, Math.max(0, size - off)), off);
    off += c.length;
  }
  return out;
}

/** The archive file, and a gunzip stage for a compressed one. */
function openArchive(hostPath: string, compression: TarCompression): { file: Readable; gunzip: Transform | undefined } {
  const file = createReadStream(hostPath, { highWaterMark: CHUNK_BYTES });
  return { file, gunzip: compression === 'gzip' ? createGunzip({ chunkSize: 256 << 10 }) : undefined };
}

/**
 * Runs `onMember` for every member of the archive in order (the member's stream must be
 * consumed or resumed by it), with the member's index and raw PAX records.
 */
async function eachMember(
  hostPath: string, compression: TarCompression,
  onMember: (h: Headers, stream: MemberStream, index: number, pax: RawPax) => Promise<void>,
): Promise<void> {
  const { extract, take } = extractorWithRawPax();
  const { file, gunzip } = openArchive(hostPath, compression);
  const stages: (Readable | Transform)[] = gunzip === undefined ? [file] : [file, gunzip];
  let failure: unknown;
  const fail = (e: unknown): void => {
    failure ??= e;
    extract.destroy(e as Error);
  };
  for (const s of stages) s.on('error', fail);
  const bytes = gunzip === undefined ? file : file.pipe(gunzip);
  // tar-stream's Extract is a streamx Writable, which node's pipe() drives like its own.
  bytes.pipe(extract as unknown as NodeJS.WritableStream);
  let index = 0;
  try {
    for await (const member of extract as AsyncIterable<unknown> as AsyncIterable<MemberStream>) {
      await onMember(member.header, member, index++, take());
      member.resume();
    }
    if (failure !== undefined) throw failure;
  } catch (e) {
    for (const s of stages) s.destroy();
    extract.destroy();
    if (isExt4Error(e)) throw e; // ours (a bad member, or the engine's error while writing it)
    throw badEntry(hostPath, `cannot read the tar archive: ${(failure as Error | undefined)?.message ?? (e as Error).message}`);
  }
}

/**
 * Pass 1 over a tar archive (see the module comment). `memoryBytes` bounds the member bytes of a
 * compressed archive kept in memory (the rest comes from pass 2).
 */
export async function scanTar(hostPath: string, compression: TarCompression, memoryBytes = CAPTURE_TOTAL_BYTES): Promise<Source> {
  const list: BuildEntry[] = [];
  const warnings = new Set<string>();
  let captured = 0;
  let streamed = 0;
  await eachMember(hostPath, compression, async (h, stream, index, pax) => {
    const origin = `${hostPath}: ${h.name}`;
    const e = entryOfHeader(h, pax, origin, warnings);
    list.push(e);
    if (e.kind !== 'file' || e.sizeBytes === 0) return;
    if (compression === 'none') {
      e.content = { kind: 'archive', hostPath, offset: h.byteOffset ?? -1 };
      if (!(e.content.offset >= 0)) throw badEntry(origin, 'tar-stream gave no data offset');
    } else if (e.sizeBytes <= CAPTURE_FILE_BYTES && captured + e.sizeBytes <= memoryBytes) {
      e.content = { kind: 'bytes', bytes: await collect(stream, e.sizeBytes) };
      captured += e.sizeBytes;
    } else {
      e.content = { kind: 'stream', member: index };
      streamed++;
    }
  });
  const entries = finishEntries(list, 'later-wins');
  const source: Source = { kind: 'tar', walk: () => entries, warnings: [...warnings] };
  if (streamed === 0) return source;
  return {
    ...source,
    streamContents: (want, write) => streamPass(hostPath, compression, want, write),
  };
}

/** Pass 2 over a compressed archive: the wanted members' bytes, in archive order. */
async function streamPass(
  hostPath: string, compression: TarCompression, want: ReadonlyMap<number, BuildEntry>,
  write: (entry: BuildEntry, chunks: AsyncIterable<Chunk>) => Promise<void>,
): Promise<void> {
  await eachMember(hostPath, compression, async (_h, stream, index) => {
    const e = want.get(index);
    if (e !== undefined) await write(e, rechunk(stream, e.sizeBytes));
  });
}

/** A member's stream regrouped into chunks of CHUNK_BYTES (fewer, larger writes). */
async function* rechunk(stream: MemberStream, size: number): AsyncGenerator<Chunk> {
  let buf = new Uint8Array(Math.min(size, CHUNK_BYTES));
  let fill = 0;
  let pos = 0;
  for await (const c of stream) {
    for (let off = 0; off < c.length; ) {
      const n = Math.min(c.length - off, buf.length - fill);
      if (n === 0) break; // more bytes than the header said: tar-stream never does this
      buf.set(c.subarray(off, off + n), fill);
      fill += n;
      off += n;
      if (fill === buf.length) {
        yield { pos, bytes: buf };
        pos += fill;
        buf = new Uint8Array(Math.min(size - pos, CHUNK_BYTES));
        fill = 0;
      }
    }
  }
  if (fill > 0) yield { pos, bytes: buf.subarray(0, fill) };
}
