/** Reading test knobs from the environment, and what the machine lets a test do. */
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

/** A non-negative integer from environment variable `name`, or `dflt` when unset or empty. */
export function envInt(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name}=${raw}: not a non-negative integer`);
  return v;
}

/** True when every command is on PATH. */
export function haveCommands(...cmds: string[]): boolean {
  return cmds.every((c) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', c]).status === 0);
}

/**
 * Tools a test needs as its oracle or to make its input: when one is missing the test fails,
 * naming the Debian package (.ci/run installs them). It never skips: a skipped oracle proves
 * nothing.
 */
export function requireCommands(pkg: string, ...cmds: string[]): void {
  const missing = cmds.filter((c) => !haveCommands(c));
  if (missing.length > 0) throw new Error(`${missing.join(', ')} not found: install the Debian package ${pkg} (.ci/run does)`);
}

/**
 * The one way a test skips: only where this machine cannot run it (not root, no loop device, a
 * host filesystem that takes no user xattrs or no sparse file that large, another mke2fs
 * version) or where the person running it asked for a replay of chosen seeds. It prints why
 * (console.error, which the runner passes through as is, so CI's log shows it whatever the
 * reporter), and records it in the test's diagnostics and skip directive. No skip goes
 * unexplained; none happens on a machine with root and loop devices run without replay knobs.
 */
export function skipBecause(t: TestContext, reason: string): void {
  console.error(`ext4ts test skipped: "${t.name}": ${reason}`);
  t.diagnostic(`skipped: ${reason}`);
  t.skip(reason);
}
