/**
 * `node rss-wrap.js OUT SCRIPT ARGS...`: runs SCRIPT (an ES module such as the ext4ts CLI) in this
 * process as if started as `node SCRIPT ARGS...`, and at exit writes the process's peak resident
 * set (KiB) to OUT. Works where /usr/bin/time is not installed.
 * (peak-rss.ts says why not resourceUsage().maxRSS.)
 */
import { writeFileSync } from 'node:fs';
import { peakRssKiB } from './peak-rss.js';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [out, script, ...rest] = process.argv.slice(2);
if (out === undefined || script === undefined) {
  process.stderr.write('usage: rss-wrap OUT SCRIPT [ARGS...]\n');
  process.exit(2);
}
process.on('exit', () => writeFileSync(out, `${peakRssKiB()}\n`));
// The script parses process.argv as node does: [node, script, ...args].
process.argv = [process.argv[0]!, resolve(script), ...rest];
await import(pathToFileURL(resolve(script)).href);
