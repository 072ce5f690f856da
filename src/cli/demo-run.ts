/**
 * The demo behind the README's first command: build an image from the bundled sample tree with
 * ext4ts's own builder (`ext4ts mkfs -d`), check it with `e2fsck -fn` when e2fsprogs is there,
 * read it back with ext4ts, check every file against its source byte for byte, and show it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, readdirSync, lstatSync, readlinkSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, relative } from 'node:path';
import { Ext4, build } from '../index.js';
import { modeString } from './format.js';

const ROOT = resolve(import.meta.dirname, '../../..');

function say(s: string): void {
  process.stdout.write(s + '\n');
}

function haveE2fsck(): boolean {
  try {
    execFileSync('e2fsck', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Host files of the sample tree (path inside the image → host path). */
function sampleFiles(tree: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      out.set('/' + relative(tree, p), p);
      if (lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(tree);
  return out;
}

export async function runDemo(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'ext4ts-demo-'));
  const img = join(work, 'sample.img');
  const tree = join(ROOT, 'samples/tree');
  try {
    // Both images hold exactly the sample tree, so either is checked against it byte for byte.
    const files = sampleFiles(tree);
    say(`Building ${img} from ${relative(process.cwd(), tree) || tree} with ext4ts mkfs -d (ext4, 4 KiB blocks, sized to fit)…`);
    const summary = await build({ source: tree, image: img, mkfs: { blockSize: 4096, label: 'ext4ts-demo' } });
    say(`Built: ${summary.files} files, ${summary.dirs} directories, ${summary.symlinks} symlinks, ${summary.bytes} bytes; image ${summary.sizeBytes} bytes`);
    if (haveE2fsck()) {
      const r = spawnSync('e2fsck', ['-fn', img], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`demo: e2fsck -fn found problems:\n${r.stdout}${r.stderr}`);
      say('e2fsck -fn: clean.');
    }
    const fs = await Ext4.open(img, { readOnly: true });
    try {
      const info = fs.info();
      say(`\nOpened with ext4ts: label "${info.label}", ${info.blocksCount} blocks of ${info.blockSize} bytes, ${info.groupCount} group(s)`);
      say(`Features: ${info.features.join(' ')}\n`);
      const walk = async (dir: string, depth: number): Promise<void> => {
        for (const d of (await fs.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
          const p = dir === '/' ? `/${d.name}` : `${dir}/${d.name}`;
          const st = await fs.lstat(p);
          const link = st.isSymbolicLink() ? ` -> ${await fs.readlink(p)}` : '';
          say(`${modeString(st)} ${String(st.size).padStart(8)}  ${'  '.repeat(depth)}${d.name}${link}`);
          if (st.isDirectory() && d.name !== 'lost+found') await walk(p, depth + 1);
        }
      };
      await walk('/', 0);
      const readme = '/usr/share/doc/ext4ts/README';
      say(`\n$ ext4ts cat sample.img ${readme}\n${new TextDecoder().decode(await fs.readFile(readme))}`);
      {
        let same = 0;
        for (const [p, host] of files) {
          const st = lstatSync(host);
          if (st.isFile()) {
            const a = readFileSync(host);
            const b = await fs.readFile(p);
            if (Buffer.compare(a, Buffer.from(b)) !== 0) throw new Error(`demo: ${p} differs from its source`);
            same++;
          } else if (st.isSymbolicLink() && (await fs.readlink(p)) !== readlinkSync(host)) {
            throw new Error(`demo: symlink ${p} differs from its source`);
          }
        }
        say(`Read back: all ${same} files are byte-identical to the sample tree.`);
      }
    } finally {
      await fs.close();
    }
    if (existsSync(img)) say(`\n(The image was written to a temporary directory and is removed now.)`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
