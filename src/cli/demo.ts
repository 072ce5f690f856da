/**
 * `ext4ts demo`: the README's first command: builds an image from the bundled sample tree with
 * ext4ts's builder, checks it, lists it, and reads every file back.
 */
import type { Command } from 'commander';

export function registerDemo(program: Command): void {
  program.command('demo').description('build an image from the bundled sample tree, check it, read it back and show it')
    .action(async () => {
      const { runDemo } = await import('./demo-run.js');
      await runDemo();
    });
}
