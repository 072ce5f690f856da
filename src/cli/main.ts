#!/usr/bin/env node
/**
 * The `ext4ts` command. Each subcommand opens an image through the public API (src/index.ts
 * only), prints text or --json, and on failure prints one clear line and exits non-zero:
 * 1 for a filesystem error (corrupt, incompatible, POSIX), 2 for bad usage, 70 for a bug.
 */
import { Command, CommanderError } from 'commander';
import { isExt4Error, Ext4Bug } from '../index.js';
import { registerReadCommands, registerGet } from './read-commands.js';
import { registerDemo } from './demo.js';
import { registerMkfs } from './mkfs-command.js';
import { registerWriteCommands } from './write-commands.js';
import { registerDataCommands } from './data-commands.js';

const program = new Command();
program
  .name('ext4ts')
  .description('Read, write and build ext4 filesystem images from Node.js, no root needed.')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

registerReadCommands(program);
registerGet(program);
registerDemo(program);
registerMkfs(program);
registerWriteCommands(program);
registerDataCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = report(e);
}

/** Prints one line for an error and returns the exit code. */
function report(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
  const json = process.argv.includes('--json');
  if (isExt4Error(e)) {
    if (json) process.stderr.write(JSON.stringify({ error: e.toJSON() }) + '\n');
    else process.stderr.write(`ext4ts: ${e.message}\n`);
    return 1;
  }
  if (e instanceof Ext4Bug) {
    process.stderr.write(`ext4ts: ${e.message}\n${e.stack ?? ''}\n`);
    return 70;
  }
  const err = e as { code?: string; message?: string };
  if (typeof err.code === 'string' && typeof err.message === 'string') {
    process.stderr.write(`ext4ts: ${err.message}\n`);
    return 1;
  }
  process.stderr.write(`ext4ts: unexpected error: ${String(e)}\n${(e as Error).stack ?? ''}\n`);
  return 70;
}
