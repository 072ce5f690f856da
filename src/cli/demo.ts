/**
 * `ext4ts demo`: the README's first command. Until the image builder exists it opens the
 * bundled sample image (made by mkfs.ext4 and the kernel), lists it, and reads a file back.
 */
import type { Command } from 'commander';

export function registerDemo(program: Command): void {
  program.command('demo').description('open a bundled sample image and show it')
    .action(async () => {
      const { runDemo } = await import('./demo-run.js');
      await runDemo();
    });
}
