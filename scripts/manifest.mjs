#!/usr/bin/env node
// Records the Linux kernel's view of a mounted ext2/3/4 file system as a JSON manifest, the
// ground truth that ext4ts's read path is compared with (tests/golden/*). Everything here goes
// through the kernel: lstat (bigint, so timestamps keep their nanoseconds), readlink, reading
// whole files for sha256, and `getfattr` for extended attributes.
//
// Usage:
//   node scripts/manifest.mjs MOUNTPOINT [--image NAME] [--mkfs CMD] [--block-size N]
//        [--meta JSON] [--out FILE]
// Without --out the manifest is written to stdout. --meta is a JSON object whose keys are
// merged into the top level (e.g. features, notes). With --entries-only only the sorted entry
// list is printed (used by tests to re-walk a read-only remount and compare).
//
// Format (see tests/helpers/fixtures.ts for the TypeScript types):
//   { image, mkfs, blockSize, populatedBy: "kernel", kernel: `uname -r`, ...meta,
//     entries: [ { path, type, mode, uid, gid, nlink, size, ino, atime, mtime, ctime, crtime?,
//                  sha256?, target?, targetHex?, rdev?, xattrs } ] }
// Entries are sorted by path (JavaScript string order) and include "/"; the contents of
// /lost+found are skipped but the directory itself is kept. `mode` holds only the permission
// bits (07777); times are {sec, nsec} with 0 <= nsec < 1e9 (sec is floored, so times before
// 1970 have a negative sec and a positive nsec); crtime is omitted when the kernel reports no
// birth time. Names must be valid UTF-8 (paths are JSON strings); symlink targets that are not
// valid UTF-8 are given as targetHex (target then holds a lossy rendering for humans).
import { lstatSync, readdirSync, readlinkSync, openSync, readSync, closeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { release } from 'node:os';

function parseArgs(argv) {
  const opts = { mount: undefined, image: undefined, mkfs: undefined, blockSize: undefined, meta: {}, out: undefined, entriesOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--image') opts.image = val();
    else if (a === '--mkfs') opts.mkfs = val();
    else if (a === '--block-size') opts.blockSize = Number(val());
    else if (a === '--meta') opts.meta = JSON.parse(val());
    else if (a === '--out') opts.out = val();
    else if (a === '--entries-only') opts.entriesOnly = true;
    else if (a === '--patch') opts.patch = val();
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else if (opts.mount === undefined) opts.mount = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (opts.mount === undefined && opts.patch === undefined) throw new Error('usage: manifest.mjs MOUNTPOINT [--image NAME] [--mkfs CMD] [--block-size N] [--meta JSON] [--out FILE]');
  return opts;
}

const NS = 1_000_000_000n;
/** Nanoseconds since the epoch (bigint) -> {sec, nsec} with nsec in [0, 1e9). */
function spec(ns) {
  let sec = ns / NS;
  let nsec = ns % NS;
  if (nsec < 0n) {
    nsec += NS;
    sec -= 1n;
  }
  return { sec: Number(sec), nsec: Number(nsec) };
}

/** glibc's gnu_dev_major / gnu_dev_minor (libuv builds st_rdev with makedev). */
function devParts(dev) {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

function typeOf(st) {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isBlockDevice()) return 'blk';
  if (st.isSocket()) return 'sock';
  throw new Error('unknown file type');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
function strictUtf8(buf) {
  try {
    return utf8.decode(buf);
  } catch {
    return undefined;
  }
}

function sha256File(p) {
  const h = createHash('sha256');
  const fd = openSync(p, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** All xattrs of one path (not following symlinks), as name -> lowercase hex value. */
function xattrsOf(p) {
  let text;
  try {
    text = execFileSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', p], {
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 1 << 26,
    }).toString('utf8');
  } catch (err) {
    throw new Error(`getfattr failed on ${p}: ${err.stderr?.toString() ?? err}`);
  }
  const out = {};
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# file:')) continue;
    const eq = line.indexOf('=');
    const name = eq < 0 ? line : line.slice(0, eq);
    const value = eq < 0 ? '' : line.slice(eq + 1);
    if (name.includes('\\')) throw new Error(`xattr name with escapes is not supported: ${JSON.stringify(name)} on ${p}`);
    if (value !== '' && !/^0x[0-9a-fA-F]*$/.test(value)) throw new Error(`unexpected getfattr value ${JSON.stringify(value)} on ${p}`);
    out[name] = value.replace(/^0x/, '').toLowerCase();
  }
  const sorted = {};
  for (const k of Object.keys(out).sort()) sorted[k] = out[k];
  return sorted;
}

export function walkMount(mount) {
  const entries = [];
  const visit = (rel) => {
    const abs = rel === '/' ? mount : join(mount, rel);
    const st = lstatSync(abs, { bigint: true });
    const type = typeOf(st);
    const e = {
      path: rel,
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      nlink: Number(st.nlink),
      size: Number(st.size),
      ino: Number(st.ino),
      atime: spec(st.atimeNs),
      mtime: spec(st.mtimeNs),
      ctime: spec(st.ctimeNs),
    };
    if (st.birthtimeNs !== 0n) e.crtime = spec(st.birthtimeNs);
    if (type === 'file') e.sha256 = sha256File(abs);
    if (type === 'symlink') {
      const t = readlinkSync(abs, { encoding: 'buffer' });
      const s = strictUtf8(t);
      if (s === undefined) {
        e.target = t.toString('utf8');
        e.targetHex = t.toString('hex');
      } else e.target = s;
    }
    if (type === 'chr' || type === 'blk') e.rdev = devParts(st.rdev);
    e.xattrs = xattrsOf(abs);
    entries.push(e);
    if (type === 'dir' && rel !== '/lost+found') {
      for (const raw of readdirSync(abs, { encoding: 'buffer' })) {
        const name = strictUtf8(raw);
        if (name === undefined) throw new Error(`name under ${rel} is not valid UTF-8: ${raw.toString('hex')}`);
        visit(rel === '/' ? `/${name}` : `${rel}/${name}`);
      }
    }
  };
  visit('/');
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return entries;
}

/** Pretty top level, one line per entry (diff-friendly). */
function render(doc) {
  if (Array.isArray(doc)) return '[\n' + doc.map((e) => JSON.stringify(e)).join(',\n') + '\n]\n';
  const { entries, ...head } = doc;
  const lines = Object.entries(head).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  lines.push('  "entries": [\n' + entries.map((e) => '    ' + JSON.stringify(e)).join(',\n') + '\n  ]');
  return '{\n' + lines.join(',\n') + '\n}\n';
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.patch !== undefined) {
    // --patch FILE --meta JSON: merge keys into an existing manifest's top level, keep entries.
    const { entries, ...head } = JSON.parse(readFileSync(opts.patch, 'utf8'));
    writeFileSync(opts.patch, render({ ...head, ...opts.meta, entries }));
    process.exit(0);
  }
  const entries = walkMount(opts.mount);
  const doc = opts.entriesOnly
    ? entries
    : {
        image: opts.image ?? null,
        mkfs: opts.mkfs ?? null,
        blockSize: opts.blockSize ?? null,
        populatedBy: 'kernel',
        kernel: release(),
        ...opts.meta,
        entries,
      };
  const text = render(doc);
  if (opts.out) writeFileSync(opts.out, text);
  else process.stdout.write(text);
}
