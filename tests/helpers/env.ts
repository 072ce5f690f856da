/** Reading test knobs from the environment. */

/** A non-negative integer from environment variable `name`, or `dflt` when unset or empty. */
export function envInt(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const v = Number(raw);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name}=${raw}: not a non-negative integer`);
  return v;
}
