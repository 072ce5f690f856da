/**
 * `node ext2fs-child.js SRC IMG`: copies the tree SRC into the ext4 image IMG (made by mke2fs
 * without -d) through the npm `ext2fs` package (libext2fs compiled to WASM) and its node:fs-like
 * promises API: mkdir, writeFile, symlink. Run as a child so its CPU time and memory are its own.
 */
import { createRequire } from 'node:module';
import { open, readdir, readFile, readlink, lstat } from 'node:fs/promises';
import { join } from 'node:path';

/** The part of ext2fs's fs object used here (the package ships no types). */
interface Ext2Handle {
  write(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  close(): Promise<void>;
}
interface Ext2Promises {
  mkdir(path: string, mode?: number): Promise<void>;
  writeFile(path: string, data: Buffer, options?: { mode?: number }): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  open(path: string, flags: string, mode: number): Promise<Ext2Handle>;
}
interface Ext2fsModule {
  mount(disk: unknown, offset?: number): Promise<{ promises: Ext2Promises }>;
  umount(fs: unknown): Promise<void>;
}

const [src, img] = process.argv.slice(2);
if (src === undefined || img === undefined) throw new Error('usage: ext2fs-child SRC IMG');
const ext2fs = createRequire(import.meta.url)('ext2fs') as Ext2fsModule;

// The disk interface ext2fs expects (file-disk's shape): reads, writes, discard, flush.
const fh = await open(img, 'r+');
const disk = {
  async read(buf: Buffer, bufOff: number, len: number, pos: number) {
    return fh.read(buf, bufOff, len, pos);
  },
  async write(buf: Buffer, bufOff: number, len: number, pos: number) {
    return fh.write(buf, bufOff, len, pos);
  },
  async discard(): Promise<void> {},
  async flush(): Promise<void> {
    await fh.datasync();
  },
};

const mounted = await ext2fs.mount(disk, 0);
const fs = mounted.promises;
const CHUNK_BYTES = 1 << 20;

/**
 * Copies a large file in 1 MiB writes: writeFile would copy the whole file into the WASM heap
 * at once, which aborts (OOM) at 128 MiB. Each write passes a buffer starting at offset 0,
 * because ext2fs 4.2.5's write() ignores its offset argument.
 */
async function copyLarge(src: string, dst: string, mode: number, sizeBytes: number): Promise<void> {
  const inp = await open(src, 'r');
  const out = await fs.open(dst, 'w', mode);
  try {
    for (let pos = 0; pos < sizeBytes; pos += CHUNK_BYTES) {
      const len = Math.min(CHUNK_BYTES, sizeBytes - pos);
      const buf = Buffer.alloc(len);
      const { bytesRead } = await inp.read(buf, 0, len, pos);
      if (bytesRead !== len) throw new Error(`short read of ${src} at ${pos}`);
      for (let done = 0; done < len; ) {
        const { bytesWritten } = await out.write(buf.subarray(done), 0, len - done, pos + done);
        if (bytesWritten <= 0) throw new Error(`ext2fs write of ${dst} at ${pos + done} made no progress`);
        done += bytesWritten;
      }
    }
  } finally {
    await out.close();
    await inp.close();
  }
}
async function copy(dir: string, rel: string): Promise<void> {
  for (const name of (await readdir(dir)).sort()) {
    const p = join(dir, name);
    const q = `${rel}/${name}`;
    const st = await lstat(p);
    if (st.isDirectory()) {
      await fs.mkdir(q, st.mode & 0o7777);
      await copy(p, q);
    } else if (st.isFile() && st.size > CHUNK_BYTES) {
      await copyLarge(p, q, st.mode & 0o7777, st.size);
    } else if (st.isFile()) {
      await fs.writeFile(q, await readFile(p), { mode: st.mode & 0o7777 });
    } else if (st.isSymbolicLink()) {
      await fs.symlink(await readlink(p), q);
    }
  }
}
await copy(src, '');
await ext2fs.umount(mounted);
await fh.datasync();
await fh.close();
