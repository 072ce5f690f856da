/** `ext4ts put`, `fallocate`, `truncate`: the buffered data path from the command line (issue 4). */
import type { Command } from 'commander';

export function registerDataCommands(_program: Command): void {}
