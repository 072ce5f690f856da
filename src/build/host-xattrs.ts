/**
 * Extended attributes of a host directory tree, for a directory source (what `mke2fs -d` copies
 * with llistxattr/lgetxattr). Node.js has no xattr API and a native addon would need a compiler
 * at install time, so one `getfattr` run (Debian package attr) dumps the whole tree:
 * `getfattr --absolute-names -R -P -h -d -m - -e base64 ROOT`: recursive, symlinks neither
 * followed nor dereferenced (a link's own attributes), every namespace the caller may list
 * (trusted.* only as root), values in base64. One process for the tree costs about 70 ms for
 * 20,000 entries; only entries that have attributes are printed and kept, so memory follows the
 * number of attributes, not the size of the tree.
 * The dump's format: util/getfattr-dump.ts.
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { badEntry, type Xattr } from './source.js';
import { parseGetfattrDump } from '../util/getfattr-dump.js';
import { hasXattrHandler } from '../api/ext4.js';

/** What readHostXattrs found. */
export interface HostXattrs {
  /** Image path ("/", "/etc/passwd", …) → its attributes, sorted by name; only entries with some. */
  byPath: Map<string, Xattr[]>;
  /** Attributes left out because ext4 has no handler for their names (e.g. system.nfs4_acl). */
  skipped: { count: number; first?: { name: string; path: string } };
}

/**
 * Every attribute under the host directory `root`, by image path; undefined when getfattr is
 * not installed. A getfattr failure (an unreadable entry) fails the build, naming what getfattr
 * said, as the walk would for the same entry.
 */
export function readHostXattrs(root: string): HostXattrs | undefined {
  const abs = resolve(root);
  const r = spawnSync('getfattr', ['--absolute-names', '-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--', abs], {
    stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 30,
  });
  if (r.error !== undefined) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw badEntry(root, `cannot run getfattr to read extended attributes: ${r.error.message}`);
  }
  if (r.status !== 0) {
    const said = r.stderr.toString('utf8').trim().split('\n')[0] ?? '';
    throw badEntry(root, `getfattr could not read the extended attributes (exit ${r.status ?? r.signal}): ${said}`);
  }
  const printed = parseGetfattrDump(r.stdout);
  const byPath = new Map<string, Xattr[]>();
  const skipped: HostXattrs['skipped'] = { count: 0 };
  const base = abs === '/' ? '' : abs;
  for (const [p, list] of printed) {
    let path: string;
    if (p === abs) path = '/';
    else if (p.startsWith(`${base}/`)) path = p.slice(base.length);
    else continue;
    const kept = list.filter((x) => {
      if (hasXattrHandler(x.name)) return true;
      skipped.count++;
      skipped.first ??= { name: x.name, path };
      return false;
    });
    if (kept.length > 0) byPath.set(path, kept);
  }
  return { byPath, skipped };
}
