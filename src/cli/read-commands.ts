/**
 * Read-only subcommands: info, ls, cat, stat, get.
 */
import type { Command } from 'commander';
import { Ext4, extract, type Stats, type ExtractWarning } from '../index.js';
import { modeString, timeString, timeJson } from './format.js';

/** `--no-replay`: commander sets `replay: false`. */
interface ReplayOpt { replay?: boolean }
const NO_REPLAY_HELP = 'read a filesystem whose journal needs recovery as it is on disk, ignoring the journal (like mount -o ro,noload)';

async function withImage<T>(image: string, fn: (fs: Ext4) => Promise<T>, noRecovery = false): Promise<T> {
  const fs = await Ext4.open(image, { readOnly: true, noRecovery });
  try {
    return await fn(fs);
  } finally {
    await fs.close();
  }
}

function out(s: string): void {
  process.stdout.write(s + '\n');
}

export function statJson(path: string, st: Stats): Record<string, unknown> {
  return {
    path, ino: st.ino, type: st.type, mode: st.mode & 0o7777, nlink: st.nlink, uid: st.uid, gid: st.gid,
    size: st.size, blocks: st.blocks, rdev: st.rdev, atime: timeJson(st.atimeSpec), mtime: timeJson(st.mtimeSpec),
    ctime: timeJson(st.ctimeSpec), crtime: timeJson(st.birthtimeSpec),
  };
}

export function registerReadCommands(program: Command): void {
  program.command('info').description('print the superblock and features (like dumpe2fs -h)')
    .argument('<image>').option('--json', 'machine-readable output')
    .action(async (image: string, o: { json?: boolean }) => {
      // info reports the journal's state, so it opens even a journal that needs recovery.
      const info = await withImage(image, async (fs) => fs.info(), true);
      if (o.json) return out(JSON.stringify(info));
      const rows: [string, string | number][] = [
        ['Filesystem volume name', info.label || '<none>'], ['Filesystem UUID', info.uuid],
        ['Filesystem features', info.features.join(' ')], ['Filesystem state', info.state],
        ['Block size', info.blockSize], ['Block count', info.blocksCount],
        ['Free blocks', info.freeBlocksCount], ['Reserved block count', info.reservedBlocksCount],
        ['Inode count', info.inodesCount], ['Free inodes', info.freeInodesCount],
        ['Inode size', info.inodeSize], ['Group count', info.groupCount],
        ['Blocks per group', info.blocksPerGroup], ['Inodes per group', info.inodesPerGroup],
        ['Group descriptor size', info.descSize], ['Journal inode', info.journalInode],
        ['Directory hash seed', info.hashSeed], ['Needs journal recovery', info.needsRecovery ? 'yes' : 'no'],
      ];
      for (const [k, v] of rows) out(`${(k + ':').padEnd(26)}${v}`);
      if (info.readOnlyReason) out(`${'Read-only because:'.padEnd(26)}${info.readOnlyReason}`);
      const j = info.journal;
      if (j !== undefined) {
        const row = (k: string, v: string | number): void => out(`${(k + ':').padEnd(26)}${v}`);
        if ('external' in j) row('Journal', 'on an external device (not read)');
        else if ('error' in j) row('Journal', `unreadable, ignored (noRecovery): ${j.error}`);
        else {
          row('Journal size', `${j.maxlenBlocks} blocks (v${j.version}${j.csumVersion > 0 ? `, checksum v${j.csumVersion}` : ''}${j.fcBlocks > 0 ? `, ${j.fcBlocks} fast-commit blocks` : ''})`);
          row('Journal sequence', `0x${j.sequence.toString(16).padStart(8, '0')}`);
          row('Journal start', j.start === 0 ? '0 (log empty)' : `${j.start} (log holds transactions)`);
          if (j.errno !== 0) row('Journal errno', j.errno);
        }
      }
    });

  program.command('ls').description('list a directory')
    .argument('<image>').argument('[path]', 'directory inside the image', '/')
    .option('-l, --long', 'long listing').option('--json', 'machine-readable output').option('--no-replay', NO_REPLAY_HELP)
    .action(async (image: string, path: string, o: { long?: boolean; json?: boolean } & ReplayOpt) => {
      await withImage(image, async (fs) => {
        const st = await fs.lstat(path);
        const entries = st.isDirectory() ? (await fs.readdir(path, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1)) : [];
        const list = st.isDirectory() ? entries.map((d) => ({ name: d.name, path: join(path, d.name) })) : [{ name: path, path }];
        if (!o.long && !o.json) return list.forEach((e) => out(e.name));
        for (const e of list) {
          const s = await fs.lstat(e.path);
          if (o.json) { out(JSON.stringify({ name: e.name, ...statJson(e.path, s) })); continue; }
          const link = s.isSymbolicLink() ? ` -> ${await fs.readlink(e.path)}` : '';
          out(`${modeString(s)} ${String(s.nlink).padStart(3)} ${String(s.uid).padStart(5)} ${String(s.gid).padStart(5)} ${String(s.size).padStart(10)} ${timeString(s.mtimeSpec)} ${e.name}${link}`);
        }
      }, o.replay === false);
    });

  program.command('cat').description('write a file\'s content to standard output')
    .argument('<image>').argument('<path>').option('--no-replay', NO_REPLAY_HELP)
    .action(async (image: string, path: string, o: ReplayOpt) => {
      await withImage(image, async (fs) => {
        const fh = await fs.open(path);
        const buf = new Uint8Array(1 << 20);
        for (let pos = 0; ; ) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
          if (bytesRead === 0) break;
          await writeStdout(buf.subarray(0, bytesRead));
          pos += bytesRead;
        }
        await fh.close();
      }, o.replay === false);
    });

  program.command('stat').description('print an inode\'s fields and extents (like debugfs stat)')
    .argument('<image>').argument('<path>').option('--json', 'machine-readable output').option('--no-replay', NO_REPLAY_HELP)
    .action(async (image: string, path: string, o: { json?: boolean } & ReplayOpt) => {
      await withImage(image, async (fs) => {
        const st = await fs.lstat(path);
        const layout = await fs.layout(path);
        const xattrs = await fs.xattrsOfIno(st.ino);
        if (o.json) {
          return out(JSON.stringify({ ...statJson(path, st), flags: layout.flags, generation: layout.generation, layout: layout.kind,
            depth: layout.depth ?? null, extents: layout.extents, metaBlocks: layout.metaBlocks, xattrBlock: layout.xattrBlock,
            xattrs: Object.fromEntries(xattrs.map((x) => [x.name, Buffer.from(x.value).toString('hex')])) }));
        }
        out(`Inode: ${st.ino}   Type: ${st.type}   Mode: 0${(st.mode & 0o7777).toString(8).padStart(4, '0')}   Flags: 0x${layout.flags.toString(16)}`);
        out(`Generation: ${layout.generation}`);
        out(`User: ${st.uid}   Group: ${st.gid}   Size: ${st.size}`);
        out(`Links: ${st.nlink}   Blockcount: ${st.blocks}   File ACL: ${layout.xattrBlock}`);
        out(` ctime: ${timeString(st.ctimeSpec)}`);
        out(` atime: ${timeString(st.atimeSpec)}`);
        out(` mtime: ${timeString(st.mtimeSpec)}`);
        if (st.birthtimeSpec) out(`crtime: ${timeString(st.birthtimeSpec)}`);
        for (const x of xattrs) out(`Xattr: ${x.name} (${x.value.length} bytes)`);
        out(`Layout: ${layout.kind}${layout.depth !== undefined ? ` (depth ${layout.depth})` : ''}`);
        if (layout.metaBlocks.length) out(`Tree blocks: ${layout.metaBlocks.join(', ')}`);
        for (const e of layout.extents) {
          const l = e.len === 1 ? `${e.lblk}` : `${e.lblk}-${e.lblk + e.len - 1}`;
          const p = e.len === 1 ? `${e.pblk}` : `${e.pblk}-${e.pblk + e.len - 1}`;
          out(`  (${l}): ${p}${e.unwritten ? ' [uninit]' : ''}`);
        }
      }, o.replay === false);
    });
}

/** `ext4ts get`: registered separately because its options differ. */
export function registerGet(program: Command): void {
  program.command('get').description('copy a file or tree out of the image (like cp -a PATH HOSTDEST; HOSTDEST must not exist)')
    .argument('<image>').argument('<path>', 'path inside the image').argument('<hostdest>', 'where the copy goes')
    .option('--strict', 'fail instead of skipping suspicious entries')
    .option('--no-owners', 'do not restore owners (default: restore when running as root)')
    .option('--no-xattrs', 'do not restore extended attributes (default: restore them with setfattr)')
    .option('--json', 'print a JSON summary')
    .option('-q, --quiet', 'no warnings on stderr').option('--no-replay', NO_REPLAY_HELP)
    .action(async (image: string, path: string, hostdest: string, o: { strict?: boolean; owners: boolean; xattrs: boolean; json?: boolean; quiet?: boolean } & ReplayOpt) => {
      await withImage(image, async (fs) => {
        const warn = (w: ExtractWarning): void => {
          if (!o.quiet) process.stderr.write(`ext4ts: warning: skipped ${JSON.stringify(w.path)}: ${w.reason}\n`);
        };
        const sum = await extract(fs, path, hostdest, {
          onWarning: warn, ...(o.strict ? { strict: true } : {}), ...(o.owners ? {} : { preserveOwners: false }),
          ...(o.xattrs ? {} : { xattrs: false }),
        });
        if (o.json) out(JSON.stringify(sum));
        else if (!o.quiet) {
          process.stderr.write(`ext4ts: extracted ${sum.files} files, ${sum.dirs} directories, ${sum.symlinks} symlinks, ` +
            `${sum.hardlinks} hard links, ${sum.special} special files, ${sum.xattrs} xattrs, ${sum.bytes} bytes; ${sum.skipped.length} skipped\n`);
        }
      }, o.replay === false);
    });
}

function join(dir: string, name: string): string {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

function writeStdout(b: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(b, (err) => (err ? reject(err) : resolve()));
  });
}
