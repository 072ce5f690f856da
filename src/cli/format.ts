/**
 * Text formatting shared by the CLI commands: modes like ls -l, times, sizes.
 */
import type { Stats, Timespec } from '../index.js';

const TYPE_CHAR: Record<string, string> = { file: '-', dir: 'd', symlink: 'l', chr: 'c', blk: 'b', fifo: 'p', sock: 's' };

/** "drwxr-xr-x" from a Stats. */
export function modeString(st: Stats): string {
  const m = st.mode;
  const rwx = (shift: number, special: number, ch: string): string => {
    const r = m & (4 << shift) ? 'r' : '-';
    const w = m & (2 << shift) ? 'w' : '-';
    const xOn = (m & (1 << shift)) !== 0;
    const sOn = (m & special) !== 0;
    const x = sOn ? (xOn ? ch : ch.toUpperCase()) : xOn ? 'x' : '-';
    return r + w + x;
  };
  return (TYPE_CHAR[st.type] ?? '?') + rwx(6, 0o4000, 's') + rwx(3, 0o2000, 's') + rwx(0, 0o1000, 't');
}

/** ISO-like UTC time with nanoseconds; works before 1970 and after 2038. */
export function timeString(t: Timespec): string {
  const d = new Date(t.sec * 1000);
  const iso = isNaN(d.getTime()) ? `@${t.sec}` : d.toISOString().replace('.000Z', '');
  return `${iso}.${String(t.nsec).padStart(9, '0')}Z`;
}

export function timeJson(t: Timespec | undefined): { sec: number; nsec: number } | null {
  return t === undefined ? null : { sec: t.sec, nsec: t.nsec };
}
