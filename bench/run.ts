/**
 * `npm run bench [-- --quick] [-- --runs N] [-- --only build|write|dio|read] [-- --no-ext2fs]`:
 * side-by-side figures, each the median of several runs, with ext4ts's figures also given as a
 * ratio to the anchor measured in the same run. Not a test: nothing here asserts a time. Prints
 * the machine facts, a table, and one JSON line per figure (progress goes to stderr).
 *
 * Sections (one module each):
 * 1. build (build-bench.ts, issue 6): image from a tree; ext4ts mkfs -d vs mke2fs -d, the ext2fs
 *    package, the kernel through a loop mount, and the raw-write limit; workloads A and B.
 * 2. write (write-bench.ts, issue 4): buffered 1 MiB sequential writes through the API.
 * 3. dio (dio-bench.ts, issue 5): 4 KiB random O_DIRECT writes at queue depth 1 and 32.
 * 4. read (read-bench.ts, issue 2): ext4ts get vs debugfs rdump on workload A.
 *
 * Workloads are seeded (workload.ts) and generated once per run in a scratch directory chosen by
 * free space (env.ts). Mounts, loop devices and scratch files are removed on every exit path.
 *
 * CPU columns are the median user and system seconds of the measured work: waited-for children
 * (cutime/cstime of /proc/self/stat) plus this process (process.cpuUsage()).
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseOptions, USAGE, UsageError, installCleanup, cleanupAll, makeScratch, machineFacts, type Section } from './env.js';
import { figures, printTable } from './stats.js';
import { makeTree, makeBigFiles, WORKLOAD_A, WORKLOAD_A_QUICK, WORKLOAD_B, WORKLOAD_B_QUICK, type TreeInfo } from './workload.js';
import { buildBench } from './build-bench.js';
import { writeBench } from './write-bench.js';
import { dioBench } from './dio-bench.js';
import { readBench } from './read-bench.js';

const GiB = 1 << 30;
const log = (s: string): void => void process.stderr.write(`${s}\n`);

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    console.log(USAGE);
    return;
  }
  const opts = parseOptions(process.argv.slice(2));
  const t0 = performance.now();
  const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(1)} s elapsed`;
  installCleanup();
  const wants = (s: Section): boolean => opts.only === undefined || opts.only === s;
  // Trees, one image and one raw copy at a time (the 4 GiB write checks its own room).
  const work = makeScratch(opts.quick ? GiB : 5 * GiB);
  const facts = machineFacts(work);
  console.log(`ext4ts bench${opts.quick ? ' --quick' : ''}: ${opts.runs} runs per figure (median)${opts.only ? `, only ${opts.only}` : ''}`);
  for (const [k, v] of Object.entries(facts)) console.log(`  ${k.padEnd(15)} ${v}`);
  console.log(JSON.stringify({ bench: 'machine', ...facts, quick: opts.quick, runs: opts.runs }));

  let a: TreeInfo | undefined;
  let aLabel = '';
  if (wants('build') || wants('read')) {
    const spec = opts.quick ? WORKLOAD_A_QUICK : WORKLOAD_A;
    log(`generating workload A (${spec.files} files)…`);
    a = await makeTree(join(work, 'tree-a'), spec);
    aLabel = `A (${a.files.length} files, ${(a.totalBytes / (1 << 20)).toFixed(0)} MiB)`;
  }
  if (wants('build') && a !== undefined) {
    const spec = opts.quick ? WORKLOAD_B_QUICK : WORKLOAD_B;
    log(`generating workload B (${spec.files} × ${spec.sizeBytes >> 20} MiB)…`);
    const b = await makeBigFiles(join(work, 'tree-b'), spec);
    log(`(${elapsed()})`);
    await buildBench(opts, work, { a, aLabel, b, bLabel: `B (${spec.files} × ${spec.sizeBytes >> 20} MiB)` }, log);
  }
  log(`(${elapsed()})`);
  if (wants('write')) await writeBench(opts, work, log);
  log(`(${elapsed()})`);
  if (wants('dio')) await dioBench(opts, work, log);
  log(`(${elapsed()})`);
  if (wants('read') && a !== undefined) await readBench(opts, work, a, aLabel, log);
  printTable(`medians of ${opts.runs} runs unless marked; ratios are against anchors measured in this run; ` +
    `total ${elapsed()}`);
}

try {
  await main();
} catch (e) {
  if (e instanceof UsageError) {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`bench: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
} finally {
  cleanupAll();
}
