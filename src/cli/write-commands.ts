/**
 * Namespace-changing subcommands (mkdir, rm, mv, ln, chmod, chown, touch, truncate, setfattr,
 * mknod) and `shell`, which reads the same verbs without the IMAGE argument from standard input,
 * one per line (words split like a POSIX shell: quotes and backslashes, no expansion), opens the
 * image once, stops at the first failing line (naming its number) and writes back at the end.
 * Each verb is defined once in VERBS and registered in both places, except the top-level
 * `truncate`, which data-commands.ts registers with the data-path flags (the shell keeps the
 * plain verb).
 */
import { Command, CommanderError } from 'commander';
import { createInterface } from 'node:readline';
import { split as shellSplit } from 'shlex';
import { Ext4, PosixError } from '../index.js';

interface Verb {
  name: string;
  description: string;
  /** commander argument specs after IMAGE, e.g. ['<path>']. */
  args: string[];
  options?: [flags: string, description: string][];
  /**
   * False for verbs that data-commands.ts registers at the top level with more options (the data
   * flags); the shell still offers them in this plain form.
   */
  topLevel?: false;
  run(fs: Ext4, args: string[], opts: Record<string, unknown>): Promise<void>;
}

/** Parses an octal mode (like chmod 0755 / 755). Symbolic modes are not supported. */
function parseMode(text: string): number {
  if (!/^[0-7]{1,4}$/.test(text)) throw new PosixError('EINVAL', 'chmod', undefined, `mode ${JSON.stringify(text)} is not octal (e.g. 0755)`);
  return parseInt(text, 8);
}

/** "uid:gid", "uid" or ":gid" with numeric ids. */
function parseOwner(text: string): { uid: number; gid: number } {
  const m = /^(\d*)(?::(\d*))?$/.exec(text);
  if (m === null || (m[1] === '' && (m[2] ?? '') === '')) {
    throw new PosixError('EINVAL', 'chown', undefined, `owner ${JSON.stringify(text)} must be UID:GID with numbers`);
  }
  const id = (s: string | undefined): number => (s === undefined || s === '' ? -1 : Number(s));
  const uid = id(m[1]);
  const gid = id(m[2]);
  if (uid > 0xffffffff || gid > 0xffffffff) throw new PosixError('EINVAL', 'chown', undefined, `owner ${text} out of range`);
  return { uid, gid };
}

/** "@EPOCH[.NS]" (like touch -d @1700000000.5) → exact seconds and nanoseconds. */
function parseEpoch(text: string): { sec: number; nsec: number } {
  const m = /^@(-?\d+)(?:\.(\d{1,9}))?$/.exec(text);
  if (m === null) throw new PosixError('EINVAL', 'touch', undefined, `time ${JSON.stringify(text)} must be @SECONDS[.FRACTION]`);
  const sec = Number(m[1]);
  const nsec = Number((m[2] ?? '').padEnd(9, '0') || '0');
  if (!Number.isSafeInteger(sec)) throw new PosixError('EINVAL', 'touch', undefined, `time ${text} out of range`);
  return { sec, nsec };
}

/**
 * Sizes like truncate(1): bytes, or with K/M/G/T (powers of 1024). `syscall` names the operation
 * in the error (truncate, fallocate). Shared with data-commands.ts.
 */
export function parseSize(text: string, syscall = 'truncate'): number {
  const m = /^(\d+)([KMGT]?)$/i.exec(text);
  if (m === null) throw new PosixError('EINVAL', syscall, undefined, `size ${JSON.stringify(text)} must be a number with an optional K/M/G/T`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[(m[2] ?? '').toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n)) throw new PosixError('EINVAL', syscall, undefined, `size ${text} out of range`);
  return n;
}

/** A value as given, or hex with a 0x prefix (like setfattr). */
function parseValue(text: string): Uint8Array {
  if (/^0x([0-9a-f]{2})*$/i.test(text)) return Uint8Array.from(Buffer.from(text.slice(2), 'hex'));
  return new TextEncoder().encode(text);
}

async function exists(fs: Ext4, path: string): Promise<boolean> {
  try {
    await fs.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof PosixError && e.code === 'ENOENT') return false;
    throw e;
  }
}

const VERBS: Verb[] = [
  {
    name: 'mkdir', description: 'create a directory', args: ['<path>'],
    options: [['-p, --parents', 'create missing parents, no error if it exists'], ['-m, --mode <mode>', 'octal mode (default 0755)']],
    async run(fs, [path], o) {
      const mode = typeof o['mode'] === 'string' ? parseMode(o['mode']) : 0o755;
      await fs.mkdir(path!, { recursive: o['parents'] === true, mode });
    },
  },
  {
    name: 'rm', description: 'remove a file, symlink or special file (-r: a whole tree)', args: ['<path>'],
    options: [['-r, --recursive', 'remove directories and their contents'], ['-f, --force', 'no error if missing']],
    async run(fs, [path], o) {
      await fs.rm(path!, { recursive: o['recursive'] === true, force: o['force'] === true });
    },
  },
  {
    name: 'rmdir', description: 'remove an empty directory', args: ['<path>'],
    async run(fs, [path]) {
      await fs.rmdir(path!);
    },
  },
  {
    name: 'mv', description: 'rename or move (replacing a compatible target)', args: ['<src>', '<dst>'],
    async run(fs, [src, dst]) {
      let to = dst!;
      // Like mv(1): a destination that is a directory receives the source under its own name.
      if ((await exists(fs, to)) && (await fs.stat(to)).isDirectory()) {
        to = `${to.replace(/\/+$/, '')}/${src!.replace(/\/+$/, '').split('/').pop()}`;
      }
      await fs.rename(src!, to);
    },
  },
  {
    name: 'ln', description: 'make a hard link (-s: a symbolic link) named LINKPATH', args: ['<target>', '<linkpath>'],
    options: [['-s, --symbolic', 'make a symbolic link']],
    async run(fs, [target, link], o) {
      if (o['symbolic'] === true) await fs.symlink(target!, link!);
      else await fs.link(target!, link!);
    },
  },
  {
    name: 'chmod', description: 'change permission bits (octal)', args: ['<mode>', '<path>'],
    async run(fs, [mode, path]) {
      await fs.chmod(path!, parseMode(mode!));
    },
  },
  {
    name: 'chown', description: 'change owner and group (numeric UID:GID)', args: ['<owner>', '<path>'],
    options: [['-h, --no-dereference', 'change a symlink itself']],
    async run(fs, [owner, path], o) {
      const { uid, gid } = parseOwner(owner!);
      await fs.chown(path!, uid, gid, o['dereference'] !== false);
    },
  },
  {
    name: 'touch', description: 'create an empty file, or set its times (-d @EPOCH[.NS])', args: ['<path>'],
    options: [['-d, --date <time>', 'time as @SECONDS[.FRACTION] (default: now)'], ['-m', 'change only the modification time'], ['-a', 'change only the access time']],
    async run(fs, [path], o) {
      const t = typeof o['date'] === 'string' ? parseEpoch(o['date']) : undefined;
      if (!(await exists(fs, path!))) {
        await fs.mknod(path!, { mode: 0o644 });
        if (t === undefined) return;
      }
      const now = t ?? fs.now();
      const onlyM = o['m'] === true && o['a'] !== true;
      const onlyA = o['a'] === true && o['m'] !== true;
      await fs.utimes(path!, onlyM ? undefined : now, onlyA ? undefined : now);
    },
  },
  {
    name: 'truncate', description: 'set a file\'s size (shrinking frees blocks; growing leaves a hole)', args: ['<size>', '<path>'],
    topLevel: false,
    async run(fs, [size, path]) {
      await fs.truncate(path!, parseSize(size!));
    },
  },
  {
    name: 'setfattr', description: 'set an extended attribute (VALUE as text, or 0x-prefixed hex)', args: ['<name>', '<value>', '<path>'],
    async run(fs, [name, value, path]) {
      await fs.setxattr(path!, name!, parseValue(value!));
    },
  },
  {
    name: 'rmfattr', description: 'remove an extended attribute', args: ['<name>', '<path>'],
    async run(fs, [name, path]) {
      await fs.removexattr(path!, name!);
    },
  },
  {
    name: 'mknod', description: 'create a FIFO (p), or a character (c) / block (b) device', args: ['<path>', '<type>', '[major]', '[minor]'],
    options: [['-m, --mode <mode>', 'octal mode (default 0644)']],
    async run(fs, [path, type, major, minor], o) {
      const mode = typeof o['mode'] === 'string' ? parseMode(o['mode']) : 0o644;
      if (type === 'p') return fs.mknod(path!, { node: { type: 'fifo' }, mode });
      if (type !== 'c' && type !== 'b') throw new PosixError('EINVAL', 'mknod', path, `type ${JSON.stringify(type)} must be p, c or b`);
      const ma = Number(major);
      const mi = Number(minor);
      if (!Number.isInteger(ma) || !Number.isInteger(mi) || ma < 0 || mi < 0 || ma > 0xfff || mi > 0xfffff) {
        throw new PosixError('EINVAL', 'mknod', path, 'device numbers: major 0..4095, minor 0..1048575');
      }
      await fs.mknod(path!, { node: { type: type === 'c' ? 'chr' : 'blk', major: ma, minor: mi }, mode });
    },
  },
];

function define(cmd: Command, v: Verb): Command {
  let c = cmd.description(v.description);
  for (const a of v.args) c = c.argument(a);
  for (const [flags, desc] of v.options ?? []) c = c.option(flags, desc);
  return c;
}

/** Registers every verb as `ext4ts VERB IMAGE ARGS…` and the `shell` command. */
export function registerWriteCommands(program: Command): void {
  for (const v of VERBS) {
    if (v.topLevel === false) continue;
    define(program.command(v.name).argument('<image>', 'the image file to change'), v)
      .action(async (image: string, ...rest: unknown[]) => {
        const args = rest.slice(0, v.args.length).filter((a): a is string => typeof a === 'string');
        const opts = (rest[v.args.length] ?? {}) as Record<string, unknown>;
        const fs = await Ext4.open(image, { readOnly: false });
        try {
          await v.run(fs, args, opts);
        } finally {
          await fs.close();
        }
      });
  }
  program.command('shell').description('run verbs (mkdir, rm, mv, ln, chmod, chown, touch, …) read from stdin, one per line, on one open image')
    .argument('<image>')
    .action(async (image: string) => {
      const fs = await Ext4.open(image, { readOnly: false });
      let failure: unknown;
      let lineNo = 0;
      try {
        const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
        for await (const line of rl) {
          lineNo++;
          const words = splitWords(line, lineNo);
          if (words.length === 0) continue;
          try {
            await runShellLine(fs, words);
          } catch (e) {
            failure = e;
            break;
          }
        }
      } finally {
        await fs.close();
      }
      if (failure !== undefined) {
        const msg = failure instanceof Error ? failure.message : String(failure);
        throw new ShellLineError(lineNo, msg, failure);
      }
    });
}

/** A failing shell line: the CLI prints "line N: message". */
export class ShellLineError extends Error {
  readonly code: string;
  constructor(readonly line: number, message: string, override readonly cause: unknown) {
    super(`line ${line}: ${message}`);
    this.code = (cause as { code?: string }).code ?? 'EINVAL';
  }
}

function splitWords(line: string, lineNo: number): string[] {
  const trimmed = line.trim();
  if (trimmed === '' || trimmed.startsWith('#')) return [];
  try {
    return shellSplit(trimmed);
  } catch (e) {
    throw new ShellLineError(lineNo, `cannot split the line: ${(e as Error).message}`, e);
  }
}

/** Runs one shell line through a one-shot commander program (same verbs, no IMAGE). */
async function runShellLine(fs: Ext4, words: string[]): Promise<void> {
  const prog = new Command().exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  let ran: Promise<void> | undefined;
  for (const v of VERBS) {
    define(prog.command(v.name), v).action((...rest: unknown[]) => {
      const args = rest.slice(0, v.args.length).filter((a): a is string => typeof a === 'string');
      const opts = (rest[v.args.length] ?? {}) as Record<string, unknown>;
      ran = v.run(fs, args, opts);
    });
  }
  try {
    await prog.parseAsync(words, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) throw new PosixError('EINVAL', words[0] ?? 'shell', undefined, e.message.replace(/^error: /, ''));
    throw e;
  }
  if (ran === undefined) throw new PosixError('EINVAL', 'shell', undefined, `unknown verb ${JSON.stringify(words[0])}`);
  await ran;
}
