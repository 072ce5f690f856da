/**
 * The peak resident set of this process in KiB. On Linux: VmHWM from /proc/self/status, the
 * high-water mark of this process's own memory. resourceUsage().maxRSS is only the fallback:
 * Linux carries it over from before exec, so a child of a large parent (the bench process, once
 * it has generated 1 GiB of workload) reported the parent's size at fork, 3.3 GiB, instead of
 * its own ~180 MiB.
 */
import { readFileSync } from 'node:fs';

export function peakRssKiB(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m?.[1] !== undefined) return Number(m[1]);
  } catch {
    // Not Linux: the fallback below.
  }
  return process.resourceUsage().maxRSS;
}
